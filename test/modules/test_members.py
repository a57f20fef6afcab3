# Balancer members changed at run time from the console (LLMManageFile):
# added through mod_proxy's growth slots and probed before they take
# traffic, reweighted, removed after a drain, seen by every child and kept
# across graceful restart, stop/start and kill -9; bad input refused whole.
import json
import os
import threading
import time

import pytest

import llmgw_env as env
from llmgw_env import chat_body
from test_console import ADMIN, Session, _load, console_conf, served_assets
from test_manage import HEADER, audit, state_dir, stop

MODEL = "grow-model"
GROW = "balancer://grow"
TIGHT = "balancer://tight"      # one growth slot


def url(m):
    return f"http://{env.HOST}:{m.port}"


@pytest.fixture(scope="module")
def pool(workdir):
    """Mocks of this file's own: m0 is grow's configured member, m1..m3 are
    added; `vllm` would serve traffic but fails a vLLM probe (no /metrics);
    slow0/slow1 answer after 150 ms, for requests in flight at a removal."""
    binary = env.mockllm_path()
    quick = ["--tps", "1000", "--ttft-ms", "2"]
    started = {}
    try:
        for name in ("m0", "m1", "m2", "m3", "vllm", "t0"):
            started[name] = env.MockBackend(binary, workdir, "mem-" + name,
                                            extra_args=quick).start()
        for name in ("slow0", "slow1"):
            started[name] = env.MockBackend(
                binary, workdir, "mem-" + name,
                extra_args=["--tps", "1000", "--ttft-ms", "150"]).start()
        yield started
    finally:
        for m in started.values():
            m.stop()


def members_conf(pool, path):
    return (f'LLMCache off\nLLMManageFile "{path}"\n'
            f'<Proxy "{GROW}">\n'
            f'    BalancerMember "{url(pool["m0"])}" retry=1\n'
            f'    ProxySet growth=3\n'
            f'</Proxy>\n'
            f'<Proxy "{TIGHT}">\n'
            f'    BalancerMember "{url(pool["t0"])}" retry=1\n'
            f'    ProxySet growth=1\n'
            f'</Proxy>\n'
            f'<Proxy "balancer://slowb">\n'
            f'    BalancerMember "{url(pool["slow0"])}" retry=1\n'
            f'    ProxySet growth=1\n'
            f'</Proxy>\n'
            f'<LLMRoute "{MODEL}">\n    LLMBackend {GROW}\n</LLMRoute>\n'
            f'<LLMRoute "slow-grow">\n    LLMBackend balancer://slowb\n'
            f'</LLMRoute>\n')


def gateway(request, workdir, ports, pool, name, extra=""):
    path = os.path.join(state_dir(workdir, name), "state.jsonl")
    gen = env.serve_gateway(request, workdir, ports, name,
                            _load("authz_host", "alias")
                            + console_conf(served_assets(workdir))
                            + members_conf(pool, path) + extra)
    g = next(gen)
    g.state = path
    for m in pool.values():
        m.reset()
    return gen, g


@pytest.fixture
def gm(request, workdir, ports, mocks, pool, uniq):
    """A gateway with the console, an empty LLMManageFile and the
    balancers above."""
    gen, g = gateway(request, workdir, ports, pool, f"members-{uniq}")
    yield g
    stop(gen)


@pytest.fixture
def gm_persist(request, workdir, ports, mocks, pool, uniq):
    """The same with BalancerPersist On: mod_proxy keeps its workers'
    state across a restart."""
    gen, g = gateway(request, workdir, ports, pool, f"members-p-{uniq}",
                     "BalancerPersist On\n")
    yield g
    stop(gen)


def status_json(g):
    r = g.get(f"{ADMIN}/status.json")
    assert r.status == 200, r.body
    return r.json()


def members(g, balancer=GROW):
    """The balancer's members as status.json shows them, by URL."""
    b = [b for b in status_json(g)["balancers"] if b["name"] == balancer]
    assert len(b) == 1, b
    return {m["name"]: m for m in b[0]["members"]}


def members_everywhere(g, n=12, balancer=GROW, rounds=5):
    """status.json over N new connections at once, in rounds until at
    least two children answered (at most ROUNDS): every answer's members of
    BALANCER; returns (answers, children that answered)."""
    answers, pids = [], set()
    for _ in range(rounds):
        mark = g.log_mark()
        got = [None] * n

        def one(i):
            got[i] = members(g, balancer)
        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert all(a is not None for a in got), got
        answers += got
        lines = g.wait_log(lambda l: "status.json" in l.request, since=mark,
                           count=n)
        pids |= {l.pid for l in lines}
        if len(pids) >= 2:
            break
    return answers, pids


def chat(g, n, model=MODEL, threads=4):
    """N requests to MODEL, THREADS at a time; their statuses."""
    out = []
    lock = threading.Lock()
    left = [n]

    def loop():
        while True:
            with lock:
                if not left[0]:
                    return
                left[0] -= 1
                i = left[0]
            r = g.post("/v1/chat/completions",
                       chat_body(model, content=f"request {i}", max_tokens=2))
            with lock:
                out.append((r.status, r.body))
    ts = [threading.Thread(target=loop) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert len(out) == n
    return out


def all_ok(results):
    bad = [(s, b[:200]) for s, b in results if s != 200]
    assert not bad, bad


def gens(m):
    return m.stats()["generations"]


def add(s, m, balancer=GROW, **kw):
    fields = {"do": "member_add", "nonce": s.nonce, "b": balancer, "w": url(m)}
    fields.update({k: str(v) for k, v in kw.items()})
    return s.post(fields)


def error_lines(g, tag):
    with open(g.error_log, errors="replace") as f:
        return [l for l in f if tag in l]


def wait_error_line(g, tag, text, timeout=10, count=1):
    """The error log's lines with TAG and TEXT, once there are COUNT."""
    deadline = time.monotonic() + timeout
    while True:
        found = [l for l in error_lines(g, tag) if text in l]
        if len(found) >= count:
            return found
        assert time.monotonic() < deadline, env.tail(g.error_log)
        time.sleep(0.1)


def state_lines(g):
    with open(g.state) as f:
        return [json.loads(l) for l in f.read().splitlines()[1:]]


# ---------------------------------------------------------------- adding

def test_added_member_takes_traffic_only_after_its_probe(gm, pool, workdir):
    s = Session(gm)
    late = env.MockBackend(env.mockllm_path(), workdir, "mem-late",
                           extra_args=["--tps", "1000"])
    try:
        # Nothing listens on its port yet: its probe cannot pass.
        r = s.post({"do": "member_add", "nonce": s.nonce, "b": GROW,
                    "w": url(late), "probe": "openai", "lbfactor": "1",
                    "timeout": "30"})
        assert r.status == 303, r.body
        answers, pids = members_everywhere(gm)
        assert len(pids) >= 2, pids
        for a in answers:
            assert list(a) == [url(pool["m0"]), url(late)], a
            assert a[url(late)]["hcfail"] and not a[url(late)]["usable"], a
        all_ok(chat(gm, 12))
        assert gens(pool["m0"]) == 12
        assert not [l for l in error_lines(gm, "LLMGW1812") if "passed" in l]
        late.start()
        wait_error_line(gm, "LLMGW1812", f"{url(late)} of {GROW}: probe "
                        "openai passed")
        answers, _ = members_everywhere(gm)
        assert all(a[url(late)]["usable"] for a in answers), answers
        pool["m0"].reset()
        all_ok(chat(gm, 20))
        # Every child sends it traffic now (byrequests: about half each).
        assert gens(late) >= 5 and gens(pool["m0"]) >= 5, \
            (gens(late), gens(pool["m0"]))
    finally:
        late.stop()


def test_member_failing_its_probe_never_gets_traffic(gm, pool):
    s = Session(gm)
    # It serves chats, but has no vLLM /metrics: a vllm probe fails.
    assert add(s, pool["vllm"], probe="vllm").status == 303
    deadline = time.monotonic() + 10
    while pool["vllm"].stats()["by_path"].get("/metrics", 0) < 2:
        assert time.monotonic() < deadline, pool["vllm"].stats()
        time.sleep(0.1)
    all_ok(chat(gm, 20))
    assert gens(pool["vllm"]) == 0
    assert gens(pool["m0"]) == 20
    m = members(gm)[url(pool["vllm"])]
    assert m["hcfail"] and not m["usable"], m


def test_member_without_probe_takes_traffic_at_once_in_every_child(gm, pool):
    s = Session(gm)
    assert add(s, pool["m1"], probe="none").status == 303
    # Right after the answer, over new connections to either child.
    all_ok(chat(gm, 24, threads=6))
    assert gens(pool["m1"]) >= 6, gens(pool["m1"])
    assert gens(pool["m0"]) >= 6, gens(pool["m0"])
    answers, pids = members_everywhere(gm)
    assert len(pids) >= 2, pids
    for a in answers:
        assert a[url(pool["m1"])]["usable"], a
    assert state_lines(gm) == [{"op": "member_add", "balancer": GROW,
                                "url": url(pool["m1"]), "lbfactor": 1,
                                "probe": "none"}], state_lines(gm)


# ---------------------------------------------------------------- weights

def split(g, pool, n=40):
    pool["m0"].reset()
    pool["m1"].reset()
    all_ok(chat(g, n, threads=1))
    return gens(pool["m0"]), gens(pool["m1"])


def test_reweight_changes_the_split(gm, pool):
    s = Session(gm)
    assert add(s, pool["m1"]).status == 303
    a, b = split(gm, pool)
    assert a + b == 40 and 15 <= b <= 25, (a, b)
    r = s.post({"do": "member_weight", "nonce": s.nonce, "b": GROW,
                "w": url(pool["m1"]), "lbfactor": "3"})
    assert r.status == 303, r.body
    answers, _ = members_everywhere(gm)
    assert all(x[url(pool["m1"])]["lbfactor"] == 300 for x in answers)
    a, b = split(gm, pool)
    # 3:1 by byrequests: 30 and 10, give or take the two children's turns.
    assert a + b == 40 and 26 <= b <= 34, (a, b)
    # The configured member too.
    r = s.post({"do": "member_weight", "nonce": s.nonce, "b": GROW,
                "w": url(pool["m0"]), "lbfactor": "9"})
    assert r.status == 303, r.body
    a, b = split(gm, pool)
    assert a + b == 40 and 26 <= a <= 34, (a, b)


# ---------------------------------------------------------------- removal

def test_remove_under_load_drains_without_a_failed_request(gm, pool):
    s = Session(gm)
    slow0, slow1 = pool["slow0"], pool["slow1"]
    assert add(s, slow1, balancer="balancer://slowb").status == 303
    results, stop_at = [], [time.monotonic() + 30]
    lock = threading.Lock()

    def loop(i):
        n = 0
        while time.monotonic() < stop_at[0] and n < 40:
            r = gm.post("/v1/chat/completions",
                        chat_body("slow-grow", content=f"load {i} {n}",
                                  max_tokens=2))
            n += 1
            with lock:
                results.append((r.status, r.body))
    ts = [threading.Thread(target=loop, args=(i,)) for i in range(6)]
    for t in ts:
        t.start()
    # Under load: both members serving, requests in flight on slow1.
    deadline = time.monotonic() + 10
    while gens(slow1) < 6 or gens(slow0) < 6:
        assert time.monotonic() < deadline, (gens(slow0), gens(slow1))
        time.sleep(0.05)
    r = s.post({"do": "member_remove", "nonce": s.nonce,
                "b": "balancer://slowb", "w": url(slow1)})
    assert r.status == 303, r.body
    removed_at = gens(slow1)
    time.sleep(1.0)
    stop_at[0] = 0
    for t in ts:
        t.join(60)
    all_ok(results)
    # What was in flight finished; nothing new came (a request picked just
    # before the drain flag may still arrive: at most one per thread).
    assert gens(slow1) <= removed_at + 6, (removed_at, gens(slow1))
    wait_error_line(gm, "LLMGW1813", f"{url(slow1)} of balancer://slowb")
    answers, _ = members_everywhere(gm, balancer="balancer://slowb")
    for a in answers:
        m = a[url(slow1)]
        assert m["drained"] and m["disabled"] and m["busy"] == 0, m
    slow1.reset()
    all_ok(chat(gm, 12, model="slow-grow"))
    assert gens(slow1) == 0


def test_remove_configured_member_and_take_it_back(gm, pool):
    s = Session(gm)
    assert add(s, pool["m1"]).status == 303
    r = s.post({"do": "member_remove", "nonce": s.nonce, "b": GROW,
                "w": url(pool["m0"])})
    assert r.status == 303, r.body
    wait_error_line(gm, "LLMGW1813", f"{url(pool['m0'])} of {GROW}")
    pool["m0"].reset()
    all_ok(chat(gm, 10))
    assert gens(pool["m0"]) == 0 and gens(pool["m1"]) == 10
    text = gm.get(f"{ADMIN}/changes.conf").body.decode()
    assert (f'# in <Proxy "{GROW}">, delete:\n'
            f'#   BalancerMember "{url(pool["m0"])}"\n') in text, text
    # Back: as configured again, nothing left in the file for it.
    assert add(s, pool["m0"]).status == 303
    m = members(gm)[url(pool["m0"])]
    assert m["usable"] and not m["drained"] and not m["disabled"], m
    assert [e["url"] for e in state_lines(gm)] == [url(pool["m1"])]
    a, b = split(gm, pool, 20)
    assert a >= 5 and b >= 5, (a, b)


# ---------------------------------------------------------------- refused

def test_post_without_nonce_adds_nothing(gm, pool):
    s = Session(gm)
    fields = {"do": "member_add", "b": GROW, "w": url(pool["m1"])}
    assert s.post(fields).status == 403
    assert s.post({**fields, "nonce": "0" * 64}).status == 403
    assert s.post({**fields, "nonce": s.nonce},
                  origin="http://evil.example").status == 403
    answers, _ = members_everywhere(gm, n=6)
    assert all(list(a) == [url(pool["m0"])] for a in answers), answers
    assert not os.path.exists(gm.state)
    all_ok(chat(gm, 6))
    assert gens(pool["m1"]) == 0


def test_bad_member_input_refused_nothing_changed(gm, pool):
    s = Session(gm)
    m1, t0 = url(pool["m1"]), url(pool["t0"])
    # tight's one growth slot, used.
    assert add(s, pool["m2"], balancer=TIGHT).status == 303
    before_state = state_lines(gm)
    bad = [
        ({"b": GROW, "w": f"{env.HOST}:{pool['m1'].port}"}, "is refused"),
        ({"b": GROW, "w": f"ftp://{env.HOST}:{pool['m1'].port}"}, "is refused"),
        ({"b": GROW, "w": url(pool["m0"])}, "is a member of balancer://grow already"),
        ({"b": TIGHT, "w": t0}, "already"),
        ({"b": GROW, "w": m1, "lbfactor": "0"}, "lbfactor must be"),
        ({"b": GROW, "w": m1, "lbfactor": "101"}, "lbfactor must be"),
        ({"b": "balancer://nope", "w": m1}, "no balancer 'balancer://nope'"),
        ({"b": TIGHT, "w": m1}, "growth"),
        ({"b": GROW, "w": m1, "probe": "carrier-pigeon"}, "probe"),
        ({"b": GROW, "w": m1, "timeout": "86401"}, "timeout"),
    ]
    for fields, why in bad:
        mark = len(audit(gm))
        r = s.post({"do": "member_add", "nonce": s.nonce, **fields})
        assert r.status == 409, (fields, r.status, r.body)
        line = audit(gm)[mark:]
        assert len(line) == 1 and "refused" in line[0] and why in line[0], \
            (fields, line)
    for fields, why in [
            ({"do": "member_weight", "b": GROW, "w": m1, "lbfactor": "5"},
             "is not a member"),
            ({"do": "member_weight", "b": GROW, "w": url(pool["m0"]),
              "lbfactor": "0"}, "lbfactor must be"),
            ({"do": "member_remove", "b": GROW, "w": m1}, "is not a member")]:
        mark = len(audit(gm))
        r = s.post({"nonce": s.nonce, **fields})
        assert r.status == 409, (fields, r.status, r.body)
        line = audit(gm)[mark:]
        assert len(line) == 1 and why in line[0], (fields, line)
    assert state_lines(gm) == before_state
    # A member added and removed holds its slot until a restart (mod_proxy
    # cannot free one): the state no longer names it, mod_proxy refuses.
    r = s.post({"do": "member_remove", "nonce": s.nonce, "b": TIGHT,
                "w": url(pool["m2"])})
    assert r.status == 303, r.body
    mark = len(audit(gm))
    assert add(s, pool["m1"], balancer=TIGHT).status == 409
    line = audit(gm)[mark:]
    assert len(line) == 1 and "no free BalancerGrowth slot left" in line[0], line
    assert state_lines(gm) == []
    answers, _ = members_everywhere(gm, n=6, balancer=TIGHT)
    assert all(list(a) == [t0, url(pool["m2"])] for a in answers), answers
    # Taken back, it has its slot still.
    assert add(s, pool["m2"], balancer=TIGHT).status == 303
    assert state_lines(gm) == before_state
    answers, _ = members_everywhere(gm, n=6)
    assert all(list(a) == [url(pool["m0"])] for a in answers), answers
    assert all(a[url(pool["m0"])]["lbfactor"] == 100 for a in answers)
    answers, _ = members_everywhere(gm, n=6, balancer=TIGHT)
    assert all(list(a) == [t0, url(pool["m2"])] for a in answers), answers


# ---------------------------------------------------------------- restarts

def test_member_changes_kept_across_restarts(gm, pool):
    s = Session(gm)
    m0, m1, m2, m3, t0 = (url(pool[k]) for k in ("m0", "m1", "m2", "m3", "t0"))
    for fields in ({"do": "member_add", "b": GROW, "w": m1, "lbfactor": "4",
                    "timeout": "20", "probe": "openai"},
                   {"do": "member_add", "b": GROW, "w": m2},
                   {"do": "member_remove", "b": GROW, "w": m2},
                   {"do": "member_weight", "b": GROW, "w": m0, "lbfactor": "2"},
                   {"do": "member_add", "b": GROW, "w": m3, "probe": "vllm"},
                   {"do": "member_remove", "b": TIGHT, "w": t0}):
        r = s.post({**fields, "nonce": s.nonce})
        assert r.status == 303, (fields, r.body)

    def check(after_restart):
        answers, pids = members_everywhere(gm, n=8)
        for a in answers:
            names = list(a)
            # m2, added then removed, is not made again at a start.
            assert names[:2] == [m0, m1] and m3 in names, names
            assert (m2 in names) == (not after_restart), names
            assert a[m0]["lbfactor"] == 200 and a[m1]["lbfactor"] == 400, a
            assert a[m3]["hcfail"] and not a[m3]["usable"], a
        # A configured member removed stays out: drained and disabled.
        for a in members_everywhere(gm, n=4, balancer=TIGHT)[0]:
            assert a[t0]["drained"] and a[t0]["disabled"], a
        # m1 passes its probe again after each start, then serves 4:2.
        wait_until_usable(m1)
        for k in ("m0", "m1", "m3"):
            pool[k].reset()
        all_ok(chat(gm, 30, threads=1))
        a, b = gens(pool["m0"]), gens(pool["m1"])
        assert a + b == 30 and 16 <= b <= 24 and gens(pool["m3"]) == 0, (a, b)

    def wait_until_usable(u):
        deadline = time.monotonic() + 10
        while not all(a[u]["usable"] for a in members_everywhere(gm, n=6)[0]):
            assert time.monotonic() < deadline, members(gm)
            time.sleep(0.2)

    check(False)
    kept = state_lines(gm)
    # m2, added and removed, is no difference from httpd.conf any more.
    assert [(e["op"], e["url"]) for e in kept] == [
        ("member_add", m1), ("member_weight", m0), ("member_add", m3),
        ("member_remove", t0)], kept
    # graceful
    gm.graceful_restart()
    check(True)
    # stop, start
    gm.stop()
    gm.start()
    check(True)
    # kill -9 of the parent and every child (listed before the parent dies)
    gm.kill_all()
    gm.start()
    check(True)
    # A slot m2 held is free again after a restart: one more add fits
    # (growth=3: m1, m3 and this one).
    s = Session(gm)
    assert add(s, pool["m2"]).status == 303


def test_changes_conf_lists_the_member_lines(gm, pool):
    s = Session(gm)
    m0, m1, m2 = url(pool["m0"]), url(pool["m1"]), url(pool["m2"])
    for fields in ({"do": "member_add", "b": GROW, "w": m1, "lbfactor": "7",
                    "timeout": "45", "probe": "none"},
                   {"do": "member_weight", "b": GROW, "w": m0, "lbfactor": "3"},
                   {"do": "member_add", "b": GROW, "w": m2, "probe": "ollama"}):
        assert s.post({**fields, "nonce": s.nonce}).status == 303, fields
    text = gm.get(f"{ADMIN}/changes.conf").body.decode()
    assert text == (
        f'# in <Proxy "{GROW}">:\n'
        f'BalancerMember "{m1}" lbfactor=7 timeout=45\n'
        f'# in <Proxy "{GROW}">, the member\'s line with:\n'
        f'BalancerMember "{m0}" lbfactor=3\n'
        f'# in <Proxy "{GROW}">:\n'
        f'BalancerMember "{m2}" lbfactor=1\n'
        f'# probe=ollama: LLMHealthCheck on probe=ollama in the routes of '
        f'{GROW}\n'), text
    st = status_json(gm)["manage"]
    assert [(c["kind"], c["url"], c["configured"], c["removed"],
             c["lbfactor"], c.get("timeout"), c.get("probe"))
            for c in st["changes"]] == [
        ("member", m1, False, False, 7, 45, "none"),
        ("member", m0, True, False, 3, None, None),
        ("member", m2, False, False, 1, None, "ollama")]
    assert st["conf"] == text


def test_with_balancer_persist_the_state_file_holds(gm_persist, pool, workdir):
    g = gm_persist
    s = Session(g)
    late = env.MockBackend(env.mockllm_path(), workdir, "mem-persist",
                           extra_args=["--tps", "1000"]).start()
    try:
        u, m0 = url(late), url(pool["m0"])
        r = s.post({"do": "member_add", "nonce": s.nonce, "b": GROW, "w": u,
                    "probe": "openai", "lbfactor": "2"})
        assert r.status == 303, r.body
        wait_error_line(g, "LLMGW1812", f"{u} of {GROW}: probe openai passed")
        for fields in ({"do": "member_weight", "b": GROW, "w": m0,
                        "lbfactor": "5"},
                       {"do": "member_remove", "b": GROW, "w": m0}):
            assert s.post({**fields, "nonce": s.nonce}).status == 303
        # What mod_proxy persists now: the member usable, m0 removed.
        ap = members(g)
        assert ap[u]["usable"] and ap[m0]["disabled"], ap
        # Its backend goes away over the restart: its probe must pass again
        # before it takes traffic, whatever mod_proxy restored.
        late.stop()
        g.graceful_restart()
        answers, _ = members_everywhere(g, n=6)
        for a in answers:
            assert list(a) == [m0, u], a
            assert a[u]["hcfail"] and not a[u]["usable"], a
            assert a[u]["lbfactor"] == 200 and a[m0]["lbfactor"] == 500, a
            assert a[m0]["disabled"] and a[m0]["drained"], a
        late.start()
        wait_error_line(g, "LLMGW1812", f"{u} of {GROW}: probe openai passed",
                        count=2)
        assert all(a[u]["usable"] for a in members_everywhere(g, n=6)[0])
    finally:
        late.stop()


def test_member_balancer_manager_added_is_a_duplicate(gm, pool):
    """A member added through balancer-manager is not in httpd.conf nor in
    the state file: the live balancer refuses it as a duplicate."""
    import re
    from urllib.parse import urlencode
    page = gm.get("/balancer-manager")
    assert page.status == 200
    # Each balancer has a nonce of its own, in its links.
    nonce = re.search(r"b=grow&(?:amp;)?[^'\"]*?nonce=([0-9a-fA-F-]+)",
                      page.body.decode()).group(1)
    r = gm.request("POST", "/balancer-manager",
                   urlencode({"b": "grow", "nonce": nonce, "b_wyes": "1",
                              "b_nwrkr": url(pool["m1"])}).encode(),
                   {"Content-Type": "application/x-www-form-urlencoded",
                    "Referer": gm.url("/balancer-manager")})
    assert r.status in (200, 302), r.body
    answers, _ = members_everywhere(gm, n=6)
    assert all(url(pool["m1"]) in a for a in answers), answers
    s = Session(gm)
    mark = len(audit(gm))
    assert add(s, pool["m1"]).status == 409
    line = audit(gm)[mark:]
    assert len(line) == 1 and "is a member of balancer://grow already" in \
        line[0], line
    assert not os.path.exists(gm.state)
    answers, _ = members_everywhere(gm, n=6)
    assert all(list(a) == [url(pool["m0"]), url(pool["m1"])]
               for a in answers), answers


# ---------------------------------------------------------------- health

# A back-off long enough for the checks while it is open, on a slow run.
BACKOFF = 8
BREAKER = (f"LLMBreaker on fails=3 successes=2 backoff={BACKOFF * 1000} "
           f"backoff-max={BACKOFF * 1000}\n")
AFF = "balancer://affg"


def health_conf(pool):
    """The breaker on, and affg: llm_affinity over m0 (mock-large loaded),
    probed (ollama), room for one member more."""
    return (BREAKER
            + f'<Proxy "{AFF}">\n'
            f'    BalancerMember "{url(pool["m0"])}" retry=1\n'
            f'    ProxySet growth=1 lbmethod=llm_affinity\n'
            f'</Proxy>\n'
            f'<LLMRoute "affg-small">\n    LLMBackend {AFF}\n'
            f'    LLMUpstreamModel mock-small\n'
            f'    LLMHealthCheck on probe=ollama interval=100\n'
            f'</LLMRoute>\n'
            f'<LLMRoute "affg-large">\n    LLMBackend {AFF}\n'
            f'    LLMUpstreamModel mock-large\n</LLMRoute>\n')


@pytest.fixture
def gh(request, workdir, ports, mocks, pool, uniq):
    """The members' gateway with the breaker and a probed llm_affinity
    balancer."""
    gen, g = gateway(request, workdir, ports, pool, f"members-h-{uniq}",
                     health_conf(pool))
    yield g
    stop(gen)


def health_everywhere(g, u, balancer=GROW):
    """Member U's entries in status.json over new connections, and the
    children that answered."""
    answers, pids = members_everywhere(g, n=12, balancer=balancer)
    return [a[u] for a in answers], pids


def wait_health(g, u, ok, balancer=GROW, timeout=10):
    """Until member U's entry satisfies OK in every answer of a round that
    at least two children answered."""
    deadline = time.monotonic() + timeout
    while True:
        got, pids = health_everywhere(g, u, balancer)
        if len(pids) >= 2 and all(m["health"] is not None and ok(m)
                                  for m in got):
            return got
        assert time.monotonic() < deadline, (pids, got)
        time.sleep(0.1)


def on_one_port(workdir, name):
    """A function that starts a mock (its extra ARGS) on one port, the
    same each time: a member's backend stopped and started again."""
    port = env.PORTS.take(1)[0]

    def start(*args):
        return env.MockBackend(env.mockllm_path(), workdir, f"{name}-{port}",
                               port, ["--tps", "1000", *args]).start()
    return start


# With a probe, the first probe's wait (HcFl) is over before the breaker's
# HcFl: the member's /v1/models answers while its chats fail, and its
# first probe must not take it back while it is open.
@pytest.mark.parametrize("probe", ["none", "openai"])
def test_added_member_gets_a_breaker_in_every_child(gh, pool, workdir,
                                                    probe):
    s = Session(gh)
    backend = on_one_port(workdir, "mem-br")
    late = backend()
    try:
        u = url(late)
        assert add(s, late, probe=probe).status == 303
        wait_health(gh, u, lambda m: m["health"]["circuit"] == "closed"
                    and m["usable"])
        all_ok(chat(gh, 8, threads=1))
        assert gens(late) >= 2, gens(late)
        # It fails now: three failures open its breaker (mod_proxy's HcFl,
        # in every child); the clients never see one (the other member
        # answers), and once open it is sent nothing.
        late.stop()
        late = backend("--fault", "500")
        all_ok(chat(gh, 12, threads=1))
        got = wait_health(gh, u, lambda m: m["health"]["circuit"] == "open")
        assert all(m["hcfail"] and not m["usable"] for m in got), got
        failed = gens(late)
        assert failed >= 3, failed
        all_ok(chat(gh, 6, threads=1))
        time.sleep(1.5)     # the members' watchdog probes once a second
        all_ok(chat(gh, 6, threads=1))
        assert gens(late) == failed, (failed, gens(late))
        passed = [l for l in error_lines(gh, "LLMGW1812")
                  if u in l and "passed" in l]
        assert len(passed) == (probe != "none"), passed
        wait_error_line(gh, "LLMGW0701", f"member {u}: breaker closed -> open")
        # Back: half-open after the back-off, closed after two successes.
        late.stop()
        late = backend()
        time.sleep(BACKOFF + 0.2)
        all_ok(chat(gh, 12, threads=1))
        got = wait_health(gh, u, lambda m: m["health"]["circuit"] == "closed"
                          and m["usable"])
        assert gens(late) >= 2, gens(late)
        wait_error_line(gh, "LLMGW0701",
                        f"member {u}: breaker half-open -> closed")
    finally:
        late.stop()


def test_added_member_removed_and_added_again_starts_closed(gh, pool,
                                                            workdir):
    s = Session(gh)
    backend = on_one_port(workdir, "mem-re")
    late = backend("--fault", "500")
    try:
        u = url(late)
        assert add(s, late, probe="none").status == 303
        all_ok(chat(gh, 12, threads=1))
        wait_health(gh, u, lambda m: m["health"]["circuit"] == "open")
        r = s.post({"do": "member_remove", "nonce": s.nonce, "b": GROW,
                    "w": u})
        assert r.status == 303, r.body
        wait_error_line(gh, "LLMGW1813", f"{u} of {GROW}")
        late.stop()
        late = backend()
        # Added again well before its back-off ends: a new member, closed
        # and taking traffic at once, in every child.
        assert add(s, late, probe="none").status == 303
        got, pids = health_everywhere(gh, u)
        assert len(pids) >= 2, pids
        assert all(m["health"]["circuit"] == "closed" and m["usable"]
                   and not m["hcfail"] for m in got), got
        all_ok(chat(gh, 10, threads=1))
        assert gens(late) >= 3, gens(late)
    finally:
        late.stop()


def test_added_member_steers_affinity_by_its_loaded_model(
        request, workdir, ports, mocks, pool, uniq):
    binary = env.mockllm_path()
    cold = ["--tps", "1000", "--load-ms", "300", "--max-loaded", "1"]
    a = env.MockBackend(binary, workdir, f"mem-aff-a-{uniq}",
                        extra_args=cold + ["--preload", "mock-large"]).start()
    b = env.MockBackend(binary, workdir, f"mem-aff-b-{uniq}",
                        extra_args=cold + ["--preload", "mock-small"]).start()
    gen = None
    try:
        conf = health_conf({**pool, "m0": a})
        gen, g = gateway(request, workdir, ports, pool, f"members-a-{uniq}",
                         conf)
        s = Session(g)
        assert add(s, b, balancer=AFF, probe="ollama").status == 303
        # Its probes (the route's, every 100 ms) saw what it has loaded.
        got = wait_health(
            g, url(b), lambda m: m["usable"] and any(
                x["name"].startswith("mock-small") and x["loaded"]
                for x in m["health"]["models"]), balancer=AFF)
        assert b.stats()["by_path"].get("/api/ps", 0) >= 2, b.stats()
        for model, member in (("affg-small", b), ("affg-large", a)) * 4:
            r = g.post("/v1/chat/completions",
                       chat_body(model, max_tokens=2))
            assert r.status == 200, r.body
            assert r.header("X-Mock-Backend", "").startswith(member.name), \
                (model, r.header("X-Mock-Backend"))
        assert a.stats()["loads"] + b.stats()["loads"] == 0, \
            (a.stats(), b.stats())
        # A graceful restart replays it from the state file: it has its
        # health entry again, probed.
        g.graceful_restart()
        wait_health(g, url(b), lambda m: m["usable"] and any(
            x["name"].startswith("mock-small") and x["loaded"]
            for x in m["health"]["models"]), balancer=AFF)
        r = g.post("/v1/chat/completions", chat_body("affg-small",
                                                     max_tokens=2))
        assert r.status == 200 and \
            r.header("X-Mock-Backend", "").startswith(b.name), r.body
        # Its route's probes go on (every 100 ms), not only its first.
        n = b.stats()["by_path"].get("/api/ps", 0)
        time.sleep(2.0)
        probed = b.stats()["by_path"].get("/api/ps", 0)
        assert probed >= n + 4, (n, probed)
        # Removed: it keeps its entry, and is probed no more.
        r = s.post({"do": "member_remove", "nonce": s.nonce, "b": AFF,
                    "w": url(b)})
        assert r.status == 303, r.body
        wait_error_line(g, "LLMGW1813", f"{url(b)} of {AFF}")
        time.sleep(0.3)
        n = b.stats()["by_path"].get("/api/ps", 0)
        time.sleep(1.0)
        assert b.stats()["by_path"].get("/api/ps", 0) == n, b.stats()
        wait_health(g, url(b), lambda m: m["drained"], balancer=AFF)
    finally:
        if gen:
            stop(gen)
        a.stop()
        b.stop()


def test_added_member_has_its_routes_capacity(request, workdir, ports, mocks,
                                              pool, uniq):
    binary = env.mockllm_path()
    slow = env.MockBackend(binary, workdir, f"mem-cap-{uniq}",
                           extra_args=["--tps", "1000", "--ttft-ms",
                                       "1000"]).start()
    gen = None
    try:
        conf = (f'<Proxy "balancer://capg">\n'
                f'    BalancerMember "{url(pool["m2"])}" retry=1\n'
                f'    ProxySet growth=1\n</Proxy>\n'
                f'<LLMRoute "capg-small">\n    LLMBackend balancer://capg\n'
                f'    LLMCapacity max=1 queue=1 wait=5000\n</LLMRoute>\n')
        gen, g = gateway(request, workdir, ports, pool, f"members-c-{uniq}",
                         conf)
        s = Session(g)
        assert add(s, slow, balancer="balancer://capg",
                   probe="none").status == 303
        # Only the member added serves: the configured one is removed.
        r = s.post({"do": "member_remove", "nonce": s.nonce,
                    "b": "balancer://capg", "w": url(pool["m2"])})
        assert r.status == 303, r.body
        wait_error_line(g, "LLMGW1813", f"{url(pool['m2'])} of balancer://capg")
        out = [None] * 3

        def one(i):
            t0 = time.monotonic()
            r = g.post("/v1/chat/completions",
                       chat_body("capg-small", content=f"cap {i}",
                                 max_tokens=1))
            out[i] = (r, time.monotonic() - t0)
        ts = []
        for i in range(3):
            ts.append(threading.Thread(target=one, args=(i,)))
            ts[-1].start()
            time.sleep(0.1)
        for t in ts:
            t.join(30)
        (first, _), (second, t2), (third, t3) = out
        assert first.status == 200 and second.status == 200, \
            (first.body, second.body)
        assert t2 > 1.5, "the second request did not wait for the first"
        env.assert_openai_error(third, 429, code="backend_busy")
        assert t3 < 0.5, t3
        assert gens(slow) == 2
    finally:
        if gen:
            stop(gen)
        slow.stop()
