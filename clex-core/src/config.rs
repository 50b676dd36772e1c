//! RoPE configuration as HF `config.json` files spell it.
//!
//! Real checkpoints write the same thing in several ways: transformers-4 `rope_scaling`
//! with `type` or `rope_type`, transformers-5 `rope_parameters` (with `rope_theta` inside),
//! GPT-NeoX `rotary_emb_base` / `rotary_pct`, Phi `partial_rotary_factor`, Phi-3
//! `original_max_position_embeddings` at the top level. [`RopeConfig::from_hf_json`] reads
//! all of them into one normalised value.

use serde_json::{Map, Value};

use crate::error::ConfigError;

/// Every `rope_type` we implement, in the order error messages list them.
pub const ROPE_KINDS: &str = "default, linear, dynamic, yarn, llama3, longrope, clex";

/// Activation of the CLEX ODE network (`rope_scaling.act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClexAct {
    /// `tanh` (the LLaMA-2-64K, Phi-2 and Mixtral checkpoints).
    Tanh,
    /// `silu` (the 7B-16K checkpoints and the paper-era code).
    Silu,
}

impl ClexAct {
    /// The spelling used in `config.json`.
    pub fn as_str(self) -> &'static str {
        match self {
            ClexAct::Tanh => "tanh",
            ClexAct::Silu => "silu",
        }
    }
}

/// CLEX settings (`rope_scaling` with `type: "clex"`), docs/CLEX.md §7.1.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClexParams {
    /// T_max: the largest scaling factor t the ODE is solved for.
    pub max_factor: usize,
    /// p: hidden width of the ODE network is p·d.
    pub param_factor: usize,
    /// Activation of the ODE network.
    pub act: ClexAct,
    /// h: RK4 step (0.01 in every released checkpoint).
    pub time_dt: f64,
}

impl ClexParams {
    /// A fresh CLEX layer's settings, as the released checkpoints were trained with:
    /// p = 1, tanh, h = 0.01, and T_max = `max_factor`.
    pub fn fresh(max_factor: usize) -> Self {
        ClexParams { max_factor, param_factor: 1, act: ClexAct::Tanh, time_dt: 0.01 }
    }
}

/// YaRN settings, as transformers reads them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct YarnParams {
    /// Context extension factor s.
    pub factor: f64,
    /// Pre-training context length used by the correction range.
    pub original_max_position_embeddings: usize,
    /// Explicit attention (cos/sin) scale; derived from mscale when absent.
    pub attention_factor: Option<f64>,
    /// Number of rotations where extrapolation stops (default 32).
    pub beta_fast: f64,
    /// Number of rotations where interpolation starts (default 1).
    pub beta_slow: f64,
    /// DeepSeek-style mscale.
    pub mscale: Option<f64>,
    /// DeepSeek-style mscale_all_dim.
    pub mscale_all_dim: Option<f64>,
    /// Round the correction range outwards to whole dims (default true).
    pub truncate: bool,
}

/// Llama-3.1 settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Llama3Params {
    /// Scale of the low frequencies.
    pub factor: f64,
    /// Wavelength threshold factor below which frequencies are scaled.
    pub low_freq_factor: f64,
    /// Wavelength threshold factor above which frequencies are kept.
    pub high_freq_factor: f64,
    /// Pre-training context length.
    pub original_max_position_embeddings: usize,
}

/// LongRoPE (Phi-3) settings.
#[derive(Debug, Clone, PartialEq)]
pub struct LongRopeParams {
    /// Per-frequency divisors used up to the original context.
    pub short_factor: Vec<f64>,
    /// Per-frequency divisors used beyond it.
    pub long_factor: Vec<f64>,
    /// Overall factor (default: max_position_embeddings / original).
    pub factor: Option<f64>,
    /// Explicit attention scale.
    pub attention_factor: Option<f64>,
    /// Pre-training context length.
    pub original_max_position_embeddings: usize,
}

/// The RoPE kind of a checkpoint with its parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE.
    Default,
    /// Position interpolation: frequencies divided by `factor`.
    Linear {
        /// Divisor of every frequency.
        factor: f64,
    },
    /// Dynamic NTK: the base grows with the current sequence length.
    Dynamic {
        /// NTK factor.
        factor: f64,
    },
    /// YaRN.
    Yarn(YarnParams),
    /// Llama 3.1.
    Llama3(Llama3Params),
    /// LongRoPE.
    LongRope(LongRopeParams),
    /// CLEX: frequencies follow a learned ODE trajectory θ(t).
    Clex(ClexParams),
}

impl RopeScaling {
    /// The `rope_type` spelling.
    pub fn kind(&self) -> &'static str {
        match self {
            RopeScaling::Default => "default",
            RopeScaling::Linear { .. } => "linear",
            RopeScaling::Dynamic { .. } => "dynamic",
            RopeScaling::Yarn(_) => "yarn",
            RopeScaling::Llama3(_) => "llama3",
            RopeScaling::LongRope(_) => "longrope",
            RopeScaling::Clex(_) => "clex",
        }
    }
}

/// Everything rotary embedding needs from a model config, normalised.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeConfig {
    /// Size of one attention head.
    pub head_dim: usize,
    /// Number of rotated dims per head (`head_dim · partial_rotary_factor`, even).
    pub rotary_dim: usize,
    /// RoPE base B (`rope_theta` / `rotary_emb_base`).
    pub theta: f64,
    /// P: the model's `max_position_embeddings`.
    pub max_position_embeddings: usize,
    /// The scaling kind.
    pub scaling: RopeScaling,
}

fn missing(key: &str, why: &str, accepted: &str) -> ConfigError {
    ConfigError::MissingKey { key: key.into(), why: why.into(), accepted: accepted.into() }
}

fn invalid(key: &str, value: &Value, accepted: &str) -> ConfigError {
    ConfigError::InvalidValue { key: key.into(), value: echo(&value.to_string()), accepted: accepted.into() }
}

/// Longest value, in characters, an error message echoes: a 100 MB value must not become a
/// 100 MB message.
pub const MAX_ECHO_CHARS: usize = 80;

/// `text` cut to [`MAX_ECHO_CHARS`] characters (marked with `…` and the full length), on
/// one line.
pub fn echo(text: &str) -> String {
    let one_line: String = text.chars().take(MAX_ECHO_CHARS + 1).map(|c| if c.is_control() { ' ' } else { c }).collect();
    if one_line.chars().count() <= MAX_ECHO_CHARS {
        return one_line;
    }
    let head: String = one_line.chars().take(MAX_ECHO_CHARS).collect();
    format!("{head}… ({} bytes)", text.len())
}

/// Longest message text, in characters, quoted from another library (a parser's error
/// that may quote the input).
pub const MAX_QUOTE_CHARS: usize = 400;

/// `text` on one line, cut to [`MAX_QUOTE_CHARS`] characters.
pub fn echo_long(text: &str) -> String {
    let one_line: String = text.chars().take(MAX_QUOTE_CHARS + 1).map(|c| if c.is_control() { ' ' } else { c }).collect();
    if one_line.chars().count() <= MAX_QUOTE_CHARS {
        return one_line;
    }
    format!("{}… ({} bytes)", one_line.chars().take(MAX_QUOTE_CHARS).collect::<String>(), text.len())
}

/// Limits on the sizes a config may ask for. They keep every size product (heads × head
/// dim, P × T_max, p × d, ...) far inside 64 bits and every table the rope builds small; the
/// memory the weights and activations need is checked against the machine separately, when
/// a model is loaded (`clex-models`' `ModelConfig::weight_bytes`, `CausalLm::memory_estimate`).
pub mod limits {
    /// Largest `head_dim` (real models: 64 to 256).
    pub const MAX_HEAD_DIM: usize = 1 << 16;
    /// Largest `max_position_embeddings` / `original_max_position_embeddings` (2^31).
    pub const MAX_POSITIONS: usize = 1 << 31;
    /// Largest CLEX `max_factor` T_max (released checkpoints: 16 to 64).
    pub const MAX_CLEX_FACTOR: usize = 1 << 16;
    /// Largest CLEX `param_factor` p (released checkpoints: 1).
    pub const MAX_PARAM_FACTOR: usize = 1 << 10;
    /// Most RK4 steps the CLEX θ table may take, (T_max − 1) / h: a solve of this many steps
    /// takes seconds (released checkpoints: 6300).
    pub const MAX_ODE_STEPS: f64 = 1e6;
    /// Most multiply-adds the CLEX θ table's solve may take, (T_max − 1) / h RK4 steps of
    /// four p·k² evaluations (released checkpoints: 10^8; this takes about a minute).
    pub const MAX_ODE_WORK: f64 = 1e11;
    /// Most weights the CLEX ODE network may have, 2·p·k² (released checkpoints: 8192; this is
    /// 1 GiB in f32).
    pub const MAX_CLEX_WEIGHTS: f64 = (1u64 << 28) as f64;
    /// Largest scaling factor of linear / dynamic / YaRN / Llama-3 / LongRoPE scaling.
    pub const MAX_ROPE_FACTOR: f64 = 1e6;
}

/// Reads typed values out of one JSON object, naming `prefix.key` in errors.
struct Keys<'a> {
    obj: &'a Map<String, Value>,
    prefix: &'a str,
}

impl Keys<'_> {
    fn path(&self, key: &str) -> String {
        if self.prefix.is_empty() { key.to_string() } else { format!("{}.{key}", self.prefix) }
    }

    /// A present, non-null value.
    fn get(&self, key: &str) -> Option<&Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    fn f64_opt(&self, key: &str, accepted: &str) -> Result<Option<f64>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_f64().filter(|x| x.is_finite()).map(Some).ok_or_else(|| invalid(&self.path(key), v, accepted)),
        }
    }

    fn f64_req(&self, key: &str, why: &str, accepted: &str) -> Result<f64, ConfigError> {
        self.f64_opt(key, accepted)?.ok_or_else(|| missing(&self.path(key), why, accepted))
    }

    fn positive(&self, key: &str, why: &str) -> Result<f64, ConfigError> {
        let accepted = "a number > 0";
        let v = self.f64_req(key, why, accepted)?;
        if v > 0.0 { Ok(v) } else { Err(invalid(&self.path(key), &Value::from(v), accepted)) }
    }

    /// A scaling factor: a number in (0, [`limits::MAX_ROPE_FACTOR`]].
    fn factor(&self, key: &str, why: &str) -> Result<f64, ConfigError> {
        let accepted = format!("a number > 0 and <= {:e}", limits::MAX_ROPE_FACTOR);
        let v = self.f64_req(key, why, &accepted)?;
        if v > 0.0 && v <= limits::MAX_ROPE_FACTOR { Ok(v) } else { Err(invalid(&self.path(key), &Value::from(v), &accepted)) }
    }

    /// An optional number > 0.
    fn positive_opt(&self, key: &str) -> Result<Option<f64>, ConfigError> {
        let accepted = "a number > 0";
        match self.f64_opt(key, accepted)? {
            Some(v) if v <= 0.0 => Err(invalid(&self.path(key), &Value::from(v), accepted)),
            v => Ok(v),
        }
    }

    /// An optional integer in `1..=max`.
    fn count_opt(&self, key: &str, max: usize) -> Result<Option<usize>, ConfigError> {
        let accepted = format!("an integer >= 1 and <= {max}");
        match self.usize_opt(key, &accepted)? {
            Some(n) if n == 0 || n > max => Err(invalid(&self.path(key), &Value::from(n), &accepted)),
            n => Ok(n),
        }
    }

    fn usize_opt(&self, key: &str, accepted: &str) -> Result<Option<usize>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => {
                // Integers are sometimes written as 4096.0 by hand-edited configs.
                let n =
                    v.as_u64().or_else(|| v.as_f64().filter(|x| x.fract() == 0.0 && *x >= 0.0 && *x < u64::MAX as f64).map(|x| x as u64));
                n.map(|n| Some(n as usize)).ok_or_else(|| invalid(&self.path(key), v, accepted))
            }
        }
    }

    fn bool_opt(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_bool().map(Some).ok_or_else(|| invalid(&self.path(key), v, "true, false")),
        }
    }

    fn f64_list(&self, key: &str, why: &str, len: usize) -> Result<Vec<f64>, ConfigError> {
        let accepted = format!("a list of {len} numbers");
        let v = self.get(key).ok_or_else(|| missing(&self.path(key), why, &accepted))?;
        let accepted = format!("a list of {len} numbers > 0");
        let list = v.as_array().ok_or_else(|| invalid(&self.path(key), v, &accepted))?;
        let out: Option<Vec<f64>> = list.iter().map(|x| x.as_f64().filter(|x| x.is_finite() && *x > 0.0)).collect();
        match out {
            Some(out) if out.len() == len => Ok(out),
            _ => Err(invalid(&self.path(key), v, &accepted)),
        }
    }
}

impl RopeConfig {
    /// Parses the rope settings out of an HF `config.json` text.
    pub fn from_hf_str(text: &str) -> Result<Self, ConfigError> {
        let v: Value = serde_json::from_str(text).map_err(|e| ConfigError::Json(e.to_string()))?;
        Self::from_hf_json(&v)
    }

    /// Parses the rope settings out of an HF `config.json` value (the whole file or the
    /// fragment holding the rope keys together with `max_position_embeddings` and the
    /// head geometry).
    pub fn from_hf_json(config: &Value) -> Result<Self, ConfigError> {
        let obj = config.as_object().ok_or_else(|| invalid("config", config, "a JSON object"))?;
        let top = Keys { obj, prefix: "" };

        // transformers-5 `rope_parameters` wins over transformers-4 `rope_scaling`, as in
        // transformers' own standardisation.
        let (scaling_obj, scaling_key) = match (top.get("rope_parameters"), top.get("rope_scaling")) {
            (Some(v), _) => (Some(v), "rope_parameters"),
            (None, Some(v)) => (Some(v), "rope_scaling"),
            (None, None) => (None, "rope_scaling"),
        };
        let empty = Map::new();
        let scaling_map = match scaling_obj {
            None => &empty,
            Some(v) => v.as_object().ok_or_else(|| invalid(scaling_key, v, "a JSON object"))?,
        };
        if scaling_map.values().any(|v| v.is_object()) && !scaling_map.contains_key("rope_type") && !scaling_map.contains_key("type") {
            return Err(invalid(
                scaling_key,
                scaling_obj.unwrap_or(&Value::Null),
                "one rope dict for all layers (per-layer-type rope parameters are not supported)",
            ));
        }
        let rs = Keys { obj: scaling_map, prefix: scaling_key };

        let theta = match rs.f64_opt("rope_theta", "a number > 0")? {
            Some(t) => t,
            None => match top.f64_opt("rope_theta", "a number > 0")? {
                Some(t) => t,
                None => top.f64_opt("rotary_emb_base", "a number > 0")?.unwrap_or(10000.0),
            },
        };
        if theta <= 0.0 {
            return Err(invalid("rope_theta", &Value::from(theta), "a number > 0"));
        }

        let positions = format!("an integer >= 1 and <= {}", limits::MAX_POSITIONS);
        let max_position_embeddings = top
            .count_opt("max_position_embeddings", limits::MAX_POSITIONS)?
            .ok_or_else(|| missing("max_position_embeddings", "RoPE scaling is defined relative to it", &positions))?;

        // `head_dim: 0` (or null) means "derive it", as transformers reads it.
        let head_dim = match top.usize_opt("head_dim", "a positive integer")? {
            Some(h) if h > 0 => {
                if h > limits::MAX_HEAD_DIM {
                    return Err(invalid("head_dim", &Value::from(h), &format!("an integer >= 1 and <= {}", limits::MAX_HEAD_DIM)));
                }
                h
            }
            _ => {
                let hidden = top
                    .usize_opt("hidden_size", "a positive integer")?
                    .ok_or_else(|| missing("hidden_size", "needed to derive head_dim when `head_dim` is absent", "a positive integer"))?;
                let heads = top
                    .usize_opt("num_attention_heads", "a positive integer")?
                    .filter(|&h| h > 0)
                    .ok_or_else(|| missing("num_attention_heads", "needed to derive head_dim", "a positive integer"))?;
                let h = hidden / heads;
                if h == 0 {
                    return Err(invalid(
                        "num_attention_heads",
                        &Value::from(heads),
                        &format!("an integer from 1 to hidden_size ({hidden}): head_dim is hidden_size / num_attention_heads"),
                    ));
                }
                if h > limits::MAX_HEAD_DIM {
                    return Err(invalid(
                        "hidden_size",
                        &Value::from(hidden),
                        &format!(
                            "an integer <= {} x num_attention_heads ({heads}): head_dim is hidden_size / num_attention_heads",
                            limits::MAX_HEAD_DIM
                        ),
                    ));
                }
                h
            }
        };

        let partial = match rs.f64_opt("partial_rotary_factor", "a number in (0, 1]")? {
            Some(p) => Some(("partial_rotary_factor", p)),
            None => match top.f64_opt("partial_rotary_factor", "a number in (0, 1]")? {
                Some(p) => Some(("partial_rotary_factor", p)),
                None => top.f64_opt("rotary_pct", "a number in (0, 1]")?.map(|p| ("rotary_pct", p)),
            },
        };
        let rotary_dim = match partial {
            None => head_dim,
            Some((key, p)) => {
                if !(p > 0.0 && p <= 1.0) {
                    return Err(invalid(key, &Value::from(p), "a number in (0, 1]"));
                }
                // transformers truncates (`int(head_dim * factor)`); a product within float
                // error of a whole number is that number (100 · 0.58 = 57.99999999999999).
                let dims = head_dim as f64 * p;
                if (dims - dims.round()).abs() < 1e-9 * dims { dims.round() as usize } else { dims as usize }
            }
        };
        if rotary_dim < 2 || rotary_dim % 2 != 0 {
            return Err(match partial {
                Some((key, p)) => invalid(
                    key,
                    &Value::from(p),
                    &format!("a factor giving an even number of rotary dims >= 2 (head_dim {head_dim} x factor = {rotary_dim})"),
                ),
                None => invalid("head_dim", &Value::from(head_dim), "an even number >= 2 (every dim is rotated)"),
            });
        }

        let kind_value = rs.get("rope_type").map(|v| ("rope_type", v)).or_else(|| rs.get("type").map(|v| ("type", v)));
        let kind = match kind_value {
            None => "default".to_string(),
            Some((k, v)) => v.as_str().ok_or_else(|| invalid(&rs.path(k), v, ROPE_KINDS))?.to_string(),
        };
        let kind_key = rs.path(kind_value.map(|(k, _)| k).unwrap_or("rope_type"));
        let original_opt = || -> Result<Option<usize>, ConfigError> {
            let key = "original_max_position_embeddings";
            Ok(rs.count_opt(key, limits::MAX_POSITIONS)?.or(top.count_opt(key, limits::MAX_POSITIONS)?))
        };
        let original = |key_default: usize| -> Result<usize, ConfigError> { Ok(original_opt()?.unwrap_or(key_default)) };

        let scaling = match kind.as_str() {
            "default" => RopeScaling::Default,
            "linear" => RopeScaling::Linear { factor: rs.factor("factor", "required by linear scaling")? },
            "dynamic" => RopeScaling::Dynamic { factor: rs.factor("factor", "required by dynamic NTK scaling")? },
            "yarn" => RopeScaling::Yarn(YarnParams {
                factor: rs.factor("factor", "required by yarn")?,
                original_max_position_embeddings: original(max_position_embeddings)?,
                attention_factor: rs.positive_opt("attention_factor")?,
                beta_fast: rs.f64_opt("beta_fast", "a number")?.filter(|b| *b != 0.0).unwrap_or(32.0),
                beta_slow: rs.f64_opt("beta_slow", "a number")?.filter(|b| *b != 0.0).unwrap_or(1.0),
                mscale: rs.f64_opt("mscale", "a number")?,
                mscale_all_dim: rs.f64_opt("mscale_all_dim", "a number")?,
                truncate: rs.bool_opt("truncate")?.unwrap_or(true),
            }),
            "llama3" => {
                let factor = rs.factor("factor", "required by llama3")?;
                let low_freq_factor = rs.positive("low_freq_factor", "required by llama3")?;
                let high_freq_factor = rs.positive("high_freq_factor", "required by llama3")?;
                if high_freq_factor <= low_freq_factor {
                    // The smoothing between the two wavelengths divides by their difference.
                    return Err(invalid(
                        &rs.path("high_freq_factor"),
                        &Value::from(high_freq_factor),
                        &format!("a number > low_freq_factor ({low_freq_factor})"),
                    ));
                }
                RopeScaling::Llama3(Llama3Params {
                    factor,
                    low_freq_factor,
                    high_freq_factor,
                    original_max_position_embeddings: rs
                        .count_opt("original_max_position_embeddings", limits::MAX_POSITIONS)?
                        .ok_or_else(|| missing(&rs.path("original_max_position_embeddings"), "required by llama3", "a positive integer"))?,
                })
            }
            "longrope" => {
                let k = rotary_dim / 2;
                RopeScaling::LongRope(LongRopeParams {
                    short_factor: rs.f64_list("short_factor", "required by longrope", k)?,
                    long_factor: rs.f64_list("long_factor", "required by longrope", k)?,
                    factor: rs.positive_opt("factor")?,
                    attention_factor: rs.positive_opt("attention_factor")?,
                    original_max_position_embeddings: original_opt()?.ok_or_else(|| {
                        missing(&rs.path("original_max_position_embeddings"), "required by longrope", "a positive integer")
                    })?,
                })
            }
            "clex" => RopeScaling::Clex(parse_clex(&rs)?),
            other => return Err(ConfigError::UnknownKind { key: kind_key, kind: echo(other), accepted: ROPE_KINDS.into() }),
        };
        if let RopeScaling::Clex(p) = &scaling {
            if rotary_dim < 4 {
                // The NTK time embedding divides by d - 2.
                return Err(invalid(
                    "rotary dims",
                    &Value::from(rotary_dim),
                    &format!("CLEX needs at least 4 rotary dims (max_factor {})", p.max_factor),
                ));
            }
            let k = (rotary_dim / 2) as f64;
            let weights = 2.0 * p.param_factor as f64 * k * k;
            if weights > limits::MAX_CLEX_WEIGHTS {
                return Err(invalid(
                    &rs.path("param_factor"),
                    &Value::from(p.param_factor),
                    &format!(
                        "a factor giving at most {:e} ODE weights: 2 x param_factor x {k}^2 (rotary dims / 2) is {weights:e}",
                        limits::MAX_CLEX_WEIGHTS
                    ),
                ));
            }
            let steps = ((p.max_factor - 1) as f64 / p.time_dt).max(1.0);
            let work = steps * 4.0 * p.param_factor as f64 * k * k;
            if work > limits::MAX_ODE_WORK {
                return Err(invalid(
                    &rs.path("param_factor"),
                    &Value::from(p.param_factor),
                    &format!(
                        "a setting whose θ table takes at most {:e} multiply-adds: (max_factor {} - 1) / time_dt {} RK4 steps x 4 x param_factor x {k}^2 (rotary dims / 2) is {work:e}",
                        limits::MAX_ODE_WORK,
                        p.max_factor,
                        p.time_dt
                    ),
                ));
            }
        }

        Ok(RopeConfig { head_dim, rotary_dim, theta, max_position_embeddings, scaling })
    }
}

fn parse_clex(rs: &Keys<'_>) -> Result<ClexParams, ConfigError> {
    let max_factor = rs.count_opt("max_factor", limits::MAX_CLEX_FACTOR)?.ok_or_else(|| {
        missing(&rs.path("max_factor"), "T_max of the CLEX ODE", &format!("an integer >= 1 and <= {}", limits::MAX_CLEX_FACTOR))
    })?;
    let param_factor = rs.count_opt("param_factor", limits::MAX_PARAM_FACTOR)?.ok_or_else(|| {
        missing(
            &rs.path("param_factor"),
            "hidden width multiplier of the CLEX ODE",
            &format!("an integer >= 1 and <= {}", limits::MAX_PARAM_FACTOR),
        )
    })?;
    let act_value = rs.get("act").ok_or_else(|| {
        missing(&rs.path("act"), "activation of the CLEX ODE (released checkpoints: tanh, or silu for 7B-16K)", "tanh, silu")
    })?;
    let act = match act_value.as_str() {
        Some("tanh") => ClexAct::Tanh,
        Some("silu") => ClexAct::Silu,
        _ => return Err(invalid(&rs.path("act"), act_value, "tanh, silu")),
    };
    let time_dt = rs.f64_req("time_dt", "RK4 step of the CLEX ODE (0.01 in every released checkpoint)", "a number in (0, 1]")?;
    if !(time_dt > 0.0 && time_dt <= 1.0) {
        return Err(invalid(&rs.path("time_dt"), &Value::from(time_dt), "a number in (0, 1]"));
    }
    // The θ table is solved from t = 1 to T_max in steps of h (in f32): bound the step count,
    // which also keeps h a normal f32.
    let min_dt = ((max_factor - 1) as f64 / limits::MAX_ODE_STEPS).max(1e-6);
    if time_dt < min_dt {
        return Err(invalid(
            &rs.path("time_dt"),
            &Value::from(time_dt),
            &format!(
                "a number in [{min_dt:e}, 1]: (max_factor {max_factor} - 1) / time_dt is the RK4 step count, at most {:e}",
                limits::MAX_ODE_STEPS
            ),
        ));
    }
    // `factor` is a dummy (always 1) kept only because HF's per-layer rope reads it.
    Ok(ClexParams { max_factor, param_factor, act, time_dt })
}
