# Fidelity on the OpenAI side (issue 13): what a client sends reaches the
# backend as JSON whatever it was labelled, and what a backend answers reaches
# the client whole and well-formed, or as an error that says so.
import json
import time

import pytest

import fakes
import llmgw_env as env
from llmgw_env import chat_body
from test_coalesce import stream_and_hang_up

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
    assert env.curl(mocks["a"].port, "-H", "Content-Type: application/json; charset=utf-8",
                    "-d", body, CHAT).status == 200
    assert env.curl(mocks["a"].port, "-H", "Content-Type: text/plain",
                    "-d", body, CHAT).status == 400
    # llama.cpp's server and Ollama read the body whatever its type.
    assert env.curl(mocks["llama"].port, "-d", body, CHAT).status == 200
    obody = json.dumps({"model": "mock-small", "stream": False,
                        "messages": chat_body()["messages"]})
    assert env.curl(mocks["a"].port, "-d", obody, "/api/chat").status == 200


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
    yield from env.running(fakes.FakeBackend)


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


# ---------------------------------------------------------------- a client that leaves

def error_log(g):
    with open(g.error_log, errors="replace") as f:
        return f.read()


def test_client_leaving_is_its_doing_and_is_counted(gw, uniq):
    # Not cacheable (no temperature): the backend request is cancelled, the
    # request is logged as the client's doing (not the backend's), at info,
    # and what was generated is counted: no usage chunk came, so the prompt
    # estimate and the bytes of the text sent bound the tokens.
    model = f"gpt-{uniq}"
    body = chat_body(model, content=f"leaving {uniq}", stream=True, max_tokens=200)
    mark = gw.log_mark()
    head, left = stream_and_hang_up(gw.port, body, {"X-Mock-TPS": "10"}, events=3)
    line = gw.wait_log_one(lambda l: l.model == model, since=mark, timeout=10)
    # 200 tokens at 10/s would take 20 s: the backend was let go at once.
    assert time.monotonic() - left < 3.0
    assert line.error == "client_closed", line.raw
    prompt, completion = int(line.prompt_tokens), int(line.completion_tokens)
    assert prompt > 0 and 3 <= completion < 200, line.raw
    assert int(line.total_tokens) == prompt + completion, line.raw
    log = [l for l in error_log(gw).splitlines() if model in l]
    assert not [l for l in log if "LLMGW0101" in l or ":warn" in l], log
    assert [l for l in log if "LLMGW0102" in l and ":info" in l], log


def usage_chunk(completion):
    return {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1,
            "model": "fake", "choices": [{"index": 0, "delta": {"content": "word "},
                                          "finish_reason": None}],
            "usage": {"prompt_tokens": 7, "completion_tokens": completion,
                      "total_tokens": 7 + completion}}


def test_client_leaving_counts_the_usage_that_came(gw_fake, fake, uniq):
    # A backend that sends usage in every chunk: that count, not an estimate.
    model = f"fid-left-{uniq}"

    def slow(req):
        yield fakes.stream_head()
        for i in range(1, 100):
            yield from fakes.sse(usage_chunk(i))
            time.sleep(0.05)
    fake.script(model, slow)
    body = {"model": model, "stream": True,
            "messages": [{"role": "user", "content": f"left {uniq}"}]}
    mark = gw_fake.log_mark()
    stream_and_hang_up(gw_fake.port, body, {}, events=3)
    line = gw_fake.wait_log_one(lambda l: l.model == model, since=mark, timeout=10)
    assert line.error == "client_closed", line.raw
    assert line.prompt_tokens == "7", line.raw
    assert 3 <= int(line.completion_tokens) < 99, line.raw
    assert int(line.total_tokens) == 7 + int(line.completion_tokens)


def test_leader_whose_client_leaves_finishes_and_says_why(gw_fake, fake, uniq):
    # A coalescing leader (cacheable) goes on for the cache and its
    # followers, and the log still says that its client left.
    model = f"fid-leader-{uniq}"

    def slow(req):
        yield fakes.stream_head()
        for i in range(8):
            yield from fakes.sse(fakes.chat_chunk(f"w{i} "))
            time.sleep(0.05)
        yield from fakes.sse(fakes.chat_chunk(finish="stop"), b"[DONE]")
        yield fakes.LAST_CHUNK
    fake.script(model, slow)
    q = det(uniq, model, stream=True)
    mark = gw_fake.log_mark()
    stream_and_hang_up(gw_fake.port, q, {}, events=2)
    line = gw_fake.wait_log_one(lambda l: l.model == model, since=mark, timeout=10)
    assert line.error == "client_closed", line.raw
    s = gw_fake.stream(CHAT, q)
    assert s.headers.get("X-LLM-Cache") == "HIT", s.headers
    assert s.content() == "".join(f"w{i} " for i in range(8))
    assert fake.count(model) == 1


def text_chunk(index, text, finish=None):
    return {"id": "cmpl-fake", "object": "text_completion", "created": 1,
            "model": "fake", "choices": [{"index": index, "text": text,
                                          "finish_reason": finish}]}


@pytest.mark.parametrize("finished", [[0], [0, 1]])
def test_batch_stream_without_done_is_complete_only_when_all_finish(
        gw_fake, fake, uniq, finished):
    # Two prompts make two choices: the stream is whole without [DONE] only
    # once both reached their finish_reason.
    model = f"fid-batch-{len(finished)}-{uniq}"
    events = [text_chunk(0, "a"), text_chunk(1, "b")]
    events += [text_chunk(i, "", "stop") for i in finished]
    fake.script(model, lambda req: [fakes.stream_head(), *fakes.sse(*events),
                                    fakes.LAST_CHUNK])
    s = gw_fake.stream("/v1/completions", {"model": model, "prompt": ["x", "y"],
                                           "stream": True})
    if finished == [0, 1]:
        assert s.data()[-1] == "[DONE]"
        assert not any("error" in c for c in s.chunks()), s.data()
    else:
        assert_error_end(s)
