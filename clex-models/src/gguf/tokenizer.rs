//! The tokenizer a GGUF embeds, as a `tokenizers::Tokenizer`, so no `tokenizer.json` is
//! needed. Only byte-level BPE (`tokenizer.ggml.model = "gpt2"`) is built: the vocabulary is
//! `tokenizer.ggml.tokens` (id = index), the merges `tokenizer.ggml.merges` ("a b"), and
//! `tokenizer.ggml.token_type` marks control tokens (3, added as special) and user-defined
//! ones (4, added as plain added tokens), as llama.cpp treats them.

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::processors::PostProcessorWrapper;
use tokenizers::processors::sequence::Sequence as ProcessorSequence;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer};

use super::reader::GgufFile;
use crate::error::{GgufError, ModelError};

/// llama.cpp token types.
const CONTROL: u64 = 3;
const USER_DEFINED: u64 = 4;

/// The pre-tokenizer for `tokenizer.ggml.pre`. llama.cpp names a regex set per model family;
/// we build the ones HF expresses with its stock pre-tokenizers.
fn pre_tokenizer(g: &GgufFile, add_prefix_space: bool) -> Result<PreTokenizerWrapper, ModelError> {
    let byte_level = ByteLevel::new(add_prefix_space, true, true);
    match g.str_opt("tokenizer.ggml.pre")?.unwrap_or("default") {
        "default" | "gpt-2" | "gpt2" => Ok(byte_level.into()),
        // GPT-2 regex after splitting every digit on its own.
        "smollm" | "starcoder" | "refact" => Ok(Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into()),
        other => Err(g.error(GgufError::BadValue {
            key: "tokenizer.ggml.pre".into(),
            message: format!("`{other}` is not supported; accepted: default, gpt-2, smollm, starcoder, refact (or pass a tokenizer.json)"),
        })),
    }
}

/// The tokenizer embedded in `g`.
pub fn tokenizer(g: &GgufFile) -> Result<Tokenizer, ModelError> {
    let model = g.str_of("tokenizer.ggml.model")?;
    if model != "gpt2" {
        return Err(g.error(GgufError::BadValue {
            key: "tokenizer.ggml.model".into(),
            message: format!("`{model}` is not supported; only byte-level BPE (`gpt2`) tokenizers are built (pass a tokenizer.json)"),
        }));
    }
    let tokens = g.strings_of("tokenizer.ggml.tokens")?;
    let mut vocab = tokenizers::models::bpe::Vocab::with_capacity(tokens.len());
    for (id, t) in tokens.iter().enumerate() {
        // A repeated string keeps its first id, as a dict built in order would not; ids
        // beyond it still decode through the added tokens below if they are special.
        vocab.entry(t.to_string()).or_insert(id as u32);
    }
    let merges = g
        .strings_of("tokenizer.ggml.merges")?
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            m.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())).ok_or_else(|| {
                g.error(GgufError::BadValue { key: format!("tokenizer.ggml.merges[{i}]"), message: format!("`{m}` is not two tokens") })
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| g.error(GgufError::BadValue { key: "tokenizer.ggml.merges".into(), message: e.to_string() }))?;

    let add_prefix_space = g.bool_opt("tokenizer.ggml.add_space_prefix")?.unwrap_or(false);
    let mut tok = Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(pre_tokenizer(g, add_prefix_space)?));
    tok.with_decoder(Some(ByteLevelDecoder::default()));
    let byte_level: PostProcessorWrapper = ByteLevel::default().trim_offsets(false).into();
    let bos = g.u64_opt("tokenizer.ggml.bos_token_id")?;
    let post = match (g.bool_opt("tokenizer.ggml.add_bos_token")?.unwrap_or(false), bos) {
        (true, Some(id)) => {
            let text = tokens.get(id as usize).ok_or_else(|| {
                g.error(GgufError::BadValue {
                    key: "tokenizer.ggml.bos_token_id".into(),
                    message: format!("{id} is not in the vocabulary"),
                })
            })?;
            let template = TemplateProcessing::builder()
                .try_single(format!("{text} $A"))
                .and_then(|b| b.special_tokens(vec![(text.to_string(), id as u32)]).build().map_err(|e| e.to_string()))
                .map_err(|e| g.error(GgufError::BadValue { key: "tokenizer.ggml.bos_token_id".into(), message: e.to_string() }))?;
            ProcessorSequence::new(vec![byte_level, template.into()]).into()
        }
        _ => byte_level,
    };
    tok.with_post_processor(Some(post));

    if let Some(types) = g.get("tokenizer.ggml.token_type").and_then(|v| v.as_array()) {
        let (mut special, mut plain) = (Vec::new(), Vec::new());
        for (id, ty) in types.iter().enumerate() {
            let Some(text) = tokens.get(id) else { break };
            match ty.as_u64() {
                Some(CONTROL) => special.push(AddedToken::from(*text, true)),
                Some(USER_DEFINED) => plain.push(AddedToken::from(*text, false)),
                _ => {}
            }
        }
        tok.add_special_tokens(&special);
        tok.add_tokens(&plain);
    }
    Ok(tok)
}
