//! What a decode step allocates, counted by a global allocator: alone in this test binary,
//! so no other test's allocations are counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::backend::Flex;
use clex_models::{CachePolicy, ModelConfig, Session, init_model};
use serde_json::json;

/// Counts bytes allocated, to see what a decode step allocates.
struct Counting;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATED.fetch_add(new_size, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn ids(n: usize, salt: u32) -> Vec<u32> {
    (0..n as u32).map(|i| (i * 31 + salt * 17 + i * i % 7) % 95 + 1).collect()
}

/// A CLEX LLaMA with grouped heads (6 query heads on 2 KV heads of 16), P = 512.
fn model_config() -> ModelConfig {
    let raw = json!({"model_type": "llama", "vocab_size": 96, "hidden_size": 96, "intermediate_size": 160,
        "num_hidden_layers": 2, "num_attention_heads": 6, "num_key_value_heads": 2, "max_position_embeddings": 512,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "hidden_act": "silu", "tie_word_embeddings": false,
        "rope_scaling": {"type": "clex", "max_factor": 8, "param_factor": 1, "act": "tanh", "time_dt": 0.01, "factor": 1}});
    ModelConfig::from_json(raw, std::path::Path::new("<test>")).unwrap()
}

/// 200 decode steps after a 2048-token prompt: what one step allocates does not grow with
/// the context (a step that copied or concatenated the cache would allocate at least one
/// layer's keys, 256 KiB here, per step), and the reserved buffers never grow. With P = 512
/// the steps cross t = 4 → 5 at 2049 tokens: that one step re-rotates the cached keys
/// (block by block, in place) and is left out of the per-step bound.
#[test]
fn decode_steps_allocate_nothing_that_grows_with_the_context() {
    let model = init_model::<Flex>(model_config(), &Default::default(), 7);
    let mut s = Session::new(&model, CachePolicy::Reference);
    s.reserve(2048 + 200);
    let prompt = ids(2048, 4);
    s.prefill(&prompt).unwrap();
    let layer_keys = 2048 * 2 * 16 * 4; // one layer's keys at 2048 tokens: kv_heads × head_dim × f32
    let mut per_step = Vec::new();
    for i in 0..200u32 {
        let rerotations = s.cache().stats().rerotations;
        let before = ALLOCATED.load(Ordering::Relaxed);
        s.step(i % 90 + 1).unwrap();
        let bytes = ALLOCATED.load(Ordering::Relaxed) - before;
        if s.cache().stats().rerotations == rerotations {
            per_step.push(bytes);
        }
    }
    assert_eq!(s.cache().stats().rerotations, 1, "t = 4 → 5 once");
    assert_eq!(per_step.len(), 199);
    let (first, last) = (per_step[..20].iter().max().unwrap(), per_step[179..].iter().max().unwrap());
    let worst = *per_step.iter().max().unwrap();
    assert!(worst < layer_keys / 2, "a decode step allocated {worst} bytes; one layer's cached keys are {layer_keys}");
    assert!(*last <= first + 4096, "allocations per step grew from {first} to {last} bytes over 200 steps");
    assert_eq!(s.cache().stats().grows, 0, "reserved buffers never grow");
}
