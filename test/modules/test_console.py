# The admin console's machine-readable views against a gateway with traffic:
# /llm-admin/metrics (read with prometheus_client's text parser) and
# /llm-admin/status.json count exactly what the clients sent and got; the
# counters survive a graceful restart; Require keeps other clients out.
import hashlib
import json
import os
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from urllib.parse import urlencode

import pytest
from prometheus_client.parser import text_string_to_metric_families

import llmgw_env as env
from llmgw_env import chat_body

CHAT = "/v1/chat/completions"
ADMIN = "/llm-admin"


HTDOCS = os.path.join(env.REPO, "htdocs")


def _load(*mods):
    builtin = env.compiled_in_modules()
    return "".join(f'LoadModule {m}_module "{env.MODULES_DIR}/mod_{m}.so"\n'
                   for m in mods if f"mod_{m}.c" not in builtin)


def served_assets(workdir):
    """A copy of htdocs/ in the test's directory: httpd's children (run as
    www-data when root starts them) may not reach the checkout, which can
    sit below a directory only root may enter."""
    d = os.path.join(workdir, "console-htdocs")
    if not os.path.isdir(d):
        shutil.copytree(HTDOCS, d)
        for root, dirs, files in os.walk(d):
            os.chmod(root, 0o755)
            for f in files:
                os.chmod(os.path.join(root, f), 0o644)
    return d


def console_conf(htdocs):
    """The console's configuration, its assets served from HTDOCS."""
    return f"""\
Alias "{ADMIN}/assets" "{htdocs}"
<Directory "{htdocs}">
    Require all granted
</Directory>
<Location "{ADMIN}">
    SetHandler llm-admin
    Require ip 127.0.0.1
</Location>
<Location "{ADMIN}/assets">
    SetHandler none
</Location>
<Location "/llm-admin-locked">
    SetHandler llm-admin
    Require ip 192.0.2.1
</Location>
<Location "/balancer-manager">
    SetHandler balancer-manager
    Require ip 127.0.0.1
</Location>
"""


@pytest.fixture(scope="module")
def gwc(request, workdir, ports, mocks):
    """A gateway with the default shm cache and the console."""
    yield from env.serve_gateway(request, workdir, ports, "gw-console",
                                 _load("authz_host", "alias")
                                 + console_conf(served_assets(workdir)))


def metrics(g):
    """The metrics page parsed: {(name, frozenset(labels)): value}, and the
    families' types."""
    r = g.get(f"{ADMIN}/metrics")
    assert r.status == 200, r.body
    assert r.header("Content-Type").startswith("text/plain; version=0.0.4")
    samples, types = {}, {}
    for fam in text_string_to_metric_families(r.body.decode()):
        types[fam.name] = fam.type
        for s in fam.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in samples, f"sample twice: {key}"
            samples[key] = s.value
    return samples, types


def pick(samples, name, **labels):
    """The sum of NAME's samples whose labels include LABELS."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def status(g):
    r = g.get(f"{ADMIN}/status.json")
    assert r.status == 200, r.body
    assert r.content_type == "application/json"
    assert r.header("Cache-Control") == "no-store"
    return r.json()


def series(st, route, model):
    found = [m for m in st["models"] if m["route"] == route and m["model"] == model]
    assert len(found) <= 1
    return found[0] if found else None


def counted(g, total):
    """Waits until the gateway counted TOTAL requests in all: a request is
    counted at its end, after its client has the answer (as httpd logs it),
    so a client's next request may come first. Returns the status then."""
    deadline = time.monotonic() + 10
    while True:
        st = status(g)
        if st["total"]["requests"] >= total or time.monotonic() > deadline:
            return st
        time.sleep(0.05)


def usage_sum(answers):
    return (sum(a["usage"]["prompt_tokens"] for a in answers),
            sum(a["usage"]["completion_tokens"] for a in answers))


def traffic(g, model, uniq):
    """Sends a known mix for MODEL: two answers afresh, one miss and its hit,
    one refused request and one stream. Returns what the clients got."""
    got = []
    for i in range(2):
        r = g.post(CHAT, chat_body(model=model, content=f"afresh {uniq} {i}",
                                   temperature=1, max_tokens=5))
        assert r.status == 200, r.body
        got.append(r)
    det = chat_body(model=model, content=f"cached {uniq}", temperature=0,
                    max_tokens=7)
    miss = g.post(CHAT, det)
    hit = g.post(CHAT, det)
    assert (miss.header("X-LLM-Cache"), hit.header("X-LLM-Cache")) == ("MISS", "HIT")
    bad = g.post(CHAT, {"model": model, "messages": "not a list"})
    assert bad.status == 400, bad.body
    s = g.stream(CHAT, chat_body(model=model, content=f"stream {uniq}",
                                 stream=True, temperature=1, max_tokens=4,
                                 stream_options={"include_usage": True}))
    assert s.status == 200
    usage = [c for c in s.chunks() if c.get("usage")]
    assert usage, s.events
    return {"fresh": [r.json() for r in got] + [miss.json()],
            "hit": hit.json(), "stream_usage": usage[-1]["usage"]}


def test_metrics_and_status_count_what_clients_got(gwc, uniq):
    model = f"gpt-{uniq}"
    before, _ = metrics(gwc)
    st0 = status(gwc)
    got = traffic(gwc, model, uniq)
    prompt, completion = usage_sum(got["fresh"] + [got["hit"]])
    prompt += got["stream_usage"]["prompt_tokens"]
    completion += got["stream_usage"]["completion_tokens"]

    counted(gwc, st0["total"]["requests"] + 6)
    after, types = metrics(gwc)
    lab = {"route": "gpt-*", "model": model}
    assert pick(after, "llmgw_requests_total", status="200", **lab) == 5
    # Refused before its model was read, the 400 counts with empty labels.
    unread = {"route": "", "model": "", "status": "400"}
    assert (pick(after, "llmgw_requests_total", **unread)
            - pick(before, "llmgw_requests_total", **unread)) == 1
    assert pick(after, "llmgw_tokens_total", kind="prompt", **lab) == prompt
    assert pick(after, "llmgw_tokens_total", kind="completion", **lab) == completion
    assert pick(after, "llmgw_request_duration_seconds_count", **lab) == 5
    assert pick(after, "llmgw_request_duration_seconds_bucket", le="+Inf", **lab) == 5
    assert pick(after, "llmgw_ttft_seconds_count", **lab) == 1
    assert types["llmgw_request_duration_seconds"] == "histogram"
    assert types["llmgw_ttft_seconds"] == "histogram"
    assert types["llmgw_tokens"] == "counter"   # the parser drops _total
    for result, n in (("hit", 1), ("miss", 1), ("bypass", 3)):
        key = ("llmgw_cache_requests_total", frozenset({("result", result)}))
        assert after[key] - before.get(key, 0) == n, result
    saved = ("llmgw_cache_saved_tokens_total", frozenset())
    assert after[saved] - before.get(saved, 0) == got["hit"]["usage"]["total_tokens"]
    # Both members of balancer://be are up; their requests are the ones
    # that reached a backend: the 4 that were not the hit or the 400.
    for port in ("be_a", "be_b"):
        member = f"http://{env.HOST}:{gwc.ports[port]}"
        up = ("llmgw_backend_up",
              frozenset({("balancer", "balancer://be"), ("member", member)}))
        assert after[up] == 1
    served = (pick(after, "llmgw_member_requests_total", balancer="balancer://be")
              - pick(before, "llmgw_member_requests_total", balancer="balancer://be"))
    assert served == 4

    st = status(gwc)
    s = series(st, "gpt-*", model)
    assert s is not None and series(st0, "gpt-*", model) is None
    assert s["requests"] == 5 and s["errors"] == 0
    assert s["statuses"] == {"200": 5}
    assert (s["prompt_tokens"], s["completion_tokens"]) == (prompt, completion)
    assert s["cache"]["hit"] == 1 and s["cache"]["miss"] == 1
    assert s["saved_tokens"] == got["hit"]["usage"]["total_tokens"]
    assert st["total"]["requests"] - st0["total"]["requests"] == 6
    assert st["total"]["errors"] - st0["total"]["errors"] == 1
    assert st["last_minute"]["requests"] >= 6
    assert sum(st["chart"]["requests"]) >= 6
    route = [r for r in st["routes"] if r["name"] == "gpt-*"][0]
    assert route["backend"] == "balancer://be"
    assert route["traffic"]["requests"] >= 5
    be = [b for b in st["balancers"] if b["name"] == "balancer://be"][0]
    assert len(be["members"]) == 2
    assert all(m["usable"] and not m["drained"] for m in be["members"])
    assert st["cache"]["store"] == "shm"
    assert st["keys"] is None


def test_children_count_into_one_table(gwc, uniq):
    """Requests at once, over many connections, land in several children
    (ServerLimit 4): each is counted once, in one shared table. Bursts of
    40 until two children or more served them (the access log's %P)."""
    model = f"gpt-{uniq}"
    n0 = status(gwc)["total"]["requests"]
    mark = gwc.log_mark()
    tokens, sent, pids = 0, 0, set()

    def one(i):
        return lambda: gwc.post(CHAT, chat_body(model=model, content=f"c{i}",
                                                temperature=1, max_tokens=2))
    for burst in range(3):
        got = env.in_threads([one(i) for i in range(40)])
        assert all(not isinstance(r, Exception) and r.status == 200
                   for r in got), got
        tokens += sum(r.json()["usage"]["completion_tokens"] for r in got)
        sent += 40
        lines = gwc.wait_log(lambda l: l.fields.get("model") == model,
                             since=mark, count=sent)
        pids = {l.fields["pid"] for l in lines}
        if len(pids) >= 2:
            break
    assert len(pids) >= 2, f"{sent} requests, all in child {pids}"
    st = counted(gwc, n0 + sent)
    s = series(st, "gpt-*", model)
    assert s["requests"] == sent and s["statuses"] == {"200": sent}
    assert s["completion_tokens"] == tokens
    assert st["total"]["requests"] == n0 + sent


def test_counters_survive_graceful_restart(gwc, uniq):
    model = f"gpt-{uniq}"
    n = status(gwc)["total"]["requests"]
    r = gwc.post(CHAT, chat_body(model=model, temperature=1, max_tokens=3))
    assert r.status == 200
    st0 = counted(gwc, n + 1)
    gwc.graceful_restart()
    deadline = time.monotonic() + 10
    while True:
        try:
            st = status(gwc)
            break
        except (OSError, AssertionError):
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert st["restarts"] == st0["restarts"] + 1
    assert st["started"] == st0["started"]
    assert st["total"]["requests"] >= st0["total"]["requests"]
    assert series(st, "gpt-*", model)["requests"] == 1


def test_outside_require_is_refused(gwc):
    for page in ("/metrics", "/status.json", "/"):
        r = gwc.get(f"/llm-admin-locked{page}")
        assert r.status == 403, page


def test_unknown_page_and_method(gwc):
    assert gwc.get(f"{ADMIN}/nope").status == 404
    r = gwc.get(ADMIN)
    assert r.status == 301 and r.header("Location") == gwc.url(f"{ADMIN}/")
    r = gwc.request("PUT", f"{ADMIN}/status.json", b"{}")
    assert r.status == 405


class Texts(HTMLParser):
    """The text of a page, its elements' data-k values and its scripts."""

    def __init__(self):
        super().__init__()
        self.text, self.live, self.scripts, self.forms = [], {}, [], []
        self.inputs = []
        self._k = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "script":
            self.scripts.append(a.get("src"))
        if tag == "form":
            self.forms.append(a)
        if tag == "input":
            self.inputs.append((a.get("name"), a.get("value")))
        self._k = a.get("data-k")

    def handle_data(self, data):
        self.text.append(data)
        if self._k:
            self.live[self._k] = data
            self._k = None


def page(g, path):
    r = g.get(f"{ADMIN}/{path}")
    assert r.status == 200, r.body
    assert r.content_type == "text/html"
    assert "script-src 'self'" in r.header("Content-Security-Policy")
    p = Texts()
    p.feed(r.body.decode())
    return r, p


def test_pages_show_members_routes_and_names_as_text(gwc, uniq):
    evil = f"gpt-<script>alert('{uniq}')</script>"
    n = status(gwc)["total"]["requests"]
    r = gwc.post(CHAT, chat_body(model=evil, temperature=1, max_tokens=3))
    assert r.status == 200, r.body
    st = counted(gwc, n + 1)
    for path in ("", "backends", "routes", "keys", "cache", "index.html"):
        resp, p = page(gwc, path)
        assert b"<script>alert" not in resp.body, path
        assert p.scripts == [f"{ADMIN}/assets/console.js"], path
    _, p = page(gwc, "")
    assert evil in p.text
    i = [n for n, m in enumerate(st["models"]) if m["model"] == evil][0]
    assert p.live[f"models.{i}.model"] == evil
    assert p.live[f"models.{i}.requests"] == "1"
    _, p = page(gwc, "backends")
    for port in ("be_a", "be_b"):
        assert f"http://{env.HOST}:{gwc.ports[port]}" in p.text
    # A member that served is ready (the health part's word); one the
    # health part knows nothing of yet shows mod_proxy's ("up").
    assert "balancer://be" in p.text and "ready" in p.text
    _, p = page(gwc, "routes")
    # A route's names, one item each, with its Remove (none for a glob).
    names = "|".join(t for t in p.text if t.strip())
    assert "|gpt-*|gpt-*|Model name or alias|" in names, names
    assert "|mock-small|mock-small|Remove|small|Remove|" in names, names
    _, p = page(gwc, "keys")
    assert "No keys configured." in p.text
    # The assets are served from htdocs/ through the Alias.
    for asset in ("console.js", "console.css"):
        a = gwc.get(f"{ADMIN}/assets/{asset}")
        assert a.status == 200
        with open(os.path.join(HTDOCS, asset), "rb") as f:
            assert a.body == f.read()


def test_status_xml_is_the_model(gwc, uniq):
    model = f"gpt-{uniq}-x&y"
    n = status(gwc)["total"]["requests"]
    assert gwc.post(CHAT, chat_body(model=model, temperature=1,
                                    max_tokens=3)).status == 200
    st = counted(gwc, n + 1)
    r = gwc.get(f"{ADMIN}/status.xml")
    assert r.status == 200
    assert r.content_type == "application/xml"
    root = ET.fromstring(r.body)
    ns = "{urn:mod_llm_gateway:status:1}"
    assert root.tag == f"{ns}status"
    got = {m.find(f"{ns}model").text: m for m in root.find(f"{ns}models")}
    assert got[model].find(f"{ns}requests").text == "1"
    assert (int(root.find(f"{ns}total/{ns}requests").text)
            >= st["total"]["requests"])
    names = [b.find(f"{ns}name").text for b in root.find(f"{ns}balancers")]
    assert names == [b["name"] for b in st["balancers"]]


def test_server_status_section(gwc):
    st = status(gwc)
    r = gwc.get("/server-status?auto")
    assert r.status == 200
    fields = dict(l.split(": ", 1) for l in r.body.decode().splitlines()
                  if ": " in l)
    assert int(fields["LLMRequests"]) >= st["total"]["requests"]
    assert "LLMCacheHits" in fields and "LLMSavedTokens" in fields
    r = gwc.get("/server-status")
    assert b"<h2>mod_llm_gateway</h2>" in r.body


# ------------------------------------------------------------------ actions

class Session:
    """A console session: the cookie and the nonce its pages carry."""

    def __init__(self, g, page="backends"):
        r = g.get(f"{ADMIN}/{page}")
        assert r.status == 200
        cookie = r.header("Set-Cookie")
        assert cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        self.cookie = cookie.split(";", 1)[0]
        p = Texts()
        p.feed(r.body.decode())
        nonces = {v for k, v in p.inputs if k == "nonce"}
        assert len(nonces) == 1, nonces
        self.nonce = nonces.pop()
        self.g = g

    def post(self, fields, origin=True, cookie=None, referer=None):
        headers = {"Content-Type": "application/x-www-form-urlencoded",
                   "Cookie": cookie if cookie is not None else self.cookie}
        if origin is True:
            headers["Origin"] = f"http://{env.HOST}:{self.g.port}"
        elif origin:
            headers["Origin"] = origin
        if referer:
            headers["Referer"] = referer
        return self.g.request("POST", f"{ADMIN}/action",
                              urlencode(fields).encode(), headers)


def member_of(g, port):
    return f"http://{env.HOST}:{g.ports[port]}"


def be_member(g, port):
    st = status(g)
    be = [b for b in st["balancers"] if b["name"] == "balancer://be"][0]
    return [m for m in be["members"] if m["name"] == member_of(g, port)][0]


def manager_status(g, port):
    """What balancer-manager's XML says of the member's status."""
    r = g.get("/balancer-manager?xml=1", headers={"Referer": g.url("/balancer-manager")})
    assert r.status == 200
    root = ET.fromstring(r.body)
    ns = "{http://httpd.apache.org}"
    for w in root.iter(f"{ns}worker"):
        if w.find(f"{ns}name").text == member_of(g, port):
            return w.find(f"{ns}status").text
    raise AssertionError(r.body)


def generations(mocks, name):
    return mocks[name].stats()["generations"]


def test_drain_is_mod_proxys_and_routes_around(gwc, mocks, uniq):
    s = Session(gwc)
    target = {"b": "balancer://be", "w": member_of(gwc, "be_a")}
    mark = open(gwc.error_log).read().count("console action done")
    try:
        r = s.post({"do": "drain", "nonce": s.nonce, **target})
        assert r.status == 303, r.body
        assert r.header("Location") == gwc.url(f"{ADMIN}/backends")
        m = be_member(gwc, "be_a")
        assert m["drained"]
        assert "Drn" in manager_status(gwc, "be_a")
        assert "Drn" not in manager_status(gwc, "be_b")
        _, p = page(gwc, "backends")
        assert "drained" in p.text
        a0, b0 = generations(mocks, "a"), generations(mocks, "b")
        for i in range(6):
            r = gwc.post(CHAT, chat_body(model=f"gpt-{uniq}",
                                         content=f"drain {i}", temperature=1,
                                         max_tokens=2))
            assert r.status == 200
        assert generations(mocks, "a") == a0, "a drained member got requests"
        assert generations(mocks, "b") == b0 + 6
        with open(gwc.error_log) as f:
            log = f.read()
        assert log.count("console action done") == mark + 1
        assert f"console action done by - from 127.0.0.1: drain {target['w']}" in log
    finally:
        r = s.post({"do": "enable", "nonce": s.nonce, **target})
    assert r.status == 303
    assert not be_member(gwc, "be_a")["drained"]
    assert "Drn" not in manager_status(gwc, "be_a")


def test_disable_and_enable(gwc):
    s = Session(gwc)
    target = {"b": "balancer://be", "w": member_of(gwc, "be_b")}
    try:
        assert s.post({"do": "disable", "nonce": s.nonce, **target}).status == 303
        m = be_member(gwc, "be_b")
        assert m["disabled"] and not m["usable"]
        assert "Dis" in manager_status(gwc, "be_b")
    finally:
        assert s.post({"do": "enable", "nonce": s.nonce, **target}).status == 303
    m = be_member(gwc, "be_b")
    assert m["usable"] and not m["disabled"]


def unchanged_after(gwc, attempt):
    before = be_member(gwc, "be_a")
    r = attempt()
    after = be_member(gwc, "be_a")
    assert (after["drained"], after["disabled"]) == (before["drained"], before["disabled"])
    return r


def test_csrf_refusals_change_nothing(gwc):
    s = Session(gwc)
    other = Session(gwc)
    assert other.cookie != s.cookie and other.nonce != s.nonce
    target = {"do": "drain", "b": "balancer://be", "w": member_of(gwc, "be_a")}
    cases = [
        ("no nonce", lambda: s.post(target), 403),
        ("a wrong nonce", lambda: s.post({**target, "nonce": "0" * 64}), 403),
        ("another session's nonce",
         lambda: s.post({**target, "nonce": other.nonce}), 403),
        ("no session", lambda: s.post({**target, "nonce": s.nonce}, cookie=""), 403),
        ("a foreign Origin",
         lambda: s.post({**target, "nonce": s.nonce}, origin="http://evil.example"), 403),
        ("no Origin nor Referer",
         lambda: s.post({**target, "nonce": s.nonce}, origin=None), 403),
        ("a foreign Referer",
         lambda: s.post({**target, "nonce": s.nonce}, origin=None,
                        referer="http://evil.example/llm-admin/"), 403),
        ("a field not the console's",
         lambda: s.post({**target, "nonce": s.nonce, "x": "1"}), 400),
        ("GET with the action's parameters",
         lambda: gwc.get(f"{ADMIN}/backends?" + urlencode({**target, "nonce": s.nonce}),
                         headers={"Cookie": s.cookie}), 400),
        ("GET of the action",
         lambda: gwc.get(f"{ADMIN}/action?" + urlencode({**target, "nonce": s.nonce}),
                         headers={"Cookie": s.cookie}), 400),
    ]
    for what, attempt, code in cases:
        r = unchanged_after(gwc, attempt)
        assert r.status == code, (what, r.status, r.body)
    # The Referer of one of our pages will do without an Origin.
    r = s.post({**target, "nonce": s.nonce, "do": "enable"}, origin=None,
               referer=gwc.url(f"{ADMIN}/backends"))
    assert r.status == 303
    with open(gwc.error_log) as f:
        assert "console action refused by - from 127.0.0.1" in f.read()


def test_outside_require_cannot_post(gwc):
    r = gwc.request("POST", "/llm-admin-locked/action", b"do=flush",
                    {"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status == 403


def test_flush_one_model_and_all(gwc, uniq):
    s = Session(gwc, "cache")
    mine = chat_body(model=f"gpt-{uniq}", content="flush me", temperature=0,
                     max_tokens=3)
    other = chat_body(model=f"gpt-{uniq}-other", content="keep me",
                      temperature=0, max_tokens=3)

    def cache_of(body):
        r = gwc.post(CHAT, body)
        assert r.status == 200
        return r.header("X-LLM-Cache")

    assert [cache_of(mine), cache_of(mine)] == ["MISS", "HIT"]
    assert [cache_of(other), cache_of(other)] == ["MISS", "HIT"]
    flushes = status(gwc)["cache"]["flushes"]
    r = s.post({"do": "flush", "model": f"gpt-{uniq}", "nonce": s.nonce})
    assert r.status == 303 and r.header("Location").endswith(f"{ADMIN}/cache")
    assert status(gwc)["cache"]["flushes"] == flushes + 1
    assert [cache_of(mine), cache_of(mine)] == ["MISS", "HIT"]
    assert cache_of(other) == "HIT"
    assert s.post({"do": "flush", "nonce": s.nonce}).status == 303
    assert [cache_of(mine), cache_of(other)] == ["MISS", "MISS"]


def test_reset_without_keys_is_refused(gwc):
    s = Session(gwc)
    r = s.post({"do": "reset", "key": "key:team-a", "nonce": s.nonce})
    assert r.status == 409


KEY_SECRET = "sk-console-test-0123456789abcdef"
KEY_BUDGET = 100000
TINY_SECRET = "sk-console-test-tiny-0123456789ab"


@pytest.fixture(scope="module")
def gwk(request, workdir, ports, mocks):
    """A console in front of a key with a budget and a rate limit."""
    digest = hashlib.sha256(KEY_SECRET.encode()).hexdigest()
    tiny = hashlib.sha256(TINY_SECRET.encode()).hexdigest()
    keys = (f'<LLMKey "team-a">\n    LLMKeyHash sha256:{digest}\n'
            f"    LLMBudget tokens={KEY_BUDGET} per=day\n"
            f"    LLMRateLimit rpm=600\n</LLMKey>\n"
            f'<LLMKey "tiny">\n    LLMKeyHash sha256:{tiny}\n'
            f"    LLMBudget tokens=10 per=hour\n</LLMKey>\n"
            '<LLMRoute "fb-main">\n    LLMBackend balancer://be\n'
            "    LLMFallback mock-small\n</LLMRoute>\n")
    yield from env.serve_gateway(request, workdir, ports, "gw-console-keys",
                                 _load("authz_host", "alias") + keys
                                 + console_conf(served_assets(workdir)))


def key_view(g, name="team-a"):
    found = [k for k in status(g)["keys"] or [] if k["name"] == name]
    assert len(found) == 1, status(g)["keys"]
    return found[0]


def test_routes_show_their_fallbacks(gwk):
    route = [r for r in status(gwk)["routes"] if r["name"] == "fb-main"]
    assert [r["fallbacks"] for r in route] == [["mock-small"]], route
    _, p = page(gwk, "routes")
    assert "fb-main" in p.text and "mock-small" in p.text


def test_refusals_are_counted_per_key(gwk):
    # A key whose budget cannot hold the request is refused with a 429:
    # status.json, the metrics and the keys page count it.
    before = key_view(gwk, "tiny")["ratelimited"]
    r = gwk.post(CHAT, chat_body(max_tokens=16),
                 headers={"Authorization": f"Bearer {TINY_SECRET}"})
    assert r.status == 429, r.body
    assert key_view(gwk, "tiny")["ratelimited"] == before + 1
    samples, _ = metrics(gwk)
    assert pick(samples, "llmgw_ratelimited_total", key="tiny") == before + 1


def test_keys_view_and_budget_metrics_are_what_the_key_used(gwk):
    # What the key was charged is what its clients got in usage: in
    # status.json, in the metrics and on the keys page; a reset starts its
    # budget afresh. The key itself is shown nowhere.
    auth = {"Authorization": f"Bearer {KEY_SECRET}"}
    n = status(gwk)["total"]["requests"]
    got = [gwk.post(CHAT, chat_body(max_tokens=3 + i), headers=auth)
           for i in range(3)]
    assert [r.status for r in got] == [200] * 3, got[0].body
    used = sum(r.json()["usage"]["total_tokens"] for r in got)
    counted(gwk, n + 3)
    deadline = time.monotonic() + 10
    while key_view(gwk)["budgets"][0]["reserved"] and time.monotonic() < deadline:
        time.sleep(0.05)
    k = key_view(gwk)
    assert (k["budgets"][0]["used"], k["budgets"][0]["limit"]) == (used, KEY_BUDGET)
    assert k["requests"] == 3 and k["rpm"]["limit"] == 600
    samples, _ = metrics(gwk)
    assert pick(samples, "llmgw_budget_used_tokens", key="team-a") == used
    assert pick(samples, "llmgw_budget_limit_tokens", key="team-a") == KEY_BUDGET
    _, p = page(gwk, "keys")
    assert "team-a" in p.text
    for path in ("", "keys", "status.json", "status.xml", "metrics"):
        assert KEY_SECRET not in gwk.get(f"{ADMIN}/{path}").body.decode(), path
    s = Session(gwk, "keys")
    r = s.post({"do": "reset", "key": "key:team-a", "nonce": s.nonce})
    assert r.status == 303, r.body
    assert key_view(gwk)["budgets"][0]["used"] == 0


# ------------------------------------------------------------------ browser

BROWSER = os.path.join(env.REPO, "test", "browser")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="module")
def playwright():
    """node, with test/browser's pinned playwright-core (npm ci when it is
    missing); Debian's chromium (build/lib.sh installs it)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node and npm, "the browser tests need Node.js and npm"
    assert os.access(CHROMIUM, os.X_OK), f"no chromium at {CHROMIUM}"
    with open(os.path.join(BROWSER, "package.json")) as f:
        pinned = json.load(f)["dependencies"]["playwright-core"]
    try:
        with open(os.path.join(BROWSER, "node_modules", "playwright-core",
                               "package.json")) as f:
            have = json.load(f)["version"]
    except OSError:
        have = None
    if have != pinned:
        p = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=BROWSER,
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stdout + p.stderr
    return node


def run_browser(node, script, g, **where):
    """Runs test/browser's SCRIPT against gateway G, WHERE (LLMGW_* names)
    saying where things are; with LLMGW_SCREENSHOTS=1 it writes its
    screenshots into docs/."""
    run_env = dict(os.environ, LLMGW_URL=g.url("").rstrip("/"),
                   LLMGW_ADMIN=f"{ADMIN}/", CHROMIUM=CHROMIUM, NO_COLOR="1",
                   **where)
    if os.environ.get("LLMGW_SCREENSHOTS") == "1":
        run_env["LLMGW_SHOTS"] = os.path.join(env.REPO, "docs")
    p = subprocess.run([node, "--test", "--test-reporter=spec",
                        "--test-timeout=120000", script],
                       cwd=BROWSER, env=run_env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "# fail 0" in p.stdout or "\u2139 fail 0" in p.stdout, p.stdout


def test_console_in_browser(gwc, mocks, playwright, uniq):
    evil = f"gpt-<script>window.pwned=1</script>{uniq}"
    n = status(gwc)["total"]["requests"]
    assert gwc.post(CHAT, chat_body(model=evil, temperature=1,
                                    max_tokens=2)).status == 200
    counted(gwc, n + 1)
    run_browser(playwright, "console.test.mjs", gwc,
                LLMGW_MEMBER=member_of(gwc, "be_a"),
                LLMGW_MOCKS=" ".join(f"http://{env.HOST}:{gwc.ports[p]}/mock/stats"
                                     for p in ("be_a", "be_b")),
                LLMGW_MODEL=f"gpt-{uniq}", LLMGW_EVIL=evil)


def test_keys_in_browser(gwk, playwright):
    """The Keys page in headless Chromium: the budget's bar is what the key
    used, and a Reset clicked there empties it (console_keys.test.mjs)."""
    auth = {"Authorization": f"Bearer {KEY_SECRET}"}
    n = status(gwk)["total"]["requests"]
    assert gwk.post(CHAT, chat_body(max_tokens=4), headers=auth).status == 200
    counted(gwk, n + 1)
    deadline = time.monotonic() + 10
    while key_view(gwk)["budgets"][0]["reserved"] and time.monotonic() < deadline:
        time.sleep(0.05)
    used = key_view(gwk)["budgets"][0]["used"]
    assert used > 0
    run_browser(playwright, "console_keys.test.mjs", gwk, LLMGW_KEY="team-a",
                LLMGW_USED=str(used), LLMGW_LIMIT=str(KEY_BUDGET))
    assert key_view(gwk)["budgets"][0]["used"] == 0
