"""Writes the Phi-2 and Mixtral GGUF fixtures of clex-models' tests the way llama.cpp's
convert_hf_to_gguf.py lays them out, from the tiny official-CLEX models copied into
clex-models/tests/fixtures/clex_arch/ (their weights, without the CLEX layer: llama.cpp has
no CLEX, so a GGUF carries plain RoPE).

- phi2.gguf: architecture `phi2`; q/k/v kept apart (transformers' Phi naming maps to
  attn_q/attn_k/attn_v), biases on attn_*, attn_output, ffn_up (fc1), ffn_down (fc2),
  attn_norm (the one LayerNorm), output_norm and output; no q/k permutation (llama.cpp
  runs Phi-2 with NeoX rope); rope.dimension_count = the rotary dims.
- mixtral.gguf: architecture `llama` with expert_count / expert_used_count; q/k rows
  permuted as LlamaModel.permute does; experts merged into ffn_gate_exps (w1), ffn_up_exps
  (w3), ffn_down_exps (w2), shape [experts, out, in]; the router as ffn_gate_inp.

Every tensor is F32, so the GGUF and its HF twin (the same weights, rope_scaling null) give
the same logits. Run from the repository root with the gguf package (gguf-py 0.19.0):

    /var/tmp/golden-venv/bin/python scripts/goldens/make_gguf_arch_fixtures.py

A rerun gives the same bytes.
"""

import json
from pathlib import Path

import gguf
import numpy as np
from safetensors.numpy import load_file

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "clex-models/tests/fixtures/clex_arch"
OUT = ROOT / "clex-models/tests/fixtures/gguf_arch"


def model(name):
    config = json.loads((SRC / f"{name}_clex.json").read_text())
    tensors = load_file(str(SRC / f"{name}_clex.safetensors"))
    tensors = {k: v for k, v in tensors.items() if ".clex_layer." not in k}
    return config, tensors


def permute(w, n_head):
    """llama.cpp's LlamaModel.permute: each head's rotary halves interleaved as pairs."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def phi2():
    c, t = model("phi2")
    w = gguf.GGUFWriter(str(OUT / "phi2.gguf"), "phi2")
    w.add_name("tiny-phi2")
    n_embd, n_head = c["hidden_size"], c["num_attention_heads"]
    w.add_context_length(c["max_position_embeddings"])
    w.add_embedding_length(n_embd)
    # convert_hf_to_gguf.py writes 4 * n_embd (= intermediate_size for Phi-2); here the true one.
    w.add_feed_forward_length(c["intermediate_size"])
    w.add_block_count(c["num_hidden_layers"])
    w.add_head_count(n_head)
    w.add_head_count_kv(c["num_key_value_heads"])
    w.add_layer_norm_eps(c["layer_norm_eps"])
    w.add_rope_dimension_count(int(c["partial_rotary_factor"] * n_embd) // n_head)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_add_bos_token(False)
    names = {"model.embed_tokens": "token_embd", "model.final_layernorm": "output_norm", "lm_head": "output"}
    layer = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.dense": "attn_output", "mlp.fc1": "ffn_up", "mlp.fc2": "ffn_down"}
    for hf in sorted(t):
        stem, suffix = hf.rsplit(".", 1)
        if stem in names:
            g = names[stem]
        else:
            _, _, i, module = stem.split(".", 3)
            g = f"blk.{i}.{layer[module]}"
        w.add_tensor(f"{g}.{suffix}", np.ascontiguousarray(t[hf], dtype=np.float32))
    finish(w)


def mixtral():
    c, t = model("mixtral")
    w = gguf.GGUFWriter(str(OUT / "mixtral.gguf"), "llama")
    w.add_name("tiny-mixtral")
    n_head, n_kv = c["num_attention_heads"], c["num_key_value_heads"]
    w.add_vocab_size(c["vocab_size"])
    w.add_context_length(c["max_position_embeddings"])
    w.add_embedding_length(c["hidden_size"])
    w.add_block_count(c["num_hidden_layers"])
    w.add_feed_forward_length(c["intermediate_size"])
    w.add_rope_dimension_count(c["hidden_size"] // n_head)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_freq_base(c["rope_theta"])
    w.add_layer_norm_rms_eps(c["rms_norm_eps"])
    w.add_expert_count(c["num_local_experts"])
    w.add_expert_used_count(c["num_experts_per_tok"])
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    layer = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
             "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
             "block_sparse_moe.gate": "ffn_gate_inp"}
    out = {}
    for hf, v in t.items():
        if hf in names:
            out[names[hf]] = v
            continue
        _, _, i, rest = hf.split(".", 3)
        if ".experts." in rest:
            continue
        stem = rest.rsplit(".", 1)[0]
        if stem == "self_attn.q_proj":
            v = permute(v, n_head)
        elif stem == "self_attn.k_proj":
            v = permute(v, n_kv)
        out[f"blk.{i}.{layer[stem]}.weight"] = v
    for i in range(c["num_hidden_layers"]):
        for hf_w, g in [("w1", "ffn_gate_exps"), ("w3", "ffn_up_exps"), ("w2", "ffn_down_exps")]:
            stack = [t[f"model.layers.{i}.block_sparse_moe.experts.{e}.{hf_w}.weight"] for e in range(c["num_local_experts"])]
            out[f"blk.{i}.{g}.weight"] = np.stack(stack)
    for name in sorted(out):
        w.add_tensor(name, np.ascontiguousarray(out[name], dtype=np.float32))
    finish(w)


def finish(w):
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    phi2()
    mixtral()
    for f in sorted(OUT.glob("*.gguf")):
        print(f.relative_to(ROOT), f.stat().st_size)
