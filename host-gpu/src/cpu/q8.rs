//! Activations quantized to 8 bits in blocks of 32, as llama.cpp does, so
//! that 4- and 8-bit weight blocks meet them in integer dot products.

/// Weights per activation block.
pub(super) const QK: usize = 32;

/// One block of quantized activations: `x ≈ d * q`, with `sum = d * Σq`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Q8Block {
    pub d: f32,
    pub sum: f32,
    pub q: [i8; QK],
}

/// Quantizes `x` (a multiple of 32 long) into blocks.
pub(super) fn quantize_row(x: &[f32], out: &mut Vec<Q8Block>) {
    out.clear();
    for chunk in x.chunks_exact(QK) {
        let amax = chunk.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
        let mut q = [0i8; QK];
        let mut total = 0i32;
        for (qi, &v) in q.iter_mut().zip(chunk) {
            // Round to nearest (ties to even) without a libm call: adding
            // 1.5·2^23 pushes the fraction out of an f32's mantissa.
            const SHIFT: f32 = 12_582_912.0;
            *qi = ((v * inv + SHIFT) - SHIFT) as i8;
            total += *qi as i32;
        }
        out.push(Q8Block {
            d,
            sum: d * total as f32,
            q,
        });
    }
}

/// Σ a·b over one block, in i32.
#[inline(always)]
fn dot_i8(a: &[i8; QK], b: &[i8; QK]) -> i32 {
    a.iter().zip(b).map(|(&x, &y)| x as i32 * y as i32).sum()
}

fn f16(bytes: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

/// Unpacks 16 bytes of nibbles into 32 values, low nibbles first.
#[inline(always)]
fn nibbles(qs: &[u8], offset: i8) -> [i8; QK] {
    let mut out = [0i8; QK];
    for j in 0..16 {
        out[j] = (qs[j] & 0x0F) as i8 - offset;
        out[j + 16] = (qs[j] >> 4) as i8 - offset;
    }
    out
}

/// A block dot-product kernel: one weight row against quantized activations.
pub(super) type BlockDot = fn(&[u8], &[Q8Block]) -> f32;

/// The fastest kernels this processor runs, for Q4_0, Q4_1 and Q8_0 weights.
pub(super) fn kernels() -> [BlockDot; 3] {
    static KERNELS: std::sync::OnceLock<[BlockDot; 3]> = std::sync::OnceLock::new();
    *KERNELS.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            use super::simd::avx2;
            // SAFETY: the features each kernel needs were just detected.
            return [
                |r, x| unsafe { avx2::dot_q4_0(r, x) },
                |r, x| unsafe { avx2::dot_q4_1(r, x) },
                |r, x| unsafe { avx2::dot_q8_0(r, x) },
            ];
        }
        [dot_q4_0, dot_q4_1, dot_q8_0]
    })
}

/// Whether the processor has what the AVX2 kernels need.
fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    return is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c");
    #[allow(unreachable_code)]
    false
}

/// Whether the processor also has AVX-512 VNNI on 256-bit registers.
fn has_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    return has_avx2()
        && is_x86_feature_detected!("avx512vnni")
        && is_x86_feature_detected!("avx512vl");
    #[allow(unreachable_code)]
    false
}

/// A kernel for one weight row against `N` tokens.
pub(super) type BlockDotN<const N: usize> = fn(&[u8], [&[Q8Block]; N]) -> [f32; N];

/// The VNNI `N`-token kernels for Q4_1 and Q8_0 (callers check [`has_vnni`]).
#[cfg(target_arch = "x86_64")]
fn vnni_kernels<const N: usize>() -> [BlockDotN<N>; 2] {
    use super::simd::vnni;
    // SAFETY: only handed out after `has_vnni()` said yes.
    [
        |r, x| unsafe { vnni::dotn_q4_1(r, x) },
        |r, x| unsafe { vnni::dotn_q8_0(r, x) },
    ]
}

/// Eight-token kernels for Q4_1 and Q8_0 weights, where the processor has
/// the registers for them (AVX-512 VNNI: 32 vector registers).
pub(super) fn kernels8() -> Option<[BlockDotN<8>; 2]> {
    static KERNELS: std::sync::OnceLock<Option<[BlockDotN<8>; 2]>> = std::sync::OnceLock::new();
    *KERNELS.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if has_vnni() {
            return Some(vnni_kernels());
        }
        None
    })
}

/// Four-token kernels for Q4_1 and Q8_0 weights, where the processor has them.
pub(super) fn kernels4() -> Option<[BlockDotN<4>; 2]> {
    static KERNELS: std::sync::OnceLock<Option<[BlockDotN<4>; 2]>> = std::sync::OnceLock::new();
    *KERNELS.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if has_vnni() {
            return Some(vnni_kernels());
        }
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            use super::simd::avx2;
            // SAFETY: the features each kernel needs were just detected.
            return Some([
                |r, x| unsafe { avx2::dot4_q4_1(r, x) },
                |r, x| unsafe { avx2::dot4_q8_0(r, x) },
            ]);
        }
        None
    })
}

/// Dot product of a Q4_0 row with quantized activations.
#[inline(always)]
pub(super) fn dot_q4_0(row: &[u8], x: &[Q8Block]) -> f32 {
    row.chunks_exact(18)
        .zip(x)
        .map(|(b, xb)| f16(b, 0) * xb.d * dot_i8(&nibbles(&b[2..18], 8), &xb.q) as f32)
        .sum()
}

/// Dot product of a Q4_1 row with quantized activations:
/// Σ (d·q + m)·x = d·dx·Σ q·qx + m·Σx.
#[inline(always)]
pub(super) fn dot_q4_1(row: &[u8], x: &[Q8Block]) -> f32 {
    row.chunks_exact(20)
        .zip(x)
        .map(|(b, xb)| {
            f16(b, 0) * xb.d * dot_i8(&nibbles(&b[4..20], 0), &xb.q) as f32 + f16(b, 2) * xb.sum
        })
        .sum()
}

/// Dot product of a Q8_0 row with quantized activations.
#[inline(always)]
pub(super) fn dot_q8_0(row: &[u8], x: &[Q8Block]) -> f32 {
    row.chunks_exact(34)
        .zip(x)
        .map(|(b, xb)| {
            let q: &[i8; QK] = bytemuck_i8(&b[2..34]);
            f16(b, 0) * xb.d * dot_i8(q, &xb.q) as f32
        })
        .sum()
}

fn bytemuck_i8(bytes: &[u8]) -> &[i8; QK] {
    let array: &[u8; QK] = bytes.try_into().expect("32 bytes");
    // SAFETY: u8 and i8 have the same size, alignment and validity.
    unsafe { &*(array as *const [u8; QK] as *const [i8; QK]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pseudo-random bytes with finite f16 scales at the given offsets.
    fn blocks(block_bytes: usize, scales: &[usize], count: usize, seed: u64) -> Vec<u8> {
        let mut state = seed;
        let mut out: Vec<u8> = (0..block_bytes * count)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (state >> 56) as u8
            })
            .collect();
        for block in out.chunks_exact_mut(block_bytes) {
            for &at in scales {
                let scale = half::f16::from_f32(0.01 + (block[at + 2] as f32) / 5000.0);
                block[at..at + 2].copy_from_slice(&scale.to_le_bytes());
            }
        }
        out
    }

    #[test]
    fn fast_kernels_match_the_portable_ones() {
        let x: Vec<f32> = (0..256)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let mut q = Vec::new();
        quantize_row(&x, &mut q);
        let [fast_q4_0, fast_q4_1, fast_q8_0] = kernels();
        let cases: [(&str, Vec<u8>, BlockDot, BlockDot); 3] = [
            ("Q4_0", blocks(18, &[0], 8, 1), dot_q4_0, fast_q4_0),
            ("Q4_1", blocks(20, &[0, 2], 8, 2), dot_q4_1, fast_q4_1),
            ("Q8_0", blocks(34, &[0], 8, 3), dot_q8_0, fast_q8_0),
        ];
        for (name, row, portable, fast) in cases {
            let (a, b) = (portable(&row, &q), fast(&row, &q));
            assert!(
                (a - b).abs() <= 1e-4 * a.abs().max(1.0),
                "{name}: {a} vs {b}"
            );
        }
    }

    #[test]
    fn many_token_kernels_equal_the_one_token_kernel_bit_for_bit() {
        let tokens: Vec<Vec<Q8Block>> = (0..8)
            .map(|t| {
                let x: Vec<f32> = (0..256)
                    .map(|i| ((i * 37 + t * 11) % 101) as f32 / 9.0 - 5.0)
                    .collect();
                let mut q = Vec::new();
                quantize_row(&x, &mut q);
                q
            })
            .collect();
        let [_, one_q4_1, one_q8_0] = kernels();
        let rows = [blocks(20, &[0, 2], 8, 2), blocks(34, &[0], 8, 3)];
        let ones = [one_q4_1, one_q8_0];
        if let Some(fours) = kernels4() {
            for ((row, one), four) in rows.iter().zip(ones).zip(fours) {
                let got = four(row, std::array::from_fn(|t| &tokens[t][..]));
                for t in 0..4 {
                    assert_eq!(got[t].to_bits(), one(row, &tokens[t]).to_bits());
                }
            }
        }
        if let Some(eights) = kernels8() {
            for ((row, one), eight) in rows.iter().zip(ones).zip(eights) {
                let got = eight(row, std::array::from_fn(|t| &tokens[t][..]));
                for t in 0..8 {
                    assert_eq!(got[t].to_bits(), one(row, &tokens[t]).to_bits());
                }
            }
        }
    }
}
