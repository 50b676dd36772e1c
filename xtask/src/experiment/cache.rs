//! Finished evaluations kept next to the models (`<run dir>/eval/<method>.json`), so a rerun
//! whose models and evaluation settings did not change rewrites the report without scoring
//! every model again (the full run's evaluation takes about half an hour on 2 cores). An entry
//! is used only when its fingerprint (the evaluation settings, the candidate and the
//! fingerprint of the stage that made the weights) equals the current one.

use std::path::{Path, PathBuf};

use clex_eval::eval::Tally;
use clex_eval::passkey::{Cell, Trial, retrieved};
use serde_json::{Value, json};

use super::report::{Evaluated, Point};

fn tally_json(t: &Tally) -> Value {
    json!({"nll": t.nll, "count": t.count, "correct": t.correct})
}

fn tally_of(v: &Value) -> Option<Tally> {
    Some(Tally { nll: v["nll"].as_f64()?, count: v["count"].as_u64()? as usize, correct: v["correct"].as_u64()? as usize })
}

fn usize_of(v: &Value) -> Option<usize> {
    v.as_u64().map(|n| n as usize)
}

/// Everything of `m`, in a form [`from_json`] reads back exactly.
pub fn to_json(m: &Evaluated, fingerprint: &str) -> Value {
    json!({
        "fingerprint": fingerprint,
        "key": m.key, "label": m.label, "how": m.how, "model": m.model, "params": m.params,
        "train_len": m.train_len, "wall_s": m.wall_s,
        "points": m.points.iter().map(|p| json!({"len": p.len, "windows": p.windows, "tally": tally_json(&p.tally)})).collect::<Vec<_>>(),
        "by_position": m.by_position.iter().map(|(a, b, t)| json!({"from": a, "to": b, "tally": tally_json(t)})).collect::<Vec<_>>(),
        "theta": m.theta.as_ref().map(|rows| rows.iter().map(|(t, r)| json!({"t": t, "theta": r})).collect::<Vec<_>>()),
        "passkey": m.passkey.iter().map(|c| json!({
            "length": c.length, "depth": c.depth,
            "trials": c.trials.iter().map(|t| json!({
                "key": t.key, "prompt_tokens": t.prompt_tokens, "needle_at": t.needle_at,
                "needle_tokens": t.needle_tokens, "answer": t.answer,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// The evaluation [`to_json`] wrote; `None` for anything malformed.
pub fn from_json(v: &Value) -> Option<Evaluated> {
    let points = v["points"]
        .as_array()?
        .iter()
        .map(|p| Some(Point { len: usize_of(&p["len"])?, windows: usize_of(&p["windows"])?, tally: tally_of(&p["tally"])? }))
        .collect::<Option<Vec<_>>>()?;
    let by_position = v["by_position"]
        .as_array()?
        .iter()
        .map(|b| Some((usize_of(&b["from"])?, usize_of(&b["to"])?, tally_of(&b["tally"])?)))
        .collect::<Option<Vec<_>>>()?;
    let theta = match &v["theta"] {
        Value::Null => None,
        rows => Some(
            rows.as_array()?
                .iter()
                .map(|r| {
                    let row = r["theta"].as_array()?.iter().map(|x| x.as_f64().map(|x| x as f32)).collect::<Option<Vec<_>>>()?;
                    Some((usize_of(&r["t"])?, row))
                })
                .collect::<Option<Vec<_>>>()?,
        ),
    };
    let passkey = v["passkey"]
        .as_array()?
        .iter()
        .map(|c| {
            let trials = c["trials"]
                .as_array()?
                .iter()
                .map(|t| {
                    let key = u32::try_from(t["key"].as_u64()?).ok()?;
                    let answer = t["answer"].as_str()?.to_string();
                    Some(Trial {
                        key,
                        prompt_tokens: usize_of(&t["prompt_tokens"])?,
                        needle_at: usize_of(&t["needle_at"]),
                        needle_tokens: usize_of(&t["needle_tokens"])?,
                        // Scored again from the answer: the rule is the evaluation's own.
                        retrieved: retrieved(&answer, key),
                        answer,
                    })
                })
                .collect::<Option<Vec<_>>>()?;
            Some(Cell { length: usize_of(&c["length"])?, depth: c["depth"].as_f64()?, trials })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Evaluated {
        key: v["key"].as_str()?.to_string(),
        label: v["label"].as_str()?.to_string(),
        how: v["how"].as_str()?.to_string(),
        model: PathBuf::from(v["model"].as_str()?),
        params: usize_of(&v["params"])?,
        points,
        by_position,
        theta,
        train_len: usize_of(&v["train_len"])?,
        passkey,
        wall_s: v["wall_s"].as_f64()?,
    })
}

/// The cache file of method `key` under the run directory.
pub fn path(out_dir: &Path, key: &str) -> PathBuf {
    out_dir.join("eval").join(format!("{key}.json"))
}

/// The cached evaluation at `path` when its fingerprint is `fingerprint`.
pub fn load(path: &Path, fingerprint: &str) -> Option<Evaluated> {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    if v["fingerprint"] != fingerprint {
        return None;
    }
    from_json(&v)
}

/// Writes `m` to `path` (atomically: a killed run leaves the old entry or none).
pub fn store(path: &Path, m: &Evaluated, fingerprint: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    clex_models::write_atomic(path, serde_json::to_string(&to_json(m, fingerprint))?.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_evaluation_round_trips_and_a_changed_fingerprint_misses() {
        let t = |nll: f64| Tally { nll, count: 10, correct: 3 };
        let trial = |key: u32, answer: &str| Trial {
            key,
            prompt_tokens: 128,
            needle_at: Some(7),
            needle_tokens: 12,
            answer: answer.into(),
            retrieved: retrieved(answer, key),
        };
        let m = Evaluated {
            key: "clex-4P".into(),
            label: "CLEX (T_max 16), L = 4P".into(),
            how: "stage 2 at 512".into(),
            model: "/runs/x/model".into(),
            params: 1234,
            points: vec![Point { len: 128, windows: 4, tally: t(12.5) }, Point { len: 256, windows: 2, tally: t(0.1 + 0.2) }],
            by_position: vec![(0, 16, t(1.0)), (16, 256, t(2.0))],
            theta: Some(vec![(1, vec![1.0, 0.1, 1e-4]), (2, vec![0.5, 0.07, 3e-5])]),
            train_len: 512,
            passkey: vec![Cell { length: 512, depth: 0.25, trials: vec![trial(12345, " 12345."), trial(54321, " 5432 1")] }],
            wall_s: 61.5,
        };
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path(), "clex-4P");
        store(&p, &m, "fp").unwrap();
        let back = load(&p, "fp").expect("same fingerprint");
        assert_eq!(serde_json::to_string(&to_json(&back, "fp")).unwrap(), serde_json::to_string(&to_json(&m, "fp")).unwrap());
        assert_eq!(back.passkey[0].correct(), 1);
        assert_eq!(back.points[1].tally.nll.to_bits(), (0.1f64 + 0.2).to_bits(), "f64 exactly");
        assert!(load(&p, "other").is_none(), "another fingerprint is a miss");
        std::fs::write(&p, "{\"fingerprint\": \"fp\"}").unwrap();
        assert!(load(&p, "fp").is_none(), "a malformed entry is a miss, not an error");
    }
}
