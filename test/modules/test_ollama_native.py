# Ollama's API as Ollama serves it: an Ollama client and a dialect=ollama
# backend talk through the gateway natively (every field up, the answer's
# bytes down), load requests, the root the CLI asks first, durations and
# created_at, and the endpoints for model files the gateway does not serve.
import http.client
import json
import re
import time

import pytest

import fakes
import llmgw_env as env
from test_ollama_front import chat, ndjson, ollama_error

# RFC 3339 in UTC with a fraction of a second, as Ollama writes created_at
# (Go's RFC3339Nano: none at all on a whole second, so a single time stamp
# is checked with RFC3339NANO, a series of them for fractions too).
SUBSECOND = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{1,9}Z")
RFC3339NANO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d*[1-9])?Z")
DURATIONS = ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration")

# Everything real Ollama setups send that has no OpenAI equivalent.
OLLAMA_ONLY = {"keep_alive": 0, "think": True,
               "options": {"num_ctx": 8192, "repeat_penalty": 1.1, "repeat_last_n": 64,
                           "min_p": 0.05, "num_gpu": 1, "num_thread": 4, "mirostat": 2,
                           "mirostat_tau": 5.0, "mirostat_eta": 0.1, "num_predict": 3}}


def upstream_of(mocks, marker):
    """The raw body the Ollama mocks (balancer ob: a and b) last got that
    holds marker."""
    for name in ("a", "b"):
        last = mocks[name].last()
        if marker in last.get("body", ""):
            return last
    raise AssertionError(f"no backend got a body with {marker!r}")


def generations(mocks):
    return sum(mocks[n].stats()["generations"] for n in ("a", "b"))


def test_every_field_reaches_an_ollama_backend(gw, mocks, uniq):
    body = dict(chat(f"fields {uniq}", model="ollama-small", stream=False), **OLLAMA_ONLY)
    text = json.dumps(body)
    r = gw.post("/api/chat", text)
    assert r.status == 200, r.body
    last = upstream_of(mocks, uniq)
    assert last["path"] == "/api/chat"
    # The client's bytes, only the model renamed to the upstream's.
    assert last["body"] == text.replace('"model": "ollama-small"', '"model": "mock-small"')
    # /api/generate and /api/embed likewise.
    gen = json.dumps({"model": "ollama-small", "prompt": f"gen {uniq}", "stream": False,
                      "raw": True, "system": "be brief", "template": "{{ .Prompt }}",
                      "options": {"num_ctx": 4096, "num_predict": 2}})
    assert gw.post("/api/generate", gen).status == 200
    last = upstream_of(mocks, f"gen {uniq}")
    assert last["path"] == "/api/generate"
    assert last["body"] == gen.replace('"ollama-small"', '"mock-small"')
    emb = json.dumps({"model": "ollama-small", "input": [f"emb {uniq}"], "truncate": False,
                      "keep_alive": "10m", "options": {"num_ctx": 512}})
    assert gw.post("/api/embed", emb).status == 200
    last = upstream_of(mocks, f"emb {uniq}")
    assert last["path"] == "/api/embed"
    assert last["body"] == emb.replace('"ollama-small"', '"mock-small"')


def test_native_plain_answer_comes_as_the_backend_wrote_it(gw, uniq):
    r = gw.post("/api/chat", chat(f"plain {uniq}", model="ollama-small", stream=False,
                                  options={"num_predict": 4}))
    assert r.status == 200, r.body
    raw = r.body.decode()
    # mockllm's own order (the gateway's translation writes done first).
    assert raw.startswith('{"model":"mock-small","created_at":"'), raw
    assert '"done_reason":"length","done":true,"total_duration":' in raw, raw
    j = r.json()
    assert SUBSECOND.fullmatch(j["created_at"]), j["created_at"]
    # The mock's nominal durations: ttft 5 ms, 4 tokens at 1000/s.
    assert j["prompt_eval_duration"] == 5_000_000 and j["eval_duration"] == 4_000_000, j
    assert j["total_duration"] >= 9_000_000, j
    assert j["message"]["content"] == env.mock_text(
        "mock-small", [{"role": "user", "content": f"plain {uniq}"}], 4)


def test_native_stream_lines_come_as_the_backend_wrote_them(gw, uniq):
    model = "ollama-small"
    mark = gw.log_mark()
    resp, lines = ndjson(gw, "/api/chat", chat(f"stream {uniq}", model=model,
                                               options={"num_predict": 5}),
                         headers={"X-Mock-TPS": "50"})
    assert resp.status == 200
    assert resp.getheader("Content-Type").startswith("application/x-ndjson")
    objs = [o for _, o in lines]
    assert [o["done"] for o in objs] == [False] * 5 + [True], objs
    # Each line its own time, to the microsecond, as Ollama writes them.
    stamps = [o["created_at"] for o in objs]
    assert all(SUBSECOND.fullmatch(s) for s in stamps), stamps
    assert len(set(stamps)) == len(stamps), stamps
    last = objs[-1]
    assert last["eval_duration"] == 100_000_000 and last["prompt_eval_duration"] == 5_000_000
    assert last["eval_count"] == 5 and last["done_reason"] == "length"
    # The gateway still read the usage from its copy.
    line = gw.wait_log_one(lambda l: l.route == model and l.stream == "1", since=mark)
    assert line.completion_tokens == "5", line.raw


def test_native_cut_stream_ends_with_one_error_line(gw, uniq):
    resp, lines = ndjson(gw, "/api/chat", chat(f"cut {uniq}", model="ollama-small",
                                               options={"num_predict": 8}),
                         headers={"X-Mock-Fault": "cut"})
    objs = [o for _, o in lines]
    assert set(objs[-1]) == {"error"} and objs[-1]["error"], objs
    assert objs[:-1] and all(o["done"] is False for o in objs[:-1]), objs


def test_native_answers_share_the_cache(gw_cache, uniq):
    base = chat(f"cached {uniq}", model="ollama-small", stream=False,
                options={"temperature": 0, "num_predict": 4})
    first = gw_cache.post("/api/chat", base)
    assert first.status == 200 and first.header("X-LLM-Cache") == "MISS", first.body
    again = gw_cache.post("/api/chat", base)
    assert again.header("X-LLM-Cache") == "HIT"
    assert again.json()["message"] == first.json()["message"]
    # The record is OpenAI's: an OpenAI client asking the same shares it.
    o = gw_cache.post("/v1/chat/completions",
                      env.chat_body(model="ollama-small", content=f"cached {uniq}",
                                    temperature=0, max_tokens=4))
    assert o.header("X-LLM-Cache") == "HIT", o.body
    assert o.json()["choices"][0]["message"]["content"] == first.json()["message"]["content"]
    # What the OpenAI view leaves out still tells answers apart.
    ctx = dict(base, options=dict(base["options"], num_ctx=2048))
    assert gw_cache.post("/api/chat", ctx).header("X-LLM-Cache") == "MISS"
    assert gw_cache.post("/api/chat", ctx).header("X-LLM-Cache") == "HIT"
    # A streamed native request is recorded from its copy, and replayed.
    s = dict(base, stream=True, messages=[{"role": "user", "content": f"st {uniq}"}])
    resp, lines = ndjson(gw_cache, "/api/chat", s)
    assert resp.getheader("X-LLM-Cache") == "MISS"
    resp2, lines2 = ndjson(gw_cache, "/api/chat", s)
    assert resp2.getheader("X-LLM-Cache") == "HIT"
    text = lambda ls: "".join(o["message"]["content"] for _, o in ls)
    assert text(lines2) == text(lines) and lines2[-1][1]["done"] is True


def test_load_requests_reach_an_ollama_backend(gw, mocks):
    before = generations(mocks)
    for path, body in (("/api/chat", {"model": "ollama-small", "messages": []}),
                       ("/api/chat", {"model": "ollama-small"}),
                       ("/api/generate", {"model": "ollama-small"})):
        for keep, reason in ((None, "load"), (0, "unload")):
            b = dict(body) if keep is None else dict(body, keep_alive=keep)
            r = gw.post(path, b)
            assert r.status == 200, (path, b, r.body)
            j = r.json()
            assert j["done"] is True and j["done_reason"] == reason, j
            assert j["model"] == "mock-small"
    assert generations(mocks) == before + 6


def test_load_requests_answered_for_other_backends(gw, mocks):
    before = generations(mocks)
    for path, body, part in (("/api/chat", {"model": "mock-small", "messages": []}, "message"),
                             ("/api/chat", {"model": "mock-small", "keep_alive": 0}, "message"),
                             ("/api/generate", {"model": "mock-small", "prompt": ""},
                              "response"),
                             ("/api/generate", {"model": "mock-small", "keep_alive": "0s"},
                              "response")):
        r = gw.post(path, body)
        assert r.status == 200, (path, body, r.body)
        assert r.content_type == "application/json"
        j = r.json()
        reason = "unload" if "keep_alive" in body else "load"
        expect = {"model": "mock-small", "created_at": j.get("created_at"),
                  "done": True, "done_reason": reason,
                  part: {"role": "assistant", "content": ""} if part == "message" else ""}
        assert j == expect, j
        assert RFC3339NANO.fullmatch(j["created_at"]), j
    assert gw.post("/api/embed", {"model": "mock-small", "input": []}).json()["embeddings"] == []
    assert generations(mocks) == before
    # Still no load for a model nobody serves.
    assert "nope" in ollama_error(gw.post("/api/chat", {"model": "nope"}), 404)


def test_root_answers_as_ollama(gw):
    for method in ("GET", "HEAD"):
        r = gw.request(method, "/")
        assert r.status == 200, (method, r.body)
        assert r.header("Content-Type").startswith("text/plain")
        assert r.header("Content-Length") == str(len("Ollama is running"))
        assert r.body == (b"Ollama is running" if method == "GET" else b"")
    ollama_error(gw.post("/", {}), 405)
    # Only the root: the rest of the server is not the Ollama API.
    assert gw.get("/index.html").body.startswith(b"<html>")


def test_model_files_are_not_managed(gw):
    for method, path in (("POST", "/api/pull"), ("POST", "/api/push"),
                         ("POST", "/api/create"), ("POST", "/api/copy"),
                         ("DELETE", "/api/delete"), ("HEAD", "/api/blobs/sha256:00"),
                         ("POST", "/api/blobs/sha256:00")):
        r = gw.request(method, path, {"model": "mock-small"})
        assert r.status == 501, (method, path, r.body)
        if method != "HEAD":
            assert "does not manage model files" in ollama_error(r, 501)


def test_durations_measured_for_other_backends(gw):
    r = gw.post("/api/chat", chat(stream=False, options={"num_predict": 4}),
                headers={"X-Mock-TTFT-Ms": "30"})
    j = r.json()
    assert RFC3339NANO.fullmatch(j["created_at"]), j
    # The answer is whole 30 + 4 ms after the request at the earliest.
    assert j["total_duration"] >= 34_000_000 and j["eval_duration"] > 0, j
    assert j["load_duration"] == 0 and j["total_duration"] < 10_000_000_000, j
    resp, lines = ndjson(gw, "/api/generate",
                         {"model": "mock-small", "prompt": "time me",
                          "options": {"num_predict": 4}},
                         headers={"X-Mock-TTFT-Ms": "30", "X-Mock-TPS": "40"})
    objs = [o for _, o in lines]
    last = objs[-1]
    assert last["done"] is True
    # No token before 30 ms, the last not before 30 + 3 * 25 ms; how the
    # rest splits depends on when the gateway's thread ran (a busy machine
    # may hand it several tokens at once).
    assert last["prompt_eval_duration"] >= 30_000_000, last
    assert last["eval_duration"] >= 0 and last["total_duration"] >= 105_000_000, last
    assert last["total_duration"] >= last["prompt_eval_duration"] + last["eval_duration"], last
    stamps = [o["created_at"] for o in objs]
    assert all(RFC3339NANO.fullmatch(s) for s in stamps), stamps
    assert any(SUBSECOND.fullmatch(s) for s in stamps), stamps


# ------------------------------------------- an Ollama backend that misbehaves

@pytest.fixture(scope="module")
def fake():
    yield from env.running(fakes.FakeBackend)


@pytest.fixture(scope="module")
def gw_fake(request, workdir, ports, mocks, fake):
    # Also a balancer of two Ollama servers with different models (mock a:
    # mock-small and mock-large; disc2: ollama-gamma), and a dead member.
    routes = f"""\
{env.proxy("fakeo", fake.port)}
{env.route("fakeo-*", "fakeo dialect=ollama", model=None)}
<Proxy "balancer://mixed">
    BalancerMember "http://{env.HOST}:{ports['be_a']}/"
    BalancerMember "http://{env.HOST}:{ports['dead1']}"
    BalancerMember "http://{env.HOST}:{ports['disc2']}"
</Proxy>
{env.route("agg-small", "mixed dialect=ollama")}
{env.route("agg-gamma", "mixed dialect=ollama", model="ollama-gamma")}
"""
    yield from env.serve_gateway(request, workdir, ports, "gw-native-fake", routes)


def ol_line(model, content, done=False, **extra):
    o = {"model": model, "created_at": "2024-05-01T10:00:00.123456789Z",
         "message": {"role": "assistant", "content": content}, "done": done}
    o.update(extra)
    return (json.dumps(o) + "\n").encode()


def test_native_stream_cut_mid_line_ends_with_a_whole_error_line(gw_fake, fake, uniq):
    model = f"fakeo-midline-{uniq}"
    second = ol_line(model, "world")

    def answer(req):
        yield fakes.stream_head("application/x-ndjson")
        yield fakes.chunk(ol_line(model, "hello ") + second[:len(second) // 2])
        # Gone without the rest of the line, the done line or the last chunk.
    fake.script(model, answer)
    conn = http.client.HTTPConnection(env.HOST, gw_fake.port, timeout=30)
    try:
        conn.request("POST", "/api/chat", body=json.dumps(chat("x", model=model)),
                     headers={"Content-Type": "application/json"})
        raw = conn.getresponse().read()
    finally:
        conn.close()
    lines = raw.split(b"\n")
    assert lines[-1] == b"", raw
    # The backend's first line as it came, then one error line: the half
    # line is dropped, not glued to the error.
    assert lines[0] + b"\n" == ol_line(model, "hello "), raw
    assert len(lines) == 3, raw
    err = json.loads(lines[1])
    assert set(err) == {"error"} and err["error"], raw


def test_native_stream_passes_an_unfinished_last_line(gw_fake, fake, uniq):
    # A done line without its newline, then a clean end: it goes as it
    # came, a whole line (its newline added).
    model = f"fakeo-nonl-{uniq}"
    done = ol_line(model, "", done=True, done_reason="stop", total_duration=7,
                   load_duration=1, prompt_eval_count=2, prompt_eval_duration=3,
                   eval_count=1, eval_duration=4)[:-1]
    fake.script(model, lambda req: [fakes.stream_head("application/x-ndjson"),
                                    fakes.chunk(ol_line(model, "hi")), fakes.chunk(done),
                                    fakes.LAST_CHUNK])
    r = gw_fake.post("/api/chat", chat("x", model=model))
    assert r.status == 200
    assert r.body == ol_line(model, "hi") + done + b"\n", r.body


def test_native_stream_never_passes_a_bad_line(gw_fake, fake, uniq):
    # A line that is no JSON object, mid-stream: the client never gets it,
    # and the stream ends with one error line; nothing after a done line.
    model = f"fakeo-bad-{uniq}"
    fake.script(model, lambda req: [fakes.stream_head("application/x-ndjson"),
                                    fakes.chunk(ol_line(model, "one ")),
                                    fakes.chunk(b"<html>oops</html>\n"),
                                    fakes.chunk(ol_line(model, "two ")), fakes.LAST_CHUNK])
    r = gw_fake.post("/api/chat", chat("x", model=model))
    lines = r.body.split(b"\n")
    assert lines[0] + b"\n" == ol_line(model, "one ") and lines[-1] == b"", r.body
    assert len(lines) == 3 and "not a JSON object" in json.loads(lines[1])["error"], r.body
    model = f"fakeo-after-{uniq}"
    done = ol_line(model, "", done=True, done_reason="stop", eval_count=1)
    fake.script(model, lambda req: [fakes.stream_head("application/x-ndjson"),
                                    fakes.chunk(ol_line(model, "hi") + done),
                                    fakes.chunk(ol_line(model, "more")), fakes.LAST_CHUNK])
    r = gw_fake.post("/api/chat", chat("x", model=model))
    assert r.body == ol_line(model, "hi") + done, r.body
    # The backend's own error line is the end: as it came, no second one.
    model = f"fakeo-err-{uniq}"
    fake.script(model, lambda req: [fakes.stream_head("application/x-ndjson"),
                                    fakes.chunk(ol_line(model, "hi")),
                                    fakes.chunk(b'{"error":"out of memory"}\n'),
                                    fakes.LAST_CHUNK])
    r = gw_fake.post("/api/chat", chat("x", model=model))
    assert r.body == ol_line(model, "hi") + b'{"error":"out of memory"}\n', r.body


def test_native_plain_answer_that_is_not_json_is_502(gw_fake, fake, uniq):
    model = f"fakeo-html-{uniq}"
    fake.script(model, lambda req: [fakes.response(b"<html>busy</html>", ctype="text/html")])
    r = gw_fake.post("/api/chat", chat("x", model=model, stream=False))
    assert "backend" in ollama_error(r, 502)


# ------------------------------------------------- what the Ollama backends say

def test_tags_are_the_members_own(gw_fake, ports):
    tags = {m["name"]: m for m in gw_fake.get("/api/tags").json()["models"]}
    # Each from the member that has it: the dead member and the one without
    # the model do not hide it.
    for name, up, port in (("agg-small", "mock-small", ports["be_a"]),
                           ("agg-gamma", "ollama-gamma", ports["disc2"])):
        own = {m["name"]: m for m in env.request(port, "GET", "/api/tags").json()["models"]}
        want = dict(own[up], name=name, model=name)
        assert tags[name] == want, (name, tags[name], want)
        assert tags[name]["digest"].startswith("sha256:") and tags[name]["size"] > 0


def test_ps_lists_what_the_members_have_loaded(gw_fake, ports):
    # Loaded on each member directly (one each), then seen through the gateway.
    for port, model in ((ports["be_a"], "mock-small"), (ports["disc2"], "ollama-gamma")):
        r = env.request(port, "POST", "/api/generate", {"model": model, "keep_alive": "5m"})
        assert r.status == 200, r.body
    ps = {m["name"]: m for m in gw_fake.get("/api/ps").json()["models"]}
    assert set(ps) >= {"agg-small", "agg-gamma"}, ps
    for name, up, port in (("agg-small", "mock-small", ports["be_a"]),
                           ("agg-gamma", "ollama-gamma", ports["disc2"])):
        own = {m["name"]: m for m in env.request(port, "GET", "/api/ps").json()["models"]}
        assert ps[name] == dict(own[up], name=name, model=name), (ps[name], own[up])
    # Unloaded on its member: gone from the list.
    env.request(ports["disc2"], "POST", "/api/generate",
                {"model": "ollama-gamma", "keep_alive": 0})
    ps = {m["name"] for m in gw_fake.get("/api/ps").json()["models"]}
    assert "agg-gamma" not in ps and "agg-small" in ps, ps


def test_show_is_the_backends_card(gw, ports):
    r = gw.post("/api/show", {"model": "ollama-small"})
    assert r.status == 200, r.body
    own = env.request(ports["be_a"], "POST", "/api/show", {"model": "mock-small"})
    assert r.json() == own.json()
    assert "tools" in r.json()["capabilities"] and r.json()["details"]["family"] == "mock"
    assert r.json()["template"] and r.json()["parameters"]
    # {"name": ...} as older clients send it.
    assert gw.post("/api/show", {"name": "ollama-small"}).json() == own.json()
    # A name the backend does not have: its own 404, in Ollama's shape.
    assert "not found" in ollama_error(gw.post("/api/show", {"model": "ollama-gnu"}), 404)


# ------------------------------------------------- followers of a native leader

def test_native_stream_is_shared_with_followers(gw_cache, mocks, uniq):
    # Identical native streams at once: one generation, the leader gets the
    # backend's lines, its followers the same words from its copy, in either
    # API.
    body = chat(f"coalesce {uniq}", model="ollama-small",
                options={"temperature": 0, "num_predict": 6})
    slow = {"X-Mock-TPS": "20"}
    before = generations(mocks)

    def ollama_client(delay):
        time.sleep(delay)  # the followers come once the leader has the lease
        return ndjson(gw_cache, "/api/chat", body, headers=slow)

    def openai_client():
        time.sleep(0.1)
        return gw_cache.stream("/v1/chat/completions",
                               env.chat_body(model="ollama-small", content=f"coalesce {uniq}",
                                             temperature=0, max_tokens=6, stream=True),
                               headers=slow)
    results = env.in_threads([lambda: ollama_client(0), lambda: ollama_client(0.1),
                              lambda: ollama_client(0.1), openai_client])
    assert not [r for r in results if isinstance(r, Exception)], results
    words = env.mock_text("mock-small", body["messages"], 6)
    for resp, lines in results[:3]:
        assert "".join(o["message"]["content"] for _, o in lines) == words
        assert lines[-1][1]["done"] is True and lines[-1][1]["eval_count"] == 6
    # One of them led (the first, unless a busy machine held it back).
    states = [resp.getheader("X-LLM-Cache") for resp, _ in results[:3]]
    states.append(results[3].headers.get("X-LLM-Cache"))
    assert sorted(states).count("MISS") == 1, states
    assert set(states) <= {"MISS", "COALESCED", "HIT"}, states
    assert results[3].content() == words and results[3].data()[-1] == "[DONE]"
    assert generations(mocks) == before + 1


# ----------------------------------------------- mockllm as strict as Ollama

def test_mock_reads_keep_alive_and_think_as_ollama(mocks):
    port = mocks["a"].port
    gen = {"model": "mock-small", "prompt": "strict", "stream": False}
    for good in (300, 0, -1, "5m", "1h30m", "0", "0s", "-1s", "1.5h", None):
        r = env.request(port, "POST", "/api/generate", dict(gen, keep_alive=good))
        assert r.status == 200, (good, r.body)
    for bad, why in (("abc", 'time: invalid duration "abc"'), ("5", 'time: invalid duration "5"'),
                     ("5x", 'time: invalid duration "5x"'), (True, "Unsupported type: 'bool'"),
                     ({}, "Unsupported type: 'map[string]interface {}'")):
        r = env.request(port, "POST", "/api/generate", dict(gen, keep_alive=bad))
        assert r.status == 400 and r.json() == {"error": why}, (bad, r.body)
        r = env.request(port, "POST", "/api/embed",
                        {"model": "mock-small", "input": "x", "keep_alive": bad})
        assert r.status == 400 and r.json() == {"error": why}, (bad, r.body)
    for think in (True, False, "low", "medium", "high"):
        assert env.request(port, "POST", "/api/generate", dict(gen, think=think)).status == 200
    for think in ("max", "on", 1):
        r = env.request(port, "POST", "/api/generate", dict(gen, think=think))
        assert r.status == 400 and "think" in r.json()["error"], (think, r.body)
    for method in ("GET", "HEAD"):
        r = env.request(port, method, "/")
        assert r.status == 200 and r.header("Content-Type").startswith("text/plain")
    assert env.request(port, "GET", "/").body == b"Ollama is running"


def test_keep_alive_read_as_ollama_reads_it(gw, uniq):
    # Refused as Ollama refuses it, whichever backend: the gateway's front
    # reads it as Ollama does (an OpenAI-style backend never sees it), and
    # an Ollama backend would refuse it the same way.
    body = chat(f"strict {uniq}", stream=False, keep_alive="soon")
    for model in ("ollama-small", "mock-small"):
        r = gw.post("/api/chat", dict(body, model=model))
        assert ollama_error(r, 400) == 'time: invalid duration "soon"', model
        r = gw.post("/api/chat", dict(body, model=model, keep_alive="1h30m"))
        assert r.status == 200, (model, r.body)


def test_native_backend_refusals_reach_the_client(gw, uniq):
    # What the Ollama backend refuses (mockllm: think "max") is its answer,
    # status and message as it gave them.
    r = gw.post("/api/chat", chat(f"refused {uniq}", model="ollama-small", think="max",
                                  stream=False))
    assert ollama_error(r, 400).startswith("invalid think value"), r.body


def test_ps_lists_what_glob_routes_have_loaded(gw_fake, fake):
    # fakeo-* (dialect=ollama, no LLMDiscover): what its member has loaded
    # under names the glob serves is listed, the rest is not.
    entry = {"size": 5, "digest": "abc", "details": {"family": "fake"},
             "expires_at": "2030-01-01T00:00:00Z", "size_vram": 5}
    loaded = {"models": [dict(entry, name=n, model=n)
                         for n in ("fakeo-zeta", "unrouted-x", "fakeo-alpha")]}
    fake.script("", lambda req: [fakes.response(json.dumps(loaded).encode())])
    ps = gw_fake.get("/api/ps").json()["models"]
    names = [m["name"] for m in ps]
    assert [n for n in names if n.startswith("fakeo-")] == ["fakeo-alpha", "fakeo-zeta"], names
    assert "unrouted-x" not in names
    assert [m for m in ps if m["name"] == "fakeo-zeta"] == [dict(entry, name="fakeo-zeta",
                                                                  model="fakeo-zeta")]


# ---------------------------------------- llama.cpp shares some of the options

def test_llamacpp_gets_the_options_it_shares(gw, mocks, uniq):
    opts = {"repeat_penalty": 1.1, "repeat_last_n": 64, "min_p": 0.05, "typical_p": 0.9,
            "mirostat": 2, "mirostat_tau": 5.0, "mirostat_eta": 0.1, "num_keep": 5,
            "penalize_newline": False, "num_ctx": 4096, "num_predict": 2}
    r = gw.post("/api/chat", chat(f"llama opts {uniq}", model="llamacpp-small",
                                  stream=False, options=opts))
    assert r.status == 200, r.body
    sent = mocks["llama"].last_body()
    assert sent["messages"][0]["content"] == f"llama opts {uniq}"
    for k in ("repeat_penalty", "repeat_last_n", "min_p", "typical_p", "mirostat",
              "mirostat_tau", "mirostat_eta"):
        assert sent[k] == opts[k], (k, sent)
    assert sent["n_keep"] == 5 and sent["penalize_nl"] is False, sent
    assert sent["max_tokens"] == 2 and "num_ctx" not in sent and "options" not in sent, sent
    # An OpenAI server gets none of them (they are no OpenAI parameters).
    r = gw.post("/api/chat", chat(f"openai opts {uniq}", stream=False, options=opts))
    assert r.status == 200, r.body
    sent = json.loads(upstream_of(mocks, f"openai opts {uniq}")["body"])
    assert not set(sent) & {"repeat_penalty", "min_p", "mirostat", "n_keep"}, sent
    bad = chat(f"bad {uniq}", model="llamacpp-small", options={"min_p": "low"})
    assert "min_p" in ollama_error(gw.post("/api/chat", bad), 400)


def test_openai_clients_extensions_reach_ollama_options(gw, mocks, uniq):
    # llama.cpp's and vLLM's extensions of OpenAI's body that Ollama has as
    # options; a wrong type is OpenAI's 400 naming it.
    body = env.chat_body(model="ollama-small", content=f"ext {uniq}", max_tokens=2,
                         min_p=0.05, repetition_penalty=1.2, repeat_last_n=32,
                         mirostat=2, mirostat_tau=4.0, typical_p=0.9)
    r = gw.post("/v1/chat/completions", body)
    assert r.status == 200, r.body
    opts = json.loads(upstream_of(mocks, f"ext {uniq}")["body"])["options"]
    assert opts == {"min_p": 0.05, "repeat_penalty": 1.2, "repeat_last_n": 32,
                    "mirostat": 2, "mirostat_tau": 4.0, "typical_p": 0.9,
                    "num_predict": 2}, opts
    r = gw.post("/v1/chat/completions", dict(body, min_p="low"))
    env.assert_openai_error(r, 400, "invalid_request_error", "invalid_type")
    assert r.json()["error"]["param"] == "min_p"
