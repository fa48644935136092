//! The panel kernels in AVX2 (with FMA and F16C) and in AVX-512 VNNI on
//! 256-bit registers, chosen at run time by [`super::panel`]; the portable
//! kernels there are the reference these equal bit for bit.
//!
//! One kernel computes a panel (eight rows, see [`super::packed`]) against
//! `N` tokens. Per block it loads the panel's values once and, for each
//! token, broadcasts four activation bytes at a time against all eight
//! rows; the block's integer sums are exact, then scaled and accumulated in
//! the same order for every `N`.

#[cfg(target_arch = "x86_64")]
pub(in crate::cpu) mod x86 {
    use std::arch::x86_64::*;

    use super::super::packed::{BYTE_PANEL_BLOCK, NIBBLE_PANEL_BLOCK, PANEL_ROWS};
    use super::super::q8::Q8Block;

    /// `acc + Σ₄ u·s` per 32-bit lane: unsigned bytes `u` times signed bytes
    /// `s`, four products a lane. Exact for the operands the panels give
    /// (|u| ≤ 128, |s| ≤ 127: the 16-bit pairs of the AVX2 form cannot
    /// saturate).
    trait IntDot {
        unsafe fn dot(acc: __m256i, u: __m256i, s: __m256i) -> __m256i;
    }

    /// `vpdpbusd`: multiply and both additions in one instruction.
    struct Vnni;

    impl IntDot for Vnni {
        #[inline(always)]
        unsafe fn dot(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
            unsafe { _mm256_dpbusd_epi32(acc, u, s) }
        }
    }

    /// `vpmaddubsw` + `vpmaddwd` + `vpaddd`.
    struct Avx2;

    impl IntDot for Avx2 {
        #[inline(always)]
        unsafe fn dot(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
            unsafe {
                let pairs = _mm256_maddubs_epi16(u, s);
                _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
            }
        }
    }

    /// Four activation bytes from `q[at..at + 4]` in every lane.
    #[inline(always)]
    unsafe fn broadcast4(q: &[i8; 32], at: usize) -> __m256i {
        unsafe { _mm256_set1_epi32((q.as_ptr().add(at) as *const i32).read_unaligned()) }
    }

    /// Eight f16 scales at `p` as f32.
    #[inline(always)]
    unsafe fn scales(p: *const u8) -> __m256 {
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)) }
    }

    #[inline(always)]
    unsafe fn nibbles<D: IntDot, const N: usize>(
        panel: &[u8],
        x: [&[Q8Block]; N],
    ) -> [[f32; PANEL_ROWS]; N] {
        unsafe {
            let mask = _mm256_set1_epi8(0x0F);
            let mut acc = [_mm256_setzero_ps(); N];
            for (b, block) in panel.chunks_exact(NIBBLE_PANEL_BLOCK).enumerate() {
                let p = block.as_ptr();
                let d = scales(p);
                let m = scales(p.add(16));
                // Group s: values 4s..4s+4 (low nibbles) and 16+4s.. (high).
                let mut low = [_mm256_setzero_si256(); 4];
                let mut high = [_mm256_setzero_si256(); 4];
                for s in 0..4 {
                    let packed = _mm256_loadu_si256(p.add(32 + 32 * s) as *const __m256i);
                    low[s] = _mm256_and_si256(packed, mask);
                    high[s] = _mm256_and_si256(_mm256_srli_epi16(packed, 4), mask);
                }
                for t in 0..N {
                    let xb = &x[t][b];
                    let (mut even, mut odd) = (_mm256_setzero_si256(), _mm256_setzero_si256());
                    for s in 0..4 {
                        even = D::dot(even, low[s], broadcast4(&xb.q, 4 * s));
                        odd = D::dot(odd, high[s], broadcast4(&xb.q, 16 + 4 * s));
                    }
                    let sums = _mm256_cvtepi32_ps(_mm256_add_epi32(even, odd));
                    let scale = _mm256_mul_ps(d, _mm256_set1_ps(xb.d));
                    acc[t] = _mm256_fmadd_ps(sums, scale, acc[t]);
                    acc[t] = _mm256_fmadd_ps(m, _mm256_set1_ps(xb.sum), acc[t]);
                }
            }
            store(acc)
        }
    }

    #[inline(always)]
    unsafe fn bytes<D: IntDot, const N: usize>(
        panel: &[u8],
        x: [&[Q8Block]; N],
    ) -> [[f32; PANEL_ROWS]; N] {
        unsafe {
            let mut acc = [_mm256_setzero_ps(); N];
            for (b, block) in panel.chunks_exact(BYTE_PANEL_BLOCK).enumerate() {
                let p = block.as_ptr();
                let d = scales(p);
                // The weights are signed: multiply |w| by the activation
                // carrying w's sign.
                let mut signed = [_mm256_setzero_si256(); 8];
                let mut magnitude = [_mm256_setzero_si256(); 8];
                for s in 0..8 {
                    signed[s] = _mm256_loadu_si256(p.add(16 + 32 * s) as *const __m256i);
                    magnitude[s] = _mm256_sign_epi8(signed[s], signed[s]);
                }
                for t in 0..N {
                    let xb = &x[t][b];
                    let (mut even, mut odd) = (_mm256_setzero_si256(), _mm256_setzero_si256());
                    for s in (0..8).step_by(2) {
                        let q0 = _mm256_sign_epi8(broadcast4(&xb.q, 4 * s), signed[s]);
                        let q1 = _mm256_sign_epi8(broadcast4(&xb.q, 4 * s + 4), signed[s + 1]);
                        even = D::dot(even, magnitude[s], q0);
                        odd = D::dot(odd, magnitude[s + 1], q1);
                    }
                    let sums = _mm256_cvtepi32_ps(_mm256_add_epi32(even, odd));
                    let scale = _mm256_mul_ps(d, _mm256_set1_ps(xb.d));
                    acc[t] = _mm256_fmadd_ps(sums, scale, acc[t]);
                }
            }
            store(acc)
        }
    }

    #[inline(always)]
    unsafe fn store<const N: usize>(acc: [__m256; N]) -> [[f32; PANEL_ROWS]; N] {
        let mut out = [[0.0f32; PANEL_ROWS]; N];
        for (o, a) in out.iter_mut().zip(acc) {
            unsafe { _mm256_storeu_ps(o.as_mut_ptr(), a) };
        }
        out
    }

    /// Declares the entry points of one instruction set: a nibble and a
    /// byte kernel for each tile width.
    macro_rules! entry_points {
        ($dot:ty, $features:literal, $nibbles:ident, $bytes:ident) => {
            /// # Safety
            #[doc = concat!("The processor must have ", $features, ".")]
            #[target_feature(enable = $features)]
            pub unsafe fn $nibbles<const N: usize>(
                panel: &[u8],
                x: [&[Q8Block]; N],
            ) -> [[f32; PANEL_ROWS]; N] {
                unsafe { nibbles::<$dot, N>(panel, x) }
            }

            /// # Safety
            #[doc = concat!("The processor must have ", $features, ".")]
            #[target_feature(enable = $features)]
            pub unsafe fn $bytes<const N: usize>(
                panel: &[u8],
                x: [&[Q8Block]; N],
            ) -> [[f32; PANEL_ROWS]; N] {
                unsafe { bytes::<$dot, N>(panel, x) }
            }
        };
    }

    entry_points!(Avx2, "avx2,fma,f16c", avx2_nibbles, avx2_bytes);
    entry_points!(
        Vnni,
        "avx2,fma,f16c,avx512vl,avx512vnni",
        vnni_nibbles,
        vnni_bytes
    );
}
