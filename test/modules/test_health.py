# Backend health: passive checks open a member's breaker (mod_proxy's worker
# flags, seen by balancer-manager), the member comes back through half-open.
import json
import os
import random
import re
import signal
import threading
import time

import pytest

import llmgw_env as env
from llmgw_env import chat_body, proxy, route

BACKOFF_MS = 1000
MANAGER = """<Location "/balancer-manager">
    SetHandler balancer-manager
</Location>"""


def health_config(p1, p2, lbmethod="byrequests", extra=""):
    return f"""\
LLMCache off
LLMBreaker on fails=3 successes=2 backoff={BACKOFF_MS} backoff-max={BACKOFF_MS}
{proxy("hb", p1, p2, lbmethod=lbmethod)}
{route("h-small", "hb")}
{MANAGER}
{extra}"""


@pytest.fixture
def pair(workdir):
    """Two mocks of one balancer, restartable on their ports."""
    p1, p2 = env.PORTS.take(2)
    started = {}

    def start(name, port, *args):
        if name in started:
            started[name].stop()
        started[name] = env.MockBackend(
            env.mockllm_path(), workdir, f"{name}-{port}", port,
            ["--models", "mock-small,mock-large", *args]).start()
        return started[name]

    try:
        yield start, p1, p2
    finally:
        for m in started.values():
            m.stop()


@pytest.fixture
def gateway(request, workdir, ports):
    made = []

    def make(name, extra):
        gen = env.serve_gateway(request, workdir, ports, name, extra)
        made.append(gen)
        return next(gen)

    yield make
    for gen in made:
        for _ in gen:       # its teardown: stop, check for crashes
            pass


def worker_flags(gw, port, balancer="hb"):
    """The status balancer-manager shows for the member on PORT."""
    r = gw.get("/balancer-manager")
    assert r.status == 200, r.body[:300]
    text = r.body.decode()
    section = text[text.index(f">balancer://{balancer}</a>"):]
    m = re.search(rf">http://{env.HOST}:{port}</a></td>((?:<td>[^<]*</td>){{6}})", section)
    assert m, section[:3000]
    return re.findall(r"<td>([^<]*)</td>", m.group(1))[4].split()


def served_by(r):
    return r.header("X-Mock-Backend", "").split("-")[0]


def settled(gw, path, body):
    """A request, once its outcome is in the health table: the gateway
    notes it before the access log line (the client has the answer a
    moment before either), so the next request sees it."""
    mark = gw.log_mark()
    r = gw.post(path, body)
    assert gw.wait_log(lambda l: True, since=mark, count=1), "no access log line"
    return r


def chat(gw, n=1, model="h-small"):
    return [settled(gw, "/v1/chat/completions", chat_body(model, max_tokens=2))
            for _ in range(n)]


def chat_line(line):
    """A chat request's access-log line: the start-up's GET /server-status
    is logged after its answer, so it may come after a test's mark."""
    return line.request.startswith("POST /v1/chat/completions")


def tried(gw, n, model="h-small", **kw):
    """N requests one after the other: (status, the mock that served,
    attempts) of each, the attempts from the access log. Failover retries
    a failing member's answer on the other one, so the client sees 200
    either way: the attempts say whether the balancer sent it to the
    failing member first (2) or the breaker kept it away (1)."""
    out = []
    for _ in range(n):
        mark = gw.log_mark()
        r = gw.post("/v1/chat/completions", chat_body(model, max_tokens=2, **kw))
        line = gw.wait_log_one(chat_line, since=mark)
        out.append((r.status, served_by(r), line.attempts))
    return out


def bad_and_good(pair, gateway, gw_name, fault, name="bad"):
    """The pair's first mock (NAME) answers with FAULT, its second ("good")
    well, behind a gateway of health_config: (the first mock, the gateway)."""
    start, p1, p2 = pair
    bad = start(name, p1, "--fault", fault)
    start("good", p2)
    return bad, gateway(gw_name, health_config(p1, p2))


def test_failing_member_opens_and_others_serve(pair, gateway):
    start, p1, p2 = pair
    bad, gw = bad_and_good(pair, gateway, "gw-health-open", "500")
    first = tried(gw, 6)
    # byrequests alternates: the bad member fails its three in a row (each
    # counted once: failover's report, not mod_proxy's hooks too), every
    # one of them served by the good member on a second attempt; then it
    # is open and the balancer no longer picks it.
    assert first == [(200, "good", "2"), (200, "good", "1")] * 3 \
        or first == [(200, "good", "1"), (200, "good", "2")] * 3, first
    assert "HcFl" in worker_flags(gw, p1)
    assert "HcFl" not in worker_flags(gw, p2)
    gens = bad.stats()["by_path"].get("/v1/chat/completions", 0)
    assert gens == 3, bad.stats()
    after = tried(gw, 6)
    assert after == [(200, "good", "1")] * 6, after
    assert bad.stats()["by_path"].get("/v1/chat/completions", 0) == gens, \
        "the open member was sent requests"


@pytest.mark.parametrize("fault, stream", [
    ("reset", False),       # seen by mod_proxy: no answer
    ("cut-first", True),    # seen by failover only: cut before the delta
    ("500", True),          # seen by both: a 5xx before the stream
])
def test_an_attempt_failure_counts_once(pair, gateway, fault, stream):
    """Whichever part sees the failure, the breaker counts it once: with
    fails=3 the member opens after its third failed attempt, not before."""
    start, p1, p2 = pair
    bad, gw = bad_and_good(pair, gateway, "gw-health-once", fault)
    got = tried(gw, 8, stream=stream)
    assert all(g[:2] == (200, "good") for g in got), got
    # The balancer alternates while the bad member is closed.
    assert [a for *_, a in got] in (["2", "1"] * 3 + ["1", "1"],
                                   ["1", "2"] * 3 + ["1", "1"]), got
    assert bad.stats()["by_path"].get("/v1/chat/completions", 0) == 3
    assert "HcFl" in worker_flags(gw, p1)


def test_a_stream_cut_after_its_first_delta_counts_as_a_failure(pair, gateway):
    """Past its commit point an attempt is the client's (not retried), and
    a break after it is the attempt's one outcome: not the success of its
    commit point too (that would reset the count each time)."""
    start, p1, p2 = pair
    _, gw = bad_and_good(pair, gateway, "gw-health-cut", "cut")
    got = tried(gw, 10, stream=True)
    assert all(g[0] == 200 and g[2] == "1" for g in got), got
    assert [m for _, m, _ in got] in (["bad", "good"] * 3 + ["good"] * 4,
                                     ["good", "bad"] * 3 + ["good"] * 4), got
    assert "HcFl" in worker_flags(gw, p1)


def test_route_all_open_goes_to_its_fallback(pair, gateway):
    """A route whose only member is open is served by its LLMFallback
    route at once: the open member is not asked, nor waited for."""
    start, p1, p2 = pair
    bad = start("bad", p1, "--fault", "500")
    start("good", p2)
    gw = gateway("gw-health-fallback", f"""\
LLMCache off
LLMBreaker on fails=3 successes=2 backoff=20000 backoff-max=20000
{proxy("one", p1)}
{proxy("fb", p2)}
{route("h-one", "one", "LLMFallback h-fb")}
{route("h-fb", "fb", model="mock-large")}
{MANAGER}
""")
    lines = []
    for i in range(6):
        mark = gw.log_mark()
        t0 = time.monotonic()
        r = gw.post("/v1/chat/completions", chat_body("h-one", max_tokens=2))
        took = time.monotonic() - t0
        assert (r.status, served_by(r)) == (200, "good"), r.body[:300]
        lines.append(gw.wait_log_one(chat_line, since=mark))
        assert took < 1.0, (i, took)
    assert all(l.route == "h-fb" for l in lines), [l.raw for l in lines]
    # Three failures open it; from then on nothing reaches it.
    assert bad.stats()["by_path"].get("/v1/chat/completions", 0) == 3
    assert worker_flags(gw, p1, "one") == ["Init", "HcFl"]


def test_member_recovers_half_open_then_closed(pair, gateway):
    start, p1, p2 = pair
    bad, gw = bad_and_good(pair, gateway, "gw-health-recover", "500")
    tried(gw, 6)
    assert "HcFl" in worker_flags(gw, p1)
    # Still failing after the back-off: its trial (the one request that
    # reached it, retried on the good member) opens it again.
    time.sleep(BACKOFF_MS / 1000 + 0.2)
    sent = bad.stats()["by_path"].get("/v1/chat/completions", 0)
    got = tried(gw, 4)
    assert all(g[:2] == (200, "good") for g in got), got
    assert [a for *_, a in got].count("2") == 1, got
    assert bad.stats()["by_path"].get("/v1/chat/completions", 0) == sent + 1
    assert "HcFl" in worker_flags(gw, p1)
    # Back healthy: after the back-off, two trial successes close it.
    start("bad", p1)
    time.sleep(BACKOFF_MS / 1000 + 0.2)
    got = tried(gw, 8)
    assert all(s == 200 and a == "1" for s, _, a in got), got
    assert [m for _, m, _ in got].count("bad") >= 3, got
    assert "HcFl" not in worker_flags(gw, p1)
    with open(gw.error_log) as f:
        log = f.read()
    name = f"http://{env.HOST}:{p1}"
    assert re.search(rf"member {re.escape(name)}: breaker closed -> open", log), log[-3000:]
    assert re.search(rf"member {re.escape(name)}: breaker half-open -> open", log), log[-3000:]
    assert re.search(rf"member {re.escape(name)}: breaker half-open -> closed", log), log[-3000:]


def test_busy_member_never_opens(pair, gateway):
    start, p1, p2 = pair
    busy, gw = bad_and_good(pair, gateway, "gw-health-busy", "429", "busy")
    got = tried(gw, 8)
    # Its 429s are retried on the other member, and it stays in: the
    # balancer keeps sending it every other request.
    assert all(g[:2] == (200, "good") for g in got), got
    assert [a for *_, a in got].count("2") == 4, got
    assert busy.stats()["by_path"].get("/v1/chat/completions", 0) == 4
    assert "HcFl" not in worker_flags(gw, p1)


def probe_config(p1, p2, extra=""):
    """Probes of a llama.cpp balancer, no passive checks (LLMBreaker off)."""
    return f"""\
LLMCache off
{proxy("hb", p1, p2)}
{route("h-small", "hb dialect=llamacpp",
       "LLMHealthCheck on interval=100 timeout=1000")}
{MANAGER}
{extra}"""


def wait_for(pred, timeout=5.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


def test_loading_member_is_routed_around_not_down(pair, gateway):
    start, p1, p2 = pair
    llama = ["--flavor", "llamacpp", "--slots", "4", "--preload", "mock-small"]
    loading = start("loading", p1, *llama, "--load-ms", "4000")
    start("ready", p2, *llama)
    gw = gateway("gw-health-loading", probe_config(p1, p2))
    assert wait_for(lambda: {served_by(r) for r in chat(gw, 4)} == {"loading", "ready"})
    # A cold load of another model: llama.cpp's /health says 503 meanwhile.
    t = threading.Thread(target=lambda: env.request(
        p1, "POST", "/v1/chat/completions", chat_body("mock-large", max_tokens=1), timeout=30))
    t.start()
    try:
        assert wait_for(lambda: "Drn" in worker_flags(gw, p1)), worker_flags(gw, p1)
        assert "HcFl" not in worker_flags(gw, p1)
        gens = loading.stats()["generations"]
        got = [(r.status, served_by(r)) for r in chat(gw, 6)]
        assert got == [(200, "ready")] * 6, got
        assert loading.stats()["generations"] == gens
        assert "HcFl" not in worker_flags(gw, p1), "a loading member was marked down"
    finally:
        t.join(30)
    # Loaded: it is back.
    assert wait_for(lambda: "Drn" not in worker_flags(gw, p1)), worker_flags(gw, p1)
    assert {served_by(r) for r in chat(gw, 4)} == {"loading", "ready"}


def test_probes_take_a_dead_member_out_and_back(pair, gateway):
    start, p1, p2 = pair
    llama = ["--flavor", "llamacpp", "--slots", "4"]
    dead = start("dead", p1, *llama)
    start("alive", p2, *llama)
    gw = gateway("gw-health-probes", probe_config(p1, p2))
    dead.stop()
    # Three failed probes (100 ms apart) open it: no request is sent there.
    assert wait_for(lambda: "HcFl" in worker_flags(gw, p1)), worker_flags(gw, p1)
    got = [(r.status, served_by(r)) for r in chat(gw, 6)]
    assert got == [(200, "alive")] * 6, got
    # Back: after the back-off (1 s) the probes' answers close it.
    start("dead", p1, *llama)
    assert wait_for(lambda: worker_flags(gw, p1) == ["Init", "Ok"], timeout=8), \
        worker_flags(gw, p1)
    assert "dead" in {served_by(r) for r in chat(gw, 4)}
    with open(gw.error_log) as f:
        log = f.read()
    assert f"member http://{env.HOST}:{p1}: breaker half-open -> closed after probe" in log, \
        log[-3000:]


@pytest.mark.parametrize("snippet, message", [
    ("LLMHealthCheck on\n", "only allowed inside <LLMRoute>"),
    ('<LLMRoute "hc-x">\n    LLMBackend balancer://be\n    LLMHealthCheck on probe=nope\n'
     '</LLMRoute>\n', "LLMHealthCheck probe: unknown 'nope'"),
    ('<LLMRoute "hc-y">\n    LLMBackend balancer://be\n    LLMHealthCheck on interval=0\n'
     '</LLMRoute>\n', "LLMHealthCheck interval"),
    ("LLMBreaker on fails=0\n", "LLMBreaker fails"),
    ("LLMBreaker maybe\n", "LLMBreaker"),
    ('<LLMRoute "cap-m">\n    LLMBackend balancer://be\n    LLMCapacity max=2 models=9\n'
     '</LLMRoute>\n', "LLMCapacity models"),
    ('<LLMRoute "cap-h">\n    LLMBackend balancer://be\n    LLMCapacity max=2 hold=soon\n'
     '</LLMRoute>\n', "LLMCapacity hold"),
])
def test_health_directives_refused(config_test, snippet, message):
    rc, out, _, _, _ = config_test(snippet)
    assert rc != 0 and message in out, out


def affinity_config(p1, p2, lbmethod):
    return f"""\
LLMCache off
{proxy("aff", p1, p2, lbmethod=lbmethod)}
{route("aff-small", "aff")}
{route("aff-large", "aff", model="mock-large")}
"""


def test_affinity_keeps_a_model_where_it_is_loaded(pair, gateway):
    # Each member holds one model at a time; a cold load costs 200 ms.
    start, p1, p2 = pair
    cold = ["--load-ms", "200", "--max-loaded", "1"]
    a, b = start("a", p1, *cold), start("b", p2, *cold)
    gw = gateway("gw-affinity", affinity_config(p1, p2, "llm_affinity"))
    where = {"aff-small": set(), "aff-large": set()}
    for model in ["aff-small", "aff-small", "aff-large", "aff-large"] * 4:
        r, = chat(gw, 1, model)
        assert r.status == 200, r.body
        where[model].add(served_by(r))
    # Each model stayed on one member: one cold load each, no switching.
    assert len(where["aff-small"]) == 1 and len(where["aff-large"]) == 1, where
    assert where["aff-small"] != where["aff-large"], where
    assert a.stats()["loads"] + b.stats()["loads"] == 2, (a.stats(), b.stats())


def test_affinity_sends_the_half_open_trial(pair, gateway):
    start, p1, p2 = pair
    start("bad", p1, "--fault", "500")
    start("other", p2)
    gw = gateway("gw-affinity-trial", f"""\
LLMCache off
LLMBreaker on fails=3 successes=2 backoff={BACKOFF_MS} backoff-max={BACKOFF_MS}
{proxy("one", p1, lbmethod="llm_affinity")}
{proxy("two", p2)}
{route("h-one", "one")}
{route("h-two", "two")}
{MANAGER}
""")
    one = lambda: chat(gw, 1, "h-one")[0]      # noqa: E731
    two = lambda: chat(gw, 1, "h-two")[0]      # noqa: E731
    assert [one().status for _ in range(3)] == [500] * 3
    assert worker_flags(gw, p1, "one") == ["Init", "HcFl"]
    assert one().status == 503      # no usable member
    start("bad", p1)
    time.sleep(BACKOFF_MS / 1000 + 0.2)
    assert two().status == 200      # a request brings the flags up to date
    # Half-open: drained for the stock lbmethods, the trial for llm_affinity.
    assert worker_flags(gw, p1, "one") == ["Init", "Drn", "Ok"]
    assert one().status == 200
    assert worker_flags(gw, p1, "one") == ["Init", "Drn", "Ok"]
    assert one().status == 200
    assert worker_flags(gw, p1, "one") == ["Init", "Ok"]


def capacity_config(p1, cap):
    return f"""\
LLMCache off
{proxy("cap", p1)}
{route("cap-small", "cap", f"LLMCapacity {cap}")}
"""


def slow_chats(gw, n, api="openai"):
    """N requests at once for a member that takes 1 s each; (response,
    seconds) in the order they were sent."""
    def one(_):
        t0 = time.monotonic()
        if api == "openai":
            r = gw.post("/v1/chat/completions", chat_body("cap-small", max_tokens=1))
        else:
            r = gw.post("/api/chat", {"model": "cap-small", "stream": False,
                                      "messages": [{"role": "user", "content": "hi"}]})
        return r, time.monotonic() - t0
    out = [None] * n
    ts = []
    for i in range(n):
        ts.append(threading.Thread(target=lambda i=i: out.__setitem__(i, one(i))))
        ts[-1].start()
        time.sleep(0.1)             # in this order
    for t in ts:
        t.join(30)
    return out


def test_capacity_queue_is_bounded_in_count(pair, gateway):
    start, p1, _ = pair
    member = start("slow", p1, "--ttft-ms", "1000")
    gw = gateway("gw-capacity-count", capacity_config(p1, "max=1 queue=1 wait=5000"))
    (first, t1), (second, t2), (third, t3) = slow_chats(gw, 3)
    assert first.status == 200 and second.status == 200, (first.body, second.body)
    assert t2 > 1.5, "the second request did not wait for the first"
    # No room in the queue: refused at once, in the API's shape.
    env.assert_openai_error(third, 429, code="backend_busy")
    assert third.header("Retry-After") == "1"
    assert t3 < 0.5, t3
    assert member.stats()["generations"] == 2


def test_capacity_queue_is_bounded_in_time(pair, gateway):
    start, p1, _ = pair
    member = start("slow", p1, "--ttft-ms", "1000")
    gw = gateway("gw-capacity-time", capacity_config(p1, "max=1 queue=4 wait=300"))
    (first, _), (second, t2) = slow_chats(gw, 2, api="ollama")
    assert first.status == 200, first.body
    assert second.status == 429, second.body
    assert "error" in second.json() and isinstance(second.json()["error"], str), second.body
    assert 0.25 < t2 < 0.9, t2
    assert member.stats()["generations"] == 1


def test_affinity_goes_where_the_probes_saw_the_model(pair, gateway):
    start, p1, p2 = pair
    cold = ["--load-ms", "300", "--max-loaded", "1"]
    a = start("a", p1, *cold, "--preload", "mock-large")
    b = start("b", p2, *cold, "--preload", "mock-small")
    conf = affinity_config(p1, p2, "llm_affinity").replace(
        "    LLMUpstreamModel mock-small\n",
        "    LLMUpstreamModel mock-small\n"
        "    LLMHealthCheck on probe=ollama interval=100\n")
    gw = gateway("gw-affinity-probed", conf)
    assert wait_for(lambda: a.stats()["by_path"].get("/api/ps", 0) >= 2
                    and b.stats()["by_path"].get("/api/ps", 0) >= 2)
    for model, member in (("aff-small", "b"), ("aff-large", "a")) * 3:
        r, = chat(gw, 1, model)
        assert r.status == 200, r.body
        assert served_by(r) == member, (model, served_by(r))
    assert a.stats()["loads"] + b.stats()["loads"] == 0


def test_affinity_keeps_the_most_asked_model_on_one_member(workdir, gateway):
    # No grouping (no models=): three models on two members that hold one
    # model at a time, so one of them serves two models in turns, eight
    # clients at once in a fixed mix (about 55, 27 and 18 %). The most
    # asked (aff-small) must stay where it loaded: a model loaded nowhere
    # goes where it displaces the least, not to the member serving
    # aff-small because the one switching models has more requests
    # waiting on its loads (nor while its probe does not list the model
    # being loaded); and that load does not push aff-small's requests
    # away. Its queue never grows (LLMCapacity max=8): it never spreads.
    p1, p2 = env.PORTS.take(2)
    models = "mock-small,mock-large,mock-third"
    cold = ["--models", models, "--load-ms", "200", "--max-loaded", "1",
            "--ttft-ms", "50"]
    a = env.MockBackend(env.mockllm_path(), workdir, f"a-{p1}", p1,
                        cold).start()
    b = env.MockBackend(env.mockllm_path(), workdir, f"b-{p2}", p2,
                        cold).start()
    cap = "LLMCapacity max=8"
    try:
        gw = gateway("gw-affinity-mixed", f"""\
LLMCache off
{proxy("aff", p1, p2, lbmethod="llm_affinity")}
{route("aff-small", "aff", cap, "LLMHealthCheck on probe=ollama interval=100")}
{route("aff-large", "aff", cap, model="mock-large")}
{route("aff-third", "aff", cap, model="mock-third")}
""")
        assert wait_for(lambda: a.stats()["by_path"].get("/api/ps", 0) >= 2
                        and b.stats()["by_path"].get("/api/ps", 0) >= 2)
        # aff-small first, alone: where it loads is then known (at once,
        # eight clients that know nothing would go as bybusyness sends
        # them, as requests to two children do in the same instant).
        first = {served_by(r) for r in chat(gw, 3, "aff-small")}
        assert len(first) == 1, first
        where = {"aff-small": list(first)}
        lock = threading.Lock()

        def client(i):
            rng = random.Random(i)
            for _ in range(8):
                model = rng.choices(["aff-small", "aff-large", "aff-third"],
                                    [55, 27, 18])[0]
                r = gw.post("/v1/chat/completions",
                            chat_body(model, max_tokens=2))
                assert r.status == 200, r.body
                with lock:
                    where.setdefault(model, []).append(served_by(r))

        ts = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        assert sum(map(len, where.values())) == 65, where
        small = set(where["aff-small"])
        loads = {"a": a.stats()["loads"], "b": b.stats()["loads"]}
        assert len(small) == 1, (where, loads)
        # aff-small loaded once; the other two take turns on the other.
        assert loads[small.pop()] == 1, (loads, where)
    finally:
        a.stop()
        b.stop()


def test_graceful_restart_keeps_an_open_breaker(pair, gateway):
    start, p1, p2 = pair
    bad = start("bad", p1, "--fault", "500")
    start("good", p2)
    conf = health_config(p1, p2).replace(
        f"backoff={BACKOFF_MS} backoff-max={BACKOFF_MS}", "backoff=20000 backoff-max=20000")
    gw = gateway("gw-health-graceful", conf)
    chat(gw, 6)
    assert "HcFl" in worker_flags(gw, p1)
    before = set(gw.children())
    os.kill(gw.proc.pid, signal.SIGUSR1)
    assert wait_for(lambda: not (set(gw.children()) & before), timeout=15), \
        "the old generation did not go"
    gens = bad.stats()["generations"]
    got = [(r.status, served_by(r)) for r in chat(gw, 6)]
    assert got == [(200, "good")] * 6, got
    assert bad.stats()["generations"] == gens
    assert "HcFl" in worker_flags(gw, p1)


def test_warmup_loads_the_model_before_any_request(pair, gateway):
    start, p1, p2 = pair
    cold = ["--load-ms", "300", "--max-loaded", "1"]
    a, b = start("a", p1, *cold), start("b", p2, *cold)
    gw = gateway("gw-warmup", f"""\
LLMCache off
{proxy("warm", p1, p2, lbmethod="llm_affinity")}
{route("warm-small", "warm dialect=ollama", "LLMHealthCheck on interval=100",
       "LLMWarmup on keep-alive=10m")}
""")
    # Loaded on one member, and only once, with no request for it yet.
    assert wait_for(lambda: a.stats()["loaded"] + b.stats()["loaded"] == ["mock-small"])
    time.sleep(0.5)
    assert a.stats()["loads"] + b.stats()["loads"] == 1
    assert a.stats()["generations"] + b.stats()["generations"] == 1
    warm = a if a.stats()["loaded"] else b
    assert json.loads(warm.last()["body"]) == {"model": "mock-small", "keep_alive": "10m"}
    # The first request finds it loaded there.
    r, = chat(gw, 1, "warm-small")
    assert r.status == 200, r.body
    assert served_by(r) == warm.name.split("-")[0]
    assert a.stats()["loads"] + b.stats()["loads"] == 1


def test_warmup_needs_the_ollama_dialect(config_test):
    rc, out, _, _, _ = config_test(
        '<LLMRoute "wx">\n    LLMBackend balancer://be\n    LLMUpstreamModel mock-small\n'
        '    LLMHealthCheck on\n    LLMWarmup on\n</LLMRoute>\n')
    assert rc != 0 and "LLMWarmup needs" in out, out


# ---- grouping by model (LLMCapacity models=N) ------------------------------

def grouping_config(p1, cap):
    """One member holding one model at a time, two routes (two models) on
    it, both with LLMCapacity CAP."""
    return f"""\
LLMCache off
{proxy("grp", p1, lbmethod="llm_affinity")}
{route("grp-x", "grp", f"LLMCapacity {cap}")}
{route("grp-y", "grp", f"LLMCapacity {cap}", model="mock-large")}
"""


def staggered(gw, plan):
    """PLAN: (seconds after the start, route, api) of requests sent each in
    its thread; (response, seconds from its start to its answer) each, in
    PLAN's order."""
    out = [None] * len(plan)

    def one(i, at, model, api):
        time.sleep(max(0.0, t0 + at - time.monotonic()))
        t = time.monotonic()
        if api == "openai":
            r = gw.post("/v1/chat/completions", chat_body(model, max_tokens=1))
        else:
            r = gw.post("/api/chat", {"model": model, "stream": False,
                                      "messages": [{"role": "user", "content": "hi"}]})
        out[i] = (r, time.monotonic() - t)

    t0 = time.monotonic()
    ts = [threading.Thread(target=one, args=(i, *p)) for i, p in enumerate(plan)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    return out


def hold_ms(r):
    return float(r.header("X-LLM-Hold-Ms", "0"))


def grouped(pair, gateway, name, load_ms, ttft_ms, cap, plan):
    """A one-model member (LOAD_MS to load, TTFT_MS to answer) behind a
    gateway of grouping_config(CAP) sent PLAN (see staggered): (the
    member, what staggered returns)."""
    start, p1, _ = pair
    member = start("one", p1, "--load-ms", str(load_ms), "--max-loaded", "1",
                   "--ttft-ms", str(ttft_ms))
    gw = gateway(name, grouping_config(p1, cap))
    return member, staggered(gw, plan)


def test_grouping_serves_a_batch_with_one_switch(pair, gateway):
    # X generates for 1 s; Y and X alternate meanwhile. Ungrouped, every
    # change of model is a load on the one-model member (X, Y, X, Y); the
    # gateway holds the Ys until X's last request leaves, then both Ys go
    # with one switch.
    plan = [(0.0, "grp-x", "openai"), (0.3, "grp-y", "openai"),
            (0.6, "grp-x", "openai"), (0.9, "grp-y", "openai")]
    member, got = grouped(pair, gateway, "gw-grouping", 200, 1000,
                          "max=8 queue=8 wait=30000 models=1 hold=30000", plan)
    (x1, _), (y1, ty1), (x2, _), (y2, _) = got
    for r in (x1, y1, x2, y2):
        assert r.status == 200, r.body[:300]
    assert member.stats()["loads"] == 2, member.stats()
    # X2 joined X's turn; the Ys waited in the gateway for X2 to finish
    # (at about 0.6 + 1.0 + 0.2 load s), released by the drain, not by
    # the hold bound or the wait (30 s).
    assert hold_ms(x2) == 0.0 and hold_ms(x1) == 0.0
    assert 900 < hold_ms(y1) < 4000, hold_ms(y1)
    assert 500 < hold_ms(y2) < hold_ms(y1), (hold_ms(y1), hold_ms(y2))
    assert ty1 < 6.0, ty1
    assert float(y1.header("X-Mock-Load-Ms", "0")) > 0


def test_grouping_bound_ends_a_busy_models_turn(pair, gateway):
    # X is asked for all the time; Y still gets its turn once X had the
    # member for hold (0.5 s): X's requests from then on wait for Y.
    plan = [(0.2 * i, "grp-x", "openai") for i in range(10)]
    plan.append((0.1, "grp-y", "openai"))
    member, got = grouped(pair, gateway, "gw-grouping-turn", 100, 400,
                          "max=8 queue=8 wait=30000 models=1 hold=500", plan)
    y, ty = got[-1]
    assert y.status == 200, y.body[:300]
    assert all(r.status == 200 for r, _ in got), [r.status for r, _ in got]
    # Y waited its turn (hold, then X's requests in flight: at most one
    # generation more), never the wait.
    assert 300 < hold_ms(y) < 1500, hold_ms(y)
    assert any(hold_ms(r) > 0 for r, _ in got[:-1]), "no X waited for Y"
    assert member.stats()["loads"] <= 3, member.stats()


def test_grouping_queue_is_bounded(pair, gateway):
    # X in flight; the first Y waits (the queue holds one) until the wait
    # ends: 429 in Ollama's shape; the second finds the queue full: 429 at
    # once, in OpenAI's.
    plan = [(0.0, "grp-x", "openai"), (0.2, "grp-y", "ollama"),
            (0.4, "grp-y", "openai")]
    member, got = grouped(pair, gateway, "gw-grouping-bound", 100, 1500,
                          "max=8 queue=1 wait=400 models=1 hold=30000", plan)
    (x, _), (y1, t1), (y2, t2) = got
    assert x.status == 200, x.body[:300]
    assert y1.status == 429, y1.body[:300]
    assert isinstance(y1.json().get("error"), str), y1.body
    assert 0.3 < t1 < 1.2, t1
    env.assert_openai_error(y2, 429, code="backend_busy")
    assert y2.header("Retry-After") == "1"
    assert t2 < 0.3, t2
    assert member.stats()["generations"] == 1
