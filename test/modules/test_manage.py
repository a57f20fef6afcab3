# Run-time changes (LLMManageFile): the state file read at start changes the
# routes every child serves (/v1/models, /api/tags, routing); a damaged file
# is moved aside whole and httpd.conf alone holds; a change httpd.conf no
# longer allows is left out with a warning and the rest kept.
import glob
import json
import os
import threading

import pytest

import llmgw_env as env
from llmgw_env import assert_openai_error, chat_body

# The gateway's configured names (test_routing.py), then what LLMDiscover
# learns from the backends.
CONFIGURED = ["mock-small", "small", "mock-large", "dead-model", "slow-model",
              "ollama-small", "llamacpp-small"]
DISCOVERED = ["disc-alpha", "disc-beta", "ollama-gamma"]

HEADER = '{"llmgw_manage":1}'

# "small" out of mock-small's route, "big" into mock-large's; a new route on
# balancer://mgr (a mock of its own, in httpd.conf but used by no route).
CHANGES = [
    {"op": "name_remove", "route": "mock-small", "name": "small"},
    {"op": "name_add", "route": "mock-large", "name": "big"},
    {"op": "route_add", "route": "fresh-model", "balancer": "balancer://mgr",
     "dialect": "ollama"},
    {"op": "name_add", "route": "fresh-model", "name": "fresh-alias"},
]
CHANGED = ["mock-small", "mock-large", "big", "dead-model", "slow-model",
           "ollama-small", "llamacpp-small", "fresh-model", "fresh-alias"]


@pytest.fixture(scope="module")
def mgr(workdir):
    """A mock that serves any model name, for balancer://mgr."""
    m = env.MockBackend(env.mockllm_path(), workdir, "mgr").start()
    yield m
    m.stop()


def state_dir(workdir, name):
    d = os.path.join(workdir, name + "-state")
    os.makedirs(d, exist_ok=True)
    os.chmod(d, 0o777)      # the children (www-data) write it
    return d


def write_state(path, lines):
    with open(path, "w") as f:
        f.write("".join(line + "\n" for line in lines))


def start(request, workdir, ports, mgr, name, lines):
    """A gateway whose LLMManageFile holds LINES (None: no file)."""
    path = os.path.join(state_dir(workdir, name), "state.jsonl")
    for old in glob.glob(path + "*"):
        os.unlink(old)
    if lines is not None:
        write_state(path, lines)
    gen = env.serve_gateway(request, workdir, ports, name,
                            f'LLMCache off\nLLMManageFile "{path}"\n'
                            f'<Proxy "balancer://mgr">\n'
                            f'    BalancerMember "http://{env.HOST}:{mgr.port}"\n'
                            f'</Proxy>\n')
    return gen, next(gen), path


def stop(gen):
    with pytest.raises(StopIteration):
        next(gen)


def error_log(gw, tag):
    with open(gw.error_log, errors="replace") as f:
        return [l for l in f if tag in l]


def ids(gw):
    r = gw.get("/v1/models")
    assert r.status == 200, r.body
    return [m["id"] for m in r.json()["data"]]


def tags(gw):
    r = gw.get("/api/tags")
    assert r.status == 200, r.body
    return [m["name"] for m in r.json()["models"]]


def test_state_at_start_changes_lists_and_routing(request, workdir, ports, mocks, mgr):
    gen, gw, _ = start(request, workdir, ports, mgr, "manage-start",
                       [HEADER] + [json.dumps(c) for c in CHANGES])
    try:
        # Every child: each of several requests may land on either one.
        for _ in range(6):
            assert ids(gw) == CHANGED + DISCOVERED
            assert tags(gw) == CHANGED + DISCOVERED
        r = gw.post("/v1/chat/completions", chat_body("small"))
        assert_openai_error(r, 404, code="model_not_found")
        assert "small" not in r.json()["error"]["message"].split(": ")[-1] \
            .rstrip(".").split(", "), r.body
        # An alias added: the route's own upstream name, its dialect.
        mocks["a"].reset()
        mocks["b"].reset()
        r = gw.post("/v1/chat/completions", chat_body("big", max_tokens=2))
        assert r.status == 200, r.body
        last = [m.last() for m in (mocks["a"], mocks["b"])
                if m.stats().get("requests")]
        assert len(last) == 1, last
        assert last[0]["path"] == "/v1/chat/completions", last
        assert json.loads(last[0]["body"])["model"] == "mock-large"
        # A route added, on Ollama's native API: its name and its alias go
        # upstream as the route's name.
        for name in ("fresh-model", "fresh-alias"):
            mgr.reset()
            r = gw.post("/v1/chat/completions", chat_body(name, max_tokens=2))
            assert r.status == 200, r.body
            assert r.json()["model"] == "fresh-model", r.body
            last = mgr.last()
            assert last["path"] == "/api/chat", last
            assert json.loads(last["body"])["model"] == "fresh-model", last
        r = gw.post("/api/chat", {"model": "fresh-alias", "stream": False,
                                  "messages": [{"role": "user", "content": "hi"}]})
        assert r.status == 200, r.body
    finally:
        stop(gen)


def test_damaged_state_moved_aside_config_holds(request, workdir, ports, mocks, mgr):
    lines = [HEADER, json.dumps(CHANGES[0]), '{"op":"name_add","route":']
    gen, gw, path = start(request, workdir, ports, mgr, "manage-bad", lines)
    try:
        assert ids(gw) == CONFIGURED + DISCOVERED
        assert not os.path.exists(path)
        aside = glob.glob(path + ".bad-*")
        assert len(aside) == 1, aside
        with open(aside[0]) as f:
            assert f.read() == "".join(l + "\n" for l in lines)
        logged = error_log(gw, "LLMGW1802")
        assert len(logged) >= 1 and "line 3" in logged[0], logged
    finally:
        stop(gen)


def test_change_config_no_longer_allows_left_out(request, workdir, ports, mocks, mgr):
    lines = [HEADER,
             json.dumps({"op": "route_add", "route": "gone-route",
                         "balancer": "balancer://gone"}),
             json.dumps({"op": "name_add", "route": "mock-small", "name": "tiny"})]
    gen, gw, path = start(request, workdir, ports, mgr, "manage-drop", lines)
    try:
        listed = ids(gw)
        assert listed == ["mock-small", "small", "tiny"] + CONFIGURED[2:] + DISCOVERED
        logged = error_log(gw, "LLMGW1801")
        assert len(logged) >= 1, logged
        assert "line 2" in logged[0] and "balancer://gone" in logged[0], logged
        # The file stays as it was: a later change writes it anew.
        with open(path) as f:
            assert f.read() == "".join(l + "\n" for l in lines)
    finally:
        stop(gen)


def test_without_a_file_config_alone(request, workdir, ports, mocks, mgr):
    gen, gw, path = start(request, workdir, ports, mgr, "manage-none", None)
    try:
        assert ids(gw) == CONFIGURED + DISCOVERED
        assert not os.path.exists(path)
    finally:
        stop(gen)


# ------------------------------------------------------- from the console

from test_console import (ADMIN, Session, _load, console_conf,  # noqa: E402
                          served_assets)


@pytest.fixture
def gwm(request, workdir, ports, mocks, mgr, uniq):
    """A gateway of its own with the console and an empty LLMManageFile."""
    name = f"manage-console-{uniq}"
    path = os.path.join(state_dir(workdir, name), "state.jsonl")
    gen = env.serve_gateway(request, workdir, ports, name,
                            _load("authz_host", "alias")
                            + console_conf(served_assets(workdir))
                            + f'LLMCache off\nLLMManageFile "{path}"\n'
                            f'<Proxy "balancer://mgr">\n'
                            f'    BalancerMember "http://{env.HOST}:{mgr.port}"\n'
                            f'</Proxy>\n')
    g = next(gen)
    g.state = path
    yield g
    stop(gen)


def audit(g, since=0):
    with open(g.error_log, errors="replace") as f:
        return [l for l in f.read().splitlines()[since:] if "LLMGW0610" in l]


def listed_everywhere(g, want, lacks=(), n=40):
    """N /v1/models on N connections at once: every answer lists WANT and
    none of LACKS; returns the children that answered."""
    mark = g.log_mark()
    answers = [None] * n

    def one(i):
        answers[i] = ids(g)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for a in answers:
        assert a is not None
        assert all(w in a for w in want), (want, a)
        assert not any(w in a for w in lacks), (lacks, a)
    lines = g.wait_log(lambda l: "/v1/models" in l.request, since=mark, count=n)
    return {l.pid for l in lines}


def test_change_shown_at_once_in_every_child(gwm, mgr):
    s = Session(gwm)
    r = s.post({"do": "name_add", "nonce": s.nonce, "route": "mock-small",
                "name": "runtime-alias"})
    assert r.status == 303, r.body
    assert r.header("Location").endswith(f"{ADMIN}/routes")
    # Right after the answer, on whichever child: no child lags behind.
    pids = listed_everywhere(gwm, ["runtime-alias"])
    assert len(pids) >= 2, pids
    assert "runtime-alias" in tags(gwm)
    r = gwm.post("/v1/chat/completions", chat_body("runtime-alias", max_tokens=2))
    assert r.status == 200, r.body
    assert audit(gwm)[-1].endswith("name_add mock-small runtime-alias"), audit(gwm)
    # A route of its own, then taken out again: gone everywhere.
    r = s.post({"do": "route_add", "nonce": s.nonce, "route": "fresh-model",
                "b": "balancer://mgr", "dialect": "openai"})
    assert r.status == 303, r.body
    listed_everywhere(gwm, ["runtime-alias", "fresh-model"])
    mgr.reset()
    r = gwm.post("/v1/chat/completions", chat_body("fresh-model", max_tokens=2))
    assert r.status == 200, r.body
    assert mgr.last()["path"] == "/v1/chat/completions"
    assert s.post({"do": "route_remove", "nonce": s.nonce,
                   "route": "fresh-model"}).status == 303
    listed_everywhere(gwm, ["runtime-alias"], lacks=["fresh-model"])
    r = gwm.post("/v1/chat/completions", chat_body("fresh-model", max_tokens=2))
    assert_openai_error(r, 404, code="model_not_found")
    with open(gwm.state) as f:
        assert f.read() == (HEADER + "\n" + json.dumps(
            {"op": "name_add", "route": "mock-small", "name": "runtime-alias"},
            separators=(",", ":")) + "\n")


def test_post_without_nonce_changes_nothing(gwm):
    s = Session(gwm)
    fields = {"do": "name_add", "route": "mock-small", "name": "no-nonce"}
    assert s.post(fields).status == 403
    assert s.post({**fields, "nonce": "0" * 64}).status == 403
    assert s.post({**fields, "nonce": s.nonce}, origin="http://evil.example").status == 403
    listed_everywhere(gwm, ["mock-small"], lacks=["no-nonce"], n=8)
    assert not os.path.exists(gwm.state)


BAD = [
    ({"do": "name_add", "route": "mock-small", "name": "bad\x1b[31mname"},
     "control character"),
    ({"do": "name_add", "route": "mock-small", "name": "gpt-4x"},
     "would shadow that route"),
    ({"do": "name_add", "route": "mock-large", "name": "small"},
     "is routed by route 'mock-small' already"),
    ({"do": "name_add", "route": "nope", "name": "x"}, "there is no route 'nope'"),
    ({"do": "name_add", "route": "mock-small", "name": "x" * 129}, "longer than 128"),
    ({"do": "name_remove", "route": "mock-small", "name": "mock-large"},
     "has no model name 'mock-large'"),
    ({"do": "route_add", "route": "r1", "b": "balancer://nope"},
     "no balancer 'balancer://nope'"),
    ({"do": "route_add", "route": "mock-large", "b": "balancer://mgr"},
     "there is a route 'mock-large' already"),
    ({"do": "route_remove", "route": "mock-small"}, "is in httpd.conf"),
    ({"do": "member_add", "b": "balancer://mgr", "w": "http://127.0.0.1:1",
      "lbfactor": "2x"}, "lbfactor is not a whole number"),
]


def test_bad_input_refused_nothing_changed(gwm):
    s = Session(gwm)
    before = ids(gwm)
    for fields, why in BAD:
        mark = len(audit(gwm))
        r = s.post({**fields, "nonce": s.nonce})
        assert r.status == 409, (fields, r.status, r.body)
        line = audit(gwm)[mark:]
        assert len(line) == 1 and "refused" in line[0] and why in line[0], \
            (fields, line)
        assert "\x1b" not in line[0]
    assert ids(gwm) == before
    assert not os.path.exists(gwm.state)


def test_changes_kept_across_restarts(gwm):
    s = Session(gwm)
    for fields in ({"do": "route_add", "route": "kept-route", "b": "balancer://mgr",
                    "dialect": "ollama"},
                   {"do": "name_add", "route": "kept-route", "name": "kept-alias"},
                   {"do": "name_remove", "route": "mock-small", "name": "small"}):
        assert s.post({**fields, "nonce": s.nonce}).status == 303, fields
    want, lacks = ["kept-route", "kept-alias"], ["small"]
    listed_everywhere(gwm, want, lacks, n=8)
    # graceful
    gwm.graceful_restart()
    listed_everywhere(gwm, want, lacks, n=8)
    # stop, start
    gwm.stop()
    gwm.start()
    listed_everywhere(gwm, want, lacks, n=8)
    # kill -9 of the parent and every child
    gwm.kill_all()
    gwm.start()
    listed_everywhere(gwm, want, lacks, n=8)
    r = gwm.post("/v1/chat/completions", chat_body("kept-alias", max_tokens=2))
    assert r.status == 200, r.body


def test_console_shows_what_differs_and_the_lines(gwm):
    s = Session(gwm)
    for fields in ({"do": "name_remove", "route": "mock-small", "name": "small"},
                   {"do": "route_add", "route": "shown-route", "b": "balancer://mgr"},
                   {"do": "name_add", "route": "shown-route", "name": "shown-alias"},
                   {"do": "name_add", "route": "mock-large", "name": "large-alias"}):
        assert s.post({**fields, "nonce": s.nonce}).status == 303, fields
    r = gwm.get(f"{ADMIN}/status.json")
    assert r.status == 200
    st = r.json()["manage"]
    assert st["file"] == gwm.state
    assert [(c["kind"], c.get("route"), c.get("name"), c["configured"], c["removed"])
            for c in st["changes"]] == [
        ("name", "mock-small", "small", True, True),
        ("route", "shown-route", None, False, False),
        ("name", "shown-route", "shown-alias", False, False),
        ("name", "mock-large", "large-alias", False, False)]
    r = gwm.get(f"{ADMIN}/changes.conf")
    assert r.status == 200 and r.content_type.startswith("text/plain")
    text = r.body.decode()
    assert text == st["conf"]
    assert text == (
        '# in <LLMRoute "mock-small" ...>: delete the argument "small"\n'
        '<LLMRoute "shown-route" "shown-alias">\n'
        '    LLMBackend balancer://mgr dialect=openai\n'
        '</LLMRoute>\n'
        '# in <LLMRoute "mock-large" ...>: add the argument "large-alias"\n')
    assert gwm.get(f"{ADMIN}/status.xml").status == 200
