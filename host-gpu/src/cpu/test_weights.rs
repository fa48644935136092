//! Random quantized weights for the CPU kernels' tests: blocks of real
//! layout with small finite scales.

use crate::gguf::GgmlType;

/// `len` pseudo-random bytes from `seed`.
pub(super) fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 56) as u8
        })
        .collect()
}

/// `count` random blocks of `ty` (Q4_0, Q4_1 or Q8_0) with finite scales.
pub(super) fn blocks(ty: GgmlType, count: usize, seed: u64) -> Vec<u8> {
    let mut out = random_bytes(ty.block_bytes() * count, seed);
    let scales: &[usize] = if ty == GgmlType::Q4_1 { &[0, 2] } else { &[0] };
    for block in out.chunks_exact_mut(ty.block_bytes()) {
        for &at in scales {
            let scale = half::f16::from_f32(0.01 + block[at + 2] as f32 / 5000.0);
            block[at..at + 2].copy_from_slice(&scale.to_le_bytes());
        }
    }
    out
}
