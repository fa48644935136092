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

/// A block dot-product kernel: one weight row in the file's layout against
/// quantized activations (for matrices the panels cannot hold).
pub(super) type BlockDot = fn(&[u8], &[Q8Block]) -> f32;

/// The one-row kernel for a type's file layout.
pub(super) fn file_layout_kernel(ty: crate::gguf::GgmlType) -> Option<BlockDot> {
    use crate::gguf::GgmlType;
    match ty {
        GgmlType::Q4_0 => Some(dot_q4_0),
        GgmlType::Q4_1 => Some(dot_q4_1),
        GgmlType::Q8_0 => Some(dot_q8_0),
        _ => None,
    }
}

/// Dot product of a Q4_0 row with quantized activations.
fn dot_q4_0(row: &[u8], x: &[Q8Block]) -> f32 {
    row.chunks_exact(18)
        .zip(x)
        .map(|(b, xb)| f16(b, 0) * xb.d * dot_i8(&nibbles(&b[2..18], 8), &xb.q) as f32)
        .sum()
}

/// Dot product of a Q4_1 row with quantized activations:
/// Σ (d·q + m)·x = d·dx·Σ q·qx + m·Σx.
fn dot_q4_1(row: &[u8], x: &[Q8Block]) -> f32 {
    row.chunks_exact(20)
        .zip(x)
        .map(|(b, xb)| {
            f16(b, 0) * xb.d * dot_i8(&nibbles(&b[4..20], 0), &xb.q) as f32 + f16(b, 2) * xb.sum
        })
        .sum()
}

/// Dot product of a Q8_0 row with quantized activations.
fn dot_q8_0(row: &[u8], x: &[Q8Block]) -> f32 {
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
