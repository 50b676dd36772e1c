#!/usr/bin/env python3
"""Chat-template goldens (issue 20): what transformers' own `apply_chat_template(..., tokenize=False)` renders.

Run with /var/tmp/golden-venv/bin/python (transformers 5.x, jinja2 >= 3.1.6); needs no network. The strings come
from transformers and jinja2, never from our Rust code; clex-models/tests/chat_template.rs renders the same cases
with clex_models::ChatTemplate and compares them exactly.

Templates:
  smollm2   SmolLM2-135M-Instruct's ChatML template, bos/eos as its tokenizer_config.json gives them (read from
            ~/.cache/clex-rs/smollm2/hf/tokenizer_config.json, `cargo xtask fetch-smollm2`; Apache-2.0).
  llama2    The LLaMA-2 chat `[INST]` template of meta-llama/Llama-2-7b-chat-hf (its well-known text, below), with
            bos "<s>" and eos "</s>": `.strip()`, slicing, `raise_exception` on roles that do not alternate.
  features  A small template of ours, written across lines, that exercises what the two above do not: trim_blocks
            and lstrip_blocks, `tojson`, loop controls (`break`, `continue`), `namespace`, Python string methods
            (`.upper()`, `.startswith()`, `.replace()`, `.split()`), `tools` / `documents` being none.

Writes clex-models/tests/data/chat_templates.json (relative to the repository root, argument 1, default: two
levels above this file): {"templates": {name: {source, bos_token, eos_token}}, "cases": [{name, template,
messages, add_generation_prompt, and either "expected" (the rendered string) or "error" (the message of the
TemplateError transformers raises)}]}.
"""

import json
import os
import sys
from pathlib import Path

from jinja2.exceptions import TemplateError
from transformers import AutoTokenizer

ROOT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2]
SMOLLM2_DIR = Path(os.environ.get("CLEX_CACHE", Path.home() / ".cache/clex-rs")) / "smollm2/hf"

LLAMA2_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)

FEATURES_TEMPLATE = """{{ bos_token }}
{% set ns = namespace(turns=0, system='') %}
{% for message in messages %}
    {% if message['role'] == 'system' %}
        {% set ns.system = message['content'].strip() %}
        {% continue %}
    {% endif %}
    {% if message['content'].startswith('STOP') %}
        {% break %}
    {% endif %}
    {% set ns.turns = ns.turns + 1 %}
    <{{ message['role'].upper() }} n={{ ns.turns }}>
    {{ message['content'].replace('\\t', ' ') | trim }}
    words: {{ message['content'].split() | length }}
    json: {{ message | tojson }}
{% endfor %}
{% if ns.system %}
system: {{ ns.system }}
{% endif %}
tools: {{ tools is none }} documents: {{ documents is none }}
{% if add_generation_prompt %}
<ASSISTANT n={{ ns.turns + 1 }}>
{% endif %}
{{ eos_token }}"""


def conversations():
    user = {"role": "user", "content": "What is the capital of France?"}
    system = {"role": "system", "content": "You are a terse geography tutor."}
    reply = {"role": "assistant", "content": "  Paris.  "}
    follow = {"role": "user", "content": "And of Italy? Answer in one word."}
    return {
        "one_user": [user],
        "system_user": [system, user],
        "multi_turn": [user, reply, follow],
        "system_multi_turn": [system, user, reply, follow],
        "ends_with_assistant": [user, reply],
        "unicode_and_markup": [{"role": "user", "content": "Ünïcödé « quotes \" ' & <tags> {{ not jinja }} 日本語\n\tnew line"}],
    }


def main():
    tok = AutoTokenizer.from_pretrained(SMOLLM2_DIR, local_files_only=True)
    smollm2_config = json.loads((SMOLLM2_DIR / "tokenizer_config.json").read_text())
    templates = {
        "smollm2": {"source": smollm2_config["chat_template"], "bos_token": tok.bos_token, "eos_token": tok.eos_token},
        "llama2": {"source": LLAMA2_TEMPLATE, "bos_token": "<s>", "eos_token": "</s>"},
        "features": {"source": FEATURES_TEMPLATE, "bos_token": "<s>", "eos_token": "</s>"},
    }
    cases = []

    def render(name, template, messages, add_generation_prompt):
        t = templates[template]
        case = {"name": name, "template": template, "messages": messages, "add_generation_prompt": add_generation_prompt}
        try:
            # bos_token / eos_token as keyword arguments overwrite the tokenizer's own special tokens.
            case["expected"] = tok.apply_chat_template(
                messages,
                chat_template=t["source"],
                tokenize=False,
                add_generation_prompt=add_generation_prompt,
                bos_token=t["bos_token"],
                eos_token=t["eos_token"],
            )
        except TemplateError as e:
            case["error"] = str(e)
        cases.append(case)

    for template in templates:
        for conv_name, messages in conversations().items():
            for gen in (False, True):
                render(f"{template}/{conv_name}/gen={gen}", template, messages, gen)
    # LLaMA-2 refuses roles that do not alternate (raise_exception).
    render("llama2/non_alternating", "llama2", [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], True)
    render("llama2/starts_with_assistant", "llama2", [{"role": "assistant", "content": "a"}], False)
    render(
        "features/break",
        "features",
        [{"role": "user", "content": "one"}, {"role": "user", "content": "STOP here"}, {"role": "user", "content": "never"}],
        True,
    )
    # The tokenizer's own template (no chat_template argument) equals the one recorded for smollm2.
    assert tok.apply_chat_template(conversations()["one_user"], tokenize=False) == cases[0]["expected"]

    errors = [c for c in cases if "error" in c]
    assert len(errors) >= 2 and all("alternate" in c["error"] for c in errors), errors
    out = ROOT / "clex-models/tests/data/chat_templates.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"templates": templates, "cases": cases}, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {out}: {len(cases)} cases ({len(errors)} errors)")


if __name__ == "__main__":
    main()
