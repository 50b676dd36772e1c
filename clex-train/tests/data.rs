//! Corpus reading, the fixed split, tokenizer training determinism, packing.

use std::io::Write;

use clex_eval::corpus::{Split, bundled_corpus_path, read_documents, split_documents, split_of};
use clex_train::packing::pack;
use clex_train::tokenizer::{BOUNDARY, boundary_id, encode, train_bpe};

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
