# Commit-point failover (LLMFailover, LLMFallback, LLMFirstTokenTimeout):
# members that fail before the answer starts are retried on another member,
# then on the fallback route; after the first delta nothing is retried.
# Each balancer here has the faulty member first and a healthy one as hot
# standby (status=+H), so mod_proxy's balancer always picks the faulty one
# and only the gateway's failover can reach the other.
import json
import subprocess
import threading
import time

import pytest

import llmgw_env as env

H = env.HOST
MOCK_ARGS = ["--models", "mock-small,mock-large", "--tps", "1000", "--ttft-ms", "5"]
FAULTY = {
    "f500": ["--fault", "500"],
    "f429": ["--fault", "429"],
    "freset": ["--fault", "reset"],
    "fhang": ["--fault", "hang"],
    "fstall": ["--ttft-ms", "5000"],   # headers and role chunk, then nothing
    "fcut0": ["--fault", "cut-first"],
    "fcut": ["--fault", "cut"],
    "fgarbage": ["--fault", "garbage"],   # an event that is not JSON
    "victim": ["--ttft-ms", "400"],    # killed while requests are in flight
    "fslow": ["--tps", "0.5"],         # a token every 2 s
}
HEALTHY = ("ok1", "ok2")


@pytest.fixture(scope="module")
def fo_mocks(workdir):
    started = {}
    try:
        for name in HEALTHY:
            started[name] = env.MockBackend(env.mockllm_path(), workdir, "fo-" + name,
                                            None, MOCK_ARGS).start()
        for name, args in FAULTY.items():
            started[name] = env.MockBackend(env.mockllm_path(), workdir, "fo-" + name,
                                            None, MOCK_ARGS + args).start()
        yield started
    finally:
        for m in started.values():
            m.stop()


def balancer(name, first, second, standby=True):
    return (f'<Proxy "balancer://{name}">\n'
            f'    BalancerMember "http://{H}:{first}" retry=1\n'
            f'    BalancerMember "http://{H}:{second}" retry=1'
            f'{" status=+H" if standby else ""}\n'
            f'</Proxy>\n')


def route(name, bal, extra="", model="mock-small", dialect="openai"):
    return (f'<LLMRoute "{name}">\n    LLMBackend balancer://{bal} dialect={dialect}\n'
            f'    LLMUpstreamModel {model}\n{extra}</LLMRoute>\n')


def config(m, dead, later):
    ok1, ok2 = m["ok1"].port, m["ok2"].port
    out = ""
    # A member that comes up only during its test.
    out += f'<Proxy "balancer://fo-later">\n    BalancerMember "http://{H}:{later}" retry=1\n</Proxy>\n'
    out += route("fo-later", "fo-later", "    LLMFallback fo-fallback\n")
    for name in FAULTY:
        out += balancer("fo-" + name, m[name].port, ok1)
        out += route("fo-" + name, "fo-" + name,
                     "    LLMFirstTokenTimeout 1\n" if name in ("fhang", "fstall")
                     else "    LLMTokenTimeout 1\n" if name == "fslow" else "")
    out += balancer("fo-ok", ok1, ok2, standby=False)
    out += route("fo-ok", "fo-ok")
    # Two faulty members and a standby: two attempts reach only the faulty.
    out += (f'<Proxy "balancer://fo-two-bad">\n'
            f'    BalancerMember "http://{H}:{m["f500"].port}" retry=1\n'
            f'    BalancerMember "http://{H}:{m["f429"].port}" retry=1\n'
            f'    BalancerMember "http://{H}:{ok1}" retry=1 status=+H\n</Proxy>\n')
    out += route("fo-two-bad", "fo-two-bad", "    LLMFailover attempts=2\n")
    out += route("fo-three", "fo-two-bad", "    LLMFailover attempts=3 time=10\n")
    out += route("fo-late", "fo-fhang",
                 "    LLMFirstTokenTimeout 2\n    LLMFailover attempts=3 time=1\n")
    out += balancer("fo-dead", dead[0], dead[1], standby=False)
    out += f'<Proxy "balancer://fo-dead2">\n    BalancerMember "http://{H}:{dead[2]}" retry=5\n</Proxy>\n'
    out += f'<Proxy "balancer://fo-fb">\n    BalancerMember "http://{H}:{ok2}"\n</Proxy>\n'
    out += route("fo-dead", "fo-dead", "    LLMFallback fo-fallback\n")
    # Live members, both disabled (as a breaker's open state takes them
    # out): not one of them may be asked.
    out += (f'<Proxy "balancer://fo-disabled">\n'
            f'    BalancerMember "http://{H}:{m["f500"].port}" status=+D\n'
            f'    BalancerMember "http://{H}:{m["f429"].port}" status=+D\n</Proxy>\n')
    out += route("fo-disabled", "fo-disabled", "    LLMFallback fo-fallback\n")
    out += route("fo-fallback", "fo-fb", model="mock-large")
    out += route("fo-nothing", "fo-dead", "    LLMFallback fo-dead2\n")
    out += route("fo-dead2", "fo-dead2")
    out += route("fo-off", "fo-f500", "    LLMFailover off\n")
    out += route("fo-ollama", "fo-f500", dialect="ollama")
    out += route("fo-ollama-cut0", "fo-fcut0", dialect="ollama")
    out += route("fo-coal", "fo-fhang", "    LLMFirstTokenTimeout 1\n    LLMCachePolicy all\n")
    out += route("fo-cache-cut0", "fo-fcut0", "    LLMCachePolicy all\n")
    out += route("fo-coal-stall", "fo-fstall",
                 "    LLMFirstTokenTimeout 1\n    LLMCachePolicy all\n")
    return out


@pytest.fixture(scope="module")
def later_port():
    return env.PORTS.take(1)[0]


@pytest.fixture(scope="module")
def gw(request, workdir, ports, fo_mocks, later_port):
    dead = env.PORTS.dead(3)
    yield from env.serve_gateway(request, workdir, ports, "gw-failover",
                                 config(fo_mocks, dead, later_port))


@pytest.fixture(autouse=True)
def reset_mocks(fo_mocks):
    for name, m in fo_mocks.items():
        if m.proc.poll() is None:
            m.reset()


def chat(model, content="Hello failover", **kw):
    return dict({"model": model, "messages": [{"role": "user", "content": content}],
                 "max_tokens": 8}, **kw)


def generations(m):
    return m.stats()["generations"]


def last_line(gw, model, since):
    return gw.wait_log_one(lambda l: getattr(l, "model", None) == model, since)


def assert_clean_stream(s):
    """One answer: one role chunk, content, a finish, [DONE], no error."""
    assert s.status == 200, s.raw[:300]
    data = s.data()
    assert data and data[-1] == "[DONE]", data[-3:]
    chunks = s.chunks()
    assert not any("error" in c for c in chunks), chunks
    roles = [c for c in chunks for ch in c.get("choices") or []
             if (ch.get("delta") or {}).get("role")]
    assert len(roles) == 1, chunks
    assert s.content()


@pytest.mark.parametrize("fault", ["f500", "f429", "freset", "fcut0", "fgarbage"])
def test_plain_answer_fails_over(gw, fo_mocks, fault):
    mark = gw.log_mark()
    r = gw.post("/v1/chat/completions", chat("fo-" + fault))
    assert r.status == 200, r.body[:300]
    assert r.header("X-Mock-Backend") == "fo-ok1"
    assert r.json()["choices"][0]["message"]["content"]
    assert generations(fo_mocks[fault]) == 1
    assert generations(fo_mocks["ok1"]) == 1
    line = last_line(gw, "fo-" + fault, mark)
    assert (line.status, line.attempts) == ("200", "2")
    assert line.member == f"http://{H}:{fo_mocks['ok1'].port}"


@pytest.mark.parametrize("fault", ["f500", "f429", "freset", "fcut0", "fgarbage"])
def test_stream_fails_over(gw, fo_mocks, fault):
    mark = gw.log_mark()
    s = gw.stream("/v1/chat/completions", chat("fo-" + fault, stream=True))
    assert_clean_stream(s)
    assert s.headers.get("X-Mock-Backend") == "fo-ok1"
    assert generations(fo_mocks[fault]) == 1
    assert last_line(gw, "fo-" + fault, mark).attempts == "2"


def test_kept_alive_client_reset_fails_over(gw, fo_mocks):
    """On a kept-alive client connection mod_proxy closes the connection
    without an answer when the backend resets (for the client to retry):
    the gateway retries itself, and the connection stays usable."""
    with gw.connect() as c:
        first = c.request("POST", "/v1/chat/completions", chat("fo-ok"))
        second = c.request("POST", "/v1/chat/completions", chat("fo-freset"))
        third = c.request("POST", "/v1/chat/completions", chat("fo-ok"))
    assert (first.status, second.status, third.status) == (200, 200, 200)
    assert generations(fo_mocks["freset"]) == 1


def test_hang_before_headers_first_token_timeout(gw, fo_mocks):
    mark = gw.log_mark()
    t0 = time.monotonic()
    r = gw.post("/v1/chat/completions", chat("fo-fhang"))
    took = time.monotonic() - t0
    assert r.status == 200, r.body[:300]
    assert r.header("X-Mock-Backend") == "fo-ok1"
    assert 0.9 < took < 10, took
    assert last_line(gw, "fo-fhang", mark).attempts == "2"
    member = f"http://{H}:{fo_mocks['fhang'].port}"
    with open(gw.error_log) as f:
        assert f"attempt on member {member}: timeout-first-byte" in f.read()


def test_stall_before_first_token_stream(gw, fo_mocks):
    """Headers and the role chunk come at once, then no token: after the
    first-token timeout the stream is served by another member, and the
    client sees one role chunk, not the stalled member's too."""
    mark = gw.log_mark()
    t0 = time.monotonic()
    s = gw.stream("/v1/chat/completions", chat("fo-fstall", stream=True))
    assert_clean_stream(s)
    assert s.headers.get("X-Mock-Backend") == "fo-ok1"
    # Nothing went out before the commit point: the first event came after
    # the timeout, with the healthy member's tokens.
    assert s.events[0][0] > 0.9
    assert time.monotonic() - t0 < 10
    assert last_line(gw, "fo-fstall", mark).attempts == "2"


def test_cut_after_first_delta_is_not_retried(gw, fo_mocks):
    mark = gw.log_mark()
    s = gw.stream("/v1/chat/completions", chat("fo-fcut", stream=True))
    assert s.status == 200
    assert s.content(), "the first tokens went out"
    last = s.chunks()[-1]
    assert last.get("error", {}).get("code") == "upstream_stream_error", last
    assert generations(fo_mocks["ok1"]) == 0
    line = last_line(gw, "fo-fcut", mark)
    assert (line.attempts, line.error) == ("1", "upstream_stream_error")
    # The member is charged the failure after its success at the commit.
    member = f"http://{H}:{fo_mocks['fcut'].port}"
    with open(gw.error_log) as f:
        text = f.read()
    assert f"attempt on member {member}: success" in text
    assert f"attempt on member {member}: bad-answer" in text


def test_last_attempt_answer_is_the_clients(gw, fo_mocks):
    """Every member fails: the last one's own error goes out as it is."""
    mark = gw.log_mark()
    r = gw.post("/v1/chat/completions", chat("fo-ok"), headers={"X-Mock-Fault": "500"})
    assert r.status == 500
    assert r.json()["error"]["message"] == "mock internal error"
    assert generations(fo_mocks["ok1"]) + generations(fo_mocks["ok2"]) == 2
    assert last_line(gw, "fo-ok", mark).attempts == "2"


def test_failover_off(gw, fo_mocks):
    r = gw.post("/v1/chat/completions", chat("fo-off"))
    assert r.status == 500
    assert generations(fo_mocks["ok1"]) == 0


def test_all_members_down_goes_to_fallback(gw, fo_mocks):
    mark = gw.log_mark()
    t0 = time.monotonic()
    r = gw.post("/v1/chat/completions", chat("fo-dead"))
    assert r.status == 200, r.body[:300]
    assert time.monotonic() - t0 < 2
    assert r.header("X-Mock-Backend") == "fo-ok2"
    assert r.json()["model"] == "mock-large"
    line = last_line(gw, "fo-dead", mark)
    assert (line.route, line.upstream_model, line.attempts) == (
        "fo-fallback", "mock-large", "2")
    s = gw.stream("/v1/chat/completions", chat("fo-dead", stream=True))
    assert_clean_stream(s)


def test_nothing_usable_503_retry_after(gw, fo_mocks):
    r = gw.post("/v1/chat/completions", chat("fo-nothing"))
    assert r.status == 503, r.body[:300]
    assert int(r.header("Retry-After")) >= 1
    err = r.json()["error"]
    assert err["type"] and err["message"]
    o = gw.post("/api/chat", {"model": "fo-nothing", "stream": False,
                              "messages": [{"role": "user", "content": "hi"}]})
    assert o.status == 503
    assert int(o.header("Retry-After")) >= 1
    assert isinstance(o.json()["error"], str)


def test_ollama_front_fails_over(gw, fo_mocks):
    body = {"model": "fo-f500", "stream": False,
            "messages": [{"role": "user", "content": "hi"}]}
    r = gw.post("/api/chat", body)
    assert r.status == 200, r.body[:300]
    assert r.json()["message"]["content"]
    r = gw.post("/api/chat", dict(body, stream=True))
    assert r.status == 200
    lines = [json.loads(l) for l in r.body.splitlines() if l.strip()]
    assert lines[-1]["done"] is True and not any("error" in l for l in lines)


@pytest.mark.parametrize("model", ["fo-ollama", "fo-ollama-cut0"])
def test_ollama_dialect_fails_over(gw, fo_mocks, model):
    s = gw.stream("/v1/chat/completions", chat(model, stream=True))
    assert_clean_stream(s)
    r = gw.post("/v1/chat/completions", chat(model))
    assert r.status == 200, r.body[:300]
    assert r.json()["choices"][0]["message"]["content"]


def leader_and_follower(send, body):
    """The same request sent twice, the second 0.3 s after the first (so
    that it follows the first's fetch): (the leader's, the follower's)."""
    out = {}

    def ask(k):
        out[k] = send("/v1/chat/completions", body)

    lead = threading.Thread(target=ask, args=("leader",))
    lead.start()
    time.sleep(0.3)
    follow = threading.Thread(target=ask, args=("follower",))
    follow.start()
    lead.join(15)
    follow.join(15)
    return out["leader"], out["follower"]


def test_coalesced_follower_sees_the_answer_that_failed_over(gw, fo_mocks):
    """The leader's first member hangs; a follower of the same request waits
    on the leader, and both get the answer the healthy member made; the
    cache keeps that answer, not the failed attempt."""
    body = chat("fo-coal", content="coalesce me %f" % time.time(), temperature=0)
    a, b = leader_and_follower(gw.post, body)
    assert (a.status, b.status) == (200, 200), (a.body[:200], b.body[:200])
    assert a.header("X-LLM-Cache") == "MISS"
    assert b.header("X-LLM-Cache") == "COALESCED"
    assert a.json()["choices"] == b.json()["choices"]
    assert a.json()["system_fingerprint"] == "mock-fo-ok1"
    c = gw.post("/v1/chat/completions", body)
    assert c.header("X-LLM-Cache") == "HIT"
    assert c.json()["choices"] == a.json()["choices"]
    assert generations(fo_mocks["ok1"]) == 1


def test_stream_follower_sees_no_piece_of_the_failed_attempt(gw, fo_mocks):
    """A stream follower tails the leader's pieces as they come: the role
    chunk of the member that then stalled is never among them."""
    body = chat("fo-coal-stall", content="tail me %f" % time.time(),
                temperature=0, stream=True)
    a, b = leader_and_follower(gw.stream, body)
    assert b.headers.get("X-LLM-Cache") == "COALESCED"
    assert_clean_stream(a)
    assert_clean_stream(b)
    assert b.content() == a.content()


def test_cached_stream_holds_no_piece_of_the_failed_attempt(gw, fo_mocks):
    body = chat("fo-cache-cut0", content="cache me %f" % time.time(),
                temperature=0, stream=True)
    first = gw.stream("/v1/chat/completions", body)
    assert_clean_stream(first)
    assert first.headers.get("X-LLM-Cache") == "MISS"
    deadline = time.monotonic() + 5
    while True:
        second = gw.stream("/v1/chat/completions", body)
        if second.headers.get("X-LLM-Cache") == "HIT" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert second.headers.get("X-LLM-Cache") == "HIT"
    assert_clean_stream(second)
    assert second.content() == first.content()


def test_member_killed_under_load(gw, fo_mocks):
    """Requests in flight on a member that is killed before their first
    token: every plain one is answered by the other member; every stream
    either failed over before its first delta or ended with the error
    event."""
    mark = gw.log_mark()
    results = {}

    def plain(i):
        results[("plain", i)] = gw.post("/v1/chat/completions",
                                        chat("fo-victim", content=f"plain {i}"))

    def streamed(i):
        results[("stream", i)] = gw.stream("/v1/chat/completions",
                                           chat("fo-victim", content=f"stream {i}",
                                                stream=True))

    threads = [threading.Thread(target=fn, args=(i,))
               for i in range(6) for fn in (plain, streamed)]
    for t in threads:
        t.start()
    time.sleep(0.15)
    fo_mocks["victim"].proc.kill()
    for t in threads:
        t.join(20)
    assert len(results) == 12
    for (kind, i), r in results.items():
        if kind == "plain":
            assert r.status == 200, r.body[:300]
            continue
        assert r.status == 200
        last = r.chunks()[-1] if r.chunks() else {}
        if "error" in last:
            # Past its first delta when the member died: the error event.
            assert last["error"]["code"] == "upstream_stream_error", last
            assert r.content()
        else:
            assert_clean_stream(r)
    lines = gw.wait_log(lambda l: getattr(l, "model", None) == "fo-victim", mark, count=12)
    assert sum(1 for l in lines if l.attempts == "2") >= 1, [l.raw for l in lines]


def test_token_timeout_after_first_delta_ends_the_stream(gw, fo_mocks):
    """Past the commit point a stall is not retried: LLMTokenTimeout ends
    the stream with its error event, and the member is charged a timeout."""
    mark = gw.log_mark()
    t0 = time.monotonic()
    s = gw.stream("/v1/chat/completions", chat("fo-fslow", stream=True))
    took = time.monotonic() - t0
    assert s.status == 200
    assert s.content(), "the first token went out"
    last = s.chunks()[-1]
    assert last.get("error", {}).get("code") == "upstream_stream_error", last
    assert took < 1.9, took
    assert generations(fo_mocks["ok1"]) == 0
    assert last_line(gw, "fo-fslow", mark).attempts == "1"
    member = f"http://{H}:{fo_mocks['fslow'].port}"
    with open(gw.error_log) as f:
        assert f"attempt on member {member}: timeout-between-tokens" in f.read()


def test_attempts_are_bounded(gw, fo_mocks):
    """attempts=2 over two faulty members and a healthy standby: the
    standby is never asked, and the last attempt's error is the answer;
    attempts=3 reaches it."""
    mark = gw.log_mark()
    r = gw.post("/v1/chat/completions", chat("fo-two-bad"))
    assert r.status in (500, 429), r.body[:300]
    assert generations(fo_mocks["f500"]) == 1
    assert generations(fo_mocks["f429"]) == 1
    assert generations(fo_mocks["ok1"]) == 0
    assert last_line(gw, "fo-two-bad", mark).attempts == "2"
    r = gw.post("/v1/chat/completions", chat("fo-three"))
    assert r.status == 200, r.body[:300]
    assert r.header("X-Mock-Backend") == "fo-ok1"
    assert last_line(gw, "fo-three", mark).attempts == "3"



def test_no_attempt_starts_after_the_time_bound(gw, fo_mocks):
    """time=1: the first attempt timed out after 2 s, so no other starts;
    the client gets the gateway's timeout in the API's shape."""
    mark = gw.log_mark()
    r = gw.post("/v1/chat/completions", chat("fo-late"))
    assert r.status == 504, r.body[:300]
    assert r.json()["error"]["type"]
    assert generations(fo_mocks["ok1"]) == 0
    assert last_line(gw, "fo-late", mark).attempts == "1"


def test_route_without_usable_member_goes_to_fallback_at_once(gw, fo_mocks):
    mark = gw.log_mark()
    r = gw.post("/v1/chat/completions", chat("fo-disabled"))
    assert r.status == 200, r.body[:300]
    assert r.header("X-Mock-Backend") == "fo-ok2"
    assert generations(fo_mocks["f500"]) + generations(fo_mocks["f429"]) == 0
    line = last_line(gw, "fo-disabled", mark)
    # Straight to the fallback: its first attempt is the request's first.
    assert (line.route, line.attempts) == ("fo-fallback", "1")


def test_route_back_once_its_member_is(gw, fo_mocks, workdir, later_port):
    """A route whose one member was down goes to its fallback; once the
    member listens again and its retry= is over, the route is its own."""
    r = gw.post("/v1/chat/completions", chat("fo-later"))
    assert (r.status, r.header("X-Mock-Backend")) == (200, "fo-ok2")
    m = env.MockBackend(env.mockllm_path(), workdir, "fo-later", later_port,
                        MOCK_ARGS).start()
    try:
        time.sleep(1.2)
        r = gw.post("/v1/chat/completions", chat("fo-later"))
        assert (r.status, r.header("X-Mock-Backend")) == (200, "fo-later")
    finally:
        m.stop()


def test_failover_after_graceful_restart(gw, fo_mocks):
    """mod_proxy's pre_request hook is looked up again in each generation
    (mod_proxy is loaded again on a restart)."""
    before = set(gw.children())
    subprocess.run(gw.cmd("-k", "graceful"), check=True, capture_output=True,
                   env=env.sanitizer_env(gw.dir))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        kids = set(gw.children())
        if kids and not kids & before:
            break
        time.sleep(0.1)
    assert not set(gw.children()) & before, "the children were not replaced"
    for fault in ("f500", "fcut0"):
        r = gw.post("/v1/chat/completions", chat("fo-" + fault))
        assert (r.status, r.header("X-Mock-Backend")) == (200, "fo-ok1"), r.body[:200]
