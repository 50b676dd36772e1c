//! Corpus reading, the fixed split, tokenizer training determinism, packing, passkey windows.

use std::io::Write;

use clex_eval::corpus::{Split, bundled_corpus_path, read_documents, split_documents, split_of};
use clex_eval::passkey::{FILLER, PasskeyTask, QUESTION, retrieved};
use clex_train::packing::pack;
use clex_train::tokenizer::{BOUNDARY, boundary_id, encode, train_bpe};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

#[test]
fn bundled_corpus_and_its_split() {
    let docs = read_documents(&bundled_corpus_path()).unwrap();
    assert_eq!(docs.len(), 116);
    // The recorded split field must agree with the rule.
    let text = {
        use std::io::Read;
        let mut s = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(bundled_corpus_path()).unwrap()).read_to_string(&mut s).unwrap();
        s
    };
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let want = if v["split"] == "validation" { Split::Validation } else { Split::Train };
        assert_eq!(split_of(v["id"].as_str().unwrap()), want, "{}", v["id"]);
    }
    let (train, val) = split_documents(docs);
    assert_eq!((train.len(), val.len()), (105, 11));
    assert!(val.iter().any(|d| d.id == "kjv/ruth"));
    // Known values of the rule: sha256("kjv/ruth") % 10 == 0.
    assert_eq!(split_of("kjv/ruth"), Split::Validation);
    assert_eq!(split_of("kjv/genesis"), Split::Train);
}

#[test]
fn reads_text_jsonl_and_directories_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), "plain text document").unwrap();
    let mut f = std::fs::File::create(dir.path().join("b.jsonl")).unwrap();
    writeln!(f, "{{\"id\": \"one\", \"text\": \"first\"}}").unwrap();
    writeln!(f, "{{\"text\": \"second\"}}").unwrap();
    drop(f);
    let docs = read_documents(dir.path()).unwrap();
    assert_eq!(docs.iter().map(|d| d.text.as_str()).collect::<Vec<_>>(), ["plain text document", "first", "second"]);
    assert_eq!(docs[1].id, "one");

    std::fs::write(dir.path().join("bad.jsonl"), "{\"text\": \"ok\"}\n{\"title\": \"no text\"}\n").unwrap();
    let e = read_documents(&dir.path().join("bad.jsonl")).unwrap_err().to_string();
    assert!(e.contains("bad.jsonl:2") && e.contains("text"), "{e}");
    std::fs::write(dir.path().join("broken.jsonl"), "{not json\n").unwrap();
    let e = read_documents(&dir.path().join("broken.jsonl")).unwrap_err().to_string();
    assert!(e.contains("broken.jsonl:1"), "{e}");
    let e = read_documents(&dir.path().join("missing.jsonl")).unwrap_err().to_string();
    assert!(e.contains("missing.jsonl"), "{e}");
}

#[test]
fn bpe_training_is_deterministic_and_round_trips() {
    let docs = read_documents(&bundled_corpus_path()).unwrap();
    let texts: Vec<&str> = docs.iter().take(6).map(|d| d.text.as_str()).collect();
    let a = train_bpe(&texts, 600).unwrap();
    let b = train_bpe(&texts, 600).unwrap();
    assert_eq!(a.to_string(false).unwrap(), b.to_string(false).unwrap(), "same texts, same tokenizer");
    assert_eq!(a.get_vocab_size(true), 600);
    assert_eq!(boundary_id(&a), a.token_to_id(BOUNDARY));
    let s = "To be, or not to be: that is the question. Ünïcödé ✓";
    let ids = encode(&a, s).unwrap();
    assert_eq!(a.decode(&ids, false).unwrap(), s, "byte-level BPE is lossless");
    assert!(ids.len() < s.len(), "merges were learned");
}

#[test]
fn packing_adds_bos_and_cuts_windows() {
    let docs = vec![vec![1, 2, 3], vec![4, 5], vec![6, 7, 8, 9]];
    let w = pack(&docs, Some(0), 3);
    // stream: 0 1 2 3 0 4 5 0 6 7 8 9 → windows of 4, remainder dropped
    assert_eq!(w, vec![vec![0, 1, 2, 3], vec![0, 4, 5, 0], vec![6, 7, 8, 9]]);
    assert_eq!(pack(&docs, None, 4), vec![vec![1, 2, 3, 4, 5]]);
    assert_eq!(pack(&docs, Some(0), 3), w, "deterministic");
}

/// Passkey training windows: exactly the requested tokens, BOS first, the evaluation's prompt
/// followed by the answer that greedy decoding is scored on, keys and depths spread, and
/// the same windows for the same seed.
#[test]
fn passkey_training_windows_are_the_test_prompt_with_its_answer() {
    // A real BPE with merges (digits and words merge as the experiment's do), trained on a
    // slice of the corpus and the filler.
    let docs = read_documents(&bundled_corpus_path()).unwrap();
    let tok = train_bpe(&[&docs[0].text[..60_000], FILLER], 400).unwrap();
    let bos = boundary_id(&tok);
    let task = PasskeyTask::new(&tok, bos).unwrap();
    let draw = |seed: u64| -> Vec<Vec<u32>> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..40).map(|_| task.training_window(400, &mut rng).unwrap()).collect()
    };
    let windows = draw(7);
    let mut keys = std::collections::BTreeSet::new();
    let mut needle_starts = Vec::new();
    for w in &windows {
        assert_eq!(w.len(), 400);
        assert_eq!(Some(w[0]), bos, "BOS first");
        let text = tok.decode(&w[1..], false).unwrap();
        let (prompt, answer) = text.rsplit_once(QUESTION).unwrap_or_else(|| panic!("no question in {text:?}"));
        let key: u32 = answer.trim().trim_end_matches('.').parse().unwrap_or_else(|e| panic!("{answer:?}: {e}"));
        assert!((10000..100000).contains(&key), "{key}");
        assert_eq!(answer, format!(" {key}."));
        assert!(retrieved(answer, key), "the answer is what the evaluation scores as retrieved");
        let needle = format!("The pass key is {key}. Remember it. {key} is the pass key. ");
        needle_starts.push(prompt.find(&needle).unwrap_or_else(|| panic!("no needle for {key} in {prompt:?}")));
        keys.insert(key);
    }
    assert!(keys.len() >= 39, "keys repeat: {keys:?}");
    let (lo, hi) = (needle_starts.iter().min().unwrap(), needle_starts.iter().max().unwrap());
    assert!(*lo < 60 && *hi > 250, "depths cover the window: needle starts {lo}..{hi}");
    assert_eq!(draw(7), windows, "deterministic in the seed");
    assert_ne!(draw(8), windows);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    assert!(task.training_window(20, &mut rng).is_err(), "too short for needle and question");
}
