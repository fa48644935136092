//! AVX2 (with FMA and F16C) and AVX-512 VNNI versions of the 4- and 8-bit
//! block dot products, chosen at run time; the portable versions in `q8` are the
//! fallback and the reference these are tested against.

#[cfg(target_arch = "x86_64")]
pub(in crate::cpu) mod avx2 {
    use std::arch::x86_64::*;

    use super::super::q8::{Q8Block, QK};

    /// An f16 from two little-endian bytes, converted in one F16C instruction.
    #[inline(always)]
    pub(super) unsafe fn f16(bytes: &[u8], at: usize) -> f32 {
        let bits = u16::from_le_bytes([bytes[at], bytes[at + 1]]);
        unsafe { _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32))) }
    }

    /// 16 bytes of nibbles to 32 unsigned bytes, low nibbles first.
    #[inline(always)]
    pub(super) unsafe fn unpack_nibbles(qs: *const u8) -> __m256i {
        unsafe {
            let packed = _mm_loadu_si128(qs as *const __m128i);
            let low = _mm_and_si128(packed, _mm_set1_epi8(0x0F));
            let high = _mm_and_si128(_mm_srli_epi16(packed, 4), _mm_set1_epi8(0x0F));
            _mm256_set_m128i(high, low)
        }
    }

    /// Σ over 32 lanes of unsigned `a` times signed `b`, as 8 f32 partial sums.
    #[inline(always)]
    unsafe fn dot_u8_i8(a: __m256i, b: __m256i) -> __m256 {
        unsafe {
            let pairs = _mm256_maddubs_epi16(a, b);
            _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
        }
    }

    /// The sum of the eight lanes.
    #[inline(always)]
    pub(in crate::cpu) unsafe fn hsum(v: __m256) -> f32 {
        unsafe {
            let quad = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
            let single = _mm_add_ss(pair, _mm_shuffle_ps(pair, pair, 1));
            _mm_cvtss_f32(single)
        }
    }

    /// # Safety
    /// The processor must have AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q4_1(row: &[u8], x: &[Q8Block]) -> f32 {
        unsafe {
            let mut acc = _mm256_setzero_ps();
            let mut mins = 0.0f32;
            for (b, xb) in row.chunks_exact(20).zip(x) {
                let w = unpack_nibbles(b.as_ptr().add(4));
                let q = _mm256_loadu_si256(xb.q.as_ptr() as *const __m256i);
                let scale = _mm256_set1_ps(f16(b, 0) * xb.d);
                acc = _mm256_fmadd_ps(dot_u8_i8(w, q), scale, acc);
                mins += f16(b, 2) * xb.sum;
            }
            hsum(acc) + mins
        }
    }

    /// # Safety
    /// The processor must have AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q4_0(row: &[u8], x: &[Q8Block]) -> f32 {
        unsafe {
            let mut acc = _mm256_setzero_ps();
            for (b, xb) in row.chunks_exact(18).zip(x) {
                let w = _mm256_sub_epi8(unpack_nibbles(b.as_ptr().add(2)), _mm256_set1_epi8(8));
                let q = _mm256_loadu_si256(xb.q.as_ptr() as *const __m256i);
                // maddubs needs one unsigned operand: move w's sign onto q.
                let products = dot_u8_i8(_mm256_sign_epi8(w, w), _mm256_sign_epi8(q, w));
                acc = _mm256_fmadd_ps(products, _mm256_set1_ps(f16(b, 0) * xb.d), acc);
            }
            hsum(acc)
        }
    }

    /// # Safety
    /// The processor must have AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q8_0(row: &[u8], x: &[Q8Block]) -> f32 {
        unsafe {
            let mut acc = _mm256_setzero_ps();
            for (b, xb) in row.chunks_exact(34).zip(x) {
                let w = _mm256_loadu_si256(b.as_ptr().add(2) as *const __m256i);
                let q = _mm256_loadu_si256(xb.q.as_ptr() as *const __m256i);
                let products = dot_u8_i8(_mm256_sign_epi8(w, w), _mm256_sign_epi8(q, w));
                acc = _mm256_fmadd_ps(products, _mm256_set1_ps(f16(b, 0) * xb.d), acc);
            }
            hsum(acc)
        }
    }

    /// Q4_1 row against four tokens at once: each weight block is unpacked
    /// once and used four times.
    ///
    /// # Safety
    /// The processor must have AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot4_q4_1(row: &[u8], x: [&[Q8Block]; 4]) -> [f32; 4] {
        unsafe {
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut mins = [0.0f32; 4];
            for (i, b) in row.chunks_exact(20).enumerate() {
                let w = unpack_nibbles(b.as_ptr().add(4));
                let (d, m) = (f16(b, 0), f16(b, 2));
                for t in 0..4 {
                    let xb = &x[t][i];
                    let q = _mm256_loadu_si256(xb.q.as_ptr() as *const __m256i);
                    acc[t] = _mm256_fmadd_ps(dot_u8_i8(w, q), _mm256_set1_ps(d * xb.d), acc[t]);
                    mins[t] += m * xb.sum;
                }
            }
            std::array::from_fn(|t| hsum(acc[t]) + mins[t])
        }
    }

    /// Q8_0 row against four tokens at once.
    ///
    /// # Safety
    /// The processor must have AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot4_q8_0(row: &[u8], x: [&[Q8Block]; 4]) -> [f32; 4] {
        unsafe {
            let mut acc = [_mm256_setzero_ps(); 4];
            for (i, b) in row.chunks_exact(34).enumerate() {
                let w = _mm256_loadu_si256(b.as_ptr().add(2) as *const __m256i);
                let w_abs = _mm256_sign_epi8(w, w);
                let d = f16(b, 0);
                for t in 0..4 {
                    let xb = &x[t][i];
                    let q = _mm256_loadu_si256(xb.q.as_ptr() as *const __m256i);
                    let products = dot_u8_i8(w_abs, _mm256_sign_epi8(q, w));
                    acc[t] = _mm256_fmadd_ps(products, _mm256_set1_ps(d * xb.d), acc[t]);
                }
            }
            std::array::from_fn(|t| hsum(acc[t]))
        }
    }

    const _: () = assert!(QK == 32);
}

/// The same four-token kernels with AVX-512 VNNI (`vpdpbusd`), which does
/// the multiply and both additions of `maddubs` + `madd` in one instruction.
#[cfg(target_arch = "x86_64")]
pub(super) mod vnni {
    use std::arch::x86_64::*;

    use super::super::q8::Q8Block;
    use super::avx2::{f16, hsum, unpack_nibbles};

    /// A Q4_1 row against `N` tokens (4 or 8): each weight block is
    /// unpacked once and used `N` times; each token's sum runs in the same
    /// order as the one-token kernel's, so results do not depend on `N`.
    ///
    /// # Safety
    /// The processor must have AVX2, FMA, F16C, AVX512-VL and AVX512-VNNI.
    #[target_feature(enable = "avx2,fma,f16c,avx512vl,avx512vnni")]
    pub unsafe fn dotn_q4_1<const N: usize>(row: &[u8], x: [&[Q8Block]; N]) -> [f32; N] {
        unsafe {
            let mut acc = [_mm256_setzero_ps(); N];
            let mut mins = [0.0f32; N];
            for (i, b) in row.chunks_exact(20).enumerate() {
                let w = unpack_nibbles(b.as_ptr().add(4));
                let (d, m) = (f16(b, 0), f16(b, 2));
                for t in 0..N {
                    let xb = &x[t][i];
                    let q = _mm256_loadu_si256(xb.q.as_ptr() as *const __m256i);
                    let sums = _mm256_dpbusd_epi32(_mm256_setzero_si256(), w, q);
                    acc[t] =
                        _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_set1_ps(d * xb.d), acc[t]);
                    mins[t] += m * xb.sum;
                }
            }
            std::array::from_fn(|t| hsum(acc[t]) + mins[t])
        }
    }

    /// A Q8_0 row against `N` tokens (4 or 8).
    ///
    /// # Safety
    /// The processor must have AVX2, FMA, F16C, AVX512-VL and AVX512-VNNI.
    #[target_feature(enable = "avx2,fma,f16c,avx512vl,avx512vnni")]
    pub unsafe fn dotn_q8_0<const N: usize>(row: &[u8], x: [&[Q8Block]; N]) -> [f32; N] {
        unsafe {
            let mut acc = [_mm256_setzero_ps(); N];
            for (i, b) in row.chunks_exact(34).enumerate() {
                let w = _mm256_loadu_si256(b.as_ptr().add(2) as *const __m256i);
                let w_abs = _mm256_sign_epi8(w, w);
                let d = f16(b, 0);
                for t in 0..N {
                    let xb = &x[t][i];
                    let q = _mm256_loadu_si256(xb.q.as_ptr() as *const __m256i);
                    let sums =
                        _mm256_dpbusd_epi32(_mm256_setzero_si256(), w_abs, _mm256_sign_epi8(q, w));
                    acc[t] =
                        _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_set1_ps(d * xb.d), acc[t]);
                }
            }
            std::array::from_fn(|t| hsum(acc[t]))
        }
    }
}
