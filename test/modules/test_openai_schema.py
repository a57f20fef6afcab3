# The gateway's OpenAI answers against OpenAI's published OpenAPI schemas
# (test/conformance/openai-schemas.json): plain, streamed, errors, lists.
import json

import pytest

import llmgw_env as env
import oas_check
from llmgw_env import chat_body

CHAT = "/v1/chat/completions"
# The route dialects whose answers reach an OpenAI client: the openai
# dialect's pass as they came, the ollama dialect's are built by the gateway.
DIALECTS = ["mock-small", "ollama-small"]


def valid(name, doc):
    errs = oas_check.validate(name, doc)
    assert not errs, f"not a valid {name}:\n  " + "\n  ".join(errs[:10]) + \
        f"\n{json.dumps(doc)[:600]}"


def completion_event(doc):
    """The document has no schema of its own for a streamed completion's
    events: they are completion objects (as OpenAI's API reference says)
    whose finish_reason is null until the last, as OpenAI sends them. So an
    event is checked as CreateCompletionResponse with a null finish_reason
    read as "stop"; every other member as it came."""
    doc = json.loads(json.dumps(doc))
    for ch in doc.get("choices") or []:
        if isinstance(ch, dict) and ch.get("finish_reason", 0) is None:
            ch["finish_reason"] = "stop"
    return doc


def valid_stream(s, chunk_schema):
    """Every event of a stream: chunks valid, the usage chunk included; an
    error event is an ErrorResponse; [DONE] last."""
    assert s.status == 200, s.raw[:300]
    assert s.data()[-1] == "[DONE]", s.data()[-3:]
    for d in s.data()[:-1]:
        doc = json.loads(d)
        if "error" in doc:
            valid("ErrorResponse", doc)
        elif chunk_schema == "CreateCompletionResponse":
            valid(chunk_schema, completion_event(doc))
        else:
            valid(chunk_schema, doc)


def test_schemas_are_extracted_with_their_source():
    doc = oas_check.document()
    assert len(doc["source"]["commit"]) == 40
    for name in doc["roots"]:
        assert name in doc["schemas"]


def test_validator_rejects_what_the_schema_does():
    # The validator must be able to fail: the shapes issue 13 found.
    msg = {"role": "assistant", "content": "hi"}
    answer = {"id": "x", "object": "chat.completion", "created": 1, "model": "m",
              "choices": [{"index": 0, "message": msg, "finish_reason": "stop",
                           "logprobs": None}]}
    assert oas_check.validate("CreateChatCompletionResponse", answer)
    msg["refusal"] = None
    assert not oas_check.validate("CreateChatCompletionResponse", answer)
    chunk = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [{"index": 0, "delta": {}, "finish_reason": "error"}]}
    assert oas_check.validate("CreateChatCompletionStreamResponse", chunk)
    assert oas_check.validate("ErrorResponse", {"error": {"message": "m"}})


@pytest.mark.parametrize("model", DIALECTS)
def test_chat_answers(gw, model):
    r = gw.post(CHAT, chat_body(model, max_tokens=5))
    assert r.status == 200, r.body
    valid("CreateChatCompletionResponse", r.json())
    # A tool call (the mock calls one when asked about the weather).
    tools = [{"type": "function", "function": {
        "name": "get_weather", "parameters": {"type": "object", "properties": {
            "city": {"type": "string"}}}}}]
    r = gw.post(CHAT, chat_body(model, "what is the weather in Paris", tools=tools))
    assert r.status == 200, r.body
    doc = r.json()
    assert doc["choices"][0]["message"].get("tool_calls"), doc
    valid("CreateChatCompletionResponse", doc)


@pytest.mark.parametrize("model", DIALECTS)
def test_chat_streams(gw, model):
    valid_stream(gw.stream(CHAT, chat_body(model, stream=True, max_tokens=5)),
                 "CreateChatCompletionStreamResponse")
    s = gw.stream(CHAT, chat_body(model, stream=True, max_tokens=5,
                                  stream_options={"include_usage": True}))
    assert "usage" in json.loads(s.data()[-2]), s.data()[-2]
    valid_stream(s, "CreateChatCompletionStreamResponse")


@pytest.mark.parametrize("model", DIALECTS)
def test_completions(gw, model):
    body = {"model": model, "prompt": "say hello", "max_tokens": 4}
    r = gw.post("/v1/completions", body)
    assert r.status == 200, r.body
    valid("CreateCompletionResponse", r.json())
    # A streamed completion's events are completion objects too.
    valid_stream(gw.stream("/v1/completions", dict(body, stream=True)),
                 "CreateCompletionResponse")


@pytest.mark.parametrize("model", DIALECTS)
def test_embeddings(gw, model):
    r = gw.post("/v1/embeddings", {"model": model, "input": ["a", "b"],
                                   "encoding_format": "float"})
    assert r.status == 200, r.body
    valid("CreateEmbeddingResponse", r.json())


def test_model_lists(gw):
    r = gw.get("/v1/models")
    assert r.status == 200
    valid("ListModelsResponse", r.json())
    r = gw.get("/v1/models/mock-small")
    assert r.status == 200
    valid("Model", r.json())


@pytest.mark.parametrize("model", DIALECTS)
def test_errors(gw, model):
    for r in (gw.post(CHAT, chat_body("no-such-model")),
              gw.post(CHAT, {"model": model}),
              gw.post(CHAT, "{not json"),
              gw.get("/v1/models/no-such-model"),
              gw.post(CHAT, chat_body(model), headers={"X-Mock-Fault": "500"}),
              gw.post(CHAT, chat_body(model), headers={"X-Mock-Fault": "reset"}),
              gw.post(CHAT, chat_body("dead-model"))):
        assert r.status >= 400, r.body
        valid("ErrorResponse", r.json())


@pytest.mark.parametrize("model", DIALECTS)
def test_broken_stream_ends_with_valid_events(gw, model):
    # A stream the backend cuts: every chunk valid, then the error event.
    s = gw.stream(CHAT, chat_body(model, stream=True, max_tokens=20),
                  headers={"X-Mock-Fault": "cut"})
    valid_stream(s, "CreateChatCompletionStreamResponse")
    assert "error" in json.loads(s.data()[-2]), s.data()[-3:]


def test_cached_answers(gw_shm, uniq):
    # Hits the gateway assembles: a plain answer from a recorded stream,
    # a stream from a recorded plain answer.
    q = chat_body(content=f"schema {uniq}", temperature=0, max_tokens=5)
    s = gw_shm.stream(CHAT, dict(q, stream=True))
    valid_stream(s, "CreateChatCompletionStreamResponse")
    r = gw_shm.post(CHAT, q)
    assert r.header("X-LLM-Cache") == "HIT", r.headers
    valid("CreateChatCompletionResponse", r.json())
    q2 = dict(q, messages=[{"role": "user", "content": f"schema plain {uniq}"}])
    assert gw_shm.post(CHAT, q2).header("X-LLM-Cache") == "MISS"
    s = gw_shm.stream(CHAT, dict(q2, stream=True,
                                 stream_options={"include_usage": True}))
    assert s.headers.get("X-LLM-Cache") == "HIT", s.headers
    valid_stream(s, "CreateChatCompletionStreamResponse")
