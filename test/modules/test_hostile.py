# Hostile peers: backends that send what no backend should (bodies that are
# not answers, answers cut short of their length, streams that end with an
# error, events without end, chunks nested to the limit, usage near 2^63)
# and a memcached that answers wrong. The client always gets a well-formed
# answer or error, nothing broken is cached, no child dies or balloons.
import gzip
import json
import time

import pytest

import fakes
import llmgw_env as env
from llmgw_env import assert_openai_error

CHAT = "/v1/chat/completions"
OLLAMA_CHAT = "/api/chat"


@pytest.fixture(scope="module")
def fake():
    yield from env.running(fakes.FakeBackend)


def _routes(fake):
    return f"""\
<Proxy "balancer://fake">
    BalancerMember "http://{env.HOST}:{fake.port}" retry=0
</Proxy>
<LLMRoute "fake-*">
    LLMBackend balancer://fake
</LLMRoute>
<LLMRoute "fakeo-*">
    LLMBackend balancer://fake dialect=ollama
</LLMRoute>
"""


@pytest.fixture(scope="module")
def gw_fake(request, workdir, ports, fake):
    """The gateway with its default shm cache in front of the fake backend."""
    yield from env.serve_gateway(request, workdir, ports, "gw-hostile", _routes(fake))


@pytest.fixture
def alive(gw_fake):
    """Every child there before the test is still there after it (httpd
    may start more under load), none crashed."""
    before = set(gw_fake.children())
    yield
    assert not gw_fake.crash_lines(), "".join(gw_fake.crash_lines())
    assert before <= set(gw_fake.children()), "a child died"


def assert_no_error_finish(s):
    """A broken stream ends with its error event and [DONE] only: "error"
    is no finish_reason of OpenAI's schema."""
    assert not [c for c in s.chunks() for ch in c.get("choices") or []
                if ch.get("finish_reason") == "error"], s.data()[-3:]


def det(uniq, model, **kw):
    body = {"model": model, "temperature": 0,
            "messages": [{"role": "user", "content": f"hostile {uniq}"}]}
    body.update(kw)
    return body


# ---------------------------------------------------------------- answers

def test_cut_short_of_its_length_is_502_not_cached(gw_fake, fake, alive, uniq):
    # A whole JSON answer, but short of the Content-Length it claimed: the
    # backend broke off. Translated for an Ollama client it would pass as
    # an answer; it must be a 502 in Ollama's shape and not be kept.
    model = f"fake-cut-{uniq}"
    body = json.dumps(fakes.chat_answer("whole?")).encode()
    calls = []

    def answer(req):
        calls.append(1)
        if len(calls) == 1:
            yield fakes.response(body, length=len(body) + 100)
        else:
            yield fakes.response(json.dumps(fakes.chat_answer("good")).encode())
    fake.script(model, answer)
    q = {"model": model, "stream": False, "options": {"temperature": 0},
         "messages": [{"role": "user", "content": f"cut {uniq}"}]}
    r = gw_fake.post(OLLAMA_CHAT, q)
    assert r.status == 502, (r.status, r.body)
    assert set(r.json()) == {"error"} and isinstance(r.json()["error"], str), r.body
    r = gw_fake.post(OLLAMA_CHAT, q)
    assert r.status == 200, r.body
    assert r.header("X-LLM-Cache") == "MISS"
    assert r.json()["message"]["content"] == "good"
    assert fake.count(model) == 2


def test_cut_short_from_ollama_backend_is_502(gw_fake, fake, alive, uniq):
    # The same on the other translated path: an Ollama backend's answer
    # short of its length, for an OpenAI client.
    model = f"fakeo-cut-{uniq}"
    body = json.dumps({"model": model, "message": {"role": "assistant",
                       "content": "whole?"}, "done": True, "done_reason": "stop",
                       "prompt_eval_count": 3, "eval_count": 2}).encode()
    fake.script(model, lambda req: [fakes.response(body, length=len(body) + 50)])
    q = det(uniq, model)
    assert_openai_error(gw_fake.post(CHAT, q), 502, "server_error", "upstream_error")
    assert_openai_error(gw_fake.post(CHAT, q), 502, "server_error", "upstream_error")
    assert fake.count(model) == 2, "a cut answer was cached"


@pytest.mark.parametrize("body", [b"<html><body>busy</body></html>", b"",
                                  b"\n  Internal Server Error\n", b"[1,2]",
                                  b"null", b'{"choices":[}', b'{"id":"x"',
                                  b'{"choices":[]} trailing', b'{"a":1}{"a":1}',
                                  b'{"a":"\xff"}'])
def test_200_that_is_not_json_is_502(gw_fake, fake, alive, uniq, body):
    # An OpenAI backend's 200 whose body cannot be an answer: a 502 in
    # OpenAI's shape (as /api already did), never passed off as a success
    # or cached. Held whole and read strictly: a body that starts as JSON
    # but is not (cut, followed by more, not UTF-8) is no answer either.
    model = f"fake-notjson-{uniq}"
    calls = []

    def answer(req):
        calls.append(1)
        yield fakes.response(body if len(calls) == 1 else
                             json.dumps(fakes.chat_answer("good")).encode(),
                             ctype="text/html" if len(calls) == 1 else
                             "application/json")
    fake.script(model, answer)
    q = det(uniq, model)
    err = assert_openai_error(gw_fake.post(CHAT, q), 502, "server_error",
                              "upstream_error")
    assert "not a JSON object" in err["message"] or "empty" in err["message"], err
    r = gw_fake.post(CHAT, q)
    assert r.status == 200 and r.header("X-LLM-Cache") == "MISS", (r.status, r.headers)
    assert r.json()["choices"][0]["message"]["content"] == "good"


def test_compressed_200_is_not_judged(gw_fake, fake, alive, uniq):
    # A body the backend compressed is not the gateway's to read: it
    # passes as it came (and is not cached), not turned into a 502.
    model = f"fake-gzip-{uniq}"
    raw = gzip.compress(json.dumps(fakes.chat_answer("zipped")).encode())
    fake.script(model, lambda req: [
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"Content-Encoding: gzip\r\nContent-Length: %d\r\n"
        b"Connection: close\r\n\r\n" % len(raw) + raw])
    r = gw_fake.post(CHAT, det(uniq, model), headers={"Accept-Encoding": "gzip"})
    assert r.status == 200, r.body
    assert r.header("Content-Encoding") == "gzip"
    assert json.loads(gzip.decompress(r.body))["choices"][0]["message"]["content"] == "zipped"


@pytest.mark.parametrize("body", [
    b'{"id":"x","object":"chat.completion","choices":[]}',
    b'{"error":{"message":"overloaded"},"choices":[{"index":0,"message":{}}]}',
    b'{"choices":[{"index":0,"message":{"content":"x"},"finish_reason":"error"}]}',
    b'{"x":"\\"choices\\""}',
])
def test_invalid_200_answer_is_not_cached(gw_fake, fake, alive, uniq, body):
    # A JSON object passes to an OpenAI client as it came, but is no
    # answer to replay.
    model = f"fake-invalid-{uniq}"
    fake.script(model, lambda req: [fakes.response(body)])
    q = det(uniq, model)
    for _ in range(2):
        r = gw_fake.post(CHAT, q)
        assert r.header("X-LLM-Cache") == "MISS", r.headers
    assert fake.count(model) == 2, "an invalid answer was cached"
    # For an Ollama client it is translated, so never a 200.
    oq = {"model": model, "stream": False, "options": {"temperature": 0},
          "messages": q["messages"]}
    r = gw_fake.post(OLLAMA_CHAT, oq)
    if r.status == 200:
        assert "error" not in r.json(), r.body
    assert fake.count(model) == 3


def _error_streams(model):
    role = fakes.chat_chunk("", role=True)
    half = fakes.chat_chunk("half")
    return {
        "error-finish": fakes.sse(role, half, fakes.chat_chunk(finish="error"),
                                  b"[DONE]"),
        "error-event": fakes.sse(role, half, {"error": {"message": "overloaded",
                                                        "type": "server_error"}},
                                 fakes.chat_chunk(finish="stop"), b"[DONE]"),
    }


@pytest.mark.parametrize("kind", ["error-finish", "error-event"])
def test_stream_ending_in_error_is_not_cached(gw_fake, fake, alive, uniq, kind):
    model = f"fake-{kind}-{uniq}"
    events = _error_streams(model)[kind]
    fake.script(model, lambda req: [fakes.stream_head(), *events, fakes.LAST_CHUNK])
    q = det(uniq, model, stream=True)
    for _ in range(2):
        s = gw_fake.stream(CHAT, q)
        assert s.status == 200
        assert s.headers.get("X-LLM-Cache") == "MISS", s.headers
        assert "half" in s.content()
    assert fake.count(model) == 2, "a failed stream was cached"
    # Nor as a plain answer.
    r = gw_fake.post(CHAT, dict(q, stream=False))
    assert r.header("X-LLM-Cache") == "MISS"


def test_ollama_error_line_is_not_cached(gw_fake, fake, alive, uniq):
    model = f"fakeo-errline-{uniq}"
    lines = [{"model": model, "message": {"role": "assistant", "content": "half"},
              "done": False}, {"error": "model crashed"}]
    fake.script(model, lambda req: [fakes.stream_head("application/x-ndjson"),
                                    *[fakes.chunk(json.dumps(l).encode() + b"\n")
                                      for l in lines], fakes.LAST_CHUNK])
    q = det(uniq, model, stream=True)
    for _ in range(2):
        s = gw_fake.stream(CHAT, q)
        assert s.data()[-1] == "[DONE]"
        assert_no_error_finish(s)
        assert s.chunks()[-1]["error"]["message"] == "model crashed"
    assert fake.count(model) == 2


@pytest.mark.parametrize("route", ["fakeo", "fake"])
def test_answer_too_big_to_translate_is_502(gw_fake, fake, alive, uniq, route):
    # Held whole to be translated (fakeo: an Ollama backend) or checked
    # (fake: a plain OpenAI 200), an answer has a bound (64 MB): past it
    # the rest is dropped as it comes and the client gets a 502, in time.
    model = f"{route}-huge-{uniq}"
    n = 70 << 20

    def answer(req):
        if route == "fake":
            head = b'{"choices":[{"index":0,"message":{"content":"'
            tail = b'"},"finish_reason":"stop"}]}'
        else:
            head = b'{"message":{"role":"assistant","content":"'
            tail = b'"},"done":true}'
        yield (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\nConnection: close\r\n\r\n"
               % (len(head) + n + len(tail)) + head)
        block = b"a" * (1 << 20)
        for _ in range(n >> 20):
            yield block
        yield tail
    fake.script(model, answer)
    err = assert_openai_error(gw_fake.post(CHAT, det(uniq, model), timeout=60),
                              502, "server_error", "upstream_error")
    assert "64 MB" in err["message"], err


# ---------------------------------------------------------------- records

def test_deeply_nested_chunk_then_streamed_hits(gw_fake, fake, alive, uniq):
    # A chunk nested near the parser's limit is one level deeper inside the
    # record: stored, every streamed hit of it killed the child.
    model = f"fake-deep-{uniq}"
    deep = json.loads("[" * 63 + "]" * 63)     # the chunk: 64 levels
    events = fakes.sse(fakes.chat_chunk("", role=True),
                       fakes.chat_chunk("deep", x=deep),
                       fakes.chat_chunk(finish="stop"), b"[DONE]")

    def answer(req):
        if req.get("stream"):
            return [fakes.stream_head(), *events, fakes.LAST_CHUNK]
        return [fakes.response(json.dumps(fakes.chat_answer("deep")).encode())]
    fake.script(model, answer)
    q = det(uniq, model, stream=True)
    for _ in range(3):
        s = gw_fake.stream(CHAT, q)
        assert s.status == 200, s.raw[:300]
        assert s.content() == "deep"
        assert s.data()[-1] == "[DONE]"
    r = gw_fake.post(CHAT, dict(q, stream=False))
    assert r.status == 200
    assert r.json()["choices"][0]["message"]["content"] == "deep"


# ---------------------------------------------------------------- memory

def _children_memory(g, reset=False):
    if reset:
        fakes.reset_peaks(g.children())
    return fakes.memory_kb(g.children())


def _grew_mb(before, after):
    """The most any child's peak grew, and how much more any holds now."""
    peak = max((after[p][0] - before[p][0] for p in after if p in before), default=0)
    held = max((after[p][1] - before[p][1] for p in after if p in before), default=0)
    return peak / 1024, held / 1024


EVENT_MB = 200


def _endless_event(head_chunks):
    def answer(req):
        yield fakes.stream_head()
        yield from head_chunks
        block = b"a" * (1 << 20)
        yield fakes.chunk(b'data: {"id":"chatcmpl-fake","x":"')
        for _ in range(EVENT_MB):
            yield fakes.chunk(block)
        yield fakes.LAST_CHUNK      # ends without the event ever ending
    return answer


@pytest.mark.no_asan
@pytest.mark.parametrize("api", ["openai", "ollama"])
def test_endless_event_ends_the_stream_and_memory_stays_bounded(
        gw_fake, fake, alive, uniq, api):
    model = f"fake-endless-{api}-{uniq}"
    fake.script(model, _endless_event(fakes.sse(fakes.chat_chunk("", role=True),
                                                fakes.chat_chunk("first"))))
    q = det(uniq, model, stream=True)
    before = _children_memory(gw_fake, reset=True)
    if api == "openai":
        s = gw_fake.stream(CHAT, q, timeout=60)
    else:
        r = gw_fake.post(OLLAMA_CHAT, {"model": model, "messages": q["messages"],
                                       "options": {"temperature": 0}}, timeout=60)
    peak, held = _grew_mb(before, _children_memory(gw_fake))
    # The 16 MB cap (its buffer may double once), then let go; never the
    # event.
    assert peak < 48, f"a child's peak grew {peak:.0f} MB for a {EVENT_MB} MB event"
    assert held < 8, f"a child still holds {held:.0f} MB more"
    if api == "openai":
        assert s.status == 200
        assert s.content() == "first"
        assert_no_error_finish(s)
        assert s.chunks()[-1]["error"]["code"] == "upstream_stream_error"
        assert "16 MB" in s.chunks()[-1]["error"]["message"]
        assert s.data()[-1] == "[DONE]"
    else:
        lines = [json.loads(l) for l in r.body.splitlines()]
        assert lines[0]["message"]["content"] == "first"
        assert set(lines[-1]) == {"error"} and "16 MB" in lines[-1]["error"], lines[-1]
    s = gw_fake.stream(CHAT, q, timeout=60)
    assert s.headers.get("X-LLM-Cache") == "MISS"


@pytest.mark.no_asan
def test_endless_ollama_line_is_capped(gw_fake, fake, alive, uniq):
    model = f"fakeo-endless-{uniq}"

    def answer(req):
        yield fakes.stream_head("application/x-ndjson")
        yield fakes.chunk(json.dumps({"message": {"content": "first"},
                                      "done": False}).encode() + b"\n")
        yield fakes.chunk(b'{"message":{"content":"')
        block = b"a" * (1 << 20)
        for _ in range(EVENT_MB // 2):
            yield fakes.chunk(block)
        yield fakes.LAST_CHUNK
    fake.script(model, answer)
    before = _children_memory(gw_fake, reset=True)
    s = gw_fake.stream(CHAT, det(uniq, model, stream=True), timeout=60)
    peak, held = _grew_mb(before, _children_memory(gw_fake))
    assert peak < 48 and held < 8, (peak, held)
    assert s.content() == "first"
    assert_no_error_finish(s)
    assert "cannot hold" in s.chunks()[-1]["error"]["message"]


# ---------------------------------------------------------------- usage

HUGE = 2 ** 63 - 1
CLAMP = 10 ** 15


def _usage_line(g, mark, model):
    line = g.wait_log_one(lambda l: model in l.raw, since=mark)
    return int(line.prompt_tokens), int(line.completion_tokens), int(line.total_tokens)


@pytest.mark.parametrize("kind", ["plain", "stream", "ollama"])
def test_huge_usage_is_clamped_in_the_log(gw_fake, fake, alive, uniq, kind):
    # prompt + completion near 2^63 overflowed into a negative total.
    model = f"{'fakeo' if kind == 'ollama' else 'fake'}-usage-{kind}-{uniq}"
    usage = {"prompt_tokens": HUGE, "completion_tokens": HUGE}
    if kind == "plain":
        fake.script(model, lambda req: [fakes.response(json.dumps(
            fakes.chat_answer("x", usage=usage)).encode())])
    elif kind == "stream":
        fake.script(model, lambda req: [fakes.stream_head(), *fakes.sse(
            fakes.chat_chunk("x", role=True), fakes.chat_chunk(finish="stop"),
            {"id": "c", "choices": [], "usage": usage}, b"[DONE]"), fakes.LAST_CHUNK])
    else:
        fake.script(model, lambda req: [fakes.response(json.dumps({
            "model": model, "message": {"role": "assistant", "content": "x"},
            "done": True, "done_reason": "stop", "prompt_eval_count": HUGE,
            "eval_count": 2 ** 64}).encode())])
    mark = gw_fake.log_mark()
    q = det(uniq, model, stream=kind == "stream")
    if kind == "stream":
        s = gw_fake.stream(CHAT, q)
        assert s.data()[-1] == "[DONE]"
        assert not any("usage" in c for c in s.chunks()), "usage not asked for"
    else:
        r = gw_fake.post(CHAT, q)
        assert r.status == 200
        if kind == "ollama":        # the gateway wrote this usage itself
            assert r.json()["usage"] == {"prompt_tokens": CLAMP,
                                         "completion_tokens": CLAMP,
                                         "total_tokens": CLAMP}
    assert _usage_line(gw_fake, mark, model) == (CLAMP, CLAMP, CLAMP)
    # A hit bills what the record says: clamped too.
    mark = gw_fake.log_mark()
    r = gw_fake.post(CHAT, dict(q, stream=False))
    assert r.header("X-LLM-Cache") == "HIT"
    assert _usage_line(gw_fake, mark, model) == (CLAMP, CLAMP, CLAMP)


# ---------------------------------------------------------------- memcached

@pytest.fixture(scope="module")
def fake_mc():
    yield from env.running(fakes.FakeMemcached)


@pytest.fixture(scope="module")
def gw_fake_mc(request, workdir, ports, mocks, fake_mc):
    """The gateway with its cache on a memcached that may answer wrong."""
    extra = f"LLMCache memcache {env.HOST}:{fake_mc.port} max-item=64k timeout=1000\n"
    yield from env.serve_gateway(request, workdir, ports, "gw-hostile-mc", extra)


MC_MODES = ["huge", "big", "negative", "nondigit", "wrongkey", "short", "noend",
            "garbage", "longline"]


@pytest.mark.parametrize("mode", MC_MODES)
def test_hostile_memcached_reply(gw_fake_mc, fake_mc, gw, uniq, mode):
    # Whatever answers on the memcached port: the request is served by the
    # backend, right (never another request's answer), the child neither
    # dies nor grows by what the reply claims.
    g = gw_fake_mc
    before_kids = set(g.children())
    fake_mc.set_mode(None)
    other = env.chat_body(content=f"another question {uniq}", temperature=0,
                          max_tokens=5)
    mine = env.chat_body(content=f"my question {uniq}", temperature=0,
                         max_tokens=5)
    want = gw.post(CHAT, mine).json()["choices"][0]["message"]["content"]
    # An honest memcached first: the other answer is stored (a server
    # marked down by the last case is skipped for 2 s).
    deadline = time.monotonic() + 5
    while True:
        r = g.post(CHAT, other)
        assert r.status == 200, r.body
        if r.header("X-LLM-Cache") == "HIT" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert r.header("X-LLM-Cache") == "HIT", "the honest memcached never hit"
    theirs = r.json()["choices"][0]["message"]["content"]
    assert theirs != want
    fake_mc.set_mode(mode)
    before = _children_memory(g, reset=True)
    deadline = time.monotonic() + 5
    while fake_mc.gets() == 0 and time.monotonic() < deadline:
        r = g.post(CHAT, mine, timeout=20)
        assert r.status == 200, (mode, r.status, r.body[:200])
        assert r.header("X-LLM-Cache") in ("BYPASS", "MISS"), r.headers
        assert r.json()["choices"][0]["message"]["content"] == want
    assert fake_mc.gets() > 0, "the hostile reply was never asked for"
    peak, _ = _grew_mb(before, _children_memory(g))
    assert peak < 16, f"{mode}: a child's peak grew {peak:.0f} MB"
    fake_mc.set_mode(None)
    assert not g.crash_lines(), "".join(g.crash_lines())
    assert set(g.children()) == before_kids, "a child died"
