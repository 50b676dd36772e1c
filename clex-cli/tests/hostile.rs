//! Hostile inputs through the real `clex` binary (issue 18): the seeded corpus of malformed
//! configs, safetensors files, tokenizers and GGUF files (clex-models/tests/hostile_corpus)
//! through `clex score --text`, and hostile flag sets through every subcommand, each run
//! under a memory limit (`ulimit -v`) and a timeout kill. Every run must end with exit code
//! 0, or 2 and one line on stderr: never 101 (a panic), a signal (an abort), or the timeout
//! (a hang). Counts per kind are printed.

#[path = "../../clex-models/tests/gguf_files/mod.rs"]
mod gguf_files;
#[path = "../../clex-models/tests/hostile_corpus/mod.rs"]
mod hostile_corpus;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hostile_corpus::{Base, Kind, corpus};

/// Virtual memory a run may map, in KiB (burn's thread pool maps a few GiB of address space
/// it never touches; a run that tried to allocate what a hostile size asks for would fail).
const MEMORY_LIMIT_KIB: u64 = 16 << 20;
/// Longest a run may take (debug build, two runs at once on two cores).
const TIMEOUT: Duration = Duration::from_secs(60);

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
enum End {
    /// Exit code 0.
    Ok,
    /// Exit code 2 with one line on stderr.
    Clean,
    /// Another exit code, or several stderr lines.
    Messy(i32, String),
    /// Exit code 101.
    Panic(String),
    /// Killed by a signal (abort, out of memory).
    Abort(String),
    /// Killed at the timeout.
    Hang,
}

/// Runs `clex args` under the memory limit and the timeout.
fn run(args: &[String]) -> End {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -v {MEMORY_LIMIT_KIB}; exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_clex"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).ok();
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > TIMEOUT {
            child.kill().ok();
            child.wait().ok();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let err = reader.join().unwrap();
    let tail: String = err.chars().take(400).collect();
    let Some(status) = status else { return End::Hang };
    match status.code() {
        Some(0) => End::Ok,
        Some(2) if err.lines().filter(|l| !l.trim().is_empty()).count() == 1 && err.starts_with("error") => End::Clean,
        Some(101) => End::Panic(tail),
        Some(c) => End::Messy(c, tail),
        None => End::Abort(format!("{status:?}: {tail}")),
    }
}

fn p(path: &Path) -> String {
    path.to_str().unwrap().to_string()
}

/// Hostile flag sets for every subcommand, on a good model directory `m`, a good GGUF `g`, a
/// text file `data`, a FIFO `fifo`, and a directory `dir`.
fn flag_sets(m: &Path, g: &Path, data: &Path, fifo: &Path, dir: &Path) -> Vec<Vec<String>> {
    let (m, g, data, fifo, dir) = (p(m), p(g), p(data), p(fifo), p(dir));
    // `generate` with `extra`, plus a short prompt and length unless `extra` gives them.
    let generate = |extra: &[&'static str]| -> Vec<String> {
        let mut v: Vec<String> = ["generate", "-m", &m].iter().map(|s| s.to_string()).collect();
        if !extra.iter().any(|a| ["-p", "--prompt", "--prompt-file"].contains(a)) {
            v.extend(["-p".to_string(), "Hi".to_string()]);
        }
        if !extra.contains(&"-n") {
            v.extend(["-n".to_string(), "2".to_string()]);
        }
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let mut out: Vec<Vec<String>> = Vec::new();
    for extra in [
        &["--temperature", "NaN"][..],
        &["--temperature", "inf"],
        &["--temperature", "-1"],
        &["--temperature", "1e400"],
        &["--temperature", "0"],
        &["--top-p", "2"],
        &["--top-p", "NaN"],
        &["--top-p", "-0.5"],
        &["--top-p", "0"],
        &["--repeat-penalty", "0"],
        &["--repeat-penalty", "NaN"],
        &["--repeat-penalty", "-1"],
        &["--repeat-penalty", "inf"],
        &["-n", "18446744073709551615"],
        &["-n", "-1"],
        &["-n", "18446744073709551616"],
        &["--max-seq-len", "0"],
        &["--max-seq-len", "1"],
        &["--top-k", "0"],
        &["--top-k", "18446744073709551615"],
        &["--repeat-last-n", "18446744073709551615"],
        &["--seed", "18446744073709551616"],
        &["--dtype", "f64"],
        &["--cache-policy", "none"],
        &["--bos", "maybe"],
        &["--device", "18446744073709551615"],
        &["--no-such-flag"],
        &["--prompt-file", "/dev/zero"],
        &["--prompt-file", "/nonexistent/prompt.txt"],
    ] {
        out.push(generate(extra));
    }
    let with = |v: Vec<String>, extra: Vec<String>| -> Vec<String> { v.into_iter().chain(extra).collect() };
    out.push(with(generate(&["--prompt-file"]), vec![fifo.clone()]));
    out.push(with(generate(&[]), vec!["--tokenizer".into(), fifo.clone()]));
    out.push(with(generate(&[]), vec!["--tokenizer".into(), dir.clone()]));
    out.push(with(generate(&[]), vec!["--tokenizer".into(), "/nonexistent/tokenizer.json".into()]));
    out.push(with(generate(&["--prompt"]), vec!["x".repeat(1 << 16)]));
    // The rope override on a non-CLEX GGUF.
    for (kind, factor) in [
        ("clex", "1e12"),
        ("clex", "NaN"),
        ("clex", "0"),
        ("clex", "2.5"),
        ("clex", "1e300"),
        ("clex", "70000"),
        ("linear", "inf"),
        ("linear", "-3"),
        ("yarn", "1e-300"),
        ("dynamic", "1e7"),
    ] {
        out.push(
            ["generate", "-m", &g, "-p", "Hi", "-n", "2", "--rope-scaling", kind, "--rope-factor", factor]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        );
    }
    for rope_p in ["0", "1099511627776", "-5"] {
        out.push(
            ["generate", "-m", &g, "-p", "Hi", "-n", "2", "--rope-scaling", "linear", "--rope-p", rope_p]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        );
    }
    out.push(["generate", "-m", &m, "-p", "Hi", "--rope-p", "64"].iter().map(|s| s.to_string()).collect());
    // perplexity
    for extra in [
        &["--up-to-factor", "18446744073709551615"][..],
        &["--up-to-factor", "0"],
        &["--up-to-factor", "4611686018427387904"],
        &["--lengths", "0"],
        &["--lengths", "1"],
        &["--lengths", "18446744073709551615"],
        &["--lengths", "1099511627776"],
        &["--lengths", "16", "--chunk", "0", "--protocol", "kv-chunks"],
        &["--lengths", "16", "--stride", "0", "--protocol", "sliding"],
        &["--lengths", "16", "--batch-tokens", "0"],
        &["--lengths", "16", "--max-tokens", "0"],
        &["--lengths", "16", "--batch-tokens", "18446744073709551615"],
        &["--lengths", ""],
        &["--lengths", "a,b"],
        &["--split", "nope"],
    ] {
        let mut v: Vec<String> = ["perplexity", "-m", &m, "--data", &data].iter().map(|s| s.to_string()).collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        out.push(v);
    }
    for d in [&fifo, &"/nonexistent/data.txt".to_string(), &"/dev/zero".to_string()] {
        out.push(["perplexity", "-m", &m, "--data", d, "--lengths", "16"].iter().map(|s| s.to_string()).collect());
    }
    // passkey
    for extra in [
        &["--lengths", "18446744073709551615"][..],
        &["--lengths", "1000000000"],
        &["--lengths", "0"],
        &["--lengths", "5"],
        &["--lengths", "64", "--depths", "NaN"],
        &["--lengths", "64", "--depths", "2"],
        &["--lengths", "64", "--depths", "-1"],
        &["--lengths", "64", "--trials", "0"],
        &["--lengths", "64", "--trials", "18446744073709551615"],
        &["--lengths", "64", "--trials", "1"],
    ] {
        let mut v: Vec<String> = ["passkey", "-m", &m].iter().map(|s| s.to_string()).collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        out.push(v);
    }
    // score
    for ids in ["256", "4294967295", "4294967296", "-1", "", "1,,2", "1,2,3"] {
        out.push(["score", "-m", &m, "--ids", ids].iter().map(|s| s.to_string()).collect());
    }
    for prefill in ["0", "99", "18446744073709551615", "2"] {
        out.push(["score", "-m", &m, "--ids", "1,2,3", "--prefill", prefill].iter().map(|s| s.to_string()).collect());
    }
    let ids_file = Path::new(&dir).join("ids.json");
    std::fs::write(&ids_file, "[1e30, -1, \"x\"]").unwrap();
    for f in [p(&ids_file), fifo.clone(), "/nonexistent/ids.json".into(), dir.clone()] {
        out.push(["score", "-m", &m, "--ids-file", &f].iter().map(|s| s.to_string()).collect());
    }
    // rope, inspect, convert
    for (c, n) in [(&m, "18446744073709551615"), (&m, "0"), (&fifo, "1"), (&g, "1099511627776"), (&dir, "1")] {
        out.push(["rope", "-c", c, "-n", n].iter().map(|s| s.to_string()).collect());
    }
    for model in [&fifo, &dir, &"/dev/zero".to_string(), &"/dev/null".to_string()] {
        out.push(["inspect", "-m", model].iter().map(|s| s.to_string()).collect());
    }
    out.push(["inspect", "-m", &g, "--plot", &p(&Path::new(&dir).join("x.svg"))].iter().map(|s| s.to_string()).collect());
    out.push(["convert", "--gguf", &fifo, "--out", &p(&Path::new(&dir).join("conv"))].iter().map(|s| s.to_string()).collect());
    out.push(["convert", "--gguf", &m, "--out", &p(&Path::new(&dir).join("conv"))].iter().map(|s| s.to_string()).collect());
    out.push(vec!["--version".to_string()]);
    out.push(vec!["frobnicate".to_string()]);
    out
}

/// Runs `jobs` on two threads; returns (label, kind, end) in order.
fn run_all(jobs: Vec<(String, &'static str, Vec<String>)>) -> Vec<(String, &'static str, End)> {
    let queue = Mutex::new(jobs.into_iter().enumerate().collect::<Vec<_>>());
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let Some((i, (label, kind, args))) = queue.lock().unwrap().pop() else { break };
                    let end = run(&args);
                    results.lock().unwrap().push((i, label, kind, end));
                }
            });
        }
    });
    let mut r = results.into_inner().unwrap();
    r.sort_by_key(|x| x.0);
    r.into_iter().map(|(_, l, k, e)| (l, k, e)).collect()
}

#[test]
fn hostile_files_and_flags_through_the_binary_end_cleanly() {
    let root = tempfile::tempdir().unwrap();
    let cases = corpus(&root.path().join("corpus"), 18);
    let mut jobs: Vec<(String, &'static str, Vec<String>)> = cases
        .iter()
        .map(|c| {
            let kind = match c.kind {
                Kind::Config => "config",
                Kind::Safetensors => "safetensors",
                Kind::Tokenizer => "tokenizer",
                Kind::Gguf => "gguf",
            };
            let args = ["score", "-m", &p(&c.model), "--text", "Hostile inputs, politely refused."].iter().map(|s| s.to_string()).collect();
            (c.name.clone(), kind, args)
        })
        .collect();
    let good = root.path().join("good");
    Base::new().write(&good);
    let gguf = hostile_corpus::tiny_gguf().write(root.path(), "good.gguf");
    let data = root.path().join("data.txt");
    std::fs::write(&data, "Hostile inputs, politely refused. ".repeat(20)).unwrap();
    let fifo = root.path().join("fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let scratch = root.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    for args in flag_sets(&good, &gguf, &data, &fifo, &scratch) {
        jobs.push((args.join(" ").chars().take(120).collect(), "flags", args));
    }
    assert!(jobs.len() >= 300, "{} runs", jobs.len());
    let start = Instant::now();
    let results = run_all(jobs);
    println!("clex binary: {} runs in {:.1} s", results.len(), start.elapsed().as_secs_f64());
    let mut by_kind = std::collections::BTreeMap::<&str, [usize; 6]>::new();
    for (_, kind, end) in &results {
        let slot = match end {
            End::Clean => 0,
            End::Ok => 1,
            End::Panic(_) => 2,
            End::Abort(_) => 3,
            End::Hang => 4,
            End::Messy(..) => 5,
        };
        by_kind.entry(kind).or_default()[slot] += 1;
    }
    for (kind, c) in &by_kind {
        println!(
            "  {kind}: {} runs: clean {} / ok {} / panic {} / abort {} / hang {} / messy {}",
            c.iter().sum::<usize>(),
            c[0],
            c[1],
            c[2],
            c[3],
            c[4],
            c[5]
        );
    }
    let bad: Vec<_> = results.iter().filter(|(_, _, e)| !matches!(e, End::Ok | End::Clean)).collect();
    assert!(bad.is_empty(), "{} bad runs: {bad:#?}", bad.len());
    // Every flag set is out of range or names a file that cannot be read, except these,
    // which are edge values that run (a greedy temperature, lengths with too few tokens are
    // skipped, top-k beyond the vocabulary keeps all, ...): the rest must be refused.
    let may_run = [
        "--temperature 0",
        "--top-k",
        "--repeat-last-n",
        "--device",
        "--rope-factor 1e-300",
        "--batch-tokens",
        "--max-tokens 0",
        "--trials 1",
        "--ids 1,2,3",
        "--version",
        "--up-to-factor 18446744073709551615",
        "--up-to-factor 4611686018427387904",
        "--lengths 1099511627776",
        "data.txt --lengths 18446744073709551615",
        "rope -c",
    ];
    let accepted: Vec<_> = results
        .iter()
        .filter(|(label, kind, e)| *kind == "flags" && *e == End::Ok && !may_run.iter().any(|m| label.contains(m)))
        .map(|(label, _, _)| label)
        .collect();
    assert!(accepted.is_empty(), "hostile flags accepted: {accepted:#?}");
}

/// Runs `clex args` (no limits): (exit code, stderr).
fn clex(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_clex")).args(args).stdin(Stdio::null()).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The classes of issue 18 at the command line, one assertion each on the message: the flag,
/// the value and the accepted range named on one line; each cause printed once.
#[test]
fn classes_at_the_command_line_name_the_flag_value_and_range() {
    let root = tempfile::tempdir().unwrap();
    let m = root.path().join("m");
    Base::new().write(&m);
    let m = p(&m);
    let refused = |args: &[&str], want: &[&str]| {
        let (code, err) = clex(args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        for w in want {
            assert!(err.contains(w), "{args:?}: `{w}` not in {err}");
        }
    };
    // Class 5: values that used to be accepted silently.
    refused(&["generate", "-m", &m, "--temperature", "NaN"], &["--temperature", "NaN", "finite number >= 0"]);
    refused(&["generate", "-m", &m, "--temperature", "inf"], &["--temperature", "inf"]);
    refused(&["generate", "-m", &m, "--top-p", "2"], &["--top-p", "'2'", "<= 1"]);
    refused(&["generate", "-m", &m, "--top-p=-0.5"], &["--top-p", "-0.5"]);
    refused(&["generate", "-m", &m, "--repeat-penalty", "0"], &["--repeat-penalty", "> 0"]);
    refused(&["passkey", "-m", &m, "--depths", "NaN"], &["--depths", "NaN", "[0, 1]"]);
    // Class 2 and 4: sizes from flags checked (and overflow-free) before allocating.
    refused(&["generate", "-m", &m, "-p", "Hi", "-n", "18446744073709551615"], &["-n", "2^64"]);
    refused(&["passkey", "-m", &m, "--lengths", "1000000000"], &["--lengths 1000000000", "GiB"]);
    refused(&["passkey", "-m", &m, "--lengths", "18446744073709551615"], &["--lengths"]);
    refused(&["passkey", "-m", &m, "--trials", "18446744073709551615"], &["--trials"]);
    refused(&["perplexity", "-m", &m, "--data", &m, "--up-to-factor", "0"], &["--up-to-factor", "'0'"]);
    let gguf = hostile_corpus::tiny_gguf().write(root.path(), "t.gguf");
    let g = p(&gguf);
    refused(
        &["generate", "-m", &g, "-p", "Hi", "--rope-scaling", "clex", "--rope-factor", "1e12"],
        &["--rope-factor", "1000000000000", "<= 1e6"],
    );
    refused(
        &["generate", "-m", &g, "-p", "Hi", "--rope-scaling", "clex", "--rope-factor", "70000"],
        &["--rope-scaling clex", "max_factor", "65536"],
    );
    refused(&["generate", "-m", &g, "-p", "Hi", "--rope-scaling", "linear", "--rope-p", "0"], &["--rope-p", "'0'"]);
    // Class 1: a tokenizer whose ids pass the model's vocabulary, through passkey too.
    let mut t = hostile_corpus::tokenizer_json();
    t["model"]["vocab"]["\u{00ff}"] = serde_json::json!(70000);
    let tok = root.path().join("tokenizer.json");
    std::fs::write(&tok, t.to_string()).unwrap();
    refused(&["passkey", "-m", &m, "--tokenizer", &p(&tok), "--lengths", "64"], &["tokenizer.json", "70000", "vocab_size is 256"]);
    // Class 6: the cause once, not again after anyhow's chain.
    let (_, err) = clex(&["inspect", "-m", "/nonexistent/model"]);
    assert_eq!(err.matches("not found").count(), 1, "{err}");
    let (_, err) = clex(&["rope", "-c", "/nonexistent/config.json"]);
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
    // Class 7: a FIFO is refused, not waited on.
    let fifo = root.path().join("fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let start = Instant::now();
    refused(&["generate", "-m", &m, "--prompt-file", &p(&fifo)], &["--prompt-file", "not a regular file"]);
    refused(&["rope", "-c", &p(&fifo)], &["fifo", "not a regular file"]);
    refused(&["score", "-m", &m, "--ids-file", &p(&fifo)], &["--ids-file", "not a regular file"]);
    assert!(start.elapsed() < Duration::from_secs(30));
}
