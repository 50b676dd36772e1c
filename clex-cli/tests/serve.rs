//! `clex serve` end to end: the real binary on 127.0.0.1 (a free port), the real HTTP client
//! reqwest, and the tiny CLEX-LLaMA fixture (P = 32, so requests cross t boundaries at their
//! own times). Every endpoint, streaming, stop sequences, 16 concurrent streams against the
//! same requests alone, and the refusals: bad JSON and parameters, oversized bodies and
//! prompts, a full queue, a wrong key, a client that disconnects mid-stream.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// ChatML, as SmolLM2's template (without its default system message).
const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// A running `clex serve`, killed on drop.
struct Server {
    child: Child,
    base: String,
    /// Every line the server wrote to stderr after its address.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `clex serve` on the fixture model with `extra` flags; waits for its address.
    fn start(extra: &[&str]) -> Server {
        let dir = common::byte_model_dir(256);
        let template = dir.path().join("chatml.jinja");
        std::fs::write(&template, CHATML).unwrap();
        let model = dir.path().to_path_buf();
        Self::start_on(&model, &[&["--chat-template", common::p(&template)], extra].concat(), dir)
    }

    /// Starts `clex serve -m model` with `flags`; `dir` lives as long as the server.
    fn start_on(model: &std::path::Path, flags: &[&str], dir: tempfile::TempDir) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_clex"))
            .args(["serve", "-m", common::p(model), "--port", "0"])
            .args(flags)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let line = lines.next().expect("clex serve printed its address").unwrap();
        let base = line.split("listening on ").nth(1).unwrap_or_else(|| panic!("no address in {line:?}")).trim().to_string();
        // Keep draining stderr so the server never blocks on it.
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(|l| sink.lock().unwrap().push(l)));
        Server { child, base, log, _dir: dir }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The process is still running.
    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(120)).build().unwrap()
}

async fn post(server: &Server, path: &str, body: &Value) -> (u16, Value) {
    let r = client().post(server.url(path)).json(body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// Every `data:` payload of an SSE body, `[DONE]` included as a string.
fn sse_events(body: &str) -> Vec<Value> {
    body.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(|d| if d == "[DONE]" { Value::String(d.into()) } else { serde_json::from_str(d).unwrap() })
        .collect()
}

/// A streamed request's text (deltas concatenated) and finish reason; checks the framing.
async fn stream_text(server: &Server, path: &str, body: &Value) -> (String, String) {
    let r = client().post(server.url(path)).json(body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let events = sse_events(&r.text().await.unwrap());
    assert_eq!(events.last().unwrap(), "[DONE]", "a stream ends with [DONE]");
    let chat = path.contains("chat");
    let mut text = String::new();
    let mut finish = None;
    for e in &events[..events.len() - 1] {
        assert_eq!(e["object"], if chat { "chat.completion.chunk" } else { "text_completion" });
        let Some(choice) = e["choices"].get(0) else { continue };
        let piece = if chat { &choice["delta"]["content"] } else { &choice["text"] };
        text.push_str(piece.as_str().unwrap_or(""));
        if let Some(f) = choice["finish_reason"].as_str() {
            finish = Some(f.to_string());
        }
    }
    if chat {
        assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant", "a chat stream opens with the role");
    }
    (text, finish.expect("a finish chunk"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap()
}

#[test]
fn every_endpoint_answers_in_openai_shapes() {
    let mut server = Server::start(&[]);
    runtime().block_on(async {
        let health: Value = client().get(server.url("/health")).send().await.unwrap().json().await.unwrap();
        assert_eq!(health, json!({"status": "ok"}));
        let models: Value = client().get(server.url("/v1/models")).send().await.unwrap().json().await.unwrap();
        assert_eq!(models["object"], "list");
        let id = models["data"][0]["id"].as_str().unwrap().to_string();
        assert_eq!(models["data"][0]["object"], "model");
        assert_eq!(models["data"][0]["context_length"], 256, "P·T_max of the fixture");
        let one = client().get(server.url(&format!("/v1/models/{id}"))).send().await.unwrap();
        assert_eq!(one.status(), 200);
        assert_eq!(client().get(server.url("/v1/models/other")).send().await.unwrap().status(), 404);
        let wrong_method = client().get(server.url("/v1/chat/completions")).send().await.unwrap();
        assert_eq!(wrong_method.status(), 405);
        let body: Value = wrong_method.json().await.unwrap();
        assert!(body["error"]["message"].is_string(), "{body}");

        // Completions, whole and streamed: the same greedy text.
        let body = json!({"model": id, "prompt": "ROMEO:", "max_tokens": 40, "temperature": 0});
        let (status, whole) = post(&server, "/v1/completions", &body).await;
        assert_eq!(status, 200, "{whole}");
        assert_eq!(whole["object"], "text_completion");
        let text = whole["choices"][0]["text"].as_str().unwrap().to_string();
        let usage = &whole["usage"];
        assert_eq!(usage["prompt_tokens"], 7, "BOS + 6 bytes");
        assert_eq!(
            usage["total_tokens"].as_u64(),
            Some(usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap())
        );
        let reason = whole["choices"][0]["finish_reason"].as_str().unwrap();
        if reason == "length" {
            assert_eq!(usage["completion_tokens"], 40);
        }
        let mut streamed = body.clone();
        streamed["stream"] = json!(true);
        assert_eq!(stream_text(&server, "/v1/completions", &streamed).await, (text.clone(), reason.to_string()));

        // Token-id prompts are the same prompt.
        let tokenizer = tokenizers::Tokenizer::from_file(server._dir.path().join("tokenizer.json")).unwrap();
        let ids: Vec<u32> = std::iter::once(1).chain(tokenizer.encode("ROMEO:", false).unwrap().get_ids().to_vec()).collect();
        let (_, by_ids) = post(&server, "/v1/completions", &json!({"prompt": ids, "max_tokens": 40, "temperature": 0})).await;
        assert_eq!(by_ids["choices"][0]["text"], text.as_str());

        // Chat, whole and streamed, with usage at the end of the stream when asked for.
        let chat = json!({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello?"}],
            "max_tokens": 30, "temperature": 0});
        let (status, whole) = post(&server, "/v1/chat/completions", &chat).await;
        assert_eq!(status, 200, "{whole}");
        assert_eq!(whole["object"], "chat.completion");
        assert_eq!(whole["choices"][0]["message"]["role"], "assistant");
        let reply = whole["choices"][0]["message"]["content"].as_str().unwrap().to_string();
        let prompt = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello?<|im_end|>\n<|im_start|>assistant\n";
        assert_eq!(whole["usage"]["prompt_tokens"], prompt.len(), "the rendered template, one byte a token, no BOS added");
        let mut streamed = chat.clone();
        streamed["stream"] = json!(true);
        streamed["stream_options"] = json!({"include_usage": true});
        let (text, _) = stream_text(&server, "/v1/chat/completions", &streamed).await;
        assert_eq!(text, reply);
        let r = client().post(server.url("/v1/chat/completions")).json(&streamed).send().await.unwrap();
        let events = sse_events(&r.text().await.unwrap());
        let usage_chunk = &events[events.len() - 2];
        assert_eq!(usage_chunk["choices"], json!([]));
        assert_eq!(usage_chunk["usage"], whole["usage"]);

        // Sampling with a seed repeats itself.
        let sampled = json!({"prompt": "ab", "max_tokens": 20, "temperature": 1.0, "top_p": 0.9, "seed": 42});
        let (_, a) = post(&server, "/v1/completions", &sampled).await;
        let (_, b) = post(&server, "/v1/completions", &sampled).await;
        assert_eq!(a["choices"][0]["text"], b["choices"][0]["text"]);
    });
    assert!(server.alive());
}

#[test]
fn stop_sequences_cut_whole_and_streamed_text() {
    let server = Server::start(&[]);
    runtime().block_on(async {
        let body = json!({"prompt": "JULIET:", "max_tokens": 60, "temperature": 0});
        let (_, whole) = post(&server, "/v1/completions", &body).await;
        let text = whole["choices"][0]["text"].as_str().unwrap().to_string();
        let chars: Vec<char> = text.chars().collect();
        assert!(chars.len() >= 12, "need a longer completion to cut: {text:?}");
        // A two-character stop first seen at character 8 or later.
        let (at, stop) = (8..chars.len() - 1)
            .map(|i| (i, chars[i..i + 2].iter().collect::<String>()))
            .find(|(i, s)| text.find(s.as_str()) == Some(chars[..*i].iter().map(|c| c.len_utf8()).sum()))
            .expect("some pair first appears late");
        let want: String = chars[..at].iter().collect();
        let mut cut = body.clone();
        cut["stop"] = json!(["never appears \u{1}", stop]);
        let (_, got) = post(&server, "/v1/completions", &cut).await;
        assert_eq!(got["choices"][0]["text"], want.as_str());
        assert_eq!(got["choices"][0]["finish_reason"], "stop");
        cut["stream"] = json!(true);
        assert_eq!(stream_text(&server, "/v1/completions", &cut).await, (want, "stop".to_string()));
    });
}

/// 16 streams at once, 6 decoded together and the rest queued, joining and leaving the batch
/// between steps, prompts read 16 tokens at a time between other requests' steps: each
/// returns exactly what it returns alone.
#[test]
fn concurrent_streams_equal_the_same_requests_alone() {
    let mut server = Server::start(&["--parallel", "6", "--queue", "32", "--prefill-chunk", "16"]);
    let rt = runtime();
    let bodies: Vec<Value> = (0..16)
        .map(|i| {
            let prompt = ["ROMEO:", "JULIET: O", "Nurse", "To be, or not", "a", "MERCUTIO: A plague", "zz", "Good morrow"][i % 8];
            let endpoint_chat = i % 2 == 1;
            let mut b = if endpoint_chat {
                json!({"messages": [{"role": "user", "content": format!("{prompt} {i}")}]})
            } else {
                json!({"prompt": format!("{prompt} {i}")})
            };
            b["max_tokens"] = json!(20 + 7 * i);
            b["temperature"] = json!(0);
            b["stream"] = json!(true);
            b
        })
        .collect();
    let path = |b: &Value| if b.get("messages").is_some() { "/v1/chat/completions" } else { "/v1/completions" };
    let alone: Vec<(String, String)> = rt.block_on(async {
        let mut out = Vec::new();
        for b in &bodies {
            out.push(stream_text(&server, path(b), b).await);
        }
        out
    });
    let together: Vec<(String, String)> = rt.block_on(async {
        let server = &server;
        let tasks = bodies.iter().map(|b| stream_text(server, path(b), b));
        futures_util::future::join_all(tasks).await
    });
    for (i, (a, t)) in alone.iter().zip(&together).enumerate() {
        assert_eq!(a, t, "request {i}: concurrent vs alone");
    }
    assert!(alone.iter().any(|(t, _)| t.chars().count() > 40), "some completions run past a t boundary");
    // The server's log: the concurrent requests shared steps, six rows at most.
    let peak =
        server.log.lock().unwrap().iter().filter_map(|l| l.rsplit("up to ").next()?.split_whitespace().next()?.parse::<usize>().ok()).max();
    assert_eq!(peak, Some(6), "--parallel 6 filled the batch");
    assert!(server.alive());
}

#[test]
fn bad_requests_get_openai_errors() {
    let mut server = Server::start(&["--max-body-bytes", "4096", "--ctx-size", "64", "--api-key", "sesame"]);
    runtime().block_on(async {
        let c = client();
        let send = |path: &str, body: String, key: Option<&str>| {
            let mut r = c.post(server.url(path)).header("content-type", "application/json").body(body);
            if let Some(k) = key {
                r = r.bearer_auth(k);
            }
            r.send()
        };
        let check = |status: u16, body: Value, want: u16, param: Option<&str>| {
            assert_eq!(status, want, "{body}");
            let e = &body["error"];
            assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
            assert!(e["type"].is_string(), "{body}");
            if let Some(p) = param {
                assert_eq!(e["param"], p, "{body}");
            }
        };
        let good = json!({"prompt": "ab", "max_tokens": 3}).to_string();
        // Keys: none, wrong, right; /health needs none.
        for key in [None, Some("wrong")] {
            let r = send("/v1/completions", good.clone(), key).await.unwrap();
            check(r.status().as_u16(), r.json().await.unwrap(), 401, None);
        }
        assert_eq!(c.get(server.url("/v1/models")).send().await.unwrap().status(), 401);
        assert_eq!(c.get(server.url("/health")).send().await.unwrap().status(), 200);
        assert_eq!(send("/v1/completions", good.clone(), Some("sesame")).await.unwrap().status(), 200);
        let cases = [
            ("/v1/completions", "{\"prompt\": ".to_string(), 400, None),
            ("/v1/completions", "[1, 2]".to_string(), 400, None),
            ("/v1/completions", json!({"prompt": "a", "temperature": 9}).to_string(), 400, Some("temperature")),
            ("/v1/completions", json!({"prompt": "a", "max_tokens": "many"}).to_string(), 400, Some("max_tokens")),
            ("/v1/completions", json!({"prompt": [999999]}).to_string(), 400, Some("prompt")),
            ("/v1/chat/completions", json!({"messages": "hi"}).to_string(), 400, Some("messages")),
            ("/v1/chat/completions", json!({"messages": [{"role": "user", "content": "x"}], "stop": 3}).to_string(), 400, Some("stop")),
            // Over --max-body-bytes, and over --ctx-size.
            ("/v1/completions", json!({"prompt": "x".repeat(5000)}).to_string(), 413, None),
            ("/v1/completions", json!({"prompt": "x".repeat(80)}).to_string(), 413, None),
            ("/v1/nothing", good.clone(), 404, None),
        ];
        for (path, body, want, param) in cases {
            let r = send(path, body, Some("sesame")).await.unwrap();
            check(r.status().as_u16(), r.json().await.unwrap(), want, param);
        }
        // A prompt within the context with too many new tokens stops at the context.
        let r = send(
            "/v1/completions",
            json!({"prompt": "x".repeat(50), "max_tokens": 100, "temperature": 0, "stop": []}).to_string(),
            Some("sesame"),
        )
        .await
        .unwrap();
        let body: Value = r.json().await.unwrap();
        let usage = &body["usage"];
        assert!(usage["total_tokens"].as_u64().unwrap() <= 64, "{body}");
    });
    assert!(server.alive());
}

/// One slot, no queue: a second request while a stream holds the slot gets 429; a client
/// that disconnects mid-stream is cancelled (the server's log says so, long before its
/// token limit) and frees the slot.
#[test]
fn full_queue_and_disconnects() {
    let mut server = Server::start(&["--parallel", "1", "--queue", "0", "--ctx-size", "4096"]);
    runtime().block_on(async {
        let c = client();
        // The EOS token (id 2) banned: this request can only end at 4000 tokens or by a
        // disconnect.
        let long = json!({"prompt": "ROMEO:", "max_tokens": 4000, "temperature": 0, "logit_bias": {"2": -100}, "stream": true});
        let mut held = c.post(server.url("/v1/completions")).json(&long).send().await.unwrap();
        assert_eq!(held.status(), 200);
        // Read into the stream: the request is running and owns the slot.
        let first = held.chunk().await.unwrap().unwrap();
        let first: Value =
            serde_json::from_str(std::str::from_utf8(&first).unwrap().lines().next().unwrap().strip_prefix("data: ").unwrap()).unwrap();
        let id = first["id"].as_str().unwrap().to_string();
        let r = c.post(server.url("/v1/completions")).json(&json!({"prompt": "a", "max_tokens": 2})).send().await.unwrap();
        assert_eq!(r.status(), 429);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");
        // Disconnect mid-stream; the slot frees within moments.
        drop(held);
        let start = Instant::now();
        loop {
            let r = c.post(server.url("/v1/completions")).json(&json!({"prompt": "a", "max_tokens": 2})).send().await.unwrap();
            if r.status() == 200 {
                break;
            }
            assert_eq!(r.status(), 429);
            assert!(start.elapsed() < Duration::from_secs(20), "the disconnected stream never freed its slot");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The engine logs the cancellation when it next looks at the request.
        let line = loop {
            let found = server.log.lock().unwrap().iter().find(|l| l.contains(&id)).cloned();
            if let Some(line) = found {
                break line;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "no log line for {id}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(line.contains("cancelled (client gone)"), "{line}");
        let generated: usize = line.split(" + ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
        assert!(generated < 4000, "{line}");
    });
    assert!(server.alive());
}

/// SmolLM2-135M-Instruct (the GGUF, its own ChatML template), greedy: the server answers the
/// capital of France, whole and streamed alike.
#[test]
fn smollm2_instruct_answers_paris_through_the_server() {
    let Some(gguf) = common::gguf_files::smollm2() else { return };
    let server = Server::start_on(&gguf, &[], tempfile::tempdir().unwrap());
    runtime().block_on(async {
        let chat = json!({"messages": [{"role": "user", "content": "What is the capital of France?"}], "temperature": 0, "max_tokens": 30});
        let (status, whole) = post(&server, "/v1/chat/completions", &chat).await;
        assert_eq!(status, 200, "{whole}");
        let answer = whole["choices"][0]["message"]["content"].as_str().unwrap().to_string();
        assert!(answer.contains("Paris"), "{answer:?}");
        assert_eq!(whole["choices"][0]["finish_reason"], "stop", "ends with <|im_end|>");
        let mut streamed = chat.clone();
        streamed["stream"] = json!(true);
        assert_eq!(stream_text(&server, "/v1/chat/completions", &streamed).await, (answer, "stop".to_string()));
    });
}

/// Seeded hostile bodies: valid requests with one field replaced by a value of another kind,
/// or cut short at a random byte. Every answer is 200 or an OpenAI error body (400, 413),
/// never a dropped connection, and the server stays up.
#[test]
fn hostile_bodies_get_answers_not_crashes() {
    let mut server = Server::start(&[]);
    let mut state = 18u64;
    let mut next = move |n: usize| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 33) as usize) % n
    };
    let values = [
        json!(null),
        json!(-1),
        json!(0),
        json!(1e30),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(0.5),
        json!(""),
        json!("x"),
        json!([]),
        json!([1, 2]),
        json!([[]]),
        json!({}),
        json!({"a": {"b": []}}),
        json!(true),
        json!(["\u{0}", "\u{FFFF}"]),
        json!([{"role": "user"}]),
        json!([{"role": "user", "content": [{"type": "image_url"}]}]),
        json!({"99999999999": 1}),
        json!({"3": -1e9}),
    ];
    let fields = [
        "prompt",
        "messages",
        "max_tokens",
        "temperature",
        "top_p",
        "seed",
        "stop",
        "stream",
        "stream_options",
        "n",
        "logit_bias",
        "max_completion_tokens",
    ];
    let rt = runtime();
    let mut statuses = std::collections::BTreeMap::new();
    for case in 0..240 {
        let chat = case % 2 == 1;
        let mut body = if chat {
            json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "temperature": 0})
        } else {
            json!({"prompt": "hi", "max_tokens": 4, "temperature": 0})
        };
        body[fields[next(fields.len())]] = values[next(values.len())].clone();
        let mut bytes = body.to_string().into_bytes();
        if next(4) == 0 {
            bytes.truncate(next(bytes.len()));
        }
        let path = if chat { "/v1/chat/completions" } else { "/v1/completions" };
        let (status, text) = rt.block_on(async {
            let r = client().post(server.url(path)).header("content-type", "application/json").body(bytes.clone()).send().await;
            let r = r.unwrap_or_else(|e| panic!("case {case} {}: no answer: {e}", String::from_utf8_lossy(&bytes)));
            (r.status().as_u16(), r.text().await.unwrap())
        });
        *statuses.entry(status).or_insert(0) += 1;
        match status {
            200 => assert!(text.starts_with('{') || text.starts_with("data: "), "case {case}: {text}"),
            400 | 413 => {
                let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("case {case}: not JSON: {text}"));
                assert!(v["error"]["message"].is_string(), "case {case}: {text}");
            }
            s => panic!("case {case} {}: status {s}: {text}", String::from_utf8_lossy(&bytes)),
        }
    }
    assert!(statuses.get(&200).is_some_and(|&n| n > 10) && statuses.get(&400).is_some_and(|&n| n > 10), "{statuses:?}");
    assert!(server.alive());
}
