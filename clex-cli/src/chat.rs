//! `clex chat`: a conversation with a model through its own chat template. On a terminal, a
//! REPL with line editing and history (`/reset`, `/system TEXT`, `/exit`; Ctrl-C stops a
//! streaming reply); otherwise one message per input line (scripts, tests); `--prompt` asks
//! once and exits.
//!
//! Each turn renders the whole conversation with the generation prompt, tokenizes it without
//! adding special tokens (the template writes them, as transformers does), keeps the part of
//! the KV cache that matches its start and prefills only the rest: the history is never run
//! twice.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::Context;
use clex_models::backend::{self, Inference};
use clex_models::{ChatMessage, ChatTemplate, GenerateOptions, ModelError, ModelSource, Session, StopReason, TextStream};
use tokenizers::Tokenizer;

use crate::args::{self, LoadFlags, RopeOverride, RunFlags, SamplingFlags};

/// Arguments of `clex chat`.
#[derive(clap::Args, Debug)]
pub struct ChatArgs {
    /// HF model directory or llama.cpp .gguf file with a chat template (or pass --chat-template).
    #[arg(short = 'm', long)]
    model: PathBuf,
    /// tokenizer.json (default: MODEL/tokenizer.json, or the GGUF's own).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Ask this once, print the reply and exit (for scripts).
    #[arg(short = 'p', long)]
    prompt: Option<String>,
    /// The system message (the template's default when absent).
    #[arg(long)]
    system: Option<String>,
    /// A Jinja chat template file, used instead of the model's own (bos/eos from the model).
    #[arg(long)]
    chat_template: Option<PathBuf>,
    /// Most tokens per reply.
    #[arg(short = 'n', long, default_value_t = 512)]
    max_tokens: usize,
    /// Most tokens in the whole conversation (default: P·T_max for CLEX, else no limit).
    #[arg(long)]
    max_seq_len: Option<usize>,
    /// Prefill the whole conversation every turn instead of reusing the cache (slower; equal
    /// to reuse except under CLEX with the reference policy, where cached keys and values of
    /// earlier turns keep the θ and λ they were made with).
    #[arg(long)]
    no_reuse: bool,
    #[command(flatten)]
    sampling: SamplingFlags,
    #[command(flatten)]
    run: RunFlags,
    #[command(flatten)]
    rope: RopeOverride,
    #[command(flatten)]
    load: LoadFlags,
}

/// Set by the Ctrl-C handler while a reply streams; checked once per token.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

const HELP: &str = "commands: /reset (forget the conversation), /system TEXT (set the system message and reset), /exit (or Ctrl-D)";

pub fn run(args: ChatArgs) -> anyhow::Result<()> {
    let source: ModelSource = args.load.open(&args.model)?;
    // The template first: a model without one fails before the weights are read.
    let template = match &args.chat_template {
        Some(path) => source.chat_template_file(path).with_context(|| format!("--chat-template {}", path.display()))?,
        None => source.chat_template()?.with_context(|| {
            format!(
                "{} has no chat template (tokenizer.chat_template in a GGUF, chat_template in tokenizer_config.json); pass one with --chat-template FILE",
                args.model.display()
            )
        })?,
    };
    let run_config = args.rope.config(&source)?;
    let (tokenizer, _) = args::tokenizer(args.tokenizer.as_deref(), &source)?;
    crate::memory::check_load(&source, &run_config, args.run.dtype.into())?;
    let device = backend::device(args.run.device);
    let model = source.load_with::<Inference>(run_config, &device, args.run.dtype.into())?;
    let options = GenerateOptions {
        sampling: args.sampling.params(),
        max_new_tokens: args.max_tokens,
        max_seq_len: args.max_seq_len,
        stop_tokens: template.stop_tokens(&model.config().eos_token_ids, &tokenizer),
    };
    let mut chat = Conversation {
        session: Session::new(&model, args.run.cache_policy.into()),
        template,
        tokenizer: &tokenizer,
        system: args.system.clone(),
        messages: Vec::new(),
        options,
        reuse: !args.no_reuse,
        turn: 0,
    };
    if let Some(prompt) = &args.prompt {
        return chat.turn(prompt);
    }
    if std::io::stdin().is_terminal() { terminal_repl(&mut chat) } else { line_repl(&mut chat) }
}

/// One line of input.
enum Input<'a> {
    Message(&'a str),
    Reset,
    System(&'a str),
    Exit,
    Help,
    Unknown(&'a str),
    Empty,
}

fn parse(line: &str) -> Input<'_> {
    let trimmed = line.trim();
    let (command, rest) = trimmed.split_once(char::is_whitespace).map_or((trimmed, ""), |(c, r)| (c, r.trim()));
    match command {
        "" => Input::Empty,
        "/reset" => Input::Reset,
        "/system" => Input::System(rest),
        "/exit" | "/quit" => Input::Exit,
        "/help" | "/?" => Input::Help,
        c if c.starts_with('/') => Input::Unknown(c),
        _ => Input::Message(line),
    }
}

/// The REPL on a terminal: rustyline for editing and history; Ctrl-C at the prompt clears
/// the line, during a reply stops it.
fn terminal_repl(chat: &mut Conversation) -> anyhow::Result<()> {
    use rustyline::error::ReadlineError;
    ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst)).context("installing the Ctrl-C handler")?;
    let mut editor = rustyline::DefaultEditor::new().context("starting the line editor")?;
    eprintln!("[chatting through {}; {HELP}]", chat.template.origin());
    loop {
        let line = match editor.readline(">>> ") {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => return Ok(()),
            Err(e) => return Err(e).context("reading the terminal"),
        };
        if !line.trim().is_empty() {
            editor.add_history_entry(line.as_str()).ok();
        }
        let result = match parse(&line) {
            Input::Exit => return Ok(()),
            input => chat.command(input),
        };
        // A refused or too long turn is reported; the conversation goes on.
        if let Err(e) = result {
            eprintln!("error: {}", crate::message(&e));
        }
    }
}

/// One message (or command) per line of a non-terminal stdin; any error ends the run.
fn line_repl(chat: &mut Conversation) -> anyhow::Result<()> {
    for line in std::io::stdin().lock().lines() {
        match parse(&line.context("reading stdin")?) {
            Input::Exit => break,
            input => chat.command(input)?,
        }
    }
    Ok(())
}

/// A conversation on one session, whose cache holds (a prefix of) the rendered history.
struct Conversation<'m, 't> {
    session: Session<'m, Inference>,
    template: ChatTemplate,
    tokenizer: &'t Tokenizer,
    system: Option<String>,
    /// User and assistant messages so far (the system message is added when rendering).
    messages: Vec<ChatMessage>,
    options: GenerateOptions,
    /// Keep the cached prefix between turns (`--no-reuse` clears it).
    reuse: bool,
    turn: usize,
}

impl Conversation<'_, '_> {
    fn command(&mut self, input: Input) -> anyhow::Result<()> {
        match input {
            Input::Message(text) => self.turn(text)?,
            Input::Reset => {
                self.reset();
                eprintln!("[conversation reset]");
            }
            Input::System(text) => {
                self.system = (!text.is_empty()).then(|| text.to_string());
                self.reset();
                eprintln!("[system message {}; conversation reset]", if text.is_empty() { "cleared" } else { "set" });
            }
            Input::Help | Input::Empty => eprintln!("[{HELP}]"),
            Input::Unknown(command) => anyhow::bail!("unknown command {command}; {HELP}"),
            Input::Exit => {}
        }
        Ok(())
    }

    fn reset(&mut self) {
        self.messages.clear();
        self.session.reset();
    }

    /// Every message the template sees: the system message, then the conversation.
    fn rendered(&self) -> Result<String, ModelError> {
        let system = self.system.iter().map(|s| ChatMessage::new("system", s.as_str()));
        let all: Vec<ChatMessage> = system.chain(self.messages.iter().cloned()).collect();
        self.template.render(&all, true)
    }

    /// Answers `text`, streaming the reply to stdout; the reply joins the conversation.
    fn turn(&mut self, text: &str) -> anyhow::Result<()> {
        self.messages.push(ChatMessage::new("user", text));
        let ids = match self.prompt_ids() {
            Ok(ids) => ids,
            Err(e) => {
                self.messages.pop();
                return Err(e);
            }
        };
        // The cached tokens that start this prompt are kept; at least one token is run, for
        // the logits of the first reply token.
        let shared = if self.reuse { self.session.tokens().iter().zip(&ids).take_while(|(a, b)| a == b).count() } else { 0 };
        let reused = shared.min(ids.len() - 1);
        let total =
            ids.len().checked_add(self.options.max_new_tokens).context("-n: the conversation and the reply are more than 2^64 tokens")?;
        if let Err(e) = crate::memory::check(self.session.model(), "the conversation", ids.len() - reused, total) {
            self.messages.pop();
            return Err(e);
        }
        self.session.truncate(reused);
        self.turn += 1;
        INTERRUPTED.store(false, Ordering::SeqCst);
        let t_prompt = Instant::now();
        let mut generation = match self.session.generate(&ids[reused..], self.options.clone()) {
            Ok(g) => g,
            Err(e) => {
                self.messages.pop();
                return Err(match e {
                    ModelError::TooLong { .. } => anyhow::anyhow!("{e} (--max-seq-len; /reset starts over)"),
                    e => e.into(),
                });
            }
        };
        let prompt_s = t_prompt.elapsed().as_secs_f64();
        let mut stream = TextStream::new(self.tokenizer);
        let mut stdout = std::io::stdout().lock();
        let t_gen = Instant::now();
        let mut failed = None;
        let mut interrupted = false;
        for next in generation.by_ref() {
            let piece = next.and_then(|id| stream.push(id));
            match piece {
                Ok(piece) => {
                    stdout.write_all(piece.as_bytes()).ok();
                    stdout.flush().ok();
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
            if INTERRUPTED.load(Ordering::SeqCst) {
                interrupted = true;
                break;
            }
        }
        let generated = stream.ids().len();
        let beyond_max = generation.session().beyond_max();
        // The last reply token into the cache too, so the next turn reuses all of it.
        let stop = match failed {
            None => generation.finish(),
            Some(e) => Err(e),
        };
        let tail = stream.finish().unwrap_or_default();
        writeln!(stdout, "{tail}").ok();
        stdout.flush().ok();
        let gen_s = t_gen.elapsed().as_secs_f64();
        let reply = self.tokenizer.decode(stream.ids(), true).map_err(|e| anyhow::anyhow!("decoding the reply: {e}"))?;
        self.messages.push(ChatMessage::new("assistant", reply));
        let stop = match stop {
            Ok(stop) => stop,
            Err(e) => {
                // The cache may hold part of a failed forward: the next turn starts afresh.
                self.session.reset();
                return Err(e.into());
            }
        };
        let why = match (interrupted, stop) {
            (true, _) => "interrupted".to_string(),
            (_, Some(StopReason::StopToken(_))) => "end of turn".to_string(),
            (_, Some(StopReason::MaxNewTokens)) => format!("{} tokens (-n)", self.options.max_new_tokens),
            (_, Some(StopReason::MaxSeqLen)) => "the maximum sequence length (--max-seq-len)".to_string(),
            (_, None) => "done".to_string(),
        };
        if beyond_max {
            eprintln!("[warning: {} tokens is beyond P·T_max; θ(T_max) is extrapolated]", self.session.tokens().len());
        }
        eprintln!(
            "[turn {}: {reused} tokens reused, {} prefilled at {:.1} tokens/s; {generated} generated at {:.1} tokens/s; stop: {why}; backend {}]",
            self.turn,
            ids.len() - reused,
            (ids.len() - reused) as f64 / prompt_s.max(1e-9),
            generated as f64 / gen_s.max(1e-9),
            backend::name(),
        );
        Ok(())
    }

    /// The conversation rendered with the generation prompt, as token ids (no special
    /// tokens added: the template has them).
    fn prompt_ids(&self) -> anyhow::Result<Vec<u32>> {
        let text = self.rendered()?;
        let ids = self.tokenizer.encode(text.as_str(), false).map_err(|e| anyhow::anyhow!("tokenizing the conversation: {e}"))?;
        let ids = ids.get_ids().to_vec();
        anyhow::ensure!(!ids.is_empty(), "{}: the chat template rendered no text", self.template.origin());
        Ok(ids)
    }
}
