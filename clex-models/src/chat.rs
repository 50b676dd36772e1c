//! Chat templates: a model's Jinja `chat_template` (an HF directory's `chat_template.jinja` or
//! `tokenizer_config.json`, a GGUF's `tokenizer.chat_template`, or a file) rendered over a
//! conversation as transformers' `apply_chat_template(..., tokenize=False)` renders it.
//!
//! transformers compiles templates in a jinja2 sandbox with `trim_blocks`, `lstrip_blocks` and
//! loop controls, adds `raise_exception(msg)`, `strftime_now(fmt)` and a `tojson` filter that
//! is plain `json.dumps` (no HTML escaping, Python's `", "` / `": "` separators), and renders
//! with `messages`, `add_generation_prompt`, `tools` and `documents` (none here) and the
//! tokenizer's special tokens (`bos_token`, `eos_token`). [`ChatTemplate`] does the same on
//! minijinja, with minijinja-contrib's Python string methods (`.strip()`, `.startswith()`)
//! and Python's way of printing `True`, `False` and `None`.

use std::fmt::Write as _;
use std::path::Path;

use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Environment, ErrorKind, State};
use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::gguf::GgufFile;

/// The name the template is stored under in its environment.
const TEMPLATE_NAME: &str = "chat_template";

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant` (templates may accept others).
    pub role: String,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A message from `role`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage { role: role.into(), content: content.into() }
    }
}

/// A compiled chat template with the special-token texts it renders with.
pub struct ChatTemplate {
    env: Environment<'static>,
    origin: String,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("origin", &self.origin)
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish()
    }
}

/// The message `raise_exception` was called with, carried as the render error's source.
#[derive(Debug)]
struct RaisedByTemplate(String);

impl std::fmt::Display for RaisedByTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RaisedByTemplate {}

impl ChatTemplate {
    /// Compiles the Jinja `source`; `origin` names where it came from in errors (a file, a
    /// key). `bos_token` / `eos_token` are the texts the template sees; `None` leaves the
    /// variable undefined, as transformers does for a tokenizer without that token.
    pub fn new(source: &str, origin: &str, bos_token: Option<String>, eos_token: Option<String>) -> Result<Self, ModelError> {
        let mut env = Environment::new();
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder().trim_blocks(true).lstrip_blocks(true).build().expect("default delimiters are valid"),
        );
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.set_formatter(python_formatter);
        env.add_filter("tojson", tojson);
        env.add_function("raise_exception", |message: String| -> Result<Value, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, message.clone()).with_source(RaisedByTemplate(message)))
        });
        env.add_function("strftime_now", |format: String| strftime_utc(&format, now_unix_seconds()));
        env.add_template_owned(TEMPLATE_NAME, source.to_string())
            .map_err(|e| ModelError::Invalid(format!("{origin}: invalid chat template: {}", one_line(&e))))?;
        Ok(ChatTemplate { env, origin: origin.to_string(), bos_token, eos_token })
    }

    /// The raw Jinja file at `path` (a `--chat-template` flag), with the model's bos/eos texts.
    pub fn from_file(path: &Path, bos_token: Option<String>, eos_token: Option<String>) -> Result<Self, ModelError> {
        let source = crate::weights::read_regular(path)?;
        Self::new(&source, &path.display().to_string(), bos_token, eos_token)
    }

    /// Tokens that end a reply: the model's EOS ids and the template's end-of-turn token
    /// (its `eos_token`) when that differs, e.g. ChatML's `<|im_end|>` on a base model's
    /// `<|endoftext|>`.
    pub fn stop_tokens(&self, eos_ids: &[u32], tokenizer: &tokenizers::Tokenizer) -> Vec<u32> {
        let mut stops = eos_ids.to_vec();
        if let Some(id) = self.eos_token().and_then(|t| tokenizer.token_to_id(t))
            && !stops.contains(&id)
        {
            stops.push(id);
        }
        stops
    }

    /// Where the template came from (a file, or a file and key).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The BOS text the template renders with.
    pub fn bos_token(&self) -> Option<&str> {
        self.bos_token.as_deref()
    }

    /// The EOS text the template renders with (usually the end-of-turn token).
    pub fn eos_token(&self) -> Option<&str> {
        self.eos_token.as_deref()
    }

    /// `messages` as the prompt text, ending with the assistant's header when
    /// `add_generation_prompt`. A `raise_exception` in the template becomes an error naming
    /// the template's origin and carrying its message.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String, ModelError> {
        let template = self.env.get_template(TEMPLATE_NAME).expect("added in new");
        let context = minijinja::context! {
            messages => Value::from(minijinja::value::Serde(messages)),
            add_generation_prompt => add_generation_prompt,
            tools => Value::from(()),
            documents => Value::from(()),
            bos_token => self.bos_token.as_deref().map_or(Value::UNDEFINED, Value::from),
            eos_token => self.eos_token.as_deref().map_or(Value::UNDEFINED, Value::from),
        };
        template.render(context).map_err(|e| {
            let raised =
                std::iter::successors(std::error::Error::source(&e), |s| s.source()).find_map(|s| s.downcast_ref::<RaisedByTemplate>());
            match raised {
                Some(RaisedByTemplate(message)) => ModelError::Invalid(format!(
                    "{}: the chat template refused the conversation (raise_exception): {}",
                    self.origin,
                    clex_core::config::echo_long(message)
                )),
                None => ModelError::Invalid(format!("{}: rendering the chat template: {}", self.origin, one_line(&e))),
            }
        })
    }
}

/// A minijinja error on one line (its Display holds the kind, detail and template line).
fn one_line(e: &minijinja::Error) -> String {
    clex_core::config::echo_long(&e.to_string()).replace('\n', " ")
}

/// The template of an HF directory: `chat_template.jinja` when present (transformers prefers
/// it), else `tokenizer_config.json`'s `chat_template` (a string, or a list of `{name,
/// template}` from which "default" is taken); `None` when neither has one. bos/eos texts
/// come from `tokenizer_config.json`, else `special_tokens_map.json`.
pub(crate) fn hf_template(dir: &Path) -> Result<Option<ChatTemplate>, ModelError> {
    let (bos, eos) = hf_special_tokens(dir)?;
    let jinja = dir.join("chat_template.jinja");
    if jinja.is_file() {
        return ChatTemplate::from_file(&jinja, bos, eos).map(Some);
    }
    let path = dir.join("tokenizer_config.json");
    let Some(config) = read_json(&path)? else { return Ok(None) };
    let origin = format!("{} (chat_template)", path.display());
    let bad = |message: String| ModelError::Invalid(format!("{origin}: {message}"));
    let source = match config.get("chat_template") {
        None | Some(serde_json::Value::Null) => return Ok(None),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Array(list)) => {
            let named = list.iter().map(|t| (t.get("name").and_then(|n| n.as_str()), t.get("template").and_then(|n| n.as_str())));
            let names: Vec<String> = named.clone().map(|(n, _)| n.unwrap_or("?").to_string()).collect();
            match named.into_iter().find(|(n, _)| *n == Some("default")) {
                Some((_, Some(template))) => template.to_string(),
                Some((_, None)) => return Err(bad("the \"default\" entry has no string `template`".into())),
                None => return Err(bad(format!("a list of templates without a \"default\" one (names: {})", names.join(", ")))),
            }
        }
        Some(other) => return Err(bad(format!("expected a string or a list of {{name, template}}, found {}", json_kind(other)))),
    };
    ChatTemplate::new(&source, &origin, bos, eos).map(Some)
}

/// bos/eos texts of an HF directory, for a template found elsewhere (`--chat-template`).
pub(crate) fn hf_special_tokens(dir: &Path) -> Result<(Option<String>, Option<String>), ModelError> {
    let mut found = (None, None);
    for file in ["tokenizer_config.json", "special_tokens_map.json"] {
        let path = dir.join(file);
        let Some(v) = read_json(&path)? else { continue };
        found.0 = found.0.or_else(|| token_text(v.get("bos_token")));
        found.1 = found.1.or_else(|| token_text(v.get("eos_token")));
    }
    Ok(found)
}

/// A special token as tokenizer_config.json writes it: a string or `{"content": ...}`.
fn token_text(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(map) => map.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a bool",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "an object",
    }
}

/// A JSON file, `None` when it does not exist.
fn read_json(path: &Path) -> Result<Option<serde_json::Value>, ModelError> {
    if !path.exists() {
        return Ok(None);
    }
    let text = crate::weights::read_regular(path)?;
    serde_json::from_str(&text).map(Some).map_err(|e| ModelError::Json { path: path.to_path_buf(), message: e.to_string() })
}

/// The template of a GGUF (`tokenizer.chat_template`), `None` when it has none.
pub(crate) fn gguf_template(g: &GgufFile) -> Result<Option<ChatTemplate>, ModelError> {
    let Some(source) = g.str_opt("tokenizer.chat_template")? else { return Ok(None) };
    let (bos, eos) = gguf_special_tokens(g)?;
    ChatTemplate::new(source, &format!("{} (tokenizer.chat_template)", g.path().display()), bos, eos).map(Some)
}

/// bos/eos texts of a GGUF: `tokenizer.ggml.tokens` at `tokenizer.ggml.bos_token_id` /
/// `eos_token_id`.
pub(crate) fn gguf_special_tokens(g: &GgufFile) -> Result<(Option<String>, Option<String>), ModelError> {
    let text = |key: &str| -> Result<Option<String>, ModelError> {
        let Some(id) = g.u64_opt(key)? else { return Ok(None) };
        let tokens = g.array_of("tokenizer.ggml.tokens")?;
        let token = tokens.get(id as usize).ok_or_else(|| {
            g.error(crate::error::GgufError::BadValue {
                key: key.into(),
                message: format!("{id} is outside tokenizer.ggml.tokens ({} tokens)", tokens.len()),
            })
        })?;
        Ok(token.as_str().map(str::to_string))
    };
    Ok((text("tokenizer.ggml.bos_token_id")?, text("tokenizer.ggml.eos_token_id")?))
}

/// Prints values as jinja2 does: `True`, `False`, `None` (minijinja's own formatter writes
/// `true`, `false` and nothing), lists and dicts as Python's repr; undefined prints nothing.
fn python_formatter(out: &mut minijinja::Output, state: &mut State, value: &Value) -> Result<(), minijinja::Error> {
    match value.kind() {
        ValueKind::Bool | ValueKind::None | ValueKind::Seq | ValueKind::Map if !value.is_safe() => {
            let mut text = String::new();
            python_repr(value, &mut text)?;
            out.write_str(&text).map_err(|e| minijinja::Error::new(ErrorKind::WriteFailure, e.to_string()))
        }
        _ => minijinja::escape_formatter(out, state, value),
    }
}

/// Python's `repr` of a template value (strings quoted as Python quotes them).
fn python_repr(value: &Value, out: &mut String) -> Result<(), minijinja::Error> {
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("None"),
        ValueKind::Bool => out.push_str(if value.is_true() { "True" } else { "False" }),
        ValueKind::String => {
            let s = value.as_str().unwrap_or_default();
            let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
            out.push(quote);
            for c in s.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c if c == quote => {
                        out.push('\\');
                        out.push(c);
                    }
                    c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                        let _ = write!(out, "\\x{:02x}", c as u32);
                    }
                    c => out.push(c),
                }
            }
            out.push(quote);
        }
        ValueKind::Seq => {
            out.push('[');
            for (i, item) in value.try_iter()?.enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                python_repr(&item, out)?;
            }
            out.push(']');
        }
        ValueKind::Map => {
            out.push('{');
            for (i, key) in value.try_iter()?.enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                python_repr(&key, out)?;
                out.push_str(": ");
                python_repr(&value.get_item(&key)?, out)?;
            }
            out.push('}');
        }
        _ => {
            let _ = write!(out, "{value}");
        }
    }
    Ok(())
}

/// transformers' `tojson`: `json.dumps(x, ensure_ascii=False, indent=None, separators=None,
/// sort_keys=False)`, arguments by position or name.
fn tojson(value: &Value, args: minijinja::value::Rest<Value>, kwargs: Kwargs) -> Result<String, minijinja::Error> {
    let names = ["ensure_ascii", "indent", "separators", "sort_keys"];
    if args.len() > names.len() {
        return Err(minijinja::Error::new(ErrorKind::TooManyArguments, "tojson takes at most 4 arguments"));
    }
    let arg = |i: usize| -> Result<Option<Value>, minijinja::Error> {
        match kwargs.get::<Option<Value>>(names[i])? {
            Some(v) => Ok(Some(v)),
            None => Ok(args.get(i).cloned()),
        }
    };
    let ensure_ascii = arg(0)?.is_some_and(|v| v.is_true());
    let indent = match arg(1)? {
        None => None,
        Some(v) if v.is_none() || v.is_undefined() => None,
        Some(v) if v.kind() == ValueKind::String => Some(v.as_str().unwrap_or_default().to_string()),
        Some(v) => Some(" ".repeat(v.as_usize().ok_or_else(|| {
            minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson: indent must be a number >= 0 or a string, not {v}"))
        })?)),
    };
    let separators = match arg(2)? {
        Some(v) if !v.is_none() && !v.is_undefined() => {
            let parts: Vec<String> = v.try_iter()?.map(|p| p.as_str().map(str::to_string)).collect::<Option<_>>().unwrap_or_default();
            match <[String; 2]>::try_from(parts) {
                Ok([item, key]) => (item, key),
                Err(_) => return Err(minijinja::Error::new(ErrorKind::InvalidOperation, "tojson: separators must be two strings")),
            }
        }
        // json.dumps' defaults: no space before a newline when indenting.
        _ => ((if indent.is_some() { "," } else { ", " }).to_string(), ": ".to_string()),
    };
    let sort_keys = arg(3)?.is_some_and(|v| v.is_true());
    kwargs.assert_all_used()?;
    let options = JsonOptions { ensure_ascii, indent, separators, sort_keys };
    let mut out = String::new();
    write_json(value, &options, 0, &mut out)?;
    Ok(out)
}

/// How [`write_json`] lays out its text (`json.dumps`' arguments).
struct JsonOptions {
    ensure_ascii: bool,
    indent: Option<String>,
    separators: (String, String),
    sort_keys: bool,
}

/// `value` as `json.dumps` writes it.
fn write_json(value: &Value, o: &JsonOptions, depth: usize, out: &mut String) -> Result<(), minijinja::Error> {
    let newline = |out: &mut String, depth: usize| {
        if let Some(indent) = &o.indent {
            out.push('\n');
            out.push_str(&indent.repeat(depth));
        }
    };
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number if value.is_integer() => {
            let _ = write!(out, "{value}");
        }
        ValueKind::Number => out.push_str(&python_float(f64::try_from(value.clone()).unwrap_or(f64::NAN))),
        ValueKind::String => json_string(value.as_str().unwrap_or_default(), o.ensure_ascii, out),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&o.separators.0);
                }
                newline(out, depth + 1);
                write_json(item, o, depth + 1, out)?;
            }
            newline(out, depth);
            out.push(']');
        }
        ValueKind::Map => {
            let mut keys: Vec<Value> = value.try_iter()?.collect();
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            if o.sort_keys {
                keys.sort();
            }
            out.push('{');
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(&o.separators.0);
                }
                newline(out, depth + 1);
                // json.dumps turns keys into strings: True -> "true", None -> "null", 1 -> "1".
                let key_text = match key.kind() {
                    ValueKind::String => key.as_str().unwrap_or_default().to_string(),
                    _ => {
                        let mut s = String::new();
                        write_json(key, o, depth + 1, &mut s)?;
                        s
                    }
                };
                json_string(&key_text, o.ensure_ascii, out);
                out.push_str(&o.separators.1);
                write_json(&value.get_item(key)?, o, depth + 1, out)?;
            }
            newline(out, depth);
            out.push('}');
        }
        _ => json_string(&value.to_string(), o.ensure_ascii, out),
    }
    Ok(())
}

/// A float as Python's `repr` writes it (`1.0`, `1e-05`, `NaN`, `Infinity` in JSON).
fn python_float(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity".into() } else { "-Infinity".into() };
    }
    let exponent = if x == 0.0 { 0 } else { x.abs().log10().floor() as i32 };
    if !(-4..16).contains(&exponent) {
        // Shortest round-trip digits in exponent form, with Python's two-digit exponent.
        let text = format!("{x:e}");
        let (mantissa, exp) = text.split_once('e').expect("{:e} writes an exponent");
        let exp: i32 = exp.parse().expect("an integer exponent");
        return format!("{mantissa}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    }
    let text = format!("{x}");
    if text.contains('.') { text } else { format!("{text}.0") }
}

/// A JSON string literal as `json.dumps` writes it.
fn json_string(s: &str, ensure_ascii: bool, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && (c as u32) > 0x7e) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Seconds since the Unix epoch now.
fn now_unix_seconds() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// The civil date of a day count since 1970-01-01 (proleptic Gregorian): (year, month 1-12,
/// day 1-31).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Howard Hinnant's days_from_civil inverse: eras of 400 years, March-based years.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + (month <= 2) as i64, month, day)
}

/// `strftime_now(format)`: C `strftime` on the UTC time `unix` (transformers uses the local
/// time; a server's zone is arbitrary anyway). Conversions: %Y %y %m %d %e %H %I %M %S %p %b
/// %B %a %A %j %%; others are written as they are, as glibc does.
fn strftime_utc(format: &str, unix: i64) -> String {
    const MONTHS: [&str; 12] =
        ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];
    const WEEKDAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (secs / 3600, secs / 60 % 60, secs % 60);
    // 1970-01-01 was a Thursday.
    let weekday = WEEKDAYS[(days + 3).rem_euclid(7) as usize];
    let month_name = MONTHS[month as usize - 1];
    let day_of_year = days - days_from_civil(year, 1, 1) + 1;
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let _ = match chars.next() {
            Some('Y') => write!(out, "{year}"),
            Some('y') => write!(out, "{:02}", year.rem_euclid(100)),
            Some('m') => write!(out, "{month:02}"),
            Some('d') => write!(out, "{day:02}"),
            Some('e') => write!(out, "{day:2}"),
            Some('H') => write!(out, "{hour:02}"),
            Some('I') => write!(out, "{:02}", if hour % 12 == 0 { 12 } else { hour % 12 }),
            Some('M') => write!(out, "{minute:02}"),
            Some('S') => write!(out, "{second:02}"),
            Some('p') => write!(out, "{}", if hour < 12 { "AM" } else { "PM" }),
            Some('b') => write!(out, "{}", &month_name[..3]),
            Some('B') => write!(out, "{month_name}"),
            Some('a') => write!(out, "{}", &weekday[..3]),
            Some('A') => write!(out, "{weekday}"),
            Some('j') => write!(out, "{day_of_year:03}"),
            Some('%') => write!(out, "%"),
            Some(other) => write!(out, "%{other}"),
            None => write!(out, "%"),
        };
    }
    out
}

/// Days since 1970-01-01 of a civil date (the inverse of [`civil_from_days`]).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strftime_matches_known_dates() {
        // 2024-02-29 13:05:09 UTC (a leap day, a Thursday, day 60), from `date -u -d @1709211909`.
        assert_eq!(
            strftime_utc("%Y-%m-%d %H:%M:%S %a %A %b %B %j %y %e %I%p %% %Q", 1_709_211_909),
            "2024-02-29 13:05:09 Thu Thursday Feb February 060 24 29 01PM % %Q"
        );
        assert_eq!(strftime_utc("%d %b %Y", 0), "01 Jan 1970");
        for days in [-800_000, -1, 0, 59, 365, 11_016, 19_782, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn floats_print_as_python() {
        for (x, want) in [(1.0, "1.0"), (0.5, "0.5"), (1e-5, "1e-05"), (1e16, "1e+16"), (123456.789, "123456.789"), (-2.5e-7, "-2.5e-07")] {
            assert_eq!(python_float(x), want, "{x}");
        }
    }
}
