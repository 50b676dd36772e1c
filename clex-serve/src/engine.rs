//! [`Engine`]: one thread owns the model and decodes every running request as one batch
//! (continuous batching). Requests join between steps (their prompt is prefilled, then they
//! take part in the next batched step) and leave as soon as they finish or their client goes
//! away; a bounded number of requests may wait for a slot ([`Engine::submit`] refuses more).
//!
//! Each request is its own [`Session`]: its own KV cache, position and, for CLEX, its own t
//! (ceil(length / P)), cache policy and re-rotation at its own t boundaries. A batched step
//! ([`Session::step_batch`]) runs the projections, MLPs and head once for all rows and the
//! rotary, cache writes and attention per row with that row's frequencies.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use clex_core::ClexBackend;
use clex_models::session::RESERVE_NEW_TOKENS;
use clex_models::{CachePolicy, CausalLm, ModelError, Sampler, SamplingParams, Session, TextStream};
use tokenizers::Tokenizer;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::stop::StopStrings;

/// How many requests run and wait.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Requests decoded together (rows of a batched step).
    pub max_batch: usize,
    /// Requests waiting for a slot; beyond, [`Engine::submit`] answers [`Busy`].
    pub max_queue: usize,
    /// Cache policy of every request's session.
    pub policy: CachePolicy,
    /// Most tokens of a sequence (prompt and completion).
    pub context: usize,
    /// Prompt tokens per forward; between two chunks of a prompt every running request
    /// takes a step ([`clex_models::session::PREFILL_CHUNK`] is the usual size).
    pub prefill_chunk: usize,
}

/// One generation request, tokenized.
#[derive(Debug, Clone)]
pub struct GenRequest {
    /// Names the request in the server's log.
    pub id: String,
    /// Prompt token ids (at least one).
    pub prompt: Vec<u32>,
    /// Most tokens to generate (the context may end it sooner).
    pub max_tokens: usize,
    /// How tokens are drawn.
    pub sampling: SamplingParams,
    /// Tokens that end the completion (not part of it).
    pub stop_tokens: Vec<u32>,
    /// Text that ends the completion (not part of it).
    pub stop: Vec<String>,
    /// Added to these tokens' logits before each draw.
    pub logit_bias: Vec<(u32, f32)>,
}

/// Why a completion ended (OpenAI's `finish_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop token or stop sequence.
    Stop,
    /// `max_tokens` or the context.
    Length,
}

impl FinishReason {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// What a request receives, in order: text pieces, then one `Done` or `Failed`.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// More completion text.
    Text(String),
    /// The completion ended.
    Done {
        /// Why.
        reason: FinishReason,
        /// Tokens of the prompt.
        prompt_tokens: usize,
        /// Tokens generated (a stop token included).
        completion_tokens: usize,
    },
    /// The model failed on this request.
    Failed(String),
}

/// Every slot (running or waiting) is taken.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the server is busy: {0} requests are running or waiting")]
pub struct Busy(pub usize);

/// A request's place in the engine: its events, and its slot, freed when dropped.
#[derive(Debug)]
pub struct Ticket {
    /// The request's events; dropping the receiver cancels the request.
    pub events: UnboundedReceiver<Event>,
    _slot: Slot,
}

#[derive(Debug)]
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Clears the engine's liveness flag when its thread ends, however it ends.
struct Alive(Arc<std::sync::atomic::AtomicBool>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

struct Job {
    request: GenRequest,
    events: UnboundedSender<Event>,
}

/// The handle to the engine thread; cheap to share (`Arc`).
#[derive(Debug)]
pub struct Engine {
    jobs: mpsc::Sender<Job>,
    /// Cleared when the engine thread ends (it panicked).
    alive: Arc<std::sync::atomic::AtomicBool>,
    in_flight: Arc<AtomicUsize>,
    limit: usize,
    config: EngineConfig,
}

impl Engine {
    /// Starts the engine thread, which owns `model` and `tokenizer` (for the text of
    /// completions) until every handle is dropped.
    pub fn start<B: ClexBackend>(model: CausalLm<B>, tokenizer: Arc<Tokenizer>, config: EngineConfig) -> Engine
    where
        CausalLm<B>: Send + 'static,
    {
        let (jobs, rx) = mpsc::channel();
        let loop_config = config.clone();
        let alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flag = Alive(alive.clone());
        std::thread::Builder::new()
            .name("clex-engine".into())
            .spawn(move || {
                let _flag = flag;
                run(&model, &tokenizer, &loop_config, rx)
            })
            .expect("spawning the engine thread");
        let limit = config.max_batch.max(1) + config.max_queue;
        Engine { jobs, alive, in_flight: Arc::new(AtomicUsize::new(0)), limit, config }
    }

    /// The engine thread is running (false once it ended on a panic).
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// The engine's settings.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Queues `request`; [`Busy`] when every running and waiting slot is taken.
    pub fn submit(&self, request: GenRequest) -> Result<Ticket, Busy> {
        if self.in_flight.fetch_add(1, Ordering::SeqCst) >= self.limit {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            return Err(Busy(self.limit));
        }
        let slot = Slot(self.in_flight.clone());
        let (events, rx) = unbounded_channel();
        if self.jobs.send(Job { request, events }).is_err() {
            // The engine thread is gone (it panicked): the ticket's stream ends at once.
            let (_, rx) = unbounded_channel();
            return Ok(Ticket { events: rx, _slot: slot });
        }
        Ok(Ticket { events: rx, _slot: slot })
    }
}

/// One running request.
struct Running<'m, 't, B: ClexBackend> {
    id: String,
    session: Session<'m, B>,
    sampler: Sampler,
    text: TextStream<'t>,
    stop: StopStrings,
    events: UnboundedSender<Event>,
    prompt_tokens: usize,
    generated: usize,
    max_tokens: usize,
    stop_tokens: Vec<u32>,
    logit_bias: Vec<(u32, f32)>,
    /// Most rows of a step this request took part in.
    peak_batch: usize,
    /// The token drawn last, to run in the next step.
    next: u32,
}

impl<B: ClexBackend> Running<'_, '_, B> {
    /// One line on stderr when a request ends.
    fn log(&self, how: &str) {
        eprintln!(
            "[clex serve] {}: {how}; {} prompt + {} generated tokens; batched with up to {} rows",
            self.id, self.prompt_tokens, self.generated, self.peak_batch
        );
    }

    /// Draws the next token from `logits` (with the request's logit bias).
    fn draw(&mut self, mut logits: Vec<f32>) -> u32 {
        for &(id, bias) in &self.logit_bias {
            if let Some(l) = logits.get_mut(id as usize) {
                *l += bias;
            }
        }
        self.sampler.sample(&logits, self.session.tokens())
    }

    /// Handles a drawn token; `false` when the request is finished (its last events sent).
    fn take(&mut self, token: u32, context: usize) -> bool {
        self.generated += 1;
        let done = |s: &mut Self, reason: FinishReason, rest: String| {
            s.log(reason.as_str());
            if !rest.is_empty() {
                let _ = s.events.send(Event::Text(rest));
            }
            let _ = s.events.send(Event::Done { reason, prompt_tokens: s.prompt_tokens, completion_tokens: s.generated });
            false
        };
        if self.stop_tokens.contains(&token) {
            let rest = self.text.finish().unwrap_or_default();
            let rest = self.stop.push(&rest);
            let tail = if rest.stopped { rest.text } else { rest.text + &self.stop.finish() };
            return done(self, FinishReason::Stop, tail);
        }
        let piece = match self.text.push(token) {
            Ok(p) => p,
            Err(e) => {
                self.log("failed");
                let _ = self.events.send(Event::Failed(e.to_string()));
                return false;
            }
        };
        let released = self.stop.push(&piece);
        if released.stopped {
            return done(self, FinishReason::Stop, released.text);
        }
        if !released.text.is_empty() && self.events.send(Event::Text(released.text)).is_err() {
            self.log("cancelled (client gone)");
            return false;
        }
        // The drawn token runs in the next step; the sequence is then one longer.
        if self.generated >= self.max_tokens || self.session.tokens().len() + 1 >= context {
            let rest = self.text.finish().unwrap_or_default();
            let rest = self.stop.push(&rest);
            let tail = if rest.stopped { rest.text } else { rest.text + &self.stop.finish() };
            let reason = if rest.stopped { FinishReason::Stop } else { FinishReason::Length };
            return done(self, reason, tail);
        }
        self.next = token;
        true
    }
}

/// A request whose prompt is going through the model a chunk at a time.
struct Prefilling<'m, B: ClexBackend> {
    job: Job,
    session: Session<'m, B>,
    /// Prompt tokens run so far.
    done: usize,
}

/// The engine loop: admit waiting requests while slots are free; run one chunk of the
/// oldest prompt still prefilling (so a long prompt delays the others' next token by one
/// chunk, not by its whole prefill), and draw its first token when its prompt is done; then
/// one batched step of every running request. Blocks when there is nothing to do; returns
/// when every [`Engine`] handle is gone.
fn run<B: ClexBackend>(model: &CausalLm<B>, tokenizer: &Tokenizer, config: &EngineConfig, jobs: mpsc::Receiver<Job>) {
    let mut waiting: VecDeque<Job> = VecDeque::new();
    let mut prefilling: VecDeque<Prefilling<'_, B>> = VecDeque::new();
    let mut running: Vec<Running<'_, '_, B>> = Vec::new();
    loop {
        if running.is_empty() && prefilling.is_empty() && waiting.is_empty() {
            match jobs.recv() {
                Ok(job) => waiting.push_back(job),
                Err(_) => return,
            }
        }
        waiting.extend(jobs.try_iter());
        waiting.retain(|j| !j.events.is_closed());
        prefilling.retain(|p| !p.job.events.is_closed());
        while running.len() + prefilling.len() < config.max_batch.max(1) {
            let Some(job) = waiting.pop_front() else { break };
            let mut session = Session::new(model, config.policy);
            let new = job.request.max_tokens.min(RESERVE_NEW_TOKENS);
            session.reserve((job.request.prompt.len() + new).min(config.context));
            prefilling.push_back(Prefilling { job, session, done: 0 });
        }
        if let Some(mut p) = prefilling.pop_front() {
            let prompt = &p.job.request.prompt;
            let end = (p.done + config.prefill_chunk.max(1)).min(prompt.len());
            let part = &prompt[p.done..end];
            let session = &mut p.session;
            // A panic in the model fails this request, not the server.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| session.prefill_part(part, prompt.len())))
                .unwrap_or_else(|_| Err(ModelError::Invalid("the model panicked on this prompt".into())));
            match result {
                Ok(logits) if end == prompt.len() => {
                    if let Some(r) = start(p.job, p.session, tokenizer, logits, config.context) {
                        running.push(r);
                    }
                }
                Ok(_) => {
                    p.done = end;
                    prefilling.push_front(p);
                }
                Err(e) => {
                    let _ = p.job.events.send(Event::Failed(e.to_string()));
                }
            }
        }
        // A client that went away frees its row before the step.
        running.retain(|r| {
            let gone = r.events.is_closed();
            if gone {
                r.log("cancelled (client gone)");
            }
            !gone
        });
        if running.is_empty() {
            continue;
        }
        let ids: Vec<u32> = running.iter().map(|r| r.next).collect();
        let mut sessions: Vec<&mut Session<'_, B>> = running.iter_mut().map(|r| &mut r.session).collect();
        let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Session::step_batch(&mut sessions, &ids)))
            .unwrap_or_else(|_| Err(ModelError::Invalid("the model panicked in a decode step".into())));
        match step {
            Ok(logits) => {
                let rows = running.len();
                let mut keep = Vec::with_capacity(rows);
                for (mut r, logits) in running.drain(..).zip(logits) {
                    r.peak_batch = r.peak_batch.max(rows);
                    let token = r.draw(logits);
                    if r.take(token, config.context) {
                        keep.push(r);
                    }
                }
                running = keep;
            }
            Err(e) => {
                for r in running.drain(..) {
                    r.log("failed");
                    let _ = r.events.send(Event::Failed(e.to_string()));
                }
            }
        }
    }
}

/// A request whose prompt has run: draws its first token; `None` when that already ends it.
fn start<'m, 't, B: ClexBackend>(
    job: Job,
    session: Session<'m, B>,
    tokenizer: &'t Tokenizer,
    logits: Vec<f32>,
    context: usize,
) -> Option<Running<'m, 't, B>> {
    let Job { request, events } = job;
    let mut running = Running {
        id: request.id,
        session,
        sampler: Sampler::new(request.sampling),
        text: TextStream::new(tokenizer),
        stop: StopStrings::new(request.stop),
        events,
        prompt_tokens: request.prompt.len(),
        generated: 0,
        max_tokens: request.max_tokens,
        stop_tokens: request.stop_tokens,
        logit_bias: request.logit_bias,
        peak_batch: 1,
        next: 0,
    };
    let token = running.draw(logits);
    running.take(token, context).then_some(running)
}
