//! Our ggml dequantiser against gguf-py's, bit for bit, for every type we read (F32, F16,
//! BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K).
//!
//! `fixtures/gguf/dequant.safetensors` (`scripts/goldens/make_extra_goldens.py`, gguf-py 0.19.0,
//! numpy 2.4.6) holds, per type, random packed blocks (`<TYPE>/bytes`) and what
//! `gguf.quants.dequantize` makes of them (`<TYPE>/values`). The scales are finite f16 of both
//! signs (one block with a zero scale, one with a subnormal); every other byte is random, so
//! every bit of every nibble / high-bit field matters. docs/MEASUREMENTS.md promises bit-identical
//! output, so the tolerance is zero: values are compared as f32 bit patterns (measured: 0
//! mismatches of 11 types).

use clex_models::gguf::{GgmlType, dequantize};
use safetensors::{Dtype, SafeTensors};

const TYPES: [(&str, GgmlType); 11] = [
    ("F32", GgmlType::F32),
    ("F16", GgmlType::F16),
    ("BF16", GgmlType::BF16),
    ("Q4_0", GgmlType::Q4_0),
    ("Q4_1", GgmlType::Q4_1),
    ("Q5_0", GgmlType::Q5_0),
    ("Q5_1", GgmlType::Q5_1),
    ("Q8_0", GgmlType::Q8_0),
    ("Q4_K", GgmlType::Q4_K),
    ("Q5_K", GgmlType::Q5_K),
    ("Q6_K", GgmlType::Q6_K),
];

fn fixture() -> Vec<u8> {
    let p = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf/dequant.safetensors");
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn every_supported_type_dequantises_bit_identically_to_gguf_py() {
    let bytes = fixture();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    // Every supported type has a golden, and the fixture holds nothing we do not check.
    let supported: Vec<&str> = (0..64).filter_map(GgmlType::from_id).filter(|t| t.is_supported()).map(|t| t.name()).collect();
    let mut listed: Vec<&str> = TYPES.iter().map(|t| t.0).collect();
    listed.sort_unstable();
    let mut supported_sorted = supported.clone();
    supported_sorted.sort_unstable();
    assert_eq!(listed, supported_sorted, "a supported type has no gguf-py golden");
    assert_eq!(st.names().len(), 2 * TYPES.len());

    let mut report = Vec::new();
    for (name, ty) in TYPES {
        assert_eq!(ty.name(), name);
        let raw = st.tensor(&format!("{name}/bytes")).unwrap();
        assert_eq!(raw.dtype(), Dtype::U8, "{name}/bytes");
        let want = st.tensor(&format!("{name}/values")).unwrap();
        assert_eq!(want.dtype(), Dtype::F32, "{name}/values");
        let want: Vec<u32> = want.data().chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        let got = dequantize(ty, raw.data()).unwrap_or_else(|| panic!("{name}: not dequantised"));
        assert_eq!(got.len(), want.len(), "{name}: value count");
        let blocks = raw.data().len() / ty.type_size();
        assert!(blocks >= 4 || ty.block_size() == 1, "{name}: only {blocks} blocks");
        let mismatches: Vec<usize> = (0..got.len()).filter(|&i| got[i].to_bits() != want[i]).collect();
        if let Some(&i) = mismatches.first() {
            panic!(
                "{name}: {} of {} values differ from gguf-py; first at {i} (block {}, value {}): ours {:e} ({:#010x}), gguf-py {:e} ({:#010x})",
                mismatches.len(),
                got.len(),
                i / ty.block_size(),
                i % ty.block_size(),
                got[i],
                got[i].to_bits(),
                f32::from_bits(want[i]),
                want[i]
            );
        }
        // The golden is not degenerate: most values are non-zero and they are not all equal.
        let nonzero = got.iter().filter(|v| **v != 0.0).count();
        assert!(nonzero * 2 > got.len(), "{name}: only {nonzero} of {} values are non-zero", got.len());
        report.push(format!("{name}: {} values in {blocks} blocks", got.len()));
    }
    eprintln!("bit-identical to gguf-py:\n  {}", report.join("\n  "));
}
