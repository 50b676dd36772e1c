//! GGUF import.
//!
//! Without any download: dequantisation of hand-packed blocks of every supported type
//! (packed here from ggml's block layouts, so the decoder is checked against an independent
//! encoder), header parsing of files this test writes (v2 and v3), one specific error per
//! kind of malformed file, the q/k row permutation, and a tiny LLaMA written as a GGUF that
//! must give transformers' logits.
//!
//! With the SmolLM2-135M-Instruct Q4_1 GGUF (`cargo xtask fetch-smollm2`): logits, argmax
//! and per-token NLL against transformers 5.24 on the same GGUF dequantised to f32
//! (tests/fixtures/smollm2), loaded straight from the GGUF and from the converted HF
//! directory; the embedded tokenizer; greedy generation. Skipped, with the reason on stderr,
//! when the GGUF is absent, unless `CLEX_REQUIRE_SMOLLM2=1` makes that a failure.

mod common;
mod gguf_files;

use std::path::Path;

use burn::tensor::DType;
use clex_models::gguf::{self, GgmlType, GgufFile, GgufValue, dequantize, llama::permute_qk, llama::unpermute_qk};
use clex_models::{CachePolicy, CausalLm, ForwardOptions, GgufError, ModelError, ModelSource};
use common::*;
use gguf_files::{U64, Writer, nll, smollm2};
use half::{bf16, f16};

// ---------------------------------------------------------------------------------------
// Dequantisation

/// xorshift64*: deterministic test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u8 {
        (self.next() % n) as u8
    }
    /// An f16 scale in [lo, hi): its bytes and exact value.
    fn scale(&mut self, lo: f32, hi: f32) -> ([u8; 2], f32) {
        let x = lo + (hi - lo) * (self.next() % 1000) as f32 / 1000.0;
        let h = f16::from_f32(x);
        (h.to_le_bytes(), h.to_f32())
    }
}

/// Packed blocks and the values ggml's dequantiser defines for them.
struct Blocks {
    ty: GgmlType,
    bytes: Vec<u8>,
    want: Vec<f32>,
}

/// 32 4-bit values packed as ggml does: value l in the low nibble of byte l, value l + 16
/// in the high nibble.
fn pack_nibbles(q: &[u8]) -> Vec<u8> {
    (0..16).map(|l| (q[l] & 15) | (q[l + 16] << 4)).collect()
}

fn q8_0(r: &mut Rng) -> Blocks {
    let (mut bytes, mut want) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        let (db, d) = r.scale(0.001, 0.1);
        bytes.extend(db);
        for _ in 0..32 {
            let q = r.below(256) as i8;
            bytes.push(q as u8);
            want.push(q as f32 * d);
        }
    }
    Blocks { ty: GgmlType::Q8_0, bytes, want }
}

/// Q4_0 (`with_min` false) or Q4_1 (true).
fn q4(r: &mut Rng, with_min: bool) -> Blocks {
    let (mut bytes, mut want) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        let (db, d) = r.scale(0.001, 0.1);
        let (mb, m) = r.scale(-0.5, 0.5);
        let q: Vec<u8> = (0..32).map(|_| r.below(16)).collect();
        bytes.extend(db);
        if with_min {
            bytes.extend(mb);
        }
        bytes.extend(pack_nibbles(&q));
        want.extend(q.iter().map(|&q| if with_min { d * q as f32 + m } else { d * (q as f32 - 8.0) }));
    }
    Blocks { ty: if with_min { GgmlType::Q4_1 } else { GgmlType::Q4_0 }, bytes, want }
}

/// Q5_0 or Q5_1: the fifth bit of value j is bit j of a little-endian u32.
fn q5(r: &mut Rng, with_min: bool) -> Blocks {
    let (mut bytes, mut want) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        let (db, d) = r.scale(0.001, 0.1);
        let (mb, m) = r.scale(-0.5, 0.5);
        let q: Vec<u8> = (0..32).map(|_| r.below(32)).collect();
        let qh: u32 = q.iter().enumerate().map(|(j, &q)| ((q >> 4) as u32) << j).sum();
        bytes.extend(db);
        if with_min {
            bytes.extend(mb);
        }
        bytes.extend(qh.to_le_bytes());
        bytes.extend(pack_nibbles(&q));
        want.extend(q.iter().map(|&q| if with_min { d * q as f32 + m } else { d * (q as f32 - 16.0) }));
    }
    Blocks { ty: if with_min { GgmlType::Q5_1 } else { GgmlType::Q5_0 }, bytes, want }
}

/// The 12 bytes of Q4_K/Q5_K 6-bit scales and minimums (ggml's `get_scale_min_k4`
/// read backwards).
fn pack_k_scales(sc: &[u8; 8], m: &[u8; 8]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for j in 0..4 {
        s[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
        s[j + 4] = m[j] | ((m[j + 4] >> 4) << 6);
        s[j + 8] = (sc[j + 4] & 15) | ((m[j + 4] & 15) << 4);
    }
    s
}

/// Q4_K (`bits` 4) or Q5_K (5): sub-block j holds values 32j.., its low nibbles at
/// qs[32·(j/2)..] (low half for even j, high for odd), the fifth bits in bit j of qh[l].
fn qk(r: &mut Rng, bits: u32) -> Blocks {
    let (mut bytes, mut want) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        let (db, d) = r.scale(0.001, 0.05);
        let (dmb, dmin) = r.scale(0.001, 0.05);
        let sc: [u8; 8] = std::array::from_fn(|_| r.below(64));
        let m: [u8; 8] = std::array::from_fn(|_| r.below(64));
        let q: Vec<u8> = (0..256).map(|_| r.below(1 << bits)).collect();
        let mut qs = vec![0u8; 128];
        let mut qh = vec![0u8; 32];
        for (e, &v) in q.iter().enumerate() {
            let (j, l) = (e / 32, e % 32);
            qs[32 * (j / 2) + l] |= (v & 15) << (4 * (j % 2));
            qh[l] |= (v >> 4) << j;
        }
        bytes.extend(db);
        bytes.extend(dmb);
        bytes.extend(pack_k_scales(&sc, &m));
        if bits == 5 {
            bytes.extend(&qh);
        }
        bytes.extend(&qs);
        want.extend(q.iter().enumerate().map(|(e, &v)| d * sc[e / 32] as f32 * v as f32 - dmin * m[e / 32] as f32));
    }
    Blocks { ty: if bits == 4 { GgmlType::Q4_K } else { GgmlType::Q5_K }, bytes, want }
}

/// Q6_K, packed as the inverse of ggml's `dequantize_row_q6_K`: per half of 128, value
/// l + 32k takes its low nibble from ql[l + 32·(k mod 2)] (low half for k < 2) and its top
/// two bits from bits 2k of qh[l].
fn q6_k(r: &mut Rng) -> Blocks {
    let (mut bytes, mut want) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        let q: Vec<u8> = (0..256).map(|_| r.below(64)).collect();
        let scales: Vec<i8> = (0..16).map(|_| r.below(256) as i8).collect();
        let (db, d) = r.scale(0.0001, 0.01);
        let (mut ql, mut qh) = (vec![0u8; 128], vec![0u8; 64]);
        for h in 0..2 {
            let q = &q[128 * h..];
            for l in 0..32 {
                ql[64 * h + l] = (q[l] & 15) | ((q[l + 64] & 15) << 4);
                ql[64 * h + l + 32] = (q[l + 32] & 15) | ((q[l + 96] & 15) << 4);
                qh[32 * h + l] = (q[l] >> 4) | ((q[l + 32] >> 4) << 2) | ((q[l + 64] >> 4) << 4) | ((q[l + 96] >> 4) << 6);
            }
        }
        bytes.extend(&ql);
        bytes.extend(&qh);
        bytes.extend(scales.iter().map(|&s| s as u8));
        bytes.extend(db);
        want.extend(q.iter().enumerate().map(|(e, &v)| d * scales[e / 16] as f32 * (v as f32 - 32.0)));
    }
    Blocks { ty: GgmlType::Q6_K, bytes, want }
}

fn floats(r: &mut Rng) -> Vec<Blocks> {
    let xs: Vec<f32> = (0..40).map(|_| (r.next() % 20001) as f32 / 1000.0 - 10.0).collect();
    let halves: Vec<f32> = xs.iter().map(|&x| f16::from_f32(x).to_f32()).collect();
    let brains: Vec<f32> = xs.iter().map(|&x| bf16::from_f32(x).to_f32()).collect();
    vec![
        Blocks { ty: GgmlType::F32, bytes: xs.iter().flat_map(|x| x.to_le_bytes()).collect(), want: xs.clone() },
        Blocks { ty: GgmlType::F16, bytes: halves.iter().flat_map(|&x| f16::from_f32(x).to_le_bytes()).collect(), want: halves },
        Blocks { ty: GgmlType::BF16, bytes: brains.iter().flat_map(|&x| bf16::from_f32(x).to_le_bytes()).collect(), want: brains },
    ]
}

fn all_blocks() -> Vec<Blocks> {
    let mut r = Rng(0x9E37_79B9_7F4A_7C15);
    let mut v = floats(&mut r);
    v.extend([
        q8_0(&mut r),
        q4(&mut r, false),
        q4(&mut r, true),
        q5(&mut r, false),
        q5(&mut r, true),
        qk(&mut r, 4),
        qk(&mut r, 5),
        q6_k(&mut r),
    ]);
    v
}

#[test]
fn dequantisation_of_every_supported_type_matches_the_ggml_formulas() {
    let mut report = Vec::new();
    for b in all_blocks() {
        assert_eq!(b.bytes.len() % b.ty.type_size(), 0, "{}", b.ty.name());
        let got = dequantize(b.ty, &b.bytes).unwrap_or_else(|| panic!("{} unsupported", b.ty.name()));
        // Same float operations in the same order as ggml: bit-identical.
        let worst = check(b.ty.name(), &got, &b.want, 0.0);
        report.push(format!("{} ({} values): max |diff| {worst:e}", b.ty.name(), got.len()));
    }
    eprintln!("dequantisation:\n  {}", report.join("\n  "));
    assert!(dequantize(GgmlType::from_id(10).unwrap(), &[0; 84]).is_none(), "Q2_K is not read");
}

// ---------------------------------------------------------------------------------------
// Container parsing

/// A small valid file: metadata of several types and two tensors.
fn small_file(version: u32) -> Writer {
    let mut w = Writer { version, alignment: 64, ..Default::default() };
    w.u32("general.alignment", 64)
        .str("general.architecture", "llama")
        .f32("test.f32", 0.25)
        .bool("test.bool", true)
        .raw("test.u64", U64, 7u64.to_le_bytes().to_vec())
        .strs("test.strings", &["a".into(), "Ġb c".into()])
        .i32s("test.ints", &[-1, 2, 3]);
    w.f32_tensor("a", &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let q8 = q8_0(&mut Rng(7));
    w.tensor("b", &[32, 2], 8, q8.bytes);
    w
}

#[test]
fn header_metadata_and_tensors_are_read_for_v2_and_v3() {
    let dir = tempfile::tempdir().unwrap();
    for version in [2, 3] {
        let path = small_file(version).write(dir.path(), &format!("v{version}.gguf"));
        let g = GgufFile::open(&path).unwrap();
        assert_eq!((g.version(), g.alignment()), (version, 64));
        assert_eq!(g.str_of("general.architecture").unwrap(), "llama");
        assert_eq!(g.get("test.f32"), Some(&GgufValue::F32(0.25)));
        assert_eq!(g.bool_opt("test.bool").unwrap(), Some(true));
        assert_eq!(g.u64_of("test.u64").unwrap(), 7);
        assert_eq!(g.strings_of("test.strings").unwrap(), vec!["a", "Ġb c"]);
        assert_eq!(g.get("test.ints"), Some(&GgufValue::Array(vec![GgufValue::I32(-1), GgufValue::I32(2), GgufValue::I32(3)])));
        let names: Vec<&str> = g.tensors().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        let a = g.tensor("a").unwrap();
        assert_eq!((a.shape(), a.dims.clone(), a.ggml_type), (vec![2, 3], vec![3, 2], GgmlType::F32));
        assert_eq!(g.tensor_f32(a).unwrap(), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let b = g.tensor("b").unwrap();
        assert_eq!((b.shape(), b.offset % 64), (vec![2, 32], 0));
        assert_eq!(g.tensor_f32(b).unwrap(), q8_0(&mut Rng(7)).want);
        // A required key of the wrong type names the key.
        let err = g.u64_of("test.f32").unwrap_err().to_string();
        assert!(err.contains("test.f32") && err.contains("float32"), "{err}");
    }
}

/// Opens the bytes as a file and returns the GGUF error (asserting the message names the file).
fn open_err(bytes: Vec<u8>) -> GgufError {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.gguf");
    std::fs::write(&path, bytes).unwrap();
    match GgufFile::open(&path) {
        Err(e @ ModelError::Gguf { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("bad.gguf"), "{msg}");
            let ModelError::Gguf { source, .. } = e else { unreachable!() };
            source
        }
        Err(e) => panic!("expected a GGUF error, got {e}"),
        Ok(_) => panic!("a malformed file was accepted"),
    }
}

#[test]
fn malformed_files_give_specific_errors() {
    let good = small_file(3).bytes();
    let mut w = small_file(3);
    w.magic = *b"GGML";
    assert_eq!(open_err(w.bytes()), GgufError::BadMagic { found: b"GGML".to_vec() });
    let mut w = small_file(3);
    w.version = 1;
    assert_eq!(open_err(w.bytes()), GgufError::UnsupportedVersion(1));
    assert!(matches!(open_err(vec![]), GgufError::Truncated { ref what, .. } if what == "the magic"));

    // Truncated inside a metadata value, inside a tensor info, inside tensor data.
    let at = |needle: &[u8]| good.windows(needle.len()).position(|w| w == needle).unwrap();
    let e = open_err(good[..at("Ġb c".as_bytes()) + 2].to_vec());
    assert!(matches!(&e, GgufError::Truncated { what, .. } if what.contains("test.strings")), "{e}");
    let e = open_err(good[..at(b"\x01\x00\x00\x00\x00\x00\x00\x00b") + 12].to_vec());
    assert!(matches!(&e, GgufError::Truncated { what, .. } if what.contains("tensor `b`")), "{e}");
    let e = open_err(good[..good.len() - 10].to_vec());
    assert!(matches!(&e, GgufError::OutOfBounds { tensor, .. } if tensor == "b"), "{e}");

    let mut w = small_file(3);
    w.tensors[1].type_id = 99;
    assert_eq!(open_err(w.bytes()), GgufError::UnknownType { tensor: "b".into(), id: 99 });
    let mut w = small_file(3);
    w.tensors[0].offset = Some(4096);
    assert!(matches!(open_err(w.bytes()), GgufError::OutOfBounds { tensor, start: 4096, .. } if tensor == "a"));
    let mut w = small_file(3);
    w.tensors[1].offset = Some(40);
    assert_eq!(open_err(w.bytes()), GgufError::Misaligned { tensor: "b".into(), offset: 40, alignment: 64 });
    let mut w = small_file(3);
    w.tensors[1].dims = vec![30, 2];
    assert!(matches!(open_err(w.bytes()), GgufError::BadShape { tensor, .. } if tensor == "b"));
    let mut w = small_file(3);
    w.tensors[1].name = "a".into();
    assert_eq!(open_err(w.bytes()), GgufError::Duplicate { what: "tensor", name: "a".into() });
    let mut w = small_file(3);
    w.kvs[0].2 = 48u32.to_le_bytes().to_vec();
    assert!(matches!(open_err(w.bytes()), GgufError::BadValue { key, .. } if key == "general.alignment"));
    let mut w = small_file(3);
    w.raw("test.bad", 13, vec![0; 4]);
    assert!(matches!(open_err(w.bytes()), GgufError::BadValue { key, message } if key == "test.bad" && message.contains("13")));
    // An array claiming more elements than the file holds is refused before allocating.
    let mut w = small_file(3);
    w.raw("test.huge", gguf_files::ARRAY, [gguf_files::U32.to_le_bytes().to_vec(), u64::MAX.to_le_bytes().to_vec()].concat());
    assert!(matches!(open_err(w.bytes()), GgufError::Truncated { what, .. } if what.contains("test.huge")));

    // A type ggml defines but we do not decode fails when the tensor is read, by name.
    let dir = tempfile::tempdir().unwrap();
    let mut w = small_file(3);
    w.tensor("c", &[256], 10, vec![0; 84]);
    let g = GgufFile::open(&w.write(dir.path(), "q2k.gguf")).unwrap();
    let err = g.tensor_f32(g.tensor("c").unwrap()).unwrap_err();
    assert!(
        matches!(&err, ModelError::Gguf { source: GgufError::UnsupportedType { tensor, type_name }, .. } if tensor == "c" && type_name == "Q2_K")
    );
    assert!(err.to_string().contains("q2k.gguf"), "{err}");
}

// ---------------------------------------------------------------------------------------
// LLaMA mapping

/// llama.cpp's convert_hf_to_gguf permutation, written from its numpy:
/// `w.reshape(n_head, 2, d/2, in).swapaxes(1, 2)`, i.e. gguf[h][i][j] = hf[h][j][i].
fn llama_cpp_permute(hf: &[f32], n_head: usize, row_len: usize) -> Vec<f32> {
    let d = hf.len() / row_len / n_head;
    let mut out = Vec::with_capacity(hf.len());
    for h in 0..n_head {
        for i in 0..d / 2 {
            for j in 0..2 {
                let row = h * d + j * (d / 2) + i;
                out.extend_from_slice(&hf[row * row_len..(row + 1) * row_len]);
            }
        }
    }
    out
}

#[test]
fn qk_permutation_round_trips() {
    // One head of 4 rows: HF pairs rows (0, 2) and (1, 3); llama.cpp makes them adjacent.
    assert_eq!(permute_qk(&[0.0, 1.0, 2.0, 3.0], 1, 1), [0.0, 2.0, 1.0, 3.0]);
    assert_eq!(unpermute_qk(&[0.0, 2.0, 1.0, 3.0], 1, 1), [0.0, 1.0, 2.0, 3.0]);
    let mut r = Rng(3);
    let (heads, d, row_len) = (3, 8, 5);
    let hf: Vec<f32> = (0..heads * d * row_len).map(|_| r.below(200) as f32).collect();
    let gg = permute_qk(&hf, heads, row_len);
    assert_eq!(gg, llama_cpp_permute(&hf, heads, row_len));
    assert_eq!(unpermute_qk(&gg, heads, row_len), hf);
    assert_eq!(permute_qk(&unpermute_qk(&hf, heads, row_len), heads, row_len), hf);
    assert_eq!(gguf::llama::hf_name("blk.12.attn_k.weight").as_deref(), Some("model.layers.12.self_attn.k_proj.weight"));
    assert_eq!(gguf::llama::hf_name("blk.0.ffn_norm.weight").as_deref(), Some("model.layers.0.post_attention_layernorm.weight"));
    assert_eq!(gguf::llama::hf_name("rope_freqs.weight"), None);
}

/// GPT-2's byte → printable character map (the byte-level BPE alphabet).
fn byte_char(b: u8) -> char {
    let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
    if printable(b) {
        return b as char;
    }
    let rank = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + rank).unwrap()
}

/// The tiny HF LLaMA fixture (GQA 4/2 heads, untied head) written as llama.cpp would: GGUF
/// names, q/k rows permuted, `llama.*` metadata, and a byte-level tokenizer whose ids are
/// the bytes, plus one merge ("To", id 256) and one control token ("<|end|>", 257).
fn tiny_llama_gguf(dir: &Path) -> std::path::PathBuf {
    tiny_llama_writer().write(dir, "tiny-llama.gguf")
}

/// The writer of [`tiny_llama_gguf`], for tests that add metadata.
fn tiny_llama_writer() -> Writer {
    let ck = golden("hf/llama.safetensors");
    let mut w = Writer::default();
    w.str("general.architecture", "llama")
        .u32("llama.context_length", 128)
        .u32("llama.embedding_length", 64)
        .u32("llama.block_count", 2)
        .u32("llama.feed_forward_length", 172)
        .u32("llama.attention.head_count", 4)
        .u32("llama.attention.head_count_kv", 2)
        .u32("llama.rope.dimension_count", 16)
        .f32("llama.rope.freq_base", 10000.0)
        .f32("llama.attention.layer_norm_rms_epsilon", 1e-6)
        .u32("llama.vocab_size", 256)
        .str("tokenizer.ggml.model", "gpt2")
        .str("tokenizer.ggml.pre", "default");
    let mut tokens: Vec<String> = (0..=255u8).map(|b| byte_char(b).to_string()).collect();
    tokens.extend(["To".into(), "<|end|>".into()]);
    let mut types = vec![1; 257];
    types.push(3);
    w.strs("tokenizer.ggml.tokens", &tokens).strs("tokenizer.ggml.merges", &["T o".into()]).i32s("tokenizer.ggml.token_type", &types);
    w.u32("tokenizer.ggml.bos_token_id", 1).u32("tokenizer.ggml.eos_token_id", 257);
    for name in ck.names() {
        let (values, shape) = ck.read_f32(&name).unwrap();
        let gguf_name = if name == "model.embed_tokens.weight" {
            "token_embd.weight".to_string()
        } else if name == "model.norm.weight" {
            "output_norm.weight".into()
        } else if name == "lm_head.weight" {
            "output.weight".into()
        } else {
            let rest = name.strip_prefix("model.layers.").unwrap();
            let (layer, rest) = rest.split_once('.').unwrap();
            let stem = match rest.trim_end_matches(".weight") {
                "self_attn.q_proj" => "attn_q",
                "self_attn.k_proj" => "attn_k",
                "self_attn.v_proj" => "attn_v",
                "self_attn.o_proj" => "attn_output",
                "mlp.gate_proj" => "ffn_gate",
                "mlp.up_proj" => "ffn_up",
                "mlp.down_proj" => "ffn_down",
                "input_layernorm" => "attn_norm",
                "post_attention_layernorm" => "ffn_norm",
                other => panic!("unexpected fixture tensor {other}"),
            };
            format!("blk.{layer}.{stem}.weight")
        };
        let values = match gguf_name.rsplit('.').nth(1) {
            Some("attn_q") => llama_cpp_permute(&values, 4, shape[1]),
            Some("attn_k") => llama_cpp_permute(&values, 2, shape[1]),
            _ => values,
        };
        w.f32_tensor(&gguf_name, &shape, &values);
    }
    w
}

fn tiny_llama_logits_check(model: &CausalLm<B>, what: &str) -> f32 {
    let g = golden("hf/logits.safetensors");
    let (ids_v, _) = g.read_f32("inputs/L64").unwrap();
    let (want, _) = g.read_f32("llama/default/L64/logits").unwrap();
    check(what, &values(model.forward(ids(&ids_v)).unwrap()), &want, 1e-4)
}

#[test]
fn a_llama_gguf_loads_converts_and_matches_transformers() {
    let dir = tempfile::tempdir().unwrap();
    let path = tiny_llama_gguf(dir.path());
    let source = ModelSource::open(&path).unwrap();
    let cfg = source.config();
    assert_eq!((cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.vocab_size), (4, 2, 16, 256));
    assert_eq!((cfg.tie_word_embeddings, cfg.rope.theta, cfg.rope.max_position_embeddings), (false, 10000.0, 128));
    assert_eq!((cfg.bos_token_id, cfg.eos_token_ids.clone()), (Some(1), vec![257]));
    let from_gguf = tiny_llama_logits_check(&source.load::<B>(&Default::default(), DType::F32).unwrap(), "gguf logits");

    let out = dir.path().join("hf");
    let converted = clex_models::convert_gguf::<B>(&path, &out, &Default::default()).unwrap();
    assert_eq!(converted.tokenizer_skipped, None);
    for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"] {
        assert!(out.join(f).is_file(), "{f} not written");
    }
    let from_dir = tiny_llama_logits_check(&load_path(&out).unwrap(), "converted logits");
    eprintln!("tiny LLaMA GGUF vs transformers: max |diff| {from_gguf:.2e} (GGUF), {from_dir:.2e} (converted HF directory)");

    // The embedded tokenizer: bytes, the merge, the control token; and the same from tokenizer.json.
    let tok = gguf::tokenizer(&GgufFile::open(&path).unwrap()).unwrap();
    let saved = tokenizers::Tokenizer::from_file(out.join("tokenizer.json")).unwrap();
    for t in [&tok, &saved] {
        let enc = t.encode("To be<|end|>", false).unwrap();
        assert_eq!(enc.get_ids(), [256, 32, 98, 101, 257]);
        assert_eq!(t.decode(enc.get_ids(), false).unwrap(), "To be<|end|>");
        assert_eq!(t.decode(enc.get_ids(), true).unwrap(), "To be");
    }
}

/// A GGUF is opened once: the file is deleted right after `ModelSource::open`, and the
/// config, tokenizer, BOS switch and weights still come from the one mapping (opening the
/// path again fails, so a method that re-opened it would too). The model loaded that way
/// equals the one loaded while the file was there, and transformers' logits.
#[test]
fn a_gguf_source_opens_its_file_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = tiny_llama_writer();
    w.bool("tokenizer.ggml.add_bos_token", true);
    let path = w.write(dir.path(), "once.gguf");
    let before = load_path(&path).unwrap();
    let source = ModelSource::open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(ModelSource::open(&path).is_err(), "{} is still there", path.display());

    assert_eq!((source.config().vocab_size, source.config().num_kv_heads), (256, 2));
    // Absent, the key means false: true can only come from the file.
    assert!(source.add_bos().unwrap());
    let tok = source.tokenizer().unwrap();
    assert_eq!(tok.encode("To be<|end|>", false).unwrap().get_ids(), [256, 32, 98, 101, 257]);
    let tokens: Vec<f32> = (0..40).map(|i| ((i * 37 + 5) % 256) as f32).collect();
    let want = values(before.forward(ids(&tokens)).unwrap());
    for _ in 0..2 {
        let model = source.load::<B>(&Default::default(), DType::F32).unwrap();
        assert_eq!(values(model.forward(ids(&tokens)).unwrap()), want);
        tiny_llama_logits_check(&model, "GGUF loaded after its file was deleted");
    }
}

#[test]
fn gguf_mapping_errors_name_the_key_or_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = small_file(3);
    w.kvs.retain(|(k, _, _)| k != "general.architecture");
    w.str("general.architecture", "gpt2");
    let err = ModelSource::open(&w.write(dir.path(), "gpt2.gguf")).err().unwrap().to_string();
    assert!(err.contains("gpt2.gguf") && err.contains("general.architecture") && err.contains("gpt2"), "{err}");
    let err = ModelSource::open(&small_file(3).write(dir.path(), "nokeys.gguf")).err().unwrap().to_string();
    assert!(err.contains("nokeys.gguf") && err.contains("llama.attention.head_count"), "{err}");
    let g = GgufFile::open(&small_file(3).write(dir.path(), "names.gguf")).unwrap();
    let err = gguf::tokenizer(&g).unwrap_err().to_string();
    assert!(err.contains("tokenizer.ggml.model"), "{err}");
    let mut w = Writer::default();
    w.str("general.architecture", "llama").u32("llama.attention.head_count", 1);
    w.f32_tensor("rope_freqs.weight", &[8], &[1.0; 8]);
    let err = gguf::llama::hf_tensors(&GgufFile::open(&w.write(dir.path(), "extra.gguf")).unwrap()).unwrap_err().to_string();
    assert!(err.contains("extra.gguf") && err.contains("rope_freqs.weight"), "{err}");
}

// ---------------------------------------------------------------------------------------
// SmolLM2-135M-Instruct (needs `cargo xtask fetch-smollm2`)

/// transformers' outputs on the first 128 tokens of a validation text.
struct Golden {
    ids: Vec<f32>,
    rows: Vec<usize>,
    logits: Vec<f32>,
    argmax: Vec<u32>,
    nll: Vec<f32>,
}

fn smollm2_golden() -> Golden {
    let g = golden("smollm2/smollm2_golden.safetensors");
    let read = |name: &str| g.read_f32(name).unwrap().0;
    Golden {
        ids: read("input_ids"),
        rows: read("logits_rows").iter().map(|&r| r as usize).collect(),
        logits: read("logits_at_rows"),
        argmax: read("argmax").iter().map(|&a| a as u32).collect(),
        nll: read("nll"),
    }
}

/// Checks a loaded SmolLM2 against the golden and prints the measured errors.
fn check_smollm2(what: &str, model: &CausalLm<B>, g: &Golden) {
    let vocab = model.config().vocab_size;
    let logits = values(model.forward(ids(&g.ids)).unwrap());
    let mut row_errors = Vec::new();
    for (k, &r) in g.rows.iter().enumerate() {
        let got = &logits[r * vocab..(r + 1) * vocab];
        row_errors
            .push(format!("row {r}: {:.2e}", check(&format!("{what} logits row {r}"), got, &g.logits[k * vocab..(k + 1) * vocab], 1e-3)));
    }
    let rows: Vec<&[f32]> = logits.chunks(vocab).collect();
    let argmax: Vec<u32> = rows.iter().map(|r| clex_models::sampling::argmax(r)).collect();
    let mismatches = argmax.iter().zip(&g.argmax).filter(|(a, b)| a != b).count();
    let nlls: Vec<f32> = (0..g.nll.len()).map(|i| nll(rows[i], g.ids[i + 1] as usize) as f32).collect();
    let nll_err = check(&format!("{what} NLL"), &nlls, &g.nll, 1e-3);
    let mean = nlls.iter().map(|&x| x as f64).sum::<f64>() / nlls.len() as f64;
    let want_mean = g.nll.iter().map(|&x| x as f64).sum::<f64>() / g.nll.len() as f64;
    eprintln!(
        "SmolLM2 from {what}: max |logit diff| {}; argmax mismatches {mismatches}/{}; NLL max |diff| {nll_err:.2e}, mean {mean:.6} (transformers {want_mean:.6})",
        row_errors.join(", "),
        argmax.len()
    );
    assert_eq!(mismatches, 0, "{what}: argmax differs at {mismatches} positions");
    assert!((mean - want_mean).abs() < 1e-3);
}

#[test]
fn smollm2_logits_argmax_and_nll_match_transformers() {
    let Some(path) = smollm2() else { return };
    let g = smollm2_golden();
    let model = load_path(&path).unwrap();
    check_smollm2("the GGUF", &model, &g);
    drop(model);
    let dir = tempfile::tempdir().unwrap();
    clex_models::convert_gguf::<B>(&path, dir.path(), &Default::default()).unwrap();
    let model = load_path(dir.path()).unwrap();
    check_smollm2("the converted HF directory", &model, &g);
}

#[test]
fn smollm2_tokenizer_round_trips_the_golden_ids() {
    let Some(path) = smollm2() else { return };
    let g = GgufFile::open(&path).unwrap();
    let tok = gguf::tokenizer(&g).unwrap();
    assert_eq!(tok.get_vocab_size(true), 49152);
    let ids: Vec<u32> = smollm2_golden().ids.iter().map(|&i| i as u32).collect();
    let text = tok.decode(&ids, false).unwrap();
    let again = tok.encode(text.as_str(), false).unwrap().get_ids().to_vec();
    let same = again == ids;
    eprintln!("SmolLM2 tokenizer: decode → encode of the {} golden ids gives {} ids, identical: {same}", ids.len(), again.len());
    assert!(same, "round trip changed the ids:\n{ids:?}\n{again:?}");
    let enc = tok.encode("The capital of France is", false).unwrap();
    let pieces = enc.get_tokens().to_vec();
    eprintln!("\"The capital of France is\" → {:?} {pieces:?}", enc.get_ids());
    assert_eq!(pieces, ["The", "Ġcapital", "Ġof", "ĠFrance", "Ġis"]);
    assert_eq!(tok.encode("<|im_start|>user", false).unwrap().get_ids()[0], 1, "control tokens are special added tokens");
    assert_eq!(tok.encode("2024", false).unwrap().get_ids().len(), 4, "digits are split one by one");
}

#[test]
fn smollm2_greedy_generation_says_paris() {
    let Some(path) = smollm2() else { return };
    let model = load_path(&path).unwrap();
    let tok = gguf::tokenizer(&GgufFile::open(&path).unwrap()).unwrap();
    let prompt = "The capital of France is";
    let mut seq: Vec<f32> = tok.encode(prompt, false).unwrap().get_ids().iter().map(|&i| i as f32).collect();
    let mut cache = model.new_cache(CachePolicy::Reference);
    let vocab = model.config().vocab_size;
    let mut out = Vec::new();
    let mut input = seq.clone();
    for _ in 0..8 {
        let logits = values(model.forward_with(ids(&input), Some(&mut cache), &ForwardOptions::default()).unwrap().logits);
        let next = clex_models::sampling::argmax(&logits[logits.len() - vocab..]);
        out.push(next);
        seq.push(next as f32);
        input = vec![next as f32];
    }
    let text = tok.decode(&out, false).unwrap();
    eprintln!("greedy: {prompt:?} → {text:?}");
    assert!(text.starts_with(" Paris"), "{text:?}");
}
