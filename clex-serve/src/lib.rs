//! clex-serve: an OpenAI-compatible HTTP server over one [`clex_models::CausalLm`], as
//! `clex serve` runs it. [`engine`] decodes every running request as one batch on a thread
//! that owns the model (continuous batching, a bounded queue); [`http`] answers
//! `/v1/models`, `/v1/completions`, `/v1/chat/completions` (whole or streamed as server-sent
//! events) and `/health`; [`openai`] checks request bodies and shapes the responses.

#![warn(missing_docs)]

pub mod engine;
pub mod http;
pub mod openai;
pub mod stop;

pub use engine::{Busy, Engine, EngineConfig, Event, FinishReason, GenRequest, Ticket};
pub use http::{App, MemoryLimit, router};

/// Serves `app` on `listener` until `shutdown` resolves; requests in flight then finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: std::sync::Arc<App>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(app)).with_graceful_shutdown(shutdown).await
}
