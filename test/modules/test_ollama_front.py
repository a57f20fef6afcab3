# The Ollama-native API (LLMApi ollama on /api) in front of OpenAI-dialect
# backends: chat, generate, embed, NDJSON streams, info endpoints, errors in
# Ollama's {"error": "..."} shape, and answers shared with the OpenAI API.
import http.client
import json
import os
import re
import time

import llmgw_env as env
from llmgw_env import chat_body


def package_version():
    with open(os.path.join(env.REPO, "configure.ac")) as f:
        return re.search(r"AC_INIT\(\[[^]]*\], \[([^]]+)\]", f.read()).group(1)


def ndjson(g, path, body, headers=None):
    """POST and read an NDJSON answer line by line, timestamping each."""
    conn = http.client.HTTPConnection(env.HOST, g.port, timeout=30)
    t0 = time.monotonic()
    try:
        conn.request("POST", path, body=json.dumps(body),
                     headers=dict({"Content-Type": "application/json"}, **(headers or {})))
        resp = conn.getresponse()
        lines, buf = [], b""
        while True:
            piece = resp.read1(4096)
            if not piece:
                break
            buf += piece
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if line.strip():
                    lines.append((time.monotonic() - t0, json.loads(line)))
        assert not buf.strip(), f"unterminated line {buf!r}"
        return resp, lines
    finally:
        conn.close()


def ollama_error(r, status):
    assert r.status == status, r.body
    assert r.content_type == "application/json"
    j = r.json()
    assert set(j) == {"error"} and isinstance(j["error"], str) and j["error"]
    return j["error"]


def chat(content="hello ollama", **kw):
    body = {"model": "mock-small", "messages": [{"role": "user", "content": content}]}
    body.update(kw)
    return body


def test_chat_plain(gw):
    body = chat(stream=False, options={"num_predict": 4})
    r = gw.post("/api/chat", body)
    assert r.status == 200, r.body
    j = r.json()
    assert j["done"] is True and j["done_reason"] == "length"
    assert j["message"] == {"role": "assistant",
                            "content": env.mock_text("mock-small", body["messages"], 4)}, j
    assert j["eval_count"] == 4 and j["prompt_eval_count"] > 0
    assert j["model"] == "mock-small"


def test_chat_streams_by_default_as_ndjson(gw):
    plain = gw.post("/api/chat", chat(stream=False, options={"num_predict": 5})).json()
    resp, lines = ndjson(gw, "/api/chat", chat(options={"num_predict": 5}),
                         headers={"X-Mock-TPS": "40"})
    assert resp.status == 200
    assert resp.getheader("Content-Type").startswith("application/x-ndjson")
    objs = [o for _, o in lines]
    assert all(o["done"] is False for o in objs[:-1])
    last = objs[-1]
    assert last["done"] is True and last["done_reason"] == "length"
    assert last["eval_count"] == 5
    text = "".join(o["message"]["content"] for o in objs)
    assert text == plain["message"]["content"]
    # One line per token, as they were generated.
    assert len(objs) >= 6
    assert lines[-1][0] - lines[0][0] >= 0.05


def test_generate_plain_and_stream(gw):
    body = {"model": "mock-small", "prompt": "tell me", "options": {"num_predict": 3}}
    r = gw.post("/api/generate", dict(body, stream=False))
    assert r.status == 200, r.body
    text = r.json()["response"]
    assert text == env.mock_text("mock-small", "tell me", 3)
    assert r.json()["done"] is True and r.json()["done_reason"] == "length"
    resp, lines = ndjson(gw, "/api/generate", body)
    assert "".join(o["response"] for _, o in lines) == text
    assert lines[-1][1]["done"] is True


def test_embed_and_legacy_embeddings(gw):
    r = gw.post("/api/embed", {"model": "mock-small", "input": ["a", "b"]})
    assert r.status == 200, r.body
    embs = r.json()["embeddings"]
    assert len(embs) == 2 and all(isinstance(x, float) for x in embs[0])
    r = gw.post("/api/embeddings", {"model": "mock-small", "prompt": "a"})
    assert r.status == 200, r.body
    assert r.json()["embedding"] == embs[0]


def test_tags_version_ps_show(gw):
    tags = gw.get("/api/tags")
    assert tags.status == 200
    names = [m["name"] for m in tags.json()["models"]]
    assert names == ["mock-small", "small", "mock-large", "dead-model", "slow-model",
                     "ollama-small", "llamacpp-small", "disc-alpha", "disc-beta",
                     "ollama-gamma"]
    # What the gateway knows of the models of backends that are not
    # Ollama: their names and when its configuration was loaded. Those on
    # Ollama backends have their own (test_ollama_native).
    ollama = {"ollama-small", "ollama-gamma"}
    created = {m["modified_at"] for m in tags.json()["models"] if m["name"] not in ollama}
    assert len(created) == 1 and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ",
                                               created.pop())
    for m in tags.json()["models"]:
        assert m["model"] == m["name"], m
        assert (m["size"] > 0) == (m["name"] in ollama), m
    assert gw.get("/api/version").json() == {"version": package_version()}
    assert {m["name"] for m in gw.get("/api/ps").json()["models"]} <= ollama
    # A model's card, for an exact name, an alias and a glob's name alike.
    card = {"modelfile": "", "parameters": "", "template": "",
            "details": {"format": "", "family": ""}, "model_info": {},
            "capabilities": ["completion"],
            "modified_at": tags.json()["models"][0]["modified_at"]}
    assert tags.json()["models"][0]["name"] == "mock-small"
    for ask in ({"model": "small"}, {"model": "mock-small"}, {"name": "gpt-anything"},
                {"model": "disc-anything"}):
        show = gw.post("/api/show", ask)
        assert show.status == 200, (ask, show.body)
        assert show.content_type == "application/json"
        assert show.json() == card, (ask, show.json())
    assert "nope-model" in ollama_error(gw.post("/api/show", {"model": "nope-model"}), 404)
    assert "gpt4" in ollama_error(gw.post("/api/show", {"model": "gpt4"}), 404)  # no glob


def test_errors_in_ollama_shape(gw):
    assert "JSON" in ollama_error(gw.post("/api/chat", "{not json"), 400)
    assert "JSON" in ollama_error(gw.post("/api/chat", "{'model':'mock-small'}"), 400)
    assert "nope" in ollama_error(gw.post("/api/chat", chat(model="nope")), 404)
    ollama_error(gw.post("/api/chat", chat(model="dead-model")), 503)
    ollama_error(gw.get("/api/chat"), 405)
    assert "model files" in ollama_error(gw.post("/api/pull", {"model": "x"}), 501)
    ollama_error(gw.post("/api/show", {}), 400)


def test_cut_stream_ends_with_error_line(gw):
    body = chat(options={"num_predict": 8})
    resp, lines = ndjson(gw, "/api/chat", body, headers={"X-Mock-Fault": "cut"})
    assert resp.status == 200
    objs = [o for _, o in lines]
    last = objs[-1]
    assert set(last) == {"error"} and isinstance(last["error"], str) and last["error"], last
    # The tokens that came before the cut (the mock sends half: 4 of 8),
    # the right ones, and no line claiming the answer was done.
    before = objs[:-1]
    assert before and all(o["done"] is False for o in before), objs
    text = "".join(o["message"]["content"] for o in before)
    assert text and env.mock_text("mock-small", body["messages"], 8).startswith(text), text


def test_stream_tokens_logged(gw, uniq):
    model = f"gpt-ollama-{uniq}"
    mark = gw.log_mark()
    resp, lines = ndjson(gw, "/api/chat", chat(model=model, options={"num_predict": 4}))
    assert resp.status == 200
    line = gw.wait_log_one(lambda l: l.model == model, since=mark)
    assert line.completion_tokens == "4"
    assert line.stream == "1"


def test_ollama_and_openai_share_the_cache(gw_cache, uniq):
    text = f"shared {uniq}"
    r = gw_cache.post("/v1/chat/completions",
                      chat_body(content=text, temperature=0, max_tokens=4))
    assert r.header("X-LLM-Cache") == "MISS"
    o = gw_cache.post("/api/chat", chat(text, stream=False,
                                        options={"temperature": 0, "num_predict": 4}))
    assert o.status == 200, o.body
    assert o.header("X-LLM-Cache") == "HIT"
    assert o.json()["message"]["content"] == r.json()["choices"][0]["message"]["content"]
    resp, lines = ndjson(gw_cache, "/api/chat",
                         chat(text, options={"temperature": 0, "num_predict": 4}))
    assert resp.getheader("X-LLM-Cache") == "HIT"
    assert "".join(o["message"]["content"] for _, o in lines) == \
        r.json()["choices"][0]["message"]["content"]
    assert lines[-1][1]["done"] is True
