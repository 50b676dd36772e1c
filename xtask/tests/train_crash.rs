//! Crash safety of `cargo xtask train`, run as the real binary in child processes on a tiny
//! CLEX model (12 micro-batches, a checkpoint every 2): a second run on a locked run
//! directory is refused with one line naming the directory and the holder; `kill -9` at
//! seeded random moments, on sight of a checkpoint being written, and a death by signal in
//! the middle of a checkpoint write, each followed by `--resume`, end with the uninterrupted
//! run's weights, optimizer state and per-step log, bit for bit; a full disk while a
//! checkpoint is written (RLIMIT_FSIZE, so the write fails with EFBIG) stops the run with
//! one line and exit code 2 and leaves the checkpoint before it usable.
//!
//! Linux only: the file-size limit and signal numbers are set through libc directly.

#![cfg(target_os = "linux")]

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use clex_train::checkpoint::{latest_checkpoint, verify_checkpoint};

/// Micro-batches of every run, and the checkpoints they make.
const STEPS: usize = 12;
const CHECKPOINT_EVERY: usize = 2;
const CHECKPOINTS: usize = STEPS / CHECKPOINT_EVERY;

/// A limit on any one file's size that a checkpoint (model 3.3 MB, optimizer 6.6 MB) passes
/// and the tokenizer, logs and metrics (a few KB) do not reach.
const FILE_SIZE_LIMIT: u64 = 1 << 20;

mod sys {
    //! The libc calls the test needs (std has no wrapper); Linux numbering (x86, arm).
    #[repr(C)]
    pub struct RLimit {
        pub cur: u64,
        pub max: u64,
    }
    unsafe extern "C" {
        pub fn setrlimit(resource: i32, limit: *const RLimit) -> i32;
        pub fn signal(signum: i32, handler: usize) -> usize;
        pub fn kill(pid: i32, signum: i32) -> i32;
    }
    pub const RLIMIT_FSIZE: i32 = 1;
    pub const RLIMIT_CORE: i32 = 4;
    pub const SIGKILL: i32 = 9;
    pub const SIGSTOP: i32 = 19;
    pub const SIGXFSZ: i32 = 25;
    pub const SIG_IGN: usize = 1;
    pub const SIG_ERR: usize = usize::MAX;
}

/// What a child may write: no limit, a full disk (writes past the limit fail with EFBIG), or
/// death by SIGXFSZ at the write that crosses the limit (the kernel's default for it).
#[derive(Clone, Copy, PartialEq)]
enum Disk {
    Unlimited,
    FullAt(u64),
    DieAt(u64),
}

/// A few KB of the bundled corpus as documents whose ids put some in validation (as in
/// clex-train/tests/train_run.rs).
fn small_corpus(dir: &Path) -> PathBuf {
    let docs = clex_eval::corpus::read_documents(&clex_eval::corpus::bundled_corpus_path()).unwrap();
    let text = &docs[0].text[..60_000];
    let mut lines = String::new();
    for (i, id) in ["kjv/genesis", "kjv/exodus", "kjv/ruth", "kjv/numbers", "kjv/leviticus"].iter().enumerate() {
        lines.push_str(&serde_json::json!({"id": id, "text": &text[i * 12_000..(i + 1) * 12_000]}).to_string());
        lines.push('\n');
    }
    let p = dir.join("small.jsonl");
    std::fs::write(&p, lines).unwrap();
    p
}

/// Starts `xtask train` on `run` (with `--resume` when asked), its stderr to `log`.
fn spawn(run: &Path, data: &Path, resume: bool, disk: Disk, log: &Path) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.arg("train").arg("--run-dir").arg(run).arg("--data").arg(data);
    let n = |v: usize| v.to_string();
    for (flag, value) in [
        ("--vocab-size", n(320)),
        ("--seq-len", n(64)),
        ("--batch-size", n(2)),
        ("--steps", n(STEPS)),
        ("--checkpoint-every", n(CHECKPOINT_EVERY)),
        ("--warmup", n(2)),
        ("--max-factor", n(4)),
        ("--valid-windows", n(2)),
    ] {
        cmd.arg(flag).arg(value);
    }
    cmd.arg("--plain");
    if resume {
        cmd.arg("--resume");
    }
    cmd.stdout(Stdio::null()).stderr(std::fs::File::create(log).unwrap());
    if let Disk::FullAt(limit) | Disk::DieAt(limit) = disk {
        let ignore = disk != Disk::DieAt(limit);
        // SAFETY: between fork and exec only setrlimit and signal run, both plain syscalls
        // on values prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                let fail = || Err(std::io::Error::last_os_error());
                if sys::setrlimit(sys::RLIMIT_FSIZE, &sys::RLimit { cur: limit, max: limit }) != 0
                    || sys::setrlimit(sys::RLIMIT_CORE, &sys::RLimit { cur: 0, max: 0 }) != 0
                {
                    return fail();
                }
                if ignore && sys::signal(sys::SIGXFSZ, sys::SIG_IGN) == sys::SIG_ERR {
                    return fail();
                }
                Ok(())
            });
        }
    }
    cmd.spawn().expect("starting the xtask binary")
}

/// Waits for `child`, at most two minutes (a hang fails the test instead of stalling it).
fn wait(child: &mut Child, what: &str) -> ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if t0.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("{what}: still running after 120 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// SIGKILLs `child` (std's `kill` is SIGKILL on Unix) and reaps it; false if it had already
/// exited on its own.
fn kill_9(child: &mut Child) -> bool {
    let running = child.try_wait().unwrap().is_none();
    child.kill().unwrap();
    let status = child.wait().unwrap();
    running && status.signal() == Some(sys::SIGKILL)
}

fn tmp_files(run: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(run.join("checkpoint")) else { return Vec::new() };
    entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| n.ends_with(".tmp")).collect()
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Seeded random numbers for the kill moments (splitmix64).
struct Moments(u64);

impl Moments {
    fn next_unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) as f64 / u64::MAX as f64
    }
}

/// A named-MessagePack burn record with its parameter ids (the 13-character string after
/// each `"id"` key, random per process) blanked.
fn mask_ids(mut record: Vec<u8>) -> Vec<u8> {
    const KEY: &[u8] = b"\xa2id\xad";
    let mut i = 0;
    while let Some(at) = record[i..].windows(KEY.len()).position(|w| w == KEY) {
        let start = i + at + KEY.len();
        let end = (start + 13).min(record.len());
        record[start..end].fill(0);
        i = end;
    }
    record
}

/// The largest difference between the f32 tensors of two safetensors files (which must name
/// the same tensors with the same shapes).
fn max_weight_difference(a: &[u8], b: &[u8]) -> f32 {
    let header = |f: &[u8]| -> (serde_json::Value, usize) {
        let n = u64::from_le_bytes(f[..8].try_into().unwrap()) as usize;
        (serde_json::from_slice(&f[8..8 + n]).unwrap(), 8 + n)
    };
    let ((ha, sa), (hb, sb)) = (header(a), header(b));
    let mut worst = 0.0f32;
    for (name, info) in ha.as_object().unwrap().iter().filter(|(k, _)| *k != "__metadata__") {
        assert_eq!(info["dtype"], "F32", "{name}");
        assert_eq!(info["shape"], hb[name]["shape"], "{name}");
        let range = |h: &serde_json::Value, start: usize| {
            let o = &h[name]["data_offsets"];
            start + o[0].as_u64().unwrap() as usize..start + o[1].as_u64().unwrap() as usize
        };
        let floats = |bytes: &[u8]| bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect::<Vec<_>>();
        for (x, y) in floats(&a[range(&ha, sa)]).iter().zip(floats(&b[range(&hb, sb)])) {
            worst = worst.max((x - y).abs());
        }
    }
    worst
}

/// A temporary directory with the corpus, the child logs and the uninterrupted run.
struct Setup {
    dir: tempfile::TempDir,
    data: PathBuf,
    attempts: std::cell::Cell<usize>,
    /// The uninterrupted run's directory and wall time.
    reference: PathBuf,
    full_run: Duration,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let data = small_corpus(dir.path());
        std::fs::create_dir_all(dir.path().join("logs")).unwrap();
        let reference = dir.path().join("reference");
        let mut setup = Setup { data, attempts: std::cell::Cell::new(0), reference: reference.clone(), full_run: Duration::ZERO, dir };
        let started = Instant::now();
        let status = setup.wait_run(&reference, false, Disk::Unlimited, "the uninterrupted run").0;
        assert!(status.success());
        setup.full_run = started.elapsed();
        assert_eq!(latest_checkpoint(&reference), Some(CHECKPOINTS));
        setup
    }

    /// A fresh log file for the next child.
    fn log(&self) -> PathBuf {
        self.attempts.set(self.attempts.get() + 1);
        self.dir.path().join(format!("logs/attempt-{}.log", self.attempts.get()))
    }

    fn spawn(&self, run: &Path, resume: bool, disk: Disk) -> Child {
        spawn(run, &self.data, resume, disk, &self.log())
    }

    /// Runs to its end; the status and the `error:` lines of its stderr.
    fn wait_run(&self, run: &Path, resume: bool, disk: Disk, what: &str) -> (ExitStatus, Vec<String>) {
        let log = self.log();
        let status = wait(&mut spawn(run, &self.data, resume, disk, &log), what);
        let text = String::from_utf8_lossy(&read(&log)).into_owned();
        assert!(status.success() || status.code() == Some(2) || status.signal().is_some(), "{what}: {status}; {text}");
        (status, text.lines().filter(|l| l.starts_with("error:")).map(str::to_string).collect())
    }

    /// Resumes `run` to its end and checks it against the uninterrupted run: weights, the
    /// last checkpoint and the per-step log. Returns the largest weight difference.
    fn finish_and_compare(&self, run: &Path) -> f32 {
        let (status, errors) = self.wait_run(run, true, Disk::Unlimited, "final resume");
        assert!(status.success(), "final resume: {status}; {errors:?}");
        let reference = &self.reference;
        let (want, got) = (read(&reference.join("model/model.safetensors")), read(&run.join("model/model.safetensors")));
        let worst = max_weight_difference(&want, &got);
        assert!(worst == 0.0 && want == got, "resumed weights differ from the uninterrupted run's by up to {worst:e}");
        // The last checkpoint's model record holds the CLEX layer and every parameter, with
        // parameter ids drawn per process (masked); the scheduler's is its step. (The
        // optimizer record is a map keyed by those ids, in hash order: not comparable as
        // bytes. Its state is checked by the weights: the runs resumed from checkpoints
        // before the last, and AdamW without its restored moments ends elsewhere.)
        let name = format!("checkpoint/model-{CHECKPOINTS}.mpk");
        assert!(mask_ids(read(&reference.join(&name))) == mask_ids(read(&run.join(&name))), "{name} differs from the uninterrupted run's");
        let name = format!("checkpoint/scheduler-{CHECKPOINTS}.mpk");
        assert!(read(&reference.join(&name)) == read(&run.join(&name)), "{name} differs from the uninterrupted run's");
        assert_eq!(
            String::from_utf8(read(&run.join("metrics.csv"))).unwrap(),
            String::from_utf8(read(&reference.join("metrics.csv"))).unwrap(),
            "per-step loss and t"
        );
        assert!(tmp_files(run).is_empty(), "{:?}", tmp_files(run));
        worst
    }
}

/// Checkpoint files being written (or left half-written) in `run` by a process started at
/// `since`.
fn tmp_files_since(run: &Path, since: SystemTime) -> usize {
    let Ok(entries) = std::fs::read_dir(run.join("checkpoint")) else { return 0 };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .filter(|e| e.metadata().and_then(|m| m.modified()).is_ok_and(|t| t >= since))
        .count()
}

/// Polls `done` every 200 µs while `child` runs; fails if it ends first or takes a minute.
fn wait_for(child: &mut Child, done: &dyn Fn() -> bool, what: &str) {
    let t = Instant::now();
    while !done() {
        assert!(child.try_wait().unwrap().is_none(), "{what}: the run ended first");
        assert!(t.elapsed() < Duration::from_secs(60), "{what}: not after 60 s");
        std::thread::sleep(Duration::from_micros(200));
    }
}

#[test]
fn full_disk_death_mid_write_and_a_locked_directory_then_resume_gives_the_same_weights() {
    let t0 = Instant::now();
    let setup = Setup::new();
    let run = setup.dir.path().join("crashed");

    // 1. Killed once its first checkpoint is complete, so that one is there to fall back on.
    let mut child = setup.spawn(&run, true, Disk::Unlimited);
    wait_for(&mut child, &|| latest_checkpoint(&run).is_some(), "first checkpoint");
    assert!(kill_9(&mut child), "the run was killed, not finished");
    let kept = latest_checkpoint(&run).unwrap();
    assert!(kept < CHECKPOINTS, "killed before its last checkpoint ({kept})");

    // 2. A full disk at the next checkpoint: one line naming the file, exit code 2, the
    // checkpoint before it untouched and still loadable, no temporary file left.
    let kept_bytes = ["model", "optim", "scheduler"].map(|k| read(&run.join(format!("checkpoint/{k}-{kept}.mpk"))));
    let (status, errors) = setup.wait_run(&run, true, Disk::FullAt(FILE_SIZE_LIMIT), "full disk");
    assert_eq!(status.code(), Some(2), "full disk: {status}");
    assert_eq!(errors.len(), 1, "{errors:?}");
    let e = &errors[0];
    assert!(
        e.contains(&format!("checkpoint {} not written", kept + 1))
            && e.contains(".mpk.tmp")
            && e.contains("File too large")
            && e.contains(&format!("checkpoint {kept} is intact")),
        "{e}"
    );
    assert_eq!(latest_checkpoint(&run), Some(kept), "{e}");
    assert!(["model", "optim", "scheduler"].map(|k| read(&run.join(format!("checkpoint/{k}-{kept}.mpk")))) == kept_bytes);
    verify_checkpoint(&run, kept).unwrap();
    assert!(tmp_files(&run).is_empty(), "a failed write removes its temporary file: {:?}", tmp_files(&run));

    // 3. Death by signal in the middle of a checkpoint write (SIGXFSZ at the write that
    // crosses the limit: like kill -9, no code of the run's runs after it).
    let (status, _) = setup.wait_run(&run, true, Disk::DieAt(FILE_SIZE_LIMIT), "death mid-write");
    assert_eq!(status.signal(), Some(sys::SIGXFSZ), "{status}");
    assert!(!tmp_files(&run).is_empty(), "it died inside a checkpoint write");
    assert_eq!(latest_checkpoint(&run), Some(kept));

    // 4. A second run on the directory while one holds it: refused at once, in one line
    // naming the directory and the holder; the holder then killed (its lock goes with it).
    let mut holder = setup.spawn(&run, true, Disk::Unlimited);
    let lock = run.join("train.lock");
    let pid = format!("pid {},", holder.id());
    wait_for(&mut holder, &|| std::fs::read_to_string(&lock).is_ok_and(|t| t.starts_with(&pid)), "the holder's lock");
    // Stopped, so that it cannot finish (and let go) before the second run tries.
    // SAFETY: a plain syscall on our own child's pid.
    assert_eq!(unsafe { sys::kill(holder.id() as i32, sys::SIGSTOP) }, 0);
    let (status, errors) = setup.wait_run(&run, true, Disk::Unlimited, "second run");
    assert_eq!(status.code(), Some(2), "second run: {status}");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains(&run.display().to_string()) && errors[0].contains(&pid) && errors[0].contains("in use"), "{errors:?}");
    assert!(kill_9(&mut holder), "the holder was killed, not finished");

    // 5. kill -9 as soon as a checkpoint file is being written (by this process: not the
    // temporary files the SIGXFSZ death left).
    let mut inside = 0;
    for _ in 0..3 {
        let since = SystemTime::now();
        let mut child = setup.spawn(&run, true, Disk::Unlimited);
        let t = Instant::now();
        while tmp_files_since(&run, since) == 0 && child.try_wait().unwrap().is_none() && t.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_micros(100));
        }
        kill_9(&mut child);
        inside += usize::from(tmp_files_since(&run, since) > 0);
    }

    let worst = setup.finish_and_compare(&run);
    eprintln!(
        "{} runs in {:.1} s, {inside} of 3 kills on sight of a checkpoint write landed inside it; max |weight difference| {worst:e}",
        setup.attempts.get(),
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn kill_9_at_random_moments_then_resume_gives_the_same_weights() {
    let t0 = Instant::now();
    let setup = Setup::new();
    let run = setup.dir.path().join("crashed");
    let mut moments = Moments(18);
    // (ms after start, killed while running, checkpoint after, inside a checkpoint write)
    let mut kills = Vec::new();
    for _ in 0..8 {
        // A moment within what is left of the run (start-up, steps, validation,
        // checkpoint writes, the final export), so that the kills spread over all of it.
        let done = latest_checkpoint(&run).unwrap_or(0);
        let left = setup.full_run.mul_f64((CHECKPOINTS - done + 1) as f64 / (CHECKPOINTS + 1) as f64);
        let delay = left.mul_f64(moments.next_unit());
        let since = SystemTime::now();
        let mut child = setup.spawn(&run, true, Disk::Unlimited);
        std::thread::sleep(delay);
        let killed = kill_9(&mut child);
        kills.push((delay.as_millis(), killed, latest_checkpoint(&run), tmp_files_since(&run, since) > 0));
    }
    let worst = setup.finish_and_compare(&run);
    eprintln!("kill -9 (ms after start, killed while running, checkpoint after, inside a checkpoint write): {kills:?}");
    eprintln!("{} runs in {:.1} s; max |weight difference| {worst:e}", setup.attempts.get(), t0.elapsed().as_secs_f64());
    assert!(kills.iter().filter(|k| k.1).count() >= 3, "most kills must land while the run is still going: {kills:?}");
}
