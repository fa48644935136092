//! Quantized weights repacked once at load into *panels* of eight rows, the
//! layout the CPU kernels read: for each 32-weight block, the eight rows'
//! scales side by side and their quantized values interleaved four bytes at
//! a time, so that one 256-bit integer dot product (`vpdpbusd`) advances all
//! eight rows at once against four broadcast activation bytes. No horizontal
//! sum is needed per row and block, which is what made the file layout slow
//! for one token (a GEMV is bound by those reductions, not by the data).
//!
//! The same panels serve one token (decode) and many (prefill, batches): a
//! product is a tile of eight rows against 1 to 8 tokens, and each (row,
//! token) result is computed by the same sequence of operations whatever
//! the tile, so batching never changes a result.
//!
//! Two panel kinds:
//! - *nibble* panels for Q4_1 and Q4_0 (`w = d·q + m`, a Q4_0 block being
//!   `m = -8·d`): per block `d[8]` and `m[8]` as f16, then 128 bytes of
//!   nibbles, 160 bytes in all (the file's 8 × 20).
//! - *byte* panels for Q8_0 (`w = d·q`): `d[8]` as f16, then 256 bytes of
//!   signed values, 272 bytes in all (the file's 8 × 34).

use crate::gguf::GgmlType;

/// Rows in one panel: eight 32-bit lanes of a 256-bit register.
pub(super) const PANEL_ROWS: usize = 8;

/// Weights per block (the file's block length for every packed type).
pub(super) const BLOCK: usize = 32;

/// Bytes of one panel-block of 4-bit weights: scales, mins, 8 × 16 nibble bytes.
pub(super) const NIBBLE_PANEL_BLOCK: usize = 16 + 16 + PANEL_ROWS * 16;

/// Bytes of one panel-block of 8-bit weights: scales, 8 × 32 value bytes.
pub(super) const BYTE_PANEL_BLOCK: usize = 16 + PANEL_ROWS * 32;

/// Which kernels read a packed matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PanelKind {
    /// 4-bit unsigned values with a scale and a minimum per block.
    Nibbles,
    /// 8-bit signed values with a scale per block.
    Bytes,
}

impl PanelKind {
    pub(super) fn block_bytes(self) -> usize {
        match self {
            PanelKind::Nibbles => NIBBLE_PANEL_BLOCK,
            PanelKind::Bytes => BYTE_PANEL_BLOCK,
        }
    }
}

/// A weight matrix in panels (see the module docs); rows past the matrix's
/// last, up to a whole panel, are zero.
#[derive(Debug)]
pub struct PackedMatrix {
    pub(super) kind: PanelKind,
    pub(super) blocks: usize,
    data: Vec<u8>,
}

impl PackedMatrix {
    /// Repacks `rows` rows of `cols` weights of type `ty` from the file's
    /// layout, or `None` for a type (or a Q4_0 scale) the panels cannot hold
    /// exactly; such a matrix keeps the file layout and the portable kernels.
    pub(super) fn pack(ty: GgmlType, rows: usize, cols: usize, bytes: &[u8]) -> Option<Self> {
        if !cols.is_multiple_of(BLOCK) {
            return None;
        }
        let kind = match ty {
            GgmlType::Q4_0 | GgmlType::Q4_1 => PanelKind::Nibbles,
            GgmlType::Q8_0 => PanelKind::Bytes,
            _ => return None,
        };
        let blocks = cols / BLOCK;
        let file_block = ty.block_bytes();
        assert_eq!(bytes.len(), rows * blocks * file_block, "matrix bytes");
        let panels = rows.div_ceil(PANEL_ROWS);
        let mut data = vec![0u8; panels * blocks * kind.block_bytes()];
        for (p, panel) in data
            .chunks_exact_mut(blocks * kind.block_bytes())
            .enumerate()
        {
            for (b, out) in panel.chunks_exact_mut(kind.block_bytes()).enumerate() {
                for r in 0..PANEL_ROWS.min(rows - p * PANEL_ROWS) {
                    let row = p * PANEL_ROWS + r;
                    let at = (row * blocks + b) * file_block;
                    let block = &bytes[at..at + file_block];
                    if !pack_block(ty, block, r, out) {
                        return None;
                    }
                }
            }
        }
        Some(PackedMatrix { kind, blocks, data })
    }

    /// The bytes of panel `p`: its blocks in order.
    pub(super) fn panel(&self, p: usize) -> &[u8] {
        let n = self.blocks * self.kind.block_bytes();
        &self.data[p * n..(p + 1) * n]
    }
}

/// Writes row `r` of a panel-block from one file block; false where the
/// block cannot be held exactly (a Q4_0 scale whose `-8·d` is not an f16).
fn pack_block(ty: GgmlType, block: &[u8], r: usize, out: &mut [u8]) -> bool {
    match ty {
        GgmlType::Q4_1 => {
            out[2 * r..2 * r + 2].copy_from_slice(&block[0..2]);
            out[16 + 2 * r..16 + 2 * r + 2].copy_from_slice(&block[2..4]);
            interleave(&block[4..20], r, &mut out[32..]);
        }
        GgmlType::Q4_0 => {
            let d = half::f16::from_le_bytes([block[0], block[1]]);
            let m = half::f16::from_f32(-8.0 * d.to_f32());
            if m.to_f32() != -8.0 * d.to_f32() {
                return false;
            }
            out[2 * r..2 * r + 2].copy_from_slice(&block[0..2]);
            out[16 + 2 * r..16 + 2 * r + 2].copy_from_slice(&m.to_le_bytes());
            interleave(&block[2..18], r, &mut out[32..]);
        }
        GgmlType::Q8_0 => {
            out[2 * r..2 * r + 2].copy_from_slice(&block[0..2]);
            interleave(&block[2..34], r, &mut out[16..]);
        }
        _ => unreachable!("only packable types reach here"),
    }
    true
}

/// Puts row `r`'s value bytes into a panel's value area: four bytes of each
/// row in turn, so group `s` holds bytes `4s..4s+4` of rows 0 to 7.
fn interleave(values: &[u8], r: usize, area: &mut [u8]) {
    for (s, four) in values.chunks_exact(4).enumerate() {
        let at = (s * PANEL_ROWS + r) * 4;
        area[at..at + 4].copy_from_slice(four);
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_weights::blocks;
    use super::*;

    /// Reads row `r`, block `b` of a packed matrix back as weights.
    fn unpack(m: &PackedMatrix, row: usize, b: usize) -> [f32; BLOCK] {
        let block = &m.panel(row / PANEL_ROWS)[b * m.kind.block_bytes()..];
        let r = row % PANEL_ROWS;
        let f16 = |at: usize| half::f16::from_le_bytes([block[at], block[at + 1]]).to_f32();
        let byte = |area: usize, k: usize| block[area + ((k / 4) * PANEL_ROWS + r) * 4 + k % 4];
        std::array::from_fn(|k| match m.kind {
            PanelKind::Nibbles => {
                let nibble = if k < 16 {
                    byte(32, k) & 0x0F
                } else {
                    byte(32, k - 16) >> 4
                };
                f16(2 * r) * nibble as f32 + f16(16 + 2 * r)
            }
            PanelKind::Bytes => f16(2 * r) * byte(16, k) as i8 as f32,
        })
    }

    #[test]
    fn packed_weights_decode_to_the_file_weights() {
        // 13 rows: one whole panel and one padded with zero rows.
        let (rows, cols) = (13, 96);
        for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0] {
            let bytes = blocks(ty, rows * cols / BLOCK, ty as u64);
            let packed = PackedMatrix::pack(ty, rows, cols, &bytes).expect("packable");
            let mut expected = vec![0.0f32; cols];
            for row in 0..rows {
                let n = cols / BLOCK * ty.block_bytes();
                crate::quant::dequantize(ty, &bytes[row * n..(row + 1) * n], &mut expected);
                for b in 0..cols / BLOCK {
                    let got = unpack(&packed, row, b);
                    assert_eq!(
                        &got[..],
                        &expected[b * BLOCK..(b + 1) * BLOCK],
                        "{ty:?} row {row}"
                    );
                }
            }
            for row in rows..16 {
                assert!(unpack(&packed, row, 0).iter().all(|&w| w == 0.0));
            }
        }
    }

    #[test]
    fn a_q4_0_scale_without_an_exact_minimum_keeps_the_file_layout() {
        let mut bytes = blocks(GgmlType::Q4_0, 1, 7);
        // 8·d overflows f16.
        bytes[0..2].copy_from_slice(&half::f16::from_f32(60000.0).to_le_bytes());
        assert!(PackedMatrix::pack(GgmlType::Q4_0, 1, 32, &bytes).is_none());
    }

    #[test]
    fn types_without_panels_are_not_packed() {
        let bytes = vec![0u8; 4 * 32];
        assert!(PackedMatrix::pack(GgmlType::F32, 1, 32, &bytes).is_none());
    }
}
