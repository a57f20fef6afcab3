# Error answers: every failure a client can provoke, or an upstream can cause,
# comes back in the OpenAI error shape with the right status; nothing crashes.
import http.client
import json
import os
import socket
import time

import pytest

import llmgw_env as env
from llmgw_env import assert_openai_error, chat_body

CHAT = "/v1/chat/completions"
LIMIT = 1048576


def sized_body(size):
    """A valid chat request of exactly SIZE bytes."""
    head = '{"model":"mock-small","messages":[{"role":"user","content":"'
    tail = '"}]}'
    body = (head + "x" * (size - len(head) - len(tail)) + tail).encode()
    assert len(body) == size
    return body


# -- malformed bodies

def test_malformed_json(gw):
    r = gw.post(CHAT, b'{"model": "mock-small", "messages": [')
    assert_openai_error(r, 400, "invalid_request_error", "invalid_json")


def test_lenient_json_is_refused(gw):
    """Strict JSON, as OpenAI takes it: no comments, single quotes, NaN or
    trailing commas (json-c's lenient mode took them)."""
    for body in (b"{'model':'mock-small','messages':[]}",
                 b'{"model":"mock-small",/* c */"messages":[]}',
                 b'{"model":"mock-small","messages":[],"temperature":NaN}',
                 b'{"model":"mock-small","messages":[],}'):
        r = gw.post(CHAT, body)
        assert_openai_error(r, 400, "invalid_request_error", "invalid_json")
        assert "JSON syntax error" in r.json()["error"]["message"], body


def test_json_array_body(gw):
    r = gw.post(CHAT, b'[{"model": "mock-small"}]')
    assert_openai_error(r, 400, "invalid_request_error")


def test_empty_body(gw):
    r = gw.post(CHAT, b"")
    assert_openai_error(r, 400, "invalid_request_error")


def test_invalid_utf8_in_string(gw):
    body = b'{"model":"mock-small","messages":[{"role":"user","content":"bad \xff\xfe here"}]}'
    assert_openai_error(gw.post(CHAT, body), 400, "invalid_request_error")


def test_deeply_nested_arrays(gw):
    body = ('{"model":"mock-small","messages":[{"role":"user","content":"hi"}],"x":'
            + "[" * 1000 + "]" * 1000 + "}")
    assert_openai_error(gw.post(CHAT, body), 400, "invalid_request_error")


# -- parameter validation

def test_missing_model(gw):
    r = gw.post(CHAT, {"messages": [{"role": "user", "content": "hi"}]})
    assert_openai_error(r, 400, "invalid_request_error", "missing_required_parameter", "model")


def test_model_wrong_type(gw):
    r = gw.post(CHAT, {"model": 5, "messages": [{"role": "user", "content": "hi"}]})
    assert_openai_error(r, 400, "invalid_request_error", "invalid_type", "model")


def test_wrong_parameter_types(gw):
    for field, value in (("temperature", "hot"), ("max_tokens", 2.5),
                         ("stream", "yes"), ("stop", 7), ("tools", {})):
        r = gw.post("/v1/chat/completions", chat_body(**{field: value}))
        assert_openai_error(r, 400, "invalid_request_error", "invalid_type", field)


def test_chat_without_messages(gw):
    r = gw.post(CHAT, {"model": "mock-small"})
    assert_openai_error(r, 400, "invalid_request_error", param="messages")


def test_chat_messages_not_array(gw):
    r = gw.post(CHAT, {"model": "mock-small", "messages": "hi"})
    assert_openai_error(r, 400, "invalid_request_error", param="messages")


def test_unknown_model_lists_available(gw):
    r = gw.post(CHAT, chat_body("no-such-model"))
    err = assert_openai_error(r, 404, code="model_not_found", param="model")
    assert "mock-small" in err["message"], err


def test_unknown_model_on_stream_is_json(gw):
    # A client asking for SSE still gets a parseable error, not an event stream.
    r = gw.post(CHAT, chat_body("no-such-model", stream=True))
    assert_openai_error(r, 404, code="model_not_found")


# -- methods and endpoints

def allow_set(r):
    return {m.strip().upper() for m in (r.header("Allow") or "").split(",") if m.strip()}


def test_get_on_chat_is_405(gw):
    r = gw.get(CHAT)
    assert_openai_error(r, 405, code="method_not_allowed")
    assert "POST" in allow_set(r) and "GET" not in allow_set(r), r.header("Allow")


def test_post_on_models_is_405(gw):
    r = gw.post("/v1/models", {"model": "mock-small"})
    assert_openai_error(r, 405, code="method_not_allowed")
    assert "GET" in allow_set(r) and "POST" not in allow_set(r), r.header("Allow")


def test_unsupported_endpoints(gw):
    for path in ("/v1/images/generations", "/v1/nope"):
        r = gw.post(path, chat_body())
        assert_openai_error(r, 404, code="unknown_endpoint")


# -- body size

def post_chunked(g, workdir, body):
    """POST BODY with Transfer-Encoding: chunked (no Content-Length), so
    the limit must be enforced while reading."""
    path = os.path.join(workdir, f"chunked-{len(body)}.json")
    with open(path, "wb") as f:
        f.write(body)
    return g.curl("-H", "Content-Type: application/json", "-H", "Transfer-Encoding: chunked",
                  "--data-binary", f"@{path}", CHAT)


def test_body_of_exactly_the_limit_passes(gw, mocks):
    body = sized_body(LIMIT)
    r = gw.post(CHAT, body)
    assert r.status == 200, r.body[:300]
    sent = mocks[r.header("X-Mock-Backend")].last()["body"].encode()
    assert json.loads(sent)["messages"] == json.loads(body)["messages"]


def test_body_over_limit_is_413(gw):
    r = gw.post(CHAT, sized_body(LIMIT + 1))
    assert_openai_error(r, 413, code="request_too_large")


def test_chunked_body_of_exactly_the_limit_passes(gw, workdir):
    c = post_chunked(gw, workdir, sized_body(LIMIT))
    assert c.rc == 0, c.stderr
    assert c.status == 200, c.body[:300]
    assert json.loads(c.body)["usage"]["completion_tokens"] == 16


def test_chunked_body_over_limit_is_413(gw, workdir):
    for size in (LIMIT + 1, LIMIT + 4096):
        c = post_chunked(gw, workdir, sized_body(size))
        assert c.status == 413, (size, c.rc, c.stderr, c.body[:300])
        assert json.loads(c.body)["error"]["code"] == "request_too_large"


def test_60k_body_passes_whole(gw, mocks):
    body = chat_body(content="word " * 12000, max_tokens=3)
    r = gw.post(CHAT, body)
    assert r.status == 200, r.body[:300]
    sent = json.loads(mocks[r.header("X-Mock-Backend")].last()["body"])
    assert sent["messages"] == body["messages"]


def test_expect_100_continue(gw):
    body = json.dumps(chat_body(content="word " * 2000, max_tokens=3))
    c = gw.curl("-H", "Content-Type: application/json", "-H", "Expect: 100-continue",
                "--data-binary", body, CHAT)
    assert c.rc == 0, c.stderr
    assert c.status == 200, c.body[:300]
    assert json.loads(c.body)["usage"]["completion_tokens"] == 3


# -- upstream failures

def test_dead_ports_stay_dead(gw, ports, mocks):
    """The harness itself: every port is its own, and the dead members'
    ports refuse connections for the whole session (held bound, not
    listening), so "dead" backends never answer."""
    assert len(set(ports.values()) | {gw.port}) == len(ports) + 1, ports
    for key in ("dead1", "dead2"):
        assert env.PORTS.is_dead(ports[key]), key
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((env.HOST, ports[key]), timeout=2).close()
        # A new port is never one of them.
        assert ports[key] not in env.PORTS.take(50)


def test_dead_balancer_is_503(gw):
    # Twice: the second time the members are already marked in error.
    for _ in range(2):
        r = gw.post(CHAT, chat_body("dead-model"))
        assert_openai_error(r, 503, "server_error", "no_backend_available")


def test_hanging_backend_times_out(gw):
    r = gw.post(CHAT, chat_body("slow-model"), headers={"X-Mock-Fault": "hang"}, timeout=20)
    assert_openai_error(r, 504, code="upstream_timeout")
    # BalancerMember timeout=2, not the 30 s server Timeout.
    assert r.elapsed < 6, r.elapsed


def test_backend_500_passes_through(gw):
    r = gw.post(CHAT, chat_body(), headers={"X-Mock-Fault": "500"})
    assert r.status == 500
    assert r.header("X-Mock-Backend") in ("a", "b")
    assert r.json() == {"error": {"message": "mock internal error", "type": "server_error",
                                  "param": None, "code": None}}


def test_backend_reset_is_502(gw):
    r = gw.post(CHAT, chat_body(), headers={"X-Mock-Fault": "reset"})
    assert_openai_error(r, 502, code="upstream_error")


def test_backend_reset_on_kept_alive_connection_is_502(gw):
    # mod_proxy would close a reused client connection without a word (for
    # browsers to retry); an API client is owed the error.
    conn = http.client.HTTPConnection(env.HOST, gw.port, timeout=10)
    try:
        for fault in (None, "reset", "reset"):
            headers = {"Content-Type": "application/json"}
            if fault:
                headers["X-Mock-Fault"] = fault
            conn.request("POST", "/v1/chat/completions",
                         body=json.dumps(chat_body("flaky-ka", max_tokens=2)),
                         headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == (502 if fault else 200), body
            if fault:
                assert json.loads(body)["error"]["code"] == "upstream_error"
    finally:
        conn.close()


def test_zz_still_serving_after_errors(gw):
    # Defined last so it runs last here: none of the above may have hurt a child.
    time.sleep(0.2)
    for _ in range(4):
        r = gw.post(CHAT, chat_body(max_tokens=2))
        assert r.status == 200, r.body[:300]
        assert r.json()["choices"][0]["message"]["content"] == \
            env.mock_text("mock-small", chat_body()["messages"], 2)
    assert gw.crash_lines() == []
