//! The hostile-input corpus (issue 18): a seeded, deterministic generator of malformed model
//! directories and GGUF files, from the tiny LLaMA fixtures: config.json keys set to values
//! of the wrong type, sign, size or precision; safetensors headers and data bent (dtypes,
//! shapes, offsets, header lengths, NaN values); tokenizers whose ids leave the model's
//! vocabulary (added, padding, post-processor tokens, vocabulary holes) or that are not
//! tokenizers at all; GGUF metadata and data-section arithmetic (alignment, zero-width rows,
//! NaN bases, ids past the vocabulary). Plus the structure-aware mutators the parser fuzzing
//! uses. Shared by clex-models' `hostile_parsers` and clex-cli's `hostile` tests (by
//! `#[path]`), so it needs only std, serde_json and `crate::gguf_files`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::gguf_files::Writer;

/// What a case breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// config.json.
    Config,
    /// model.safetensors.
    Safetensors,
    /// tokenizer.json.
    Tokenizer,
    /// A .gguf file.
    Gguf,
}

/// One malformed model: `model` is a directory (config.json, model.safetensors,
/// tokenizer.json) or a .gguf file.
#[derive(Debug, Clone)]
pub struct Case {
    pub kind: Kind,
    pub name: String,
    pub model: PathBuf,
}

/// A seeded SplitMix64: deterministic, no dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../clex-models/tests/fixtures")
}

/// The byte-level alphabet character of byte `b` (GPT-2's bytes_to_unicode).
fn byte_char(b: u8) -> char {
    let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
    if printable(b) {
        return b as char;
    }
    let rank = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + rank).unwrap()
}

/// A byte-level BPE tokenizer.json whose 256 ids are the bytes (no merges).
pub fn tokenizer_json() -> Value {
    let vocab: serde_json::Map<String, Value> = (0..=255u8).map(|b| (byte_char(b).to_string(), json!(b))).collect();
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": null,
        "pre_tokenizer": byte_level, "post_processor": byte_level, "decoder": byte_level,
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": []}
    })
}

/// The tensors of a safetensors file: (name, dtype, shape, bytes), in header order.
pub fn read_safetensors(path: &Path) -> Vec<(String, String, Vec<u64>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    let mut out = Vec::new();
    for (name, info) in header.as_object().unwrap() {
        if name == "__metadata__" {
            continue;
        }
        let offsets: Vec<usize> = info["data_offsets"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        let shape = info["shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        out.push((name.clone(), info["dtype"].as_str().unwrap().to_string(), shape, data[offsets[0]..offsets[1]].to_vec()));
    }
    out
}

/// A safetensors file from its header value and data.
pub fn safetensors_bytes(header: &Value, data: &[u8]) -> Vec<u8> {
    let h = serde_json::to_vec(header).unwrap();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend(data);
    out
}

/// The header and data of the tensors.
pub fn safetensors_parts(tensors: &[(String, String, Vec<u64>, Vec<u8>)]) -> (Value, Vec<u8>) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        header.insert(name.clone(), json!({"dtype": dtype, "shape": shape, "data_offsets": [data.len(), data.len() + bytes.len()]}));
        data.extend(bytes);
    }
    (Value::Object(header), data)
}

/// Values a JSON key can be set to that no config means: wrong types, signs, sizes that
/// overflow products or ask for terabytes, precisions that vanish in f32, a 1 MB string.
pub fn hostile_values() -> Vec<Value> {
    vec![
        json!(-1),
        json!(0),
        json!(3),
        json!(1u64 << 31),
        json!(1u64 << 40),
        json!(u64::MAX),
        json!(1.5),
        json!(1e300),
        json!(-1e300),
        json!(1e-300),
        json!(1e-9),
        json!("1e-6"),
        json!("x".repeat(1 << 17)),
        json!(null),
        json!(true),
        json!([]),
        json!({}),
    ]
}

/// The config keys the corpus bends (dotted: inside the rope block).
pub const CONFIG_KEYS: &[&str] = &[
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "max_position_embeddings",
    "rms_norm_eps",
    "rope_theta",
    "bos_token_id",
    "eos_token_id",
    "tie_word_embeddings",
    "partial_rotary_factor",
    "model_type",
    "hidden_act",
    "rope_scaling.max_factor",
    "rope_scaling.param_factor",
    "rope_scaling.time_dt",
    "rope_scaling.act",
    "rope_scaling.type",
];

/// Whole rope blocks no config means (YaRN, Llama-3, LongRoPE, CLEX at their edges).
pub fn hostile_rope_blocks() -> Vec<Value> {
    vec![
        json!({"type": "yarn", "factor": 4, "attention_factor": 0}),
        json!({"type": "yarn", "factor": 4, "attention_factor": -1}),
        json!({"type": "yarn", "factor": 4, "original_max_position_embeddings": 0}),
        json!({"type": "yarn", "factor": 1e12}),
        json!({"type": "linear", "factor": 1e300}),
        json!({"type": "dynamic", "factor": -2}),
        json!({"type": "llama3", "factor": 8, "low_freq_factor": 4, "high_freq_factor": 4, "original_max_position_embeddings": 16}),
        json!({"type": "llama3", "factor": 8, "low_freq_factor": 1, "high_freq_factor": 4, "original_max_position_embeddings": 0}),
        json!({"type": "longrope", "short_factor": vec![0.0; 8], "long_factor": vec![1.0; 8], "original_max_position_embeddings": 16}),
        json!({"type": "longrope", "short_factor": vec![1.0; 3], "long_factor": vec![1.0; 8], "original_max_position_embeddings": 16}),
        json!({"type": "clex", "max_factor": 8, "param_factor": 1, "act": "tanh", "time_dt": 1e-9}),
        json!({"type": "clex", "max_factor": 8, "param_factor": 1, "act": "tanh", "time_dt": 1e-300}),
        json!({"type": "clex", "max_factor": 1u64 << 40, "param_factor": 1, "act": "tanh", "time_dt": 0.01}),
        json!({"type": "clex", "max_factor": 8, "param_factor": u64::MAX, "act": "tanh", "time_dt": 0.01}),
        json!({"type": "clex", "max_factor": 8, "param_factor": 1u64 << 62, "act": "tanh", "time_dt": 0.01}),
        json!({"type": "clex", "max_factor": 60000, "param_factor": 1000, "act": "tanh", "time_dt": 0.1}),
        json!({"rope_type": {"nested": true}}),
        json!({"full_attention": {"rope_type": "default"}}),
    ]
}

/// `config` with the dotted `key` set to `value`.
fn set(config: &Value, key: &str, value: Value) -> Value {
    let mut c = config.clone();
    match key.split_once('.') {
        Some((block, inner)) => {
            if !c[block].is_object() {
                c[block] = json!({});
            }
            c[block][inner] = value;
        }
        None => c[key] = value,
    }
    c
}

/// Writes a model directory: `config`, safetensors `weights` (bytes, or None for a copy of
/// the good fixture: a copy, not a link, since tests overwrite files in these directories),
/// `tokenizer` (text).
fn write_dir(dir: &Path, config: &str, weights: Option<&[u8]>, tokenizer: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), config).unwrap();
    let target = dir.join("model.safetensors");
    match weights {
        Some(bytes) => std::fs::write(&target, bytes).unwrap(),
        None => {
            std::fs::copy(fixtures().join("clex/llama_clex.safetensors"), &target).unwrap();
        }
    }
    std::fs::write(dir.join("tokenizer.json"), tokenizer).unwrap();
}

/// The good materials every case starts from.
pub struct Base {
    /// The CLEX LLaMA config (as text, keys in file order).
    pub config: Value,
    /// Its safetensors file.
    pub weights: Vec<u8>,
    /// A 256-id byte-level tokenizer.
    pub tokenizer: Value,
}

impl Base {
    pub fn new() -> Self {
        let config: Value = serde_json::from_str(&std::fs::read_to_string(fixtures().join("clex/llama_clex.json")).unwrap()).unwrap();
        Base { config, weights: std::fs::read(fixtures().join("clex/llama_clex.safetensors")).unwrap(), tokenizer: tokenizer_json() }
    }

    /// A good model directory under `dir`.
    pub fn write(&self, dir: &Path) {
        write_dir(dir, &self.config.to_string(), None, &self.tokenizer.to_string());
    }
}

/// Malformed configs: every key × every hostile value, the hostile rope blocks, and text
/// that is not a config.
fn config_cases(base: &Base, root: &Path, out: &mut Vec<Case>) {
    let tok = base.tokenizer.to_string();
    let mut configs: Vec<(String, String)> = Vec::new();
    for key in CONFIG_KEYS {
        for (i, v) in hostile_values().into_iter().enumerate() {
            configs.push((format!("{key}={i}"), set(&base.config, key, v).to_string()));
        }
    }
    for (i, block) in hostile_rope_blocks().into_iter().enumerate() {
        configs.push((format!("rope_block_{i}"), set(&base.config, "rope_scaling", block).to_string()));
    }
    for (i, text) in ["", "{", "[1, 2]", "null", "{\"model_type\": \"llama\"}", "\u{feff}{}", "{\"a\": 1e999}"].iter().enumerate() {
        configs.push((format!("text_{i}"), text.to_string()));
    }
    // bos / eos just past the vocabulary, as lists too.
    for (key, v) in [("bos_token_id", json!(256)), ("eos_token_id", json!([2, 256])), ("pad_token_id", json!(100000))] {
        configs.push((format!("{key}_beyond_vocab"), set(&base.config, key, v).to_string()));
    }
    for (name, text) in configs {
        let dir = root.join(format!("config-{}", out.len()));
        write_dir(&dir, &text, None, &tok);
        out.push(Case { kind: Kind::Config, name, model: dir });
    }
}

/// Malformed safetensors files: header fields bent, header length lies, truncation, NaN and
/// infinite values, an extra tensor.
fn safetensors_cases(base: &Base, root: &Path, rng: &mut Rng, out: &mut Vec<Case>) {
    let tensors = read_safetensors(&fixtures().join("clex/llama_clex.safetensors"));
    let (header, data) = safetensors_parts(&tensors);
    let names: Vec<String> = tensors.iter().map(|t| t.0.clone()).collect();
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for (i, dtype) in ["F64", "I8", "BOOL", "XX", "U64", "F8_E4M3", "I64"].iter().enumerate() {
        let mut h = header.clone();
        h[rng.pick(&names).as_str()]["dtype"] = json!(dtype);
        files.push((format!("dtype_{i}_{dtype}"), safetensors_bytes(&h, &data)));
    }
    let shapes = [json!([0]), json!([1u64 << 40, 1u64 << 40]), json!([-1]), json!([u64::MAX]), json!("x"), json!([64, 64, 64, 64, 64])];
    for (i, shape) in shapes.iter().enumerate() {
        let mut h = header.clone();
        h[rng.pick(&names).as_str()]["shape"] = shape.clone();
        files.push((format!("shape_{i}"), safetensors_bytes(&h, &data)));
    }
    let offsets = [json!([0, 1u64 << 60]), json!([8, 4]), json!([0, 0]), json!([u64::MAX, u64::MAX]), json!([0])];
    for (i, o) in offsets.iter().enumerate() {
        let mut h = header.clone();
        h[rng.pick(&names).as_str()]["data_offsets"] = o.clone();
        files.push((format!("offsets_{i}"), safetensors_bytes(&h, &data)));
    }
    let good = safetensors_bytes(&header, &data);
    for (i, len) in [0u64, 1, 7, u64::MAX, 1 << 40, good.len() as u64].iter().enumerate() {
        let mut b = good.clone();
        b[..8].copy_from_slice(&len.to_le_bytes());
        files.push((format!("header_len_{i}"), b));
    }
    for (i, cut) in [0usize, 4, 8, 20, good.len() / 2, good.len() - 1].iter().enumerate() {
        files.push((format!("truncated_{i}"), good[..*cut].to_vec()));
    }
    for (i, bad) in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY].iter().enumerate() {
        let mut b = good.clone();
        let at = b.len() - 4 * (1 + rng.below(1000));
        b[at..at + 4].copy_from_slice(&bad.to_le_bytes());
        files.push((format!("nonfinite_{i}"), b));
    }
    let mut extra = tensors.clone();
    extra.push(("model.layers.99.mlp.up_proj.weight".into(), "F32".into(), vec![1], vec![0; 4]));
    let (h, d) = safetensors_parts(&extra);
    files.push(("extra_tensor".into(), safetensors_bytes(&h, &d)));
    let mut h = header.clone();
    h["__metadata__"] = json!({"format": ["not", "a", "string"]});
    files.push(("metadata_not_strings".into(), safetensors_bytes(&h, &data)));
    files.push(("header_not_json".into(), {
        let mut b = (5u64).to_le_bytes().to_vec();
        b.extend(b"{{{{{");
        b
    }));
    for i in 0..24 {
        let mut h = header.clone();
        let name = rng.pick(&names).clone();
        mutate_json(&mut h[name.as_str()], rng);
        files.push((format!("random_{i}"), safetensors_bytes(&h, &data)));
    }
    let tok = base.tokenizer.to_string();
    let config = base.config.to_string();
    for (name, bytes) in files {
        let dir = root.join(format!("safetensors-{}", out.len()));
        write_dir(&dir, &config, Some(&bytes), &tok);
        out.push(Case { kind: Kind::Safetensors, name, model: dir });
    }
}

/// Malformed tokenizers: ids past the model's vocabulary by every route, holes, not a
/// tokenizer, random JSON mutations.
fn tokenizer_cases(base: &Base, root: &Path, rng: &mut Rng, out: &mut Vec<Case>) {
    let good = &base.tokenizer;
    let mut toks: Vec<(String, String)> = Vec::new();
    let added = |id: Value| {
        let mut t = good.clone();
        t["added_tokens"] = json!([{"id": id, "content": "<|x|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}]);
        t
    };
    for (i, id) in [json!(256), json!(4096), json!(u32::MAX), json!(-1), json!(1u64 << 40), json!("7")].into_iter().enumerate() {
        toks.push((format!("added_id_{i}"), added(id).to_string()));
    }
    for (i, id) in [json!(300), json!(u32::MAX), json!(-5)].into_iter().enumerate() {
        let mut t = good.clone();
        t["model"]["vocab"]["\u{0100}hole"] = id;
        toks.push((format!("vocab_hole_{i}"), t.to_string()));
    }
    // The vocabulary keeps 256 entries but the last one's id is far out.
    let mut t = good.clone();
    t["model"]["vocab"]["\u{00ff}"] = json!(70000);
    toks.push(("vocab_same_count_big_id".into(), t.to_string()));
    for (i, id) in [300u64, 1 << 31].into_iter().enumerate() {
        let mut t = good.clone();
        t["post_processor"] = json!({"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}], "special_tokens": {"<s>": {"id": "<s>", "ids": [id], "tokens": ["<s>"]}}});
        toks.push((format!("template_id_{i}"), t.to_string()));
        let mut t = good.clone();
        t["post_processor"] = json!({"type": "BertProcessing", "sep": ["[SEP]", id], "cls": ["[CLS]", 1]});
        toks.push((format!("bert_sep_{i}"), t.to_string()));
        let mut t = good.clone();
        t["padding"] = json!({"strategy": "BatchLongest", "direction": "Right", "pad_to_multiple_of": null, "pad_id": id, "pad_type_id": 0, "pad_token": "<pad>"});
        toks.push((format!("padding_id_{i}"), t.to_string()));
    }
    for (i, text) in ["", "{", "[]", "null", "{\"model\": {\"type\": \"Nope\"}}", "{\"model\": 3}", "\u{0}\u{1}"].iter().enumerate() {
        toks.push((format!("text_{i}"), text.to_string()));
    }
    let mut t = good.clone();
    t["model"]["merges"] = json!(["a b", "c"]);
    toks.push(("merges_unknown".into(), t.to_string()));
    let mut t = good.clone();
    t["model"] = json!({"type": "Unigram", "unk_id": 5, "vocab": [], "byte_fallback": false});
    toks.push(("unigram_empty".into(), t.to_string()));
    let mut t = good.clone();
    t["model"] = json!({"type": "WordLevel", "vocab": {"a": 0, "b": 100000}, "unk_token": "a"});
    toks.push(("wordlevel_big_id".into(), t.to_string()));
    for i in 0..30 {
        let mut t = good.clone();
        let slot =
            *rng.pick(&["added_tokens", "post_processor", "padding", "pre_tokenizer", "decoder", "normalizer", "truncation", "model"]);
        mutate_json(&mut t[slot], rng);
        toks.push((format!("random_{i}_{slot}"), t.to_string()));
    }
    let config = base.config.to_string();
    for (name, text) in toks {
        let dir = root.join(format!("tokenizer-{}", out.len()));
        write_dir(&dir, &config, None, &text);
        out.push(Case { kind: Kind::Tokenizer, name, model: dir });
    }
}

/// A GGUF writer holding the tiny HF LLaMA fixture (names and shapes as llama.cpp writes them;
/// the q/k row order does not matter to these tests) and a 256-token byte tokenizer.
pub fn tiny_gguf() -> Writer {
    let mut w = Writer::default();
    w.str("general.architecture", "llama")
        .u32("llama.context_length", 128)
        .u32("llama.embedding_length", 64)
        .u32("llama.block_count", 2)
        .u32("llama.feed_forward_length", 172)
        .u32("llama.attention.head_count", 4)
        .u32("llama.attention.head_count_kv", 2)
        .f32("llama.rope.freq_base", 10000.0)
        .f32("llama.attention.layer_norm_rms_epsilon", 1e-6)
        .u32("llama.vocab_size", 256)
        .str("tokenizer.ggml.model", "gpt2")
        .str("tokenizer.ggml.pre", "default");
    let tokens: Vec<String> = (0..=255u8).map(|b| byte_char(b).to_string()).collect();
    w.strs("tokenizer.ggml.tokens", &tokens).strs("tokenizer.ggml.merges", &[]);
    w.u32("tokenizer.ggml.bos_token_id", 1).u32("tokenizer.ggml.eos_token_id", 2);
    for (name, _, shape, bytes) in read_safetensors(&fixtures().join("hf/llama.safetensors")) {
        let gguf = gguf_name(&name);
        let dims: Vec<u64> = shape.iter().rev().copied().collect();
        w.tensor(&gguf, &dims, 0, bytes);
    }
    w
}

/// The llama.cpp name of an HF LLaMA tensor.
fn gguf_name(hf: &str) -> String {
    match hf {
        "model.embed_tokens.weight" => return "token_embd.weight".into(),
        "model.norm.weight" => return "output_norm.weight".into(),
        "lm_head.weight" => return "output.weight".into(),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.").unwrap();
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
}

/// `w` with metadata `key` replaced by (type id, bytes).
fn with_kv(w: &Writer, key: &str, ty: u32, value: Vec<u8>) -> Writer {
    let mut kvs: Vec<(String, u32, Vec<u8>)> = w.kvs.iter().filter(|(k, _, _)| k != key).cloned().collect();
    kvs.push((key.into(), ty, value));
    Writer { magic: w.magic, version: w.version, alignment: w.alignment, kvs, tensors: clone_tensors(w) }
}

fn clone_tensors(w: &Writer) -> Vec<crate::gguf_files::Tensor> {
    w.tensors
        .iter()
        .map(|t| crate::gguf_files::Tensor {
            name: t.name.clone(),
            dims: t.dims.clone(),
            type_id: t.type_id,
            data: t.data.clone(),
            offset: t.offset,
        })
        .collect()
}

/// The GGUF metadata keys the corpus bends.
pub const GGUF_KEYS: &[&str] = &[
    "llama.context_length",
    "llama.embedding_length",
    "llama.block_count",
    "llama.feed_forward_length",
    "llama.attention.head_count",
    "llama.attention.head_count_kv",
    "llama.attention.key_length",
    "llama.rope.freq_base",
    "llama.attention.layer_norm_rms_epsilon",
    "llama.vocab_size",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "general.alignment",
    "llama.rope.scaling.factor",
];

/// Malformed GGUF files: every bent key × values (0, huge, NaN, wrong type), alignment and
/// data-section arithmetic, zero-width rows, swapped shapes, unknown types, NaN weights, and
/// random byte mutations of the header.
fn gguf_cases(root: &Path, rng: &mut Rng, out: &mut Vec<Case>) {
    use crate::gguf_files::{F32, STRING, U32, U64};
    let good = tiny_gguf();
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let values: Vec<(&str, u32, Vec<u8>)> = vec![
        ("0", U32, 0u32.to_le_bytes().to_vec()),
        ("3", U32, 3u32.to_le_bytes().to_vec()),
        ("2^32-1", U32, u32::MAX.to_le_bytes().to_vec()),
        ("2^40", U64, (1u64 << 40).to_le_bytes().to_vec()),
        ("2^63", U64, (1u64 << 63).to_le_bytes().to_vec()),
        ("nan", F32, f32::NAN.to_le_bytes().to_vec()),
        ("-inf", F32, f32::NEG_INFINITY.to_le_bytes().to_vec()),
        ("1e-30", F32, 1e-30f32.to_le_bytes().to_vec()),
        ("string", STRING, {
            let mut b = 3u64.to_le_bytes().to_vec();
            b.extend(b"abc");
            b
        }),
    ];
    for key in GGUF_KEYS {
        for (vname, ty, bytes) in &values {
            files.push((format!("{key}={vname}"), with_kv(&good, key, *ty, bytes.clone()).bytes()));
        }
    }
    for (i, a) in [1u64 << 40, 1 << 63, 3, 0, 1 << 20].iter().enumerate() {
        let w = with_kv(&good, "general.alignment", U64, a.to_le_bytes().to_vec());
        // Written with the file's own alignment where the writer can (1 << 20 is valid).
        files.push((format!("alignment_{i}"), w.bytes()));
    }
    for (i, dims) in [vec![0u64, 64], vec![64, 0], vec![0], vec![1u64 << 40, 1 << 40], vec![16, 4, 2, 2, 2]].into_iter().enumerate() {
        let mut w = with_kv(&good, "x.dummy", U32, vec![0; 4]);
        let t = w.tensors.iter_mut().find(|t| t.name == "blk.0.attn_q.weight").unwrap();
        t.dims = dims;
        files.push((format!("qdims_{i}"), w.bytes()));
    }
    let mut w = with_kv(&good, "x.dummy", U32, vec![0; 4]);
    let t = w.tensors.iter_mut().find(|t| t.name == "token_embd.weight").unwrap();
    t.dims.reverse();
    t.dims = vec![t.dims[0] / 2, t.dims[1] * 2];
    files.push(("embd_reshaped".into(), w.bytes()));
    for (i, ty) in [99u32, 2, 12, 30].iter().enumerate() {
        let mut w = with_kv(&good, "x.dummy", U32, vec![0; 4]);
        w.tensors.iter_mut().find(|t| t.name == "blk.1.ffn_up.weight").unwrap().type_id = *ty;
        files.push((format!("type_{i}"), w.bytes()));
    }
    for (i, off) in [u64::MAX, 1 << 40, 32].iter().enumerate() {
        let mut w = with_kv(&good, "x.dummy", U32, vec![0; 4]);
        w.tensors[1].offset = Some(*off);
        files.push((format!("offset_{i}"), w.bytes()));
    }
    let mut w = with_kv(&good, "x.dummy", U32, vec![0; 4]);
    let t = w.tensors.iter_mut().find(|t| t.name == "output_norm.weight").unwrap();
    t.data[..4].copy_from_slice(&f32::NAN.to_le_bytes());
    files.push(("nan_weight".into(), w.bytes()));
    let mut w = with_kv(&good, "x.dummy", U32, vec![0; 4]);
    w.tensor("blk.99.attn_norm.weight", &[64], 0, vec![0; 256]);
    files.push(("layer_beyond_block_count".into(), w.bytes()));
    let w = with_kv(&good, "llama.rope.scaling.type", STRING, {
        let mut b = 4u64.to_le_bytes().to_vec();
        b.extend(b"yarn");
        b
    });
    files.push(("yarn_without_original".into(), with_kv(&w, "llama.rope.scaling.factor", F32, 4f32.to_le_bytes().to_vec()).bytes()));
    let mut w = with_kv(&good, "x.dummy", U32, vec![0; 4]);
    w.kvs.retain(|(k, _, _)| k != "tokenizer.ggml.tokens");
    let mut b = STRING.to_le_bytes().to_vec();
    b.extend(u64::MAX.to_le_bytes());
    w.kvs.push(("tokenizer.ggml.tokens".into(), crate::gguf_files::ARRAY, b));
    files.push(("tokens_count_huge".into(), w.bytes()));
    let bytes = good.bytes();
    for i in 0..40 {
        files.push((format!("mutated_{i}"), mutate_bytes(&bytes, rng, header_len(&good))));
    }
    for (name, bytes) in files {
        let path = root.join(format!("gguf-{}.gguf", out.len()));
        std::fs::write(&path, bytes).unwrap();
        out.push(Case { kind: Kind::Gguf, name, model: path });
    }
}

/// Bytes before a writer's data section (metadata and tensor infos).
pub fn header_len(w: &Writer) -> usize {
    let data: usize = w.tensors.iter().map(|t| t.data.len().div_ceil(w.alignment as usize) * w.alignment as usize).sum();
    w.bytes().len().saturating_sub(data)
}

/// The whole corpus under `root`, from `seed`.
pub fn corpus(root: &Path, seed: u64) -> Vec<Case> {
    let base = Base::new();
    let mut rng = Rng(seed);
    let mut out = Vec::new();
    config_cases(&base, root, &mut out);
    safetensors_cases(&base, root, &mut rng, &mut out);
    tokenizer_cases(&base, root, &mut rng, &mut out);
    gguf_cases(root, &mut rng, &mut out);
    out
}

/// Replaces a random node of `v` (or `v` itself) with a hostile value, or edits it.
pub fn mutate_json(v: &mut Value, rng: &mut Rng) {
    // Walk down a few levels at random, as a JSON pointer.
    let mut pointer = String::new();
    let mut at: &Value = v;
    for _ in 0..rng.below(4) {
        let (step, next) = match at {
            Value::Object(m) if !m.is_empty() => {
                let (k, next) = m.iter().nth(rng.below(m.len())).unwrap();
                (k.replace('~', "~0").replace('/', "~1"), next)
            }
            Value::Array(a) if !a.is_empty() => {
                let i = rng.below(a.len());
                (i.to_string(), &a[i])
            }
            _ => break,
        };
        pointer.push('/');
        pointer.push_str(&step);
        at = next;
    }
    let node = v.pointer_mut(&pointer).unwrap();
    let values = hostile_values();
    match rng.below(4) {
        0 => *node = values[rng.below(values.len())].clone(),
        1 => {
            if let Value::Object(m) = node {
                m.insert(format!("k{}", rng.below(9)), values[rng.below(values.len())].clone());
            } else {
                *node = json!({});
            }
        }
        2 => {
            if let Value::Array(a) = node {
                a.push(values[rng.below(values.len())].clone());
            } else {
                *node = json!([1, -1, "x", null]);
            }
        }
        _ => {
            if let Value::Object(m) = node
                && !m.is_empty()
            {
                let k = m.keys().nth(rng.below(m.len())).unwrap().clone();
                m.remove(&k);
            } else {
                *node = Value::Null;
            }
        }
    }
}

/// Interesting little-endian u64s: the edges of every width.
const INTERESTING: &[u64] = &[0, 1, 2, 3, 4, 31, 32, 33, 255, 256, 0x7fff_ffff, 0xffff_ffff, 1 << 32, 1 << 40, 1 << 62, 1 << 63, u64::MAX];

/// A structure-aware mutation of a binary file whose first `header` bytes are its header:
/// an interesting integer written over an aligned field, a byte flipped, a cut, or a run
/// repeated, mostly inside the header.
pub fn mutate_bytes(bytes: &[u8], rng: &mut Rng, header: usize) -> Vec<u8> {
    let mut b = bytes.to_vec();
    let span = header.clamp(1, b.len().max(1));
    for _ in 0..1 + rng.below(3) {
        if b.is_empty() {
            break;
        }
        let at = rng.below(span.min(b.len()));
        match rng.below(5) {
            0 | 1 => {
                let v = INTERESTING[rng.below(INTERESTING.len())].to_le_bytes();
                let width = *rng.pick(&[1usize, 2, 4, 8]);
                let at = at - at % width;
                for (i, x) in v.iter().take(width).enumerate() {
                    if let Some(slot) = b.get_mut(at + i) {
                        *slot = *x;
                    }
                }
            }
            2 => b[at] ^= 1 << rng.below(8),
            3 => b.truncate(at + rng.below(b.len() - at)),
            _ => {
                let end = (at + 1 + rng.below(16)).min(b.len());
                let run = b[at..end].to_vec();
                b.splice(at..at, run);
            }
        }
    }
    b
}
