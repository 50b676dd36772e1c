//! ggml tensor types and their dequantisation to f32, following the block layouts of ggml's
//! `ggml-common.h` and the reference dequantisers of gguf-py `quants.py` (same float
//! operation order, so results are bit-identical to what transformers loads).
//!
//! A quantised row is a run of blocks; each block holds `block_size` values in `type_size`
//! bytes: f16 scale(s) first (the K types keep a super-block scale and 6-bit sub-scales),
//! then packed integers.

use half::f16;

/// Values per K-quant super-block.
const QK_K: usize = 256;

/// A ggml tensor type, by its id in the GGUF tensor info.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GgmlType(u32);

/// (id, name, values per block, bytes per block) of every type ggml defines.
const TYPES: &[(u32, &str, usize, usize)] = &[
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    (9, "Q8_1", 32, 40),
    (10, "Q2_K", QK_K, 84),
    (11, "Q3_K", QK_K, 110),
    (12, "Q4_K", QK_K, 144),
    (13, "Q5_K", QK_K, 176),
    (14, "Q6_K", QK_K, 210),
    (15, "Q8_K", QK_K, 292),
    (16, "IQ2_XXS", QK_K, 66),
    (17, "IQ2_XS", QK_K, 74),
    (18, "IQ3_XXS", QK_K, 98),
    (19, "IQ1_S", QK_K, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", QK_K, 110),
    (22, "IQ2_S", QK_K, 82),
    (23, "IQ4_XS", QK_K, 136),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (29, "IQ1_M", QK_K, 56),
    (30, "BF16", 1, 2),
    (34, "TQ1_0", QK_K, 54),
    (35, "TQ2_0", QK_K, 66),
];

impl GgmlType {
    /// 32-bit float.
    pub const F32: Self = Self(0);
    /// IEEE half.
    pub const F16: Self = Self(1);
    /// 4-bit, one f16 scale per 32.
    pub const Q4_0: Self = Self(2);
    /// 4-bit, f16 scale and minimum per 32.
    pub const Q4_1: Self = Self(3);
    /// 5-bit, one f16 scale per 32.
    pub const Q5_0: Self = Self(6);
    /// 5-bit, f16 scale and minimum per 32.
    pub const Q5_1: Self = Self(7);
    /// 8-bit, one f16 scale per 32.
    pub const Q8_0: Self = Self(8);
    /// 4-bit K-quant: 256-value super-blocks of 8 sub-blocks with 6-bit scales and minimums.
    pub const Q4_K: Self = Self(12);
    /// 5-bit K-quant, same scales as Q4_K.
    pub const Q5_K: Self = Self(13);
    /// 6-bit K-quant: 16 sub-blocks of 16 with 8-bit scales.
    pub const Q6_K: Self = Self(14);
    /// bfloat16.
    pub const BF16: Self = Self(30);

    /// The type of this id, if ggml defines one.
    pub fn from_id(id: u32) -> Option<Self> {
        TYPES.iter().any(|t| t.0 == id).then_some(Self(id))
    }

    fn entry(self) -> &'static (u32, &'static str, usize, usize) {
        TYPES.iter().find(|t| t.0 == self.0).expect("constructed from the table")
    }

    /// The id in the file.
    pub fn id(self) -> u32 {
        self.0
    }

    /// ggml's name (`Q4_K`, `F16`, ...).
    pub fn name(self) -> &'static str {
        self.entry().1
    }

    /// Values per block.
    pub fn block_size(self) -> usize {
        self.entry().2
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        self.entry().3
    }

    /// True if [`dequantize`] reads this type.
    pub fn is_supported(self) -> bool {
        matches!(self.0, 0 | 1 | 2 | 3 | 6 | 7 | 8 | 12 | 13 | 14 | 30)
    }
}

fn half(b: &[u8]) -> f32 {
    f16::from_le_bytes([b[0], b[1]]).to_f32()
}

/// `bytes` (whole blocks of `ty`) as f32 values; None for a type we do not read.
pub fn dequantize(ty: GgmlType, bytes: &[u8]) -> Option<Vec<f32>> {
    assert!(bytes.len().is_multiple_of(ty.type_size()), "{} bytes are not whole {} blocks", bytes.len(), ty.name());
    let n = bytes.len() / ty.type_size() * ty.block_size();
    let mut out = Vec::with_capacity(n);
    let block: fn(&[u8], &mut Vec<f32>) = match ty {
        GgmlType::F32 => |b, o| o.push(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        GgmlType::F16 => |b, o| o.push(half(b)),
        GgmlType::BF16 => |b, o| o.push(half::bf16::from_le_bytes([b[0], b[1]]).to_f32()),
        GgmlType::Q8_0 => q8_0,
        GgmlType::Q4_0 => q4_0,
        GgmlType::Q4_1 => q4_1,
        GgmlType::Q5_0 => q5_0,
        GgmlType::Q5_1 => q5_1,
        GgmlType::Q4_K => q4_k,
        GgmlType::Q5_K => q5_k,
        GgmlType::Q6_K => q6_k,
        _ => return None,
    };
    for b in bytes.chunks_exact(ty.type_size()) {
        block(b, &mut out);
    }
    Some(out)
}

/// Q8_0 `[d: f16][q: i8 × 32]`: x = q·d.
fn q8_0(b: &[u8], out: &mut Vec<f32>) {
    let d = half(b);
    out.extend(b[2..34].iter().map(|&q| q as i8 as f32 * d));
}

/// The 32 4-bit values of a `[u8 × 16]`: low nibbles are values 0..16, high nibbles 16..32.
fn nibbles(qs: &[u8]) -> impl Iterator<Item = u8> + '_ {
    qs.iter().map(|q| q & 0x0F).chain(qs.iter().map(|q| q >> 4))
}

/// Q4_0 `[d][qs × 16]`: x = d·(q − 8).
fn q4_0(b: &[u8], out: &mut Vec<f32>) {
    let d = half(b);
    out.extend(nibbles(&b[2..18]).map(|q| d * (q as i8 - 8) as f32));
}

/// Q4_1 `[d][m][qs × 16]`: x = d·q + m.
fn q4_1(b: &[u8], out: &mut Vec<f32>) {
    let (d, m) = (half(b), half(&b[2..]));
    out.extend(nibbles(&b[4..20]).map(|q| d * q as f32 + m));
}

/// The fifth bits of Q5_0/Q5_1: bit j of a little-endian u32 belongs to value j.
fn fifth_bits<'a>(qh: &[u8], qs: &'a [u8]) -> impl Iterator<Item = u8> + 'a {
    let qh = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    nibbles(qs).enumerate().map(move |(j, q)| q | ((((qh >> j) & 1) as u8) << 4))
}

/// Q5_0 `[d][qh: u32][qs × 16]`: x = d·(q − 16).
fn q5_0(b: &[u8], out: &mut Vec<f32>) {
    let d = half(b);
    out.extend(fifth_bits(&b[2..6], &b[6..22]).map(|q| d * (q as i8 - 16) as f32));
}

/// Q5_1 `[d][m][qh: u32][qs × 16]`: x = d·q + m.
fn q5_1(b: &[u8], out: &mut Vec<f32>) {
    let (d, m) = (half(b), half(&b[2..]));
    out.extend(fifth_bits(&b[4..8], &b[8..24]).map(|q| d * q as f32 + m));
}

/// The 8 (scale, minimum) pairs of Q4_K/Q5_K, packed at 6 bits in 12 bytes: pairs 0..4 are
/// the low 6 bits of bytes 0..4 / 4..8; pairs 4..8 take their low 4 bits from bytes 8..12
/// and their top 2 bits from the spare top bits of bytes 0..4 / 4..8.
fn k_scales(s: &[u8]) -> [(f32, f32); 8] {
    std::array::from_fn(|j| {
        let (sc, m) = if j < 4 {
            (s[j] & 0x3F, s[j + 4] & 0x3F)
        } else {
            ((s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4))
        };
        (sc as f32, m as f32)
    })
}

/// Q4_K `[d][dmin][scales × 12][qs × 128]`: sub-block j (32 values) is x = d·sc_j·q − dmin·m_j,
/// its q the low (j even) or high (j odd) nibbles of qs[32·(j/2) ..][..32].
fn q4_k(b: &[u8], out: &mut Vec<f32>) {
    let (d, dmin) = (half(b), half(&b[2..]));
    let scales = k_scales(&b[4..16]);
    let qs = &b[16..144];
    for (j, (sc, m)) in scales.into_iter().enumerate() {
        let (ds, dm) = (d * sc, dmin * m);
        let chunk = &qs[32 * (j / 2)..][..32];
        out.extend(chunk.iter().map(|q| ds * ((q >> (4 * (j % 2))) & 0x0F) as f32 - dm));
    }
}

/// Q5_K `[d][dmin][scales × 12][qh × 32][qs × 128]`: as Q4_K, with the fifth bit of value l
/// of sub-block j in bit j of qh[l].
fn q5_k(b: &[u8], out: &mut Vec<f32>) {
    let (d, dmin) = (half(b), half(&b[2..]));
    let scales = k_scales(&b[4..16]);
    let (qh, qs) = (&b[16..48], &b[48..176]);
    for (j, (sc, m)) in scales.into_iter().enumerate() {
        let (ds, dm) = (d * sc, dmin * m);
        let chunk = &qs[32 * (j / 2)..][..32];
        out.extend(chunk.iter().zip(qh).map(|(q, h)| {
            let q = ((q >> (4 * (j % 2))) & 0x0F) | (((h >> j) & 1) << 4);
            ds * q as f32 - dm
        }));
    }
}

/// Q6_K `[ql × 128][qh × 64][scales: i8 × 16][d]`: two halves of 128 values; in half h,
/// value 32·k + l (k < 4, l < 32) has low 4 bits from ql[64h + 32·(k mod 2) + l] (low
/// nibble for k < 2, high for k ≥ 2) and top 2 bits from qh[32h + l] >> 2k;
/// x = d·scale[value / 16]·(q − 32).
fn q6_k(b: &[u8], out: &mut Vec<f32>) {
    let (ql, qh, scales) = (&b[..128], &b[128..192], &b[192..208]);
    let d = half(&b[208..]);
    for h in 0..2 {
        for k in 0..4 {
            for l in 0..32 {
                let low = (ql[64 * h + 32 * (k % 2) + l] >> (4 * (k / 2))) & 0x0F;
                let high = (qh[32 * h + l] >> (2 * k)) & 0x03;
                let q = (low | (high << 4)) as i8 - 32;
                let e = 128 * h + 32 * k + l;
                out.push(d * scales[e / 16] as i8 as f32 * q as f32);
            }
        }
    }
}
