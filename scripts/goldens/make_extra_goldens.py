#!/usr/bin/env python3
"""Extra reference goldens for the cases shared/golden/hf/make_golden.py does not cover (issue 14, item 8).

Every number here comes from an independent reference implementation, never from our Rust code:
  * transformers (LlamaRotaryEmbedding / GPTNeoXRotaryEmbedding, i.e. ROPE_INIT_FUNCTIONS plus the
    longrope short/long switch of `dynamic_rope_update`; LlamaForCausalLM / GPTNeoXForCausalLM),
  * gguf-py (`gguf.quants.dequantize`).

Writes, relative to the repository root (argument 1, default: two levels above this file):

  clex-core/tests/fixtures/rope_tables_extra.safetensors
      <cfg>/<kind>/L{n}/{inv_freq, attention_scaling, cos, sin} for rope types llama3 and longrope, from a
      fresh HF rotary module per length with position_ids = arange(n) (so longrope picks short_factor for
      n <= original_max_position_embeddings and long_factor above). Tiny configs (LLaMA head_dim 16,
      GPT-NeoX partial rotary 0.25) hold cos/sin at every position; the big geometries (Llama-3.1-8B:
      head_dim 128, theta 5e5, factor 8, P_orig 8192; a Phi-3-mini-128k-like longrope: head_dim 96, P_orig 4096,
      P 131072, synthetic factors) hold them at a few positions (.../positions, .../cos_at, .../sin_at).
  clex-core/tests/fixtures/rope_tables_extra.json
      per table: rope_parameters, max_position_embeddings, rotary_dim, attention_scaling (the layout of
      rope_tables.json, so the same test code reads both).

  clex-models/tests/fixtures/hf_extra/
      The weights are the existing tiny models' (clex-models/tests/fixtures/hf/{llama,gpt_neox}.safetensors,
      made by make_golden.py with seed 1234); only configs, the LLaMA biases and the logits are new.
      llama_llama3.json, llama_llama3_legacy.json    LLaMA + llama3 rope (factor 4, low 1, high 8, P_orig 128:
                                                     the 8 frequencies fall in all three bands)
      llama_longrope.json, llama_longrope_legacy.json LLaMA + longrope (P 512, P_orig 128, seeded short/long
                                                     factors; attention factor from P / P_orig = 4)
      llama_longrope_toplevel_legacy.json            the legacy one with original_max_position_embeddings at the
                                                     top level, as Phi-3 writes it (same logits in transformers)
      llama_bias.json + llama_bias.safetensors       LLaMA with attention_bias and mlp_bias; the file holds
                                                     only the 14 bias vectors (seed 1235, 0.1 * N(0, 1)); load
                                                     it together with hf/llama.safetensors
      gpt_neox_sequential.json                       GPT-NeoX with use_parallel_residual = false
      logits.safetensors                             inputs (int64 [1, 512]; an n-token input is its prefix),
                                                     <model>/L{n}/rows (int64)
                                                     plus <model>/L{n}/logits (f32 [rows, 256]): logits of a full
                                                     forward over n tokens at the listed rows (every 4th, 8th or 32nd
                                                     position and the last, to keep the fixture small);
                                                     llama_longrope/decode: prefill 120 tokens, then one token at
                                                     a time to 140 through HF's DynamicCache (crosses P_orig = 128,
                                                     cached keys keep the short-factor rotation), logits of every
                                                     decode step.
      manifest.json                                  versions, seeds, settings, sanity figures (how far each
                                                     golden is from the plain model: the feature is visible).

  clex-models/tests/fixtures/gguf/dequant.safetensors, dequant.json
      <TYPE>/bytes (u8) and <TYPE>/values (f32, gguf-py's dequantisation) for F32, F16, BF16, Q4_0, Q4_1,
      Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K: random packed bytes (seed 1236) with finite f16 scales of both signs
      (one block with a zero scale, one with a subnormal), F16/BF16 including +-0, subnormals and +-inf.

Everything is float32 on CPU, eager attention; a rerun gives the same bytes. The tiny models' weights are read from
the repository's fixtures, so nothing is downloaded at run time. Setup and usage (a venv outside the repository):
  python3 -m venv /var/tmp/golden-venv
  /var/tmp/golden-venv/bin/pip install torch==2.15.0 transformers==5.24.0 gguf==0.19.0 safetensors==0.8.0 numpy==2.4.6
  /var/tmp/golden-venv/bin/python scripts/goldens/make_extra_goldens.py [REPO]
"""
import json
import os
import platform
import sys
import tempfile

import gguf
import numpy as np
import safetensors
import torch
import transformers
from gguf import GGMLQuantizationType as T
from safetensors.numpy import save_file as save_np
from safetensors.torch import load_file, save_file
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM
from transformers.models.gpt_neox.modeling_gpt_neox import GPTNeoXRotaryEmbedding
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

REPO = sys.argv[1] if len(sys.argv) > 1 else os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CORE_FX = os.path.join(REPO, "clex-core/tests/fixtures")
MODELS_FX = os.path.join(REPO, "clex-models/tests/fixtures")
HF_EXTRA = os.path.join(MODELS_FX, "hf_extra")
GGUF_FX = os.path.join(MODELS_FX, "gguf")

SEED_FACTORS = 1234   # longrope short/long factors
SEED_BIAS = 1235      # LLaMA biases
SEED_GGUF = 1236      # GGUF blocks

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
torch.use_deterministic_algorithms(True)


def versions():
    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "numpy": np.__version__, "safetensors": safetensors.__version__,
            "gguf": getattr(gguf, "__version__", None) or __import__("importlib.metadata").metadata.version("gguf")}


def longrope_factors(k, seed):
    """Synthetic LongRoPE divisors: short ones near 1, long ones growing from 1 to ~k (like Phi-3's shape)."""
    g = np.random.default_rng(seed)
    short = 1.0 + 0.25 * g.random(k)
    long = np.sort(1.0 + (k + 2) * g.random(k) ** 2)
    return [round(float(x), 6) for x in short], [round(float(x), 6) for x in long]


TINY_SHORT, TINY_LONG = longrope_factors(8, SEED_FACTORS)      # head_dim 16
NEOX_SHORT, NEOX_LONG = longrope_factors(2, SEED_FACTORS + 10)  # rotary dim 4
PHI_SHORT, PHI_LONG = longrope_factors(48, SEED_FACTORS + 20)   # head_dim 96

LLAMA3_TINY = {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 8.0,
               "original_max_position_embeddings": 128}
LONGROPE_TINY = {"rope_type": "longrope", "short_factor": TINY_SHORT, "long_factor": TINY_LONG,
                 "original_max_position_embeddings": 128}


def llama_cfg(rope, theta=10000.0, max_pos=512, **kw):
    return LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=172, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_pos,
                       rms_norm_eps=1e-6, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
                       rope_parameters={**rope, "rope_theta": theta}, attn_implementation="eager", **kw)


def neox_cfg(rope, max_pos=512, **kw):
    return GPTNeoXConfig(vocab_size=256, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=max_pos, layer_norm_eps=1e-5,
                         hidden_act="gelu", tie_word_embeddings=False, bos_token_id=0, eos_token_id=0,
                         rope_parameters={**rope, "rope_theta": 10000.0, "partial_rotary_factor": 0.25},
                         attn_implementation="eager", **kw)


# ----------------------------------------------------------------------------------------------- rope tables

def rope_tables(tensors, manifest):
    """(tag, rotary class, config maker, lengths, positions or None)."""
    llama31 = lambda: LlamaConfig(  # noqa: E731  (Llama-3.1-8B rope geometry)
        hidden_size=4096, num_attention_heads=32, num_hidden_layers=1, vocab_size=32000, intermediate_size=11008,
        max_position_embeddings=131072,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
    phi3 = lambda: LlamaConfig(  # noqa: E731  (Phi-3-mini-128k-like geometry, synthetic factors)
        hidden_size=3072, num_attention_heads=32, num_hidden_layers=1, vocab_size=32000, intermediate_size=8192,
        max_position_embeddings=131072,
        rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0, "short_factor": PHI_SHORT,
                         "long_factor": PHI_LONG, "original_max_position_embeddings": 4096})
    # explicit factor and attention_factor (no P / P_orig fallback)
    longrope_explicit = {**LONGROPE_TINY, "factor": 8.0, "attention_factor": 1.25}
    cases = [
        ("llama_tiny", "llama3", LlamaRotaryEmbedding, lambda: llama_cfg(LLAMA3_TINY), [64, 256], None),
        ("gpt_neox_tiny", "llama3", GPTNeoXRotaryEmbedding, lambda: neox_cfg(LLAMA3_TINY), [64, 256], None),
        # lengths on both sides of the short/long switch at P_orig = 128
        ("llama_tiny", "longrope", LlamaRotaryEmbedding, lambda: llama_cfg(LONGROPE_TINY), [64, 128, 129, 256], None),
        ("llama_tiny", "longrope_explicit", LlamaRotaryEmbedding, lambda: llama_cfg(longrope_explicit), [128, 129],
         None),
        ("gpt_neox_tiny", "longrope", GPTNeoXRotaryEmbedding,
         lambda: neox_cfg({**LONGROPE_TINY, "short_factor": NEOX_SHORT, "long_factor": NEOX_LONG}), [128, 129], None),
        ("llama31_hd128", "llama3", LlamaRotaryEmbedding, llama31, [131072],
         [0, 1, 2, 3, 7, 100, 1000, 8191, 8192, 32767, 65535, 131071]),
        ("phi3_hd96", "longrope", LlamaRotaryEmbedding, phi3, [4096, 4097, 131072],
         [0, 1, 2, 3, 7, 100, 1000, 4095, 4096, 32767, 131071]),
    ]
    for tag, kind, cls, mk, lens, positions in cases:
        for L in lens:
            c = mk()
            mod = cls(c)  # fresh module: longrope's inv_freq buffer is switched in place per forward
            pos = torch.arange(L, dtype=torch.int64)[None]
            cos, sin = mod(torch.zeros(1, dtype=torch.float32), pos)
            key = f"{tag}/{kind}/L{L}"
            tensors[f"{key}/inv_freq"] = mod.inv_freq.detach().clone().float().contiguous()
            tensors[f"{key}/attention_scaling"] = torch.tensor([float(mod.attention_scaling)], dtype=torch.float32)
            if positions is None:
                tensors[f"{key}/cos"] = cos[0].contiguous()
                tensors[f"{key}/sin"] = sin[0].contiguous()
            else:
                p = torch.tensor([q for q in positions if q < L], dtype=torch.int64)
                tensors[f"{key}/positions"] = p
                tensors[f"{key}/cos_at"] = cos[0, p].contiguous()
                tensors[f"{key}/sin_at"] = sin[0, p].contiguous()
            manifest[key] = {"rope_parameters": c.rope_parameters, "max_position_embeddings": c.max_position_embeddings,
                             "rotary_dim": int(cos.shape[-1]), "attention_scaling": float(mod.attention_scaling)}


# ------------------------------------------------------------------------------------------------ model logits

def make_inputs(n):
    # The same bytes as make_golden.py (a Hamlet line repeated, vocab 256 = raw bytes).
    text = ("To be, or not to be, that is the question: Whether 'tis nobler in the mind to suffer "
            "the slings and arrows of outrageous fortune, or to take arms against a sea of troubles, "
            "and by opposing end them? ").encode("ascii")
    return torch.tensor([list((text * (n // len(text) + 1))[:n])], dtype=torch.int64)


def rows_of(n, step):
    return sorted(set(range(0, n, step)) | {n - 1})


def load_model(cls, cfg, weights, workdir, name):
    """from_pretrained of `cfg` + `weights` (a state dict) as written on disk; returns (model, config.json dict)."""
    d = os.path.join(workdir, name)
    os.makedirs(d, exist_ok=True)
    cfg.save_pretrained(d)
    save_file(weights, os.path.join(d, "model.safetensors"))
    model, info = cls.from_pretrained(d, attn_implementation="eager", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], (name, info)
    with open(os.path.join(d, "config.json")) as f:
        saved = json.load(f)
    return model.eval(), saved


def legacy(saved, scaling_key_type="rope_type"):
    """transformers-4 spelling: rope_theta at the top, rope_scaling without rope_theta (Llama 3.1's own
    config.json writes rope_type; older longrope configs write type)."""
    d = json.loads(json.dumps(saved))
    rp = d.pop("rope_parameters")
    d["rope_theta"] = rp.pop("rope_theta")
    kind = rp.pop("rope_type")
    d["rope_scaling"] = {scaling_key_type: kind, **rp}
    d["transformers_version"] = "4.45.0"
    return d


@torch.no_grad()
def logits_at(model, ids, rows):
    out = model(input_ids=ids, use_cache=False)
    return out.logits[0, rows].float().contiguous()


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")


def models(workdir):
    os.makedirs(HF_EXTRA, exist_ok=True)
    llama_w = load_file(os.path.join(MODELS_FX, "hf/llama.safetensors"))
    neox_w = load_file(os.path.join(MODELS_FX, "hf/gpt_neox.safetensors"))
    tensors, manifest = {}, {}
    inputs = {n: make_inputs(n) for n in [64, 128, 129, 140, 512]}
    tensors["inputs"] = inputs[512]  # every input is a prefix of it
    assert all(torch.equal(ids[0], inputs[512][0, :n]) for n, ids in inputs.items())

    def record(name, model, plain, lens_steps):
        info = {}
        for n, step in lens_steps:
            rows = rows_of(n, step)
            got = logits_at(model, inputs[n], rows)
            tensors[f"{name}/L{n}/rows"] = torch.tensor(rows, dtype=torch.int64)
            tensors[f"{name}/L{n}/logits"] = got
            ref = logits_at(plain, inputs[n], rows)
            info[f"L{n}"] = {"rows": len(rows), "logits_abs_mean": got.abs().mean().item(),
                             "max_abs_diff_vs_plain_model": (got - ref).abs().max().item()}
        manifest[name] = info

    plain_llama, _ = load_model(LlamaForCausalLM, llama_cfg({"rope_type": "default"}), llama_w, workdir, "plain_llama")
    plain_neox, _ = load_model(GPTNeoXForCausalLM, neox_cfg({"rope_type": "default"}, use_parallel_residual=True),
                               neox_w, workdir, "plain_neox")

    # llama3 (length-independent frequencies): one long input
    m, saved = load_model(LlamaForCausalLM, llama_cfg(LLAMA3_TINY), llama_w, workdir, "llama_llama3")
    write_json(os.path.join(HF_EXTRA, "llama_llama3.json"), saved)
    leg = legacy(saved, "rope_type")
    write_json(os.path.join(HF_EXTRA, "llama_llama3_legacy.json"), leg)
    assert LlamaConfig.from_dict(leg).rope_parameters == m.config.rope_parameters
    record("llama_llama3", m, plain_llama, [(512, 32)])

    # longrope: at P_orig (short factors), one past it (long factors) and 4x
    m, saved = load_model(LlamaForCausalLM, llama_cfg(LONGROPE_TINY), llama_w, workdir, "llama_longrope")
    write_json(os.path.join(HF_EXTRA, "llama_longrope.json"), saved)
    leg = legacy(saved, "type")
    write_json(os.path.join(HF_EXTRA, "llama_longrope_legacy.json"), leg)
    leg_rp = {k: v for k, v in LlamaConfig.from_dict(leg).rope_parameters.items() if k != "type"}
    assert leg_rp == m.config.rope_parameters, (leg_rp, m.config.rope_parameters)
    # Phi-3's spelling: original_max_position_embeddings at the top level, outside rope_scaling (transformers
    # moves it into the rope parameters when the rotary module is built); the same logits must come out
    phi = json.loads(json.dumps(leg))
    phi["original_max_position_embeddings"] = phi["rope_scaling"].pop("original_max_position_embeddings")
    write_json(os.path.join(HF_EXTRA, "llama_longrope_toplevel_legacy.json"), phi)
    m_phi, _ = load_model(LlamaForCausalLM, LlamaConfig.from_dict(phi), llama_w, workdir, "llama_longrope_phi")
    for n in [128, 129]:
        rows = rows_of(n, 8)
        assert torch.equal(logits_at(m_phi, inputs[n], rows), logits_at(m, inputs[n], rows)), n
    record("llama_longrope", m, plain_llama, [(128, 8), (129, 8), (512, 32)])
    # HF's own cached decode across the switch (the Reference cache policy's semantics)
    with torch.no_grad():
        ids = inputs[140]
        out = m(input_ids=ids[:, :120], use_cache=True)
        cache, steps = out.past_key_values, []
        for i in range(120, 140):
            out = m(input_ids=ids[:, i:i + 1], past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            steps.append(out.logits[0, -1].float())
        dec = torch.stack(steps).contiguous()
        # a full forward of the first i+1 tokens: equal below P_orig, different once the long factors take over
        # (HF keeps the cached keys' short-factor rotation)
        full = torch.stack([m(input_ids=ids[:, :i + 1], use_cache=False).logits[0, -1].float()
                            for i in range(120, 140)])
    tensors["llama_longrope/decode/logits"] = dec
    tensors["llama_longrope/decode/prefill"] = torch.tensor([120], dtype=torch.int64)
    manifest["llama_longrope"]["decode"] = {
        "prefill": 120, "steps": 20,
        "max_abs_diff_vs_full_forward_steps_120_127": (dec[:8] - full[:8]).abs().max().item(),
        "max_abs_diff_vs_full_forward_steps_128_139": (dec[8:] - full[8:]).abs().max().item()}

    # LLaMA with biases on q/k/v/o and on the MLP
    g = torch.Generator().manual_seed(SEED_BIAS)
    bias = {}
    for l in range(2):
        p = f"model.layers.{l}"
        for name in ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                     "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]:
            out_dim = llama_w[f"{p}.{name}.weight"].shape[0]
            bias[f"{p}.{name}.bias"] = 0.1 * torch.randn(out_dim, generator=g)
    m, saved = load_model(LlamaForCausalLM, llama_cfg({"rope_type": "default"}, attention_bias=True, mlp_bias=True),
                          {**llama_w, **bias}, workdir, "llama_bias")
    write_json(os.path.join(HF_EXTRA, "llama_bias.json"), saved)
    save_file(bias, os.path.join(HF_EXTRA, "llama_bias.safetensors"))
    record("llama_bias", m, plain_llama, [(64, 4)])

    # GPT-NeoX, sequential residual
    m, saved = load_model(GPTNeoXForCausalLM, neox_cfg({"rope_type": "default"}, use_parallel_residual=False), neox_w,
                          workdir, "gpt_neox_sequential")
    write_json(os.path.join(HF_EXTRA, "gpt_neox_sequential.json"), saved)
    record("gpt_neox_sequential", m, plain_neox, [(64, 4)])

    save_file(tensors, os.path.join(HF_EXTRA, "logits.safetensors"))
    return manifest


# ------------------------------------------------------------------------------------------------- GGUF blocks

def f16_bytes(x):
    return np.asarray(x, dtype=np.float16).view(np.uint8)


def gguf_blocks():
    g = np.random.default_rng(SEED_GGUF)

    def scales(n):
        # finite f16 scales of both signs, magnitudes 1e-4..1e-1; block 1 has a zero scale, block 2 a subnormal
        s = (g.choice([-1.0, 1.0], n) * 10.0 ** g.uniform(-4, -1, n)).astype(np.float16)
        if n > 2:
            s[1] = 0.0
            s[2] = np.float16(3.0e-6)  # subnormal in f16
        return s

    def quant(n_blocks, type_size, scale_offsets):
        raw = g.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
        for off in scale_offsets:
            raw[:, off:off + 2] = f16_bytes(scales(n_blocks)).reshape(n_blocks, 2)
        return raw.reshape(-1)

    out = {}
    f32 = g.standard_normal(64).astype(np.float32) * 10.0 ** g.uniform(-3, 3, 64).astype(np.float32)
    f32[:4] = [0.0, -0.0, 1e-40, -3.4e38]  # includes an f32 subnormal
    out["F32"] = f32.view(np.uint8)
    special = [0.0, -0.0, 6.0e-8, -6.0e-5, 65504.0, -65504.0, np.inf, -np.inf]
    h = g.standard_normal(64).astype(np.float16)
    h[:8] = special
    out["F16"] = h.view(np.uint8)
    b = (g.standard_normal(64).astype(np.float32) * 10.0 ** g.uniform(-30, 30, 64)).astype(np.float32)
    b[:6] = [0.0, -0.0, 1e-39, -np.inf, np.inf, 3.0e38]
    out["BF16"] = (b.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)  # truncation: any bf16 pattern will do
    # (type, blocks, offsets of f16 scales inside a block); the sizes come from gguf-py itself
    layout = {"Q4_0": (6, [0]), "Q4_1": (6, [0, 2]), "Q5_0": (6, [0]), "Q5_1": (6, [0, 2]), "Q8_0": (6, [0]),
              "Q4_K": (4, [0, 2]), "Q5_K": (4, [0, 2]), "Q6_K": (4, [208])}
    for name, (n, offs) in layout.items():
        bs, ts = gguf.GGML_QUANT_SIZES[T[name]]
        out[name] = quant(n, ts, offs)
    tensors, manifest = {}, {}
    for name, raw in out.items():
        vals = gguf.quants.dequantize(raw, T[name]).astype(np.float32, copy=False).reshape(-1)
        assert not np.isnan(vals).any(), name
        tensors[f"{name}/bytes"] = np.ascontiguousarray(raw)
        tensors[f"{name}/values"] = np.ascontiguousarray(vals)
        bs, ts = gguf.GGML_QUANT_SIZES[T[name]]
        manifest[name] = {"ggml_type_id": int(T[name]), "block_size": bs, "type_size": ts,
                          "blocks": raw.size // ts, "values": int(vals.size),
                          "finite_values": int(np.isfinite(vals).sum()),
                          "abs_max_finite": float(np.abs(vals[np.isfinite(vals)]).max())}
    os.makedirs(GGUF_FX, exist_ok=True)
    save_np(tensors, os.path.join(GGUF_FX, "dequant.safetensors"))
    return manifest


def main():
    rope, rope_manifest = {}, {}
    rope_tables(rope, rope_manifest)
    save_file(rope, os.path.join(CORE_FX, "rope_tables_extra.safetensors"))
    write_json(os.path.join(CORE_FX, "rope_tables_extra.json"),
               {"source": "scripts/goldens/make_extra_goldens.py", "versions": versions(),
                "factor_seed": SEED_FACTORS, "rope_tables": rope_manifest})

    with tempfile.TemporaryDirectory() as work:
        model_manifest = models(work)
    write_json(os.path.join(HF_EXTRA, "manifest.json"),
               {"source": "scripts/goldens/make_extra_goldens.py", "versions": versions(), "dtype": "float32",
                "attn_implementation": "eager", "weights": "hf/llama.safetensors, hf/gpt_neox.safetensors (seed 1234)",
                "bias_seed": SEED_BIAS, "factor_seed": SEED_FACTORS, "models": model_manifest})

    g = gguf_blocks()
    write_json(os.path.join(GGUF_FX, "dequant.json"),
               {"source": "scripts/goldens/make_extra_goldens.py", "versions": versions(), "seed": SEED_GGUF,
                "reference": "gguf.quants.dequantize", "types": g})
    print(json.dumps(versions()))
    print(json.dumps(model_manifest, indent=1))


if __name__ == "__main__":
    main()
