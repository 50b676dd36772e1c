#!/usr/bin/env python3
"""The transformers side of `cargo xtask bench --long --vs-torch` (not used by any test).

Runs an HF directory (SmolLM2-135M from `cargo xtask fetch-smollm2`) through transformers
in f32 on the CPU with the attention implementation --attn ("eager" or "sdpa") and the
thread count of the Rust run, and prints one `BENCH_RESULT {json}` line with the fields of
clex-rs's `bench-worker --task long`. The protocol mirrors xtask/src/bench/worker.rs:

1. warm-up: a 16-token prefill and 2 decode steps on a throwaway cache;
2. prefill: a fresh cache, one forward over the first --context ids, timed;
3. --steps greedy decode steps after it (argmax of the last logits fed back), each timed.

Every forward computes only the last row of logits (`logits_to_keep=1`, as generate()
does; ours computes one row too) and reads it back as a numpy array. If anything cannot
allocate, it prints `BENCH_OOM <reason>` and exits with status 3, which the parent reports
as "out of memory" (the parent also stops the process when its resident memory passes
what the machine has free).

Needs torch and transformers: the venv `$CLEX_TORCH_VENV` (else `.venv-torch`), e.g.
`CLEX_TORCH_VENV=/var/tmp/golden-venv` where that one exists.
"""

import argparse
import inspect
import json
import resource
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="HF directory")
    ap.add_argument("--ids", required=True, help="JSON array of token ids")
    ap.add_argument("--context", type=int, required=True, help="prompt tokens, prefilled in one forward")
    ap.add_argument("--steps", type=int, default=16, help="timed greedy decode steps after the prefill")
    ap.add_argument("--attn", choices=["eager", "sdpa"], required=True, help="attn_implementation")
    ap.add_argument("--threads", type=int, required=True, help="torch.set_num_threads")
    args = ap.parse_args()

    try:
        result = measure(args)
    except (MemoryError, RuntimeError) as e:
        text = str(e) or type(e).__name__
        if isinstance(e, MemoryError) or any(k in text.lower() for k in ("alloc", "out of memory", "cannot allocate")):
            print("BENCH_OOM " + text.splitlines()[0][:300], flush=True)
            sys.exit(3)
        raise
    print("BENCH_RESULT " + json.dumps(result), flush=True)


def measure(args):
    """Loads the model and runs the protocol; returns the result dict."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, attn_implementation=args.attn)
    model.eval()
    with open(args.ids) as f:
        ids = json.load(f)
    if len(ids) < max(args.context, 18):
        sys.exit(f"{args.ids} holds {len(ids)} ids, a prefill of {args.context} needs that many")

    params = inspect.signature(model.forward).parameters
    # transformers 5.2x calls the cache argument `cache`; earlier versions `past_key_values`.
    cache_arg = "cache" if "cache" in params else "past_key_values"
    keep = {"logits_to_keep": 1} if "logits_to_keep" in params else {"num_logits_to_keep": 1} if "num_logits_to_keep" in params else {}

    def forward(chunk, cache):
        """Appends `chunk` to `cache`; returns (the last logits row on the host, the cache)."""
        x = torch.tensor([chunk], dtype=torch.long)
        kwargs = {} if cache is None else {cache_arg: cache}
        out = model(input_ids=x, use_cache=True, **kwargs, **keep)
        row = out.logits[0, -1].numpy()
        cache = out.get("cache") if out.get("cache") is not None else out.get("past_key_values")
        return row, cache

    with torch.inference_mode():
        _, warm = forward(ids[:16], None)
        for i in range(16, 18):
            _, warm = forward(ids[i : i + 1], warm)
        del warm

        start = time.perf_counter()
        row, cache = forward(ids[: args.context], None)
        prefill_s = time.perf_counter() - start
        step_ms = []
        generated = []
        nxt = int(row.argmax())
        for _ in range(args.steps):
            start = time.perf_counter()
            row, cache = forward([nxt], cache)
            step_ms.append((time.perf_counter() - start) * 1e3)
            generated.append(nxt)
            nxt = int(row.argmax())

    n_params = sum(p.numel() for p in model.parameters())
    embed = model.get_input_embeddings().weight
    tied = model.get_output_embeddings().weight.data_ptr() == embed.data_ptr()
    read = n_params if tied else n_params - embed.numel() + embed.shape[1]
    return {
        "engine": f"transformers {args.attn}",
        "context": args.context,
        "prefill_s": prefill_s,
        "step_ms": step_ms,
        "generated": generated,
        "cache_bytes": None,
        # ru_maxrss is KiB on Linux: the process's VmHWM.
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "params": n_params,
        "decode_weight_bytes": 4 * read,
        "versions": f"torch {torch.__version__}, transformers {transformers.__version__}",
    }


if __name__ == "__main__":
    main()
