//! The HTTP side: axum routes for OpenAI's `/v1/models`, `/v1/completions` and
//! `/v1/chat/completions` (whole responses or server-sent events), `/health`, OpenAI-style
//! error bodies, an optional bearer key, and the [`Engine`] behind them.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use clex_models::{ChatTemplate, SamplingParams};
use serde_json::{Value, json};
use tokenizers::Tokenizer;

use crate::engine::{Engine, Event, FinishReason, GenRequest, Ticket};
use crate::openai::{self, ApiError, Common, Prompt};

/// What one request may use beyond the weights.
pub struct MemoryLimit {
    /// Bytes a sequence of `(prompt, total)` tokens needs ([`clex_models::CausalLm::memory_estimate`]).
    pub need: Box<dyn Fn(usize, usize) -> usize + Send + Sync>,
    /// Bytes one request may have (the memory available at start over the batch size).
    pub budget: usize,
}

/// Everything a request handler reads.
pub struct App {
    /// The model's engine.
    pub engine: Engine,
    /// Tokenizes prompts.
    pub tokenizer: Arc<Tokenizer>,
    /// Renders chat requests; `None`: the chat endpoint answers 400.
    pub template: Option<ChatTemplate>,
    /// Token ids that end every completion (the model's EOS ids, the template's EOS).
    pub stop_tokens: Vec<u32>,
    /// Prepended to completion prompts (the model's BOS when it adds one).
    pub bos: Option<u32>,
    /// The model's vocabulary size: token ids in prompts and `logit_bias` must be below it.
    pub vocab: usize,
    /// The name `/v1/models` lists and responses carry.
    pub model_id: String,
    /// Required bearer token for `/v1/*`.
    pub api_key: Option<String>,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// The memory one request may use: a request whose prompt and completion would not fit
    /// is refused with 413 before it is queued.
    pub memory: Option<MemoryLimit>,
    /// Unix time the server started (`created` of the model).
    pub created: u64,
}

/// The router over `app`.
pub fn router(app: Arc<App>) -> Router {
    let limit = app.max_body_bytes;
    Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/v1/models/{*id}", get(model))
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(app)
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn error_response(e: &ApiError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    json_response(status, &e.body())
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A response id unique to this process.
fn response_id(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}-{:x}{:06x}", now(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// 200 while the engine runs; 503 once it has stopped (a panic in the model).
async fn health(State(app): State<Arc<App>>) -> Response {
    if app.engine.is_alive() {
        json_response(StatusCode::OK, &json!({"status": "ok"}))
    } else {
        json_response(StatusCode::SERVICE_UNAVAILABLE, &json!({"status": "error", "message": "the engine thread stopped"}))
    }
}

async fn method_not_allowed() -> Response {
    error_response(&ApiError::new(405, "invalid_request_error", "this route does not take that method").with_code("method_not_allowed"))
}

async fn not_found() -> Response {
    error_response(&ApiError::new(404, "invalid_request_error", "no such route").with_code("not_found"))
}

fn model_object(app: &App) -> Value {
    json!({"id": app.model_id, "object": "model", "created": app.created, "owned_by": "clex-rs",
        "context_length": app.engine.config().context})
}

async fn models(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Err(e) = authorize(&app, &headers) {
        return error_response(&e);
    }
    json_response(StatusCode::OK, &json!({"object": "list", "data": [model_object(&app)]}))
}

async fn model(State(app): State<Arc<App>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(e) = authorize(&app, &headers) {
        return error_response(&e);
    }
    if id != app.model_id {
        return error_response(
            &ApiError::new(404, "invalid_request_error", format!("the model '{id}' does not exist")).with_code("model_not_found"),
        );
    }
    json_response(StatusCode::OK, &model_object(&app))
}

fn authorize(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(key) = &app.api_key else { return Ok(()) };
    let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if given == Some(key.as_str()) {
        Ok(())
    } else {
        Err(ApiError::new(401, "invalid_request_error", "Incorrect API key provided").with_code("invalid_api_key"))
    }
}

/// The body as a JSON object, or the error: 413 over the size limit, 400 otherwise.
fn body_object(app: &App, body: Result<Bytes, BytesRejection>) -> Result<serde_json::Map<String, Value>, ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(413, "invalid_request_error", format!("the request body is larger than {} bytes", app.max_body_bytes))
        } else {
            ApiError::new(400, "invalid_request_error", format!("reading the request body: {rejection}"))
        }
    })?;
    openai::parse_object(&body)
}

/// Which endpoint a generation answers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Completion,
    Chat,
}

async fn completions(State(app): State<Arc<App>>, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
    if let Err(e) = authorize(&app, &headers) {
        return error_response(&e);
    }
    // Parsing and tokenizing a large body is CPU work: off the async workers.
    let worker = app.clone();
    let prepared = tokio::task::spawn_blocking(move || {
        let app = worker;
        let request = openai::completion_request(&body_object(&app, body)?)?;
        let prompt = match request.prompt {
            Prompt::Tokens(ids) => {
                if let Some(bad) = ids.iter().find(|&&t| t as usize >= app.vocab) {
                    return Err(ApiError::invalid("prompt", format!("token id {bad} is outside the model's vocabulary of {}", app.vocab)));
                }
                ids
            }
            Prompt::Text(text) => {
                let ids = tokenize(&app, &text, true)?;
                match app.bos {
                    Some(b) if ids.first() != Some(&b) => std::iter::once(b).chain(ids).collect(),
                    _ => ids,
                }
            }
        };
        Ok((prompt, request.common))
    })
    .await
    .unwrap_or_else(|_| Err(ApiError::new(500, "server_error", "preparing the request failed")));
    match prepared {
        Ok((prompt, common)) => generate(app, Kind::Completion, prompt, common, Some(16)).await,
        Err(e) => error_response(&e),
    }
}

async fn chat_completions(State(app): State<Arc<App>>, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
    if let Err(e) = authorize(&app, &headers) {
        return error_response(&e);
    }
    let worker = app.clone();
    let prepared = tokio::task::spawn_blocking(move || {
        let app = worker;
        let request = openai::chat_request(&body_object(&app, body)?)?;
        let template = app.template.as_ref().ok_or_else(|| {
            ApiError::new(
                400,
                "invalid_request_error",
                format!("the model '{}' has no chat template (start the server with --chat-template FILE)", app.model_id),
            )
        })?;
        let text = template.render(&request.messages, true).map_err(|e| ApiError::invalid("messages", e.to_string()))?;
        // The template writes the special tokens itself, as transformers' apply_chat_template.
        Ok((tokenize(&app, &text, false)?, request.common))
    })
    .await
    .unwrap_or_else(|_| Err(ApiError::new(500, "server_error", "preparing the request failed")));
    match prepared {
        Ok((prompt, common)) => generate(app, Kind::Chat, prompt, common, None).await,
        Err(e) => error_response(&e),
    }
}

fn tokenize(app: &App, text: &str, special: bool) -> Result<Vec<u32>, ApiError> {
    let enc = app.tokenizer.encode(text, special).map_err(|e| ApiError::invalid("prompt", format!("tokenizing: {e}")))?;
    Ok(enc.get_ids().to_vec())
}

/// Checks the prompt against the context and memory, queues the request, and answers with
/// the whole completion or a stream of chunks. `default_max`: new tokens when the request
/// names none (`None`: as many as the context and the memory one request may use allow).
async fn generate(app: Arc<App>, kind: Kind, prompt: Vec<u32>, common: Common, default_max: Option<usize>) -> Response {
    let context = app.engine.config().context;
    let param = if kind == Kind::Chat { "messages" } else { "prompt" };
    if prompt.is_empty() {
        return error_response(&ApiError::invalid(param, "the prompt has no tokens"));
    }
    let too_long =
        |message: String| error_response(&ApiError::new(413, "invalid_request_error", message).with_code("context_length_exceeded"));
    if prompt.len() >= context {
        return too_long(format!("the prompt is {} tokens; this server's context is {context} tokens", prompt.len()));
    }
    let room = context - prompt.len();
    let fits = |new: usize| app.memory.as_ref().is_none_or(|m| (m.need)(prompt.len(), prompt.len() + new) <= m.budget);
    let max_tokens = match common.max_tokens.or(default_max) {
        Some(asked) => {
            let n = asked.min(room);
            if !fits(n) {
                let m = app.memory.as_ref().expect("only a memory limit refuses");
                let bytes = (m.need)(prompt.len(), prompt.len() + n);
                return too_long(format!(
                    "{} prompt tokens and {n} new tokens need about {} MiB; one request may use {} MiB (lower max_tokens)",
                    prompt.len(),
                    bytes >> 20,
                    m.budget >> 20
                ));
            }
            n
        }
        // The most new tokens that fit (the estimate grows with the total).
        None => {
            if !fits(1) {
                return too_long(format!("the prompt of {} tokens does not fit the memory one request may use", prompt.len()));
            }
            let (mut lo, mut hi) = (1, room);
            while lo < hi {
                let mid = lo + (hi - lo).div_ceil(2);
                if fits(mid) { lo = mid } else { hi = mid - 1 }
            }
            lo
        }
    };
    let sampling = SamplingParams {
        temperature: common.temperature,
        top_k: None,
        top_p: common.top_p,
        repeat_penalty: 1.0,
        repeat_last_n: 0,
        seed: common.seed.unwrap_or_else(rand::random),
    };
    if let Some((bad, _)) = common.logit_bias.iter().find(|(t, _)| *t as usize >= app.vocab) {
        return error_response(&ApiError::invalid(
            "logit_bias",
            format!("token id {bad} is outside the model's vocabulary of {}", app.vocab),
        ));
    }
    let id = response_id(if kind == Kind::Chat { "chatcmpl" } else { "cmpl" });
    let request = GenRequest {
        id: id.clone(),
        prompt,
        max_tokens,
        sampling,
        stop_tokens: app.stop_tokens.clone(),
        stop: common.stop.clone(),
        logit_bias: common.logit_bias.clone(),
    };
    let ticket = match app.engine.submit(request) {
        Ok(t) => t,
        Err(busy) => return error_response(&ApiError::new(429, "server_busy", busy.to_string()).with_code("rate_limit_exceeded")),
    };
    let meta = Meta { id, created: now(), model: app.model_id.clone(), kind, include_usage: common.include_usage };
    if common.stream { stream(meta, ticket) } else { whole(meta, ticket).await }
}

/// What every chunk of one response repeats.
struct Meta {
    id: String,
    created: u64,
    model: String,
    kind: Kind,
    include_usage: bool,
}

impl Meta {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.kind, chunk) {
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Chat, false) => "chat.completion",
            (Kind::Completion, _) => "text_completion",
        }
    }

    fn envelope(&self, chunk: bool, choices: Value) -> Value {
        json!({"id": self.id, "object": self.object(chunk), "created": self.created, "model": self.model, "choices": choices})
    }

    /// A streamed chunk: `text` (chat: `delta`), or the end with `finish`.
    fn chunk(&self, text: Option<&str>, role: bool, finish: Option<FinishReason>) -> Value {
        let finish = finish.map(FinishReason::as_str);
        let choice = match self.kind {
            Kind::Chat => {
                let mut delta = serde_json::Map::new();
                if role {
                    delta.insert("role".into(), json!("assistant"));
                }
                if let Some(t) = text {
                    delta.insert("content".into(), json!(t));
                }
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
            }
            Kind::Completion => json!({"index": 0, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": finish}),
        };
        let mut v = self.envelope(true, json!([choice]));
        if self.include_usage {
            v["usage"] = Value::Null;
        }
        v
    }
}

/// Collects the completion and answers once.
async fn whole(meta: Meta, mut ticket: Ticket) -> Response {
    let mut text = String::new();
    while let Some(event) = ticket.events.recv().await {
        match event {
            Event::Text(t) => text.push_str(&t),
            Event::Done { reason, prompt_tokens, completion_tokens } => {
                let choice = match meta.kind {
                    Kind::Chat => json!({"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": null,
                        "finish_reason": reason.as_str()}),
                    Kind::Completion => json!({"index": 0, "text": text, "logprobs": null, "finish_reason": reason.as_str()}),
                };
                let mut body = meta.envelope(false, json!([choice]));
                body["usage"] = openai::usage(prompt_tokens, completion_tokens);
                return json_response(StatusCode::OK, &body);
            }
            Event::Failed(message) => return error_response(&ApiError::new(500, "server_error", message)),
        }
    }
    error_response(&ApiError::new(500, "server_error", "the engine stopped"))
}

fn sse(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

/// Server-sent events, one chunk per piece of text, then the finish chunk (and the usage
/// chunk when asked for) and `[DONE]`. The body owns the ticket: a client that goes away
/// drops it, which cancels the request and frees its slot.
fn stream(meta: Meta, ticket: Ticket) -> Response {
    enum State {
        Start(Meta, Ticket),
        Running(Meta, Ticket),
        End,
    }
    let body = futures_util::stream::unfold(State::Start(meta, ticket), |state| async move {
        match state {
            State::End => None,
            State::Start(meta, ticket) => {
                // Chat streams open with the assistant role, as OpenAI's do.
                let first = match meta.kind {
                    Kind::Chat => sse(&meta.chunk(Some(""), true, None)),
                    Kind::Completion => Bytes::new(),
                };
                Some((Ok::<_, Infallible>(first), State::Running(meta, ticket)))
            }
            State::Running(meta, mut ticket) => match ticket.events.recv().await {
                Some(Event::Text(t)) => Some((Ok(sse(&meta.chunk(Some(&t), false, None))), State::Running(meta, ticket))),
                Some(Event::Done { reason, prompt_tokens, completion_tokens }) => {
                    let mut out = sse(&meta.chunk(None, false, Some(reason))).to_vec();
                    if meta.include_usage {
                        let mut usage = meta.envelope(true, json!([]));
                        usage["usage"] = openai::usage(prompt_tokens, completion_tokens);
                        out.extend_from_slice(&sse(&usage));
                    }
                    out.extend_from_slice(b"data: [DONE]\n\n");
                    Some((Ok(Bytes::from(out)), State::End))
                }
                Some(Event::Failed(message)) => {
                    let mut out = sse(&ApiError::new(500, "server_error", message).body()).to_vec();
                    out.extend_from_slice(b"data: [DONE]\n\n");
                    Some((Ok(Bytes::from(out)), State::End))
                }
                None => None,
            },
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .expect("a valid response")
}
