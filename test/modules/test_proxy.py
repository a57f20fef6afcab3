# Proxying and streaming as a client sees it: requests reach a balancer member,
# renames happen upstream, SSE streams trickle through and end cleanly.
import json
import time

import llmgw_env as env
from llmgw_env import chat_body, parse_sse

BACKENDS = {"a", "b"}
CHAT = "/v1/chat/completions"


def served_by(r, mocks):
    name = r.header("X-Mock-Backend")
    assert name in BACKENDS, f"X-Mock-Backend {name!r}"
    return mocks[name]


def test_chat_completion(gw, mocks):
    r = gw.post("/v1/chat/completions", chat_body(max_tokens=7))
    assert r.status == 200, r.body
    assert r.content_type == "application/json"
    doc = r.json()
    assert doc["object"] == "chat.completion"
    assert doc["choices"][0]["message"] == {
        "role": "assistant", "refusal": None,
        "content": env.mock_text("mock-small", chat_body()["messages"], 7)}
    assert doc["choices"][0]["finish_reason"] == "length"
    assert doc["usage"]["completion_tokens"] == 7
    assert doc["usage"]["total_tokens"] == doc["usage"]["prompt_tokens"] + 7
    # Exact routes pass the model through untouched.
    assert doc["model"] == "mock-small"
    sent = served_by(r, mocks).last()
    assert sent["path"] == "/v1/chat/completions"
    body = json.loads(sent["body"])
    assert body["model"] == "mock-small"
    assert body["messages"] == chat_body()["messages"]
    assert body["max_tokens"] == 7


def test_completion(gw, mocks):
    r = gw.post("/v1/completions", {"model": "mock-large", "prompt": "once upon", "max_tokens": 5})
    assert r.status == 200, r.body
    doc = r.json()
    assert doc["object"] == "text_completion"
    assert doc["choices"][0]["text"] == env.mock_text("mock-large", "once upon", 5)
    assert doc["choices"][0]["finish_reason"] == "length"
    assert doc["usage"]["completion_tokens"] == 5
    sent = served_by(r, mocks).last()
    assert sent["path"] == "/v1/completions"
    assert json.loads(sent["body"])["model"] == "mock-large"


def test_embeddings(gw, mocks):
    body = {"model": "mock-small", "input": "embed me"}
    r = gw.post("/v1/embeddings", body)
    assert r.status == 200, r.body
    doc = r.json()
    # Exactly the backend's answer.
    direct = env.request(mocks["a"].port, "POST", "/v1/embeddings", body)
    assert doc == direct.json()
    assert len(doc["data"]) == 1 and len(doc["data"][0]["embedding"]) == 8
    sent = served_by(r, mocks).last()
    assert sent["path"] == "/v1/embeddings"
    assert json.loads(sent["body"])["model"] == "mock-small"


def test_glob_route_renames_upstream(gw, mocks):
    r = gw.post("/v1/chat/completions", chat_body("gpt-4o", max_tokens=4))
    assert r.status == 200, r.body
    assert r.json()["model"] == "mock-large"
    assert r.json()["choices"][0]["message"]["content"] == \
        env.mock_text("mock-large", chat_body()["messages"], 4)
    assert json.loads(served_by(r, mocks).last()["body"])["model"] == "mock-large"


def test_alias_routes_like_name(gw, mocks):
    # An alias is another name for the route's model: backends (like the mocks,
    # started with --models) only serve the route name, so that goes upstream.
    r = gw.post("/v1/chat/completions", chat_body("small", max_tokens=3))
    assert r.status == 200, r.body
    assert r.json()["usage"]["completion_tokens"] == 3
    assert r.json()["choices"][0]["message"]["content"] == \
        env.mock_text("mock-small", chat_body()["messages"], 3)
    assert json.loads(served_by(r, mocks).last()["body"])["model"] == "mock-small"


def test_client_headers_forwarded(gw, mocks):
    # Per-request knobs travel upstream like any client header.
    r = gw.post("/v1/chat/completions", chat_body(), headers={"X-Mock-Tokens": "4"})
    assert r.status == 200, r.body
    assert r.json()["usage"]["completion_tokens"] == 4


def test_client_accept_encoding_not_forwarded(gw, mocks):
    # The gateway reads every answer (usage, the cache, errors): a backend
    # must not gzip it, whatever the client accepts. The client's own
    # Accept-Encoding is for httpd's output filters, not for the backend.
    for api, path, body in (("openai", CHAT, chat_body(max_tokens=3)),
                            ("ollama", "/api/chat",
                             {"model": "mock-small", "stream": False,
                              "messages": [{"role": "user", "content": "hi"}]})):
        r = gw.post(path, body, headers={"Accept-Encoding": "gzip, br"})
        assert r.status == 200, (api, r.body)
        sent = {k.lower(): v for k, v in served_by(r, mocks).last()["headers"].items()}
        assert "accept-encoding" not in sent, (api, sent)
        assert r.header("Content-Encoding") is None, (api, r.headers)


def test_keepalive_connection_reused(gw_shm, uniq):
    """One TCP connection serves every kind of API answer in turn: plain,
    streamed, errors, cache misses and hits, both APIs. Read by hand on one
    socket (http.client would reconnect silently), and checked on the
    server side too: the access log shows one client port and the
    keep-alive count going up."""
    cached = chat_body(content=f"keep-alive {uniq}", temperature=0, max_tokens=3)
    steps = [
        ("POST", CHAT, chat_body(max_tokens=2), None, 200, None),
        ("POST", CHAT, chat_body(max_tokens=2, stream=True), None, 200, None),
        ("POST", CHAT, chat_body("no-such-model"), None, 404, None),
        ("GET", CHAT, None, None, 405, None),
        ("POST", "/v1/nope", chat_body(), None, 404, None),
        ("GET", "/v1/models", None, None, 200, None),
        ("POST", CHAT, cached, None, 200, "MISS"),
        ("POST", CHAT, cached, None, 200, "HIT"),
        ("POST", CHAT, dict(cached, stream=True), None, 200, "HIT"),
        ("POST", "/v1/completions", {"model": "mock-small", "prompt": "hi",
                                     "max_tokens": 2, "stream": True}, None, 200, None),
        ("POST", "/v1/embeddings", {"model": "mock-small", "input": uniq}, None, 200, None),
        ("POST", "/api/chat", dict(chat_body(max_tokens=2), stream=False), None, 200, None),
        ("POST", "/api/chat", chat_body(), None, 200, None),
        ("POST", "/api/chat", chat_body("no-such-model"), None, 404, None),
        ("POST", CHAT, chat_body(), {"X-Mock-Fault": "429"}, 429, None),
        ("POST", CHAT, chat_body(stream=True, max_tokens=6), {"X-Mock-Fault": "cut"}, 200, None),
        ("POST", CHAT, chat_body(max_tokens=2), None, 200, None),
    ]
    mark = gw_shm.log_mark()
    with gw_shm.connect() as c:
        for i, (method, path, body, headers, status, cache) in enumerate(steps):
            what = f"#{i} {method} {path} {headers or ''}"
            r = c.request(method, path, body, headers)
            assert r.status == status, (what, r.body[:300])
            assert (r.header("Connection") or "").lower() != "close", what
            if cache:
                assert r.header("X-LLM-Cache") == cache, what
            assert c.is_open(), f"connection closed after {what}"
        port = c.local_port
    lines = gw_shm.wait_log(lambda l: l.remote_port == str(port), since=mark,
                            count=len(steps))
    assert [l.keepalives for l in lines] == [str(i) for i in range(len(steps))], \
        [l.raw for l in lines]
    assert len({l.pid for l in lines}) == 1, [l.raw for l in lines]


def test_error_answers_keep_or_close_the_connection_cleanly(gw):
    """After an error the connection either serves the next request or was
    announced closed (Connection: close; httpd ends it after a 400, 500 or
    503, ap_status_drops_connection), with the whole answer in both cases:
    never dropped without a word, never left half-read."""
    big = b'{"model":"mock-small","messages":[{"role":"user","content":"' \
        + b"x" * (1 << 21) + b'"}]}'
    for body, headers, status in ((b"{nope", None, 400),
                                  (chat_body(), {"X-Mock-Fault": "500"}, 500),
                                  (chat_body(), {"X-Mock-Fault": "reset"}, 502),
                                  (chat_body("dead-model"), None, 503),
                                  (big, None, 413)):
        with gw.connect() as c:
            try:
                r = c.request("POST", CHAT, body, headers)
            except (BrokenPipeError, ConnectionResetError):
                # The 413 may go out before the body is all sent.
                assert status == 413
                continue
            assert r.status == status, r.body[:300]
            assert json.loads(r.body)["error"]["message"], r.body[:300]
            if (r.header("Connection") or "").lower() == "close":
                deadline = time.monotonic() + 5
                while c.is_open() and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert not c.is_open(), f"{status}: said close, kept it open"
            else:
                again = c.request("POST", CHAT, chat_body(max_tokens=2))
                assert again.status == 200, (status, again.body[:300])


def test_stream_matches_non_stream(gw, mocks):
    body = chat_body(content="tell me a story", max_tokens=12)
    plain = gw.post("/v1/chat/completions", body)
    assert plain.status == 200, plain.body
    s = gw.stream("/v1/chat/completions", dict(body, stream=True))
    assert s.status == 200, s.raw[:300]
    assert s.content_type == "text/event-stream"
    assert s.data()[-1] == "[DONE]"
    assert s.content() == plain.json()["choices"][0]["message"]["content"]
    assert s.content() == env.mock_text("mock-small", body["messages"], 12)
    assert s.chunks()[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["id"] == plain.json()["id"] for c in s.chunks())
    finishes = [c["choices"][0].get("finish_reason") for c in s.chunks() if c.get("choices")]
    assert finishes[-1] in ("length", "stop"), finishes


def test_stream_trickles(gw):
    s = gw.stream("/v1/chat/completions", chat_body(stream=True, max_tokens=10),
                  headers={"X-Mock-TPS": "20"})
    assert s.status == 200
    times = s.content_times()
    assert len(times) == 10, s.data()
    # 10 tokens at 20/s take ~450 ms upstream; buffering would deliver them at once.
    assert times[-1] - times[0] >= 0.3, times


def test_stream_usage_hidden_but_requested_upstream(gw, mocks):
    s = gw.stream("/v1/chat/completions", chat_body(stream=True, max_tokens=6))
    assert s.status == 200
    assert s.data()[-1] == "[DONE]"
    assert not [c for c in s.chunks() if c.get("choices") == []], \
        "usage chunk leaked to a client that did not ask for it"
    assert not [c for c in s.chunks() if "usage" in c], \
        "the usage field the gateway asked for leaked to the client"
    sent = json.loads(mocks[s.headers["X-Mock-Backend"]].last()["body"])
    assert sent["stream"] is True
    assert sent["stream_options"]["include_usage"] is True


def test_stream_usage_when_asked(gw):
    body = chat_body(stream=True, max_tokens=6, stream_options={"include_usage": True})
    s = gw.stream("/v1/chat/completions", body)
    assert s.status == 200
    usage = [c for c in s.chunks() if c.get("choices") == []]
    assert len(usage) == 1, s.data()
    assert usage[0]["usage"]["completion_tokens"] == 6
    assert usage[0]["usage"]["total_tokens"] == usage[0]["usage"]["prompt_tokens"] + 6
    assert s.data()[-1] == "[DONE]"


def test_stream_completions_endpoint(gw):
    body = {"model": "mock-small", "prompt": "hi", "max_tokens": 4}
    plain = gw.post("/v1/completions", body).json()
    s = gw.stream("/v1/completions", dict(body, stream=True))
    assert s.status == 200
    assert s.content_type == "text/event-stream"
    assert s.data()[-1] == "[DONE]"
    chunks = s.chunks()
    # One text piece per token, then the finish chunk; no role chunk, no
    # usage (not asked for).
    assert [c["object"] for c in chunks] == ["text_completion"] * 5, s.data()
    assert all(c["id"] == chunks[0]["id"] and c["id"].startswith("cmpl-") for c in chunks)
    assert all(len(c["choices"]) == 1 and "delta" not in c["choices"][0] for c in chunks)
    assert not [c for c in chunks if "usage" in c], s.data()
    texts = [c["choices"][0]["text"] for c in chunks]
    assert "".join(texts) == env.mock_text("mock-small", "hi", 4) == \
        plain["choices"][0]["text"]
    assert all(texts[:4]) and texts[4] == "", texts
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * 4 + ["length"]


def test_stream_via_curl(gw):
    body = json.dumps(chat_body(stream=True, max_tokens=5))
    c = gw.curl("-H", "Content-Type: application/json", "--data-binary", body,
                "/v1/chat/completions")
    assert c.rc == 0, c.stderr
    assert c.status == 200
    assert c.body.rstrip().endswith(b"data: [DONE]")
    text = "".join(ch["delta"].get("content") or "" for e in parse_sse(c.body)[:-1]
                   for ch in json.loads(e)["choices"])
    assert text == env.mock_text("mock-small", chat_body()["messages"], 5)


def test_stream_cut_midway_ends_cleanly(gw):
    body = json.dumps(chat_body(stream=True, max_tokens=20))
    c = gw.curl("-H", "Content-Type: application/json", "-H", "X-Mock-Fault: cut",
                "--data-binary", body, "/v1/chat/completions")
    # curl exit 0 means the chunked body was properly terminated.
    assert c.rc == 0, f"curl rc {c.rc}: {c.stderr}"
    assert c.status == 200
    events = parse_sse(c.body)
    assert len(events) >= 3, c.body
    assert events[-1] == "[DONE]", events[-3:]
    err = json.loads(events[-2])["error"]
    assert err["type"] == "server_error"
    assert err["code"] == "upstream_stream_error"
    assert err["param"] is None
    assert isinstance(err["message"], str) and err["message"]
    # No chunk says "error" as its finish_reason: not in OpenAI's schema.
    last_chunk = json.loads(events[-3])
    assert last_chunk["choices"][0]["finish_reason"] is None, events[-3]
    # Some real tokens made it before the cut.
    got = "".join((ch.get("delta") or {}).get("content") or ""
                  for e in events[:-2] for ch in json.loads(e).get("choices") or [])
    assert got.strip()
