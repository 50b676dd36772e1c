#!/usr/bin/env python3
"""The transformers side of `cargo xtask bench --vs-torch` (not used by any test).

Runs an HF directory written by `cargo xtask bench` (plain RoPE: transformers has no CLEX)
through transformers' eager attention in f32 on the CPU, with the thread count of the Rust
run, and prints one `BENCH_RESULT {json}` line with the fields of clex-rs's
`bench-worker --task infer`. The protocol mirrors xtask/src/bench/worker.rs step for step:

1. warm-up: a 16-token prefill and 2 decode steps on a throwaway cache;
2. prefill: a fresh cache, one forward over the first P ids, timed; 3 times, median;
3. decode ladder on one fresh cache: for each context c, an untimed forward of the ids up
   to c - n, then n single-token steps, each timed, ending at c; then one more timed step
   from c to c + 1.

Every forward reads its last row of logits back as a numpy array, as generation must.
Needs torch and transformers (`.venv-torch/bin/pip install transformers`).
"""

import argparse
import inspect
import json
import resource
import statistics
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="HF directory")
    ap.add_argument("--ids", required=True, help="JSON array of token ids")
    ap.add_argument("--prefill", type=int, required=True, help="prefill length (P)")
    ap.add_argument("--contexts", required=True, help="comma-separated contexts of the decode ladder")
    ap.add_argument("--steps", type=int, default=16, help="timed decode steps per context")
    ap.add_argument("--prefill-reps", type=int, default=3, help="timed prefills (median reported)")
    ap.add_argument("--threads", type=int, required=True, help="torch.set_num_threads")
    args = ap.parse_args()

    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    with open(args.ids) as f:
        ids = json.load(f)
    contexts = [int(c) for c in args.contexts.split(",")]

    # transformers 5.2x calls the cache argument `cache`; earlier versions `past_key_values`.
    cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    def forward(chunk, cache):
        x = torch.tensor([chunk], dtype=torch.long)
        kwargs = {} if cache is None else {cache_arg: cache}
        out = model(input_ids=x, use_cache=True, **kwargs)
        out.logits[0, -1].numpy()
        return out.get("cache") if out.get("cache") is not None else out.get("past_key_values")

    with torch.inference_mode():
        warm = forward(ids[:16], None)
        for i in range(16, 18):
            warm = forward(ids[i : i + 1], warm)
        del warm

        prefill_runs = []
        for _ in range(max(1, args.prefill_reps)):
            start = time.perf_counter()
            cache = forward(ids[: args.prefill], None)
            prefill_runs.append(time.perf_counter() - start)
            del cache

        cache = None
        length = 0
        decode = []
        for c in contexts:
            first = c - args.steps
            if first < length:
                sys.exit("contexts must grow by more than --steps")
            if first > length:
                cache = forward(ids[length:first], cache)
            step_ms = []
            for i in range(first, c):
                start = time.perf_counter()
                cache = forward(ids[i : i + 1], cache)
                step_ms.append((time.perf_counter() - start) * 1e3)
            start = time.perf_counter()
            cache = forward(ids[c : c + 1], cache)
            decode.append({"context": c, "step_ms": step_ms, "next_ms": (time.perf_counter() - start) * 1e3})
            length = c + 1

    params = sum(p.numel() for p in model.parameters())
    embed = model.get_input_embeddings().weight
    tied = model.get_output_embeddings().weight.data_ptr() == embed.data_ptr()
    read = params if tied else params - embed.numel() + embed.shape[1]
    result = {
        "engine": "transformers",
        "prefill_tokens": args.prefill,
        "prefill_s": statistics.median(prefill_runs),
        "prefill_runs": prefill_runs,
        "decode": decode,
        "cache_bytes": None,
        # ru_maxrss is KiB on Linux: the process's VmHWM.
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "params": params,
        "decode_weight_bytes": 4 * read,
        "versions": f"torch {torch.__version__}, transformers {transformers.__version__}",
    }
    print("BENCH_RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
