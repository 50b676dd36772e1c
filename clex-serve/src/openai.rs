//! The OpenAI request bodies this server takes, checked field by field so that a bad value
//! gets a 400 naming its parameter, and the response and chunk bodies it sends.

use clex_models::ChatMessage;
use serde_json::{Map, Value, json};

/// Longest stop sequence: each generated token is matched against the stops' prefixes.
pub const MAX_STOP_BYTES: usize = 1024;

/// A request the server refuses, as OpenAI's error body says it.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// Human-readable reason.
    pub message: String,
    /// OpenAI's `type`.
    pub kind: &'static str,
    /// The parameter at fault, if one is.
    pub param: Option<String>,
    /// OpenAI's `code`, if any.
    pub code: Option<&'static str>,
}

impl ApiError {
    /// 400 for `param`.
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        ApiError { status: 400, message: message.into(), kind: "invalid_request_error", param: Some(param.into()), code: None }
    }

    /// Any status, no parameter.
    pub fn new(status: u16, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into(), kind, param: None, code: None }
    }

    /// With OpenAI's `code`.
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// `{"error": {...}}`.
    pub fn body(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }
}

/// What both endpoints share: how much to generate and how.
#[derive(Debug, Clone, PartialEq)]
pub struct Common {
    /// `max_tokens` (`max_completion_tokens` for chat); `None`: the endpoint's default.
    pub max_tokens: Option<usize>,
    /// 0..=2; default 1.
    pub temperature: f64,
    /// (0, 1]; `None` when 1 or absent.
    pub top_p: Option<f64>,
    /// Sampling seed.
    pub seed: Option<u64>,
    /// Stop sequences (at most 4).
    pub stop: Vec<String>,
    /// Server-sent events.
    pub stream: bool,
    /// `stream_options.include_usage`.
    pub include_usage: bool,
    /// `logit_bias`: added to a token's logit before sampling (-100 bans it).
    pub logit_bias: Vec<(u32, f32)>,
}

/// `POST /v1/completions`.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletionRequest {
    /// The prompt text, or token ids.
    pub prompt: Prompt,
    /// Generation settings.
    pub common: Common,
}

/// A completion prompt.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    /// Text, tokenized by the server.
    Text(String),
    /// Token ids, as given.
    Tokens(Vec<u32>),
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// Generation settings.
    pub common: Common,
}

/// Parses a JSON body into an object, or the 400 OpenAI sends for unparsable JSON.
pub fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::new(400, "invalid_request_error", format!("We could not parse the JSON body of your request: {e}")))?;
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(ApiError::new(400, "invalid_request_error", "the request body must be a JSON object")),
    }
}

fn number(map: &Map<String, Value>, key: &str) -> Result<Option<f64>, ApiError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            v.as_f64().filter(|x| x.is_finite()).map(Some).ok_or_else(|| ApiError::invalid(key, format!("'{key}' must be a number")))
        }
    }
}

fn integer(map: &Map<String, Value>, key: &str) -> Result<Option<u64>, ApiError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| ApiError::invalid(key, format!("'{key}' must be a non-negative integer"))),
    }
}

fn boolean(map: &Map<String, Value>, key: &str) -> Result<Option<bool>, ApiError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::invalid(key, format!("'{key}' must be a boolean"))),
    }
}

/// Refuses a parameter set to anything but its no-op value: not supported here, and silently
/// ignoring it would give the client something it did not ask for.
fn unsupported(map: &Map<String, Value>, key: &str, no_op: &[Value]) -> Result<(), ApiError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(()),
        Some(v) if no_op.contains(v) => Ok(()),
        Some(v) => Err(ApiError::invalid(key, format!("'{key}' = {v} is not supported by this server"))),
    }
}

fn common(map: &Map<String, Value>, max_tokens_keys: &[&str]) -> Result<Common, ApiError> {
    let mut max_tokens = None;
    for key in max_tokens_keys {
        if let Some(n) = integer(map, key)? {
            if n == 0 {
                return Err(ApiError::invalid(key, format!("'{key}' must be at least 1")));
            }
            max_tokens = Some(usize::try_from(n).unwrap_or(usize::MAX));
        }
    }
    let temperature = number(map, "temperature")?.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::invalid("temperature", format!("'temperature' must be between 0 and 2, got {temperature}")));
    }
    let top_p = number(map, "top_p")?;
    if let Some(p) = top_p
        && !(p > 0.0 && p <= 1.0)
    {
        return Err(ApiError::invalid("top_p", format!("'top_p' must be in (0, 1], got {p}")));
    }
    let seed = match map.get("seed") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64().or_else(|| v.as_i64().map(|i| i as u64)).ok_or_else(|| ApiError::invalid("seed", "'seed' must be an integer"))?,
        ),
    };
    let stop = match map.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(list)) => {
            let stops: Option<Vec<String>> = list.iter().map(|v| v.as_str().map(str::to_string)).collect();
            let stops = stops.ok_or_else(|| ApiError::invalid("stop", "'stop' must be a string or an array of strings"))?;
            if stops.len() > 4 {
                return Err(ApiError::invalid("stop", format!("'stop' takes at most 4 sequences, got {}", stops.len())));
            }
            stops
        }
        Some(_) => return Err(ApiError::invalid("stop", "'stop' must be a string or an array of strings")),
    };
    if stop.iter().any(String::is_empty) {
        return Err(ApiError::invalid("stop", "'stop' sequences must not be empty"));
    }
    if let Some(long) = stop.iter().find(|s| s.len() > MAX_STOP_BYTES) {
        return Err(ApiError::invalid("stop", format!("'stop' sequences are at most {MAX_STOP_BYTES} bytes, got {}", long.len())));
    }
    let stream = boolean(map, "stream")?.unwrap_or(false);
    let include_usage = match map.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(o)) => boolean(o, "include_usage")
            .map_err(|_| ApiError::invalid("stream_options", "'stream_options.include_usage' must be a boolean"))?
            .unwrap_or(false),
        Some(_) => return Err(ApiError::invalid("stream_options", "'stream_options' must be an object")),
    };
    if let Some(n) = integer(map, "n")?
        && n != 1
    {
        return Err(ApiError::invalid("n", format!("'n' = {n} is not supported by this server (only 1)")));
    }
    unsupported(map, "presence_penalty", &[json!(0), json!(0.0)])?;
    unsupported(map, "frequency_penalty", &[json!(0), json!(0.0)])?;
    let logit_bias = match map.get("logit_bias") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(o)) => {
            let mut bias = Vec::with_capacity(o.len());
            for (token, v) in o {
                let id = token
                    .parse::<u32>()
                    .map_err(|_| ApiError::invalid("logit_bias", format!("'logit_bias' key '{token}' is not a token id")))?;
                let b = v.as_f64().filter(|b| (-100.0..=100.0).contains(b));
                let b = b.ok_or_else(|| {
                    ApiError::invalid("logit_bias", format!("'logit_bias' of token {id} must be a number in [-100, 100]"))
                })?;
                bias.push((id, b as f32));
            }
            bias
        }
        Some(_) => return Err(ApiError::invalid("logit_bias", "'logit_bias' must be an object of token ids to numbers")),
    };
    Ok(Common { max_tokens, temperature, top_p: top_p.filter(|&p| p < 1.0), seed, stop, stream, include_usage, logit_bias })
}

/// Checks a `/v1/completions` body.
pub fn completion_request(map: &Map<String, Value>) -> Result<CompletionRequest, ApiError> {
    let bad = || ApiError::invalid("prompt", "'prompt' must be a string, an array of one string, or an array of token ids");
    let prompt = match map.get("prompt") {
        None | Some(Value::Null) => return Err(ApiError::invalid("prompt", "'prompt' is required")),
        Some(Value::String(s)) => Prompt::Text(s.clone()),
        Some(Value::Array(list)) => match list.as_slice() {
            [Value::String(s)] => Prompt::Text(s.clone()),
            [Value::Array(ids)] => Prompt::Tokens(token_ids(ids).ok_or_else(bad)?),
            [] => return Err(bad()),
            ids if ids.iter().all(Value::is_u64) => Prompt::Tokens(token_ids(ids).ok_or_else(bad)?),
            _ => {
                return Err(ApiError::invalid("prompt", "several prompts in one request are not supported by this server (send one each)"));
            }
        },
        Some(_) => return Err(bad()),
    };
    unsupported(map, "echo", &[json!(false)])?;
    unsupported(map, "logprobs", &[json!(0)])?;
    unsupported(map, "best_of", &[json!(1)])?;
    unsupported(map, "suffix", &[json!("")])?;
    Ok(CompletionRequest { prompt, common: common(map, &["max_tokens"])? })
}

fn token_ids(list: &[Value]) -> Option<Vec<u32>> {
    list.iter().map(|v| v.as_u64().and_then(|x| u32::try_from(x).ok())).collect()
}

/// Checks a `/v1/chat/completions` body.
pub fn chat_request(map: &Map<String, Value>) -> Result<ChatRequest, ApiError> {
    let list = match map.get("messages") {
        Some(Value::Array(list)) if !list.is_empty() => list,
        Some(Value::Array(_)) => return Err(ApiError::invalid("messages", "'messages' must not be empty")),
        None | Some(Value::Null) => return Err(ApiError::invalid("messages", "'messages' is required")),
        Some(_) => return Err(ApiError::invalid("messages", "'messages' must be an array")),
    };
    let mut messages = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let param = format!("messages[{i}]");
        let role =
            m.get("role").and_then(Value::as_str).ok_or_else(|| ApiError::invalid(&param, format!("'{param}.role' must be a string")))?;
        if !["system", "developer", "user", "assistant"].contains(&role) {
            return Err(ApiError::invalid(&param, format!("'{param}.role' = '{role}' is not one of system, developer, user, assistant")));
        }
        let content = match m.get("content") {
            Some(Value::String(s)) => s.clone(),
            None | Some(Value::Null) if role == "assistant" => String::new(),
            // Content parts: text only.
            Some(Value::Array(parts)) => {
                let mut text = String::new();
                for part in parts {
                    match (part.get("type").and_then(Value::as_str), part.get("text").and_then(Value::as_str)) {
                        (Some("text"), Some(t)) => text.push_str(t),
                        _ => {
                            return Err(ApiError::invalid(
                                &param,
                                format!("'{param}.content' parts must be {{\"type\": \"text\", \"text\": ...}}"),
                            ));
                        }
                    }
                }
                text
            }
            _ => return Err(ApiError::invalid(&param, format!("'{param}.content' must be a string or an array of text parts"))),
        };
        // Templates know "system"; OpenAI's newer name for it is "developer".
        let role = if role == "developer" { "system" } else { role };
        messages.push(ChatMessage::new(role, content));
    }
    unsupported(map, "logprobs", &[json!(false)])?;
    unsupported(map, "tools", &[json!([])])?;
    Ok(ChatRequest { messages, common: common(map, &["max_tokens", "max_completion_tokens"])? })
}

/// `usage`.
pub fn usage(prompt: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn parameters_are_checked_and_named() {
        let cases = [
            (json!({"prompt": "a", "temperature": 3}), "temperature"),
            (json!({"prompt": "a", "temperature": "hot"}), "temperature"),
            (json!({"prompt": "a", "top_p": 0}), "top_p"),
            (json!({"prompt": "a", "max_tokens": 0}), "max_tokens"),
            (json!({"prompt": "a", "max_tokens": -3}), "max_tokens"),
            (json!({"prompt": "a", "stop": ["a", "b", "c", "d", "e"]}), "stop"),
            (json!({"prompt": "a", "stop": [""]}), "stop"),
            (json!({"prompt": "a", "stop": "s".repeat(MAX_STOP_BYTES + 1)}), "stop"),
            (json!({"prompt": "a", "n": 2}), "n"),
            (json!({"prompt": "a", "stream": "yes"}), "stream"),
            (json!({"prompt": ["a", "b"]}), "prompt"),
            (json!({"prompt": 5}), "prompt"),
            (json!({}), "prompt"),
            (json!({"prompt": "a", "echo": true}), "echo"),
            (json!({"prompt": "a", "logit_bias": {"x": 1}}), "logit_bias"),
            (json!({"prompt": "a", "logit_bias": {"5": 101}}), "logit_bias"),
        ];
        for (body, param) in cases {
            let e = completion_request(&obj(body.clone())).unwrap_err();
            assert_eq!((e.status, e.param.as_deref()), (400, Some(param)), "{body}");
        }
        let chat = [
            (json!({"messages": []}), "messages"),
            (json!({"messages": [{"role": "wizard", "content": "x"}]}), "messages[0]"),
            (json!({"messages": [{"role": "user", "content": 3}]}), "messages[0]"),
            (json!({"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 0}), "max_completion_tokens"),
        ];
        for (body, param) in chat {
            let e = chat_request(&obj(body.clone())).unwrap_err();
            assert_eq!((e.status, e.param.as_deref()), (400, Some(param)), "{body}");
        }
    }

    #[test]
    fn requests_parse_with_defaults() {
        let r = completion_request(&obj(json!({"prompt": ["hi"], "stop": "\n", "seed": 7, "top_p": 1.0, "model": "x"}))).unwrap();
        assert_eq!(r.prompt, Prompt::Text("hi".into()));
        assert_eq!(
            r.common,
            Common {
                max_tokens: None,
                temperature: 1.0,
                top_p: None,
                seed: Some(7),
                stop: vec!["\n".into()],
                stream: false,
                include_usage: false,
                logit_bias: vec![]
            }
        );
        let r = completion_request(&obj(json!({"prompt": [1, 2, 3], "max_tokens": 4}))).unwrap();
        assert_eq!(r.prompt, Prompt::Tokens(vec![1, 2, 3]));
        let r = chat_request(&obj(json!({"messages": [{"role": "developer", "content": [{"type": "text", "text": "be brief"}]},
            {"role": "user", "content": "hi"}], "stream": true, "stream_options": {"include_usage": true}})))
        .unwrap();
        assert_eq!(r.messages, vec![ChatMessage::new("system", "be brief"), ChatMessage::new("user", "hi")]);
        assert!(r.common.stream && r.common.include_usage);
    }

    #[test]
    fn unparsable_json_is_a_400() {
        assert_eq!(parse_object(b"{\"prompt\": ").unwrap_err().status, 400);
        assert_eq!(parse_object(b"[1]").unwrap_err().status, 400);
    }
}
