"""The official `openai` Python client against a running `clex serve` (.ci/run starts one on
SmolLM2-135M-Instruct): the wire format checked by the client users actually use.

    python scripts/openai_client_check.py http://127.0.0.1:PORT API_KEY
"""

import sys

import openai

base, key = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=300)

models = client.models.list()
assert len(models.data) == 1, models
model = models.data[0].id
print(f"models: {model}")

question = [{"role": "user", "content": "What is the capital of France?"}]
chat = client.chat.completions.create(model=model, messages=question, temperature=0, max_tokens=30)
answer = chat.choices[0].message.content
assert "Paris" in answer, answer
assert chat.choices[0].finish_reason == "stop", chat
assert chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens, chat.usage
print(f"chat: {answer!r} ({chat.usage.prompt_tokens} + {chat.usage.completion_tokens} tokens)")

stream = client.chat.completions.create(
    model=model, messages=question, temperature=0, max_tokens=30, stream=True, stream_options={"include_usage": True}
)
pieces, usage = [], None
for chunk in stream:
    if chunk.usage is not None:
        usage = chunk.usage
    for choice in chunk.choices:
        pieces.append(choice.delta.content or "")
assert "".join(pieces) == answer, (pieces, answer)
assert usage is not None and usage.completion_tokens == chat.usage.completion_tokens, usage
print(f"streamed chat: {len(pieces)} chunks, same text")

completion = client.completions.create(model=model, prompt="The capital of France is", temperature=0, max_tokens=8)
text = completion.choices[0].text
assert "Paris" in text, text
print(f"completion: {text!r}")

streamed = "".join(
    c.choices[0].text
    for c in client.completions.create(
        model=model, prompt="The capital of France is", temperature=0, max_tokens=8, stream=True
    )
    if c.choices
)
assert streamed == text, (streamed, text)
print("streamed completion: same text")

try:
    client.chat.completions.create(model=model, messages=question, temperature=5)
    raise SystemExit("temperature 5 was accepted")
except openai.BadRequestError as e:
    assert e.status_code == 400, e
    print(f"bad parameter: 400 {e.body['message']!r}")

try:
    openai.OpenAI(base_url=f"{base}/v1", api_key="wrong", max_retries=0).models.list()
    raise SystemExit("a wrong key was accepted")
except openai.AuthenticationError as e:
    assert e.status_code == 401, e
    print("wrong key: 401")

print("openai client check: ok")
