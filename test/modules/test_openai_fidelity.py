# Fidelity on the OpenAI side (issue 13): what a client sends reaches the
# backend as JSON whatever it was labelled, and what a backend answers reaches
# the client whole and well-formed, or as an error that says so.
import json
import time

import pytest

import fakes
import llmgw_env as env
from llmgw_env import chat_body, parse_sse

CHAT = "/v1/chat/completions"


def sent_by_gateway(mocks, r):
    """What the member that served R got from the gateway."""
    return mocks[r.headers.get("x-mock-backend")].last()


def test_mock_refuses_form_body_as_fastapi_does(mocks):
    # The emulated backend is as strict as a FastAPI server (vLLM): a body
    # labelled as form data is not read as JSON. Without this the tests
    # below could not fail.
    body = json.dumps(chat_body(max_tokens=2))
    c = env.curl(mocks["a"].port, "-d", body, CHAT)
    assert c.status == 400, c.body
    assert json.loads(c.body)["error"]["type"] == "invalid_request_error"
    assert env.curl(mocks["a"].port, "-H", "Content-Type: application/json",
                    "-d", body, CHAT).status == 200


def test_curl_d_without_content_type_openai(gw, mocks):
    body = json.dumps(chat_body(max_tokens=4))
    c = gw.curl("-d", body, CHAT)
    assert c.rc == 0, c.stderr
    assert c.status == 200, c.body
    doc = json.loads(c.body)
    assert doc["choices"][0]["message"]["content"] == \
        env.mock_text("mock-small", chat_body()["messages"], 4)
    sent = sent_by_gateway(mocks, c)
    assert sent["headers"]["Content-Type"] == "application/json"


def test_curl_d_without_content_type_ollama_api(gw, mocks):
    # The README's Ollama example: curl -d, streamed NDJSON by default,
    # translated to an OpenAI backend that reads JSON only.
    body = json.dumps({"model": "mock-small", "options": {"num_predict": 3},
                       "messages": chat_body()["messages"]})
    c = gw.curl("-d", body, "/api/chat")
    assert c.rc == 0, c.stderr
    assert c.status == 200, c.body
    lines = [json.loads(l) for l in c.body.splitlines() if l.strip()]
    assert lines[-1]["done"] is True, lines
    text = "".join(l["message"]["content"] for l in lines)
    assert text == env.mock_text("mock-small", chat_body()["messages"], 3)
    assert sent_by_gateway(mocks, c)["headers"]["Content-Type"] == "application/json"


def test_curl_d_without_content_type_ollama_dialect(gw, mocks):
    # To an Ollama backend too (Ollama reads any body, but says what it is).
    body = json.dumps({"model": "ollama-small", "stream": False,
                       "messages": chat_body()["messages"]})
    c = gw.curl("-d", body, "/api/chat")
    assert c.status == 200, c.body
    sent = sent_by_gateway(mocks, c)
    assert sent["path"] == "/api/chat"
    assert sent["headers"]["Content-Type"] == "application/json"


# ---------------------------------------------------------------- a fake backend

@pytest.fixture(scope="module")
def fake():
    b = fakes.FakeBackend()
    yield b
    b.stop()


@pytest.fixture(scope="module")
def gw_fake(request, workdir, ports, fake):
    """The gateway with its default shm cache in front of the fake backend;
    timeout=2 so a backend that stalls is given up on soon."""
    routes = f"""\
<Proxy "balancer://fidelity">
    BalancerMember "http://{env.HOST}:{fake.port}" retry=0 timeout=2
</Proxy>
<LLMRoute "fid-*">
    LLMBackend balancer://fidelity
</LLMRoute>
"""
    yield from env.serve_gateway(request, workdir, ports, "gw-fidelity", routes)


def det(uniq, model, **kw):
    body = {"model": model, "temperature": 0,
            "messages": [{"role": "user", "content": f"fidelity {uniq}"}]}
    body.update(kw)
    return body


def head_without_type():
    return (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n")


def assert_error_end(s, code="upstream_stream_error"):
    """The never-cut-silently end: an error event, then [DONE]."""
    assert s.status == 200
    assert s.content_type == "text/event-stream", s.headers
    assert s.data()[-1] == "[DONE]", s.data()[-3:]
    err = json.loads(s.data()[-2])["error"]
    assert err["code"] == code, err


def test_untyped_stream_cut_by_backend_ends_with_error(gw_fake, fake, uniq):
    model = f"fid-cut-{uniq}"
    role = fakes.chat_chunk("", role=True)
    fake.script(model, lambda req: [head_without_type(),
                                    *fakes.sse(role, fakes.chat_chunk("half"))])
    s = gw_fake.stream(CHAT, det(uniq, model, stream=True))
    assert "half" in s.content()
    assert_error_end(s)


def test_untyped_stream_stalled_by_backend_ends_with_error(gw_fake, fake, uniq):
    model = f"fid-stall-{uniq}"
    role = fakes.chat_chunk("", role=True)

    def stall(req):
        yield head_without_type()
        yield from fakes.sse(role, fakes.chat_chunk("half"))
        time.sleep(4)  # past the member's timeout=2
    fake.script(model, stall)
    s = gw_fake.stream(CHAT, det(uniq, model, stream=True), timeout=15)
    assert "half" in s.content()
    assert_error_end(s)


def test_stream_finished_without_done_is_complete(gw_fake, fake, uniq):
    # Some servers never send [DONE]: a stream whose every choice reached a
    # finish_reason is the whole answer, ended with [DONE] and cached.
    model = f"fid-nodone-{uniq}"
    events = fakes.sse(fakes.chat_chunk("", role=True), fakes.chat_chunk("whole"),
                       fakes.chat_chunk(finish="stop"))
    fake.script(model, lambda req: [fakes.stream_head(), *events, fakes.LAST_CHUNK])
    q = det(uniq, model, stream=True)
    s = gw_fake.stream(CHAT, q)
    assert s.status == 200
    assert s.data()[-1] == "[DONE]", s.data()
    assert not any("error" in c for c in s.chunks()), s.data()
    assert s.content() == "whole"
    assert s.headers.get("X-LLM-Cache") == "MISS"
    again = gw_fake.stream(CHAT, q)
    assert again.headers.get("X-LLM-Cache") == "HIT", again.headers
    assert again.content() == "whole"
    assert fake.count(model) == 1


def test_stream_without_done_nor_asked_usage_is_broken(gw_fake, fake, uniq):
    # Asked for usage, the stream is whole only with it.
    model = f"fid-nousage-{uniq}"
    events = fakes.sse(fakes.chat_chunk("", role=True), fakes.chat_chunk("part"),
                       fakes.chat_chunk(finish="stop"))
    fake.script(model, lambda req: [fakes.stream_head(), *events, fakes.LAST_CHUNK])
    s = gw_fake.stream(CHAT, det(uniq, model, stream=True,
                                 stream_options={"include_usage": True}))
    assert_error_end(s)
