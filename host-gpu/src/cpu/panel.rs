//! Panel products: a packed matrix's panels (eight rows each, see
//! [`super::packed`]) against tiles of 1 to 8 quantized tokens, with the
//! fastest kernels this processor runs chosen once (AVX-512 VNNI, AVX2, or
//! the portable ones here, which the others equal bit for bit).

use super::packed::{BYTE_PANEL_BLOCK, NIBBLE_PANEL_BLOCK, PANEL_ROWS, PackedMatrix, PanelKind};
use super::q8::{Q8Block, QK};

/// One panel against `N` tokens: `[token][row]`.
type Kernel<const N: usize> = fn(&[u8], [&[Q8Block]; N]) -> [[f32; PANEL_ROWS]; N];

/// A kind's kernels for tiles of 8, 4, 2 and 1 tokens.
#[derive(Clone, Copy)]
struct Tiles {
    eight: Kernel<8>,
    four: Kernel<4>,
    two: Kernel<2>,
    one: Kernel<1>,
}

/// The kernels this processor runs.
#[derive(Clone, Copy)]
pub(super) struct PanelKernels {
    nibbles: Tiles,
    bytes: Tiles,
    /// The widest tile worth using: eight tokens need the 32 vector
    /// registers of AVX-512; with 16, four.
    widest: usize,
    pub(super) name: &'static str,
}

macro_rules! tiles {
    ($kernel:ident) => {
        Tiles {
            eight: $kernel::<8>,
            four: $kernel::<4>,
            two: $kernel::<2>,
            one: $kernel::<1>,
        }
    };
    (unsafe $module:ident :: $kernel:ident) => {
        // SAFETY: only built after the kernel's features were detected.
        Tiles {
            eight: |p, x| unsafe { $module::$kernel::<8>(p, x) },
            four: |p, x| unsafe { $module::$kernel::<4>(p, x) },
            two: |p, x| unsafe { $module::$kernel::<2>(p, x) },
            one: |p, x| unsafe { $module::$kernel::<1>(p, x) },
        }
    };
}

impl PanelKernels {
    /// The fastest kernels this processor has, detected once.
    pub(super) fn detected() -> Self {
        static KERNELS: std::sync::OnceLock<PanelKernels> = std::sync::OnceLock::new();
        *KERNELS.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                use super::simd::x86;
                let avx2 = is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c");
                if avx2
                    && is_x86_feature_detected!("avx512vnni")
                    && is_x86_feature_detected!("avx512vl")
                {
                    return PanelKernels {
                        nibbles: tiles!(unsafe x86::vnni_nibbles),
                        bytes: tiles!(unsafe x86::vnni_bytes),
                        widest: 8,
                        name: "avx512-vnni",
                    };
                }
                if avx2 {
                    return PanelKernels {
                        nibbles: tiles!(unsafe x86::avx2_nibbles),
                        bytes: tiles!(unsafe x86::avx2_bytes),
                        widest: 4,
                        name: "avx2",
                    };
                }
            }
            Self::portable()
        })
    }

    /// The portable kernels (the reference for the others).
    pub(super) fn portable() -> Self {
        PanelKernels {
            nibbles: tiles!(nibbles_portable),
            bytes: tiles!(bytes_portable),
            widest: 8,
            name: "portable",
        }
    }

    /// Panel `p` of `m` against every token of `xs`, into `out[token][row]`
    /// (`out.len() == xs.len()`), in tiles as wide as the processor allows.
    pub(super) fn panel_product(
        &self,
        m: &PackedMatrix,
        p: usize,
        xs: &[&[Q8Block]],
        out: &mut [[f32; PANEL_ROWS]],
    ) {
        let tiles = match m.kind {
            PanelKind::Nibbles => self.nibbles,
            PanelKind::Bytes => self.bytes,
        };
        let panel = m.panel(p);
        let mut t = 0;
        while t < xs.len() {
            let left = xs.len() - t;
            let x = &xs[t..];
            let width = if left >= 8 && self.widest >= 8 {
                out[t..t + 8].copy_from_slice(&(tiles.eight)(panel, std::array::from_fn(|i| x[i])));
                8
            } else if left >= 4 {
                out[t..t + 4].copy_from_slice(&(tiles.four)(panel, std::array::from_fn(|i| x[i])));
                4
            } else if left >= 2 {
                out[t..t + 2].copy_from_slice(&(tiles.two)(panel, [x[0], x[1]]));
                2
            } else {
                out[t] = (tiles.one)(panel, [x[0]])[0];
                1
            };
            t += width;
        }
    }
}

fn f16(bytes: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

/// Byte `k` (0..32) of row `r`'s values in a panel-block's value area.
fn value_byte(area: &[u8], r: usize, k: usize) -> u8 {
    area[((k / 4) * PANEL_ROWS + r) * 4 + k % 4]
}

/// The scaling every kernel does, in the same order: the block's exact
/// integer sum times `d·dx`, then `m·Σx`, each fused.
fn accumulate(acc: f32, sum: i32, d: f32, m: f32, xb: &Q8Block) -> f32 {
    let acc = (sum as f32).mul_add(d * xb.d, acc);
    m.mul_add(xb.sum, acc)
}

fn nibbles_portable<const N: usize>(panel: &[u8], x: [&[Q8Block]; N]) -> [[f32; PANEL_ROWS]; N] {
    x.map(|tokens| {
        let mut acc = [0.0f32; PANEL_ROWS];
        for (block, xb) in panel.chunks_exact(NIBBLE_PANEL_BLOCK).zip(tokens) {
            for (r, a) in acc.iter_mut().enumerate() {
                let sum: i32 = (0..QK / 2)
                    .map(|k| {
                        let byte = value_byte(&block[32..], r, k);
                        (byte & 0x0F) as i32 * xb.q[k] as i32
                            + (byte >> 4) as i32 * xb.q[k + QK / 2] as i32
                    })
                    .sum();
                *a = accumulate(*a, sum, f16(block, 2 * r), f16(block, 16 + 2 * r), xb);
            }
        }
        acc
    })
}

fn bytes_portable<const N: usize>(panel: &[u8], x: [&[Q8Block]; N]) -> [[f32; PANEL_ROWS]; N] {
    x.map(|tokens| {
        let mut acc = [0.0f32; PANEL_ROWS];
        for (block, xb) in panel.chunks_exact(BYTE_PANEL_BLOCK).zip(tokens) {
            for (r, a) in acc.iter_mut().enumerate() {
                let sum: i32 = (0..QK)
                    .map(|k| value_byte(&block[16..], r, k) as i8 as i32 * xb.q[k] as i32)
                    .sum();
                let acc = (sum as f32).mul_add(f16(block, 2 * r) * xb.d, *a);
                *a = acc;
            }
        }
        acc
    })
}

#[cfg(test)]
mod tests {
    use super::super::q8::quantize_row;
    use super::super::test_weights::blocks;
    use super::*;
    use crate::gguf::GgmlType;

    /// `rows` random rows of `cols` weights of `ty`.
    fn matrix(ty: GgmlType, rows: usize, cols: usize, seed: u64) -> Vec<u8> {
        blocks(ty, rows * cols / 32, seed)
    }

    fn tokens(count: usize, cols: usize) -> Vec<Vec<Q8Block>> {
        (0..count)
            .map(|t| {
                let x: Vec<f32> = (0..cols)
                    .map(|i| ((i * 37 + t * 11) % 101) as f32 / 9.0 - 5.0)
                    .collect();
                let mut q = Vec::new();
                quantize_row(&x, &mut q);
                q
            })
            .collect()
    }

    #[test]
    fn detected_kernels_equal_the_portable_ones_bit_for_bit_at_every_tile_width() {
        let (rows, cols) = (16, 256);
        let xs = tokens(11, cols);
        let xs: Vec<&[Q8Block]> = xs.iter().map(|x| &x[..]).collect();
        let detected = PanelKernels::detected();
        let portable = PanelKernels::portable();
        for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0] {
            let bytes = matrix(ty, rows, cols, ty.code() as u64);
            let m = PackedMatrix::pack(ty, rows, cols, &bytes).unwrap();
            for p in 0..rows / PANEL_ROWS {
                // Reference: every token alone through the portable kernel.
                let mut alone = vec![[0.0f32; PANEL_ROWS]; xs.len()];
                for (t, x) in xs.iter().enumerate() {
                    portable.panel_product(&m, p, &[x], &mut alone[t..t + 1]);
                }
                for kernels in [portable, detected] {
                    // 11 tokens: tiles of 8, 2 and 1 (or 4, 4, 2, 1).
                    let mut together = vec![[0.0f32; PANEL_ROWS]; xs.len()];
                    kernels.panel_product(&m, p, &xs, &mut together);
                    for (a, b) in alone.iter().zip(&together) {
                        let (a, b) = (a.map(f32::to_bits), b.map(f32::to_bits));
                        assert_eq!(a, b, "{ty:?} panel {p} with {}", kernels.name);
                    }
                }
            }
        }
    }

    #[test]
    fn panel_products_match_the_dequantized_weights() {
        let (rows, cols) = (8, 128);
        let xs = tokens(1, cols);
        // The activations as the kernels see them.
        let x: Vec<f32> = xs[0]
            .iter()
            .flat_map(|b| b.q.map(|q| q as f32 * b.d))
            .collect();
        for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0] {
            let bytes = matrix(ty, rows, cols, 40 + ty.code() as u64);
            let m = PackedMatrix::pack(ty, rows, cols, &bytes).unwrap();
            let mut got = [[0.0f32; PANEL_ROWS]];
            PanelKernels::detected().panel_product(&m, 0, &[&xs[0]], &mut got);
            let n = bytes.len() / rows;
            for r in 0..rows {
                let mut w = vec![0.0f32; cols];
                crate::quant::dequantize(ty, &bytes[r * n..(r + 1) * n], &mut w);
                let exact: f32 = w.iter().zip(&x).map(|(a, b)| a * b).sum();
                let error = (got[0][r] - exact).abs();
                assert!(
                    error <= 1e-3 * exact.abs().max(1.0),
                    "{ty:?} row {r}: {} vs {exact}",
                    got[0][r]
                );
            }
        }
    }
}
