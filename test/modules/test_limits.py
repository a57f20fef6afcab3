# API keys, rate limits and token budgets through a real httpd: who may ask
# (401/403), admission under concurrency (429s with OpenAI's headers, used <=
# limit), exact settlement (plain, streamed, cut, failed), persistence across
# restarts and a kill -9, one budget across two nodes sharing memcached, and
# keys never showing up in a log, a status page or a header.
import base64
import fnmatch
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time

import pytest

import llmgw_env as env

# The keys the clients hold; the configuration has only their hashes.
SECRETS = {name: f"sk-test-{name}-{hashlib.sha256(name.encode()).hexdigest()[:24]}"
           for name in ("alpha", "models", "disabled", "budget", "budget-stream",
                        "refund", "rpm", "tpm", "conc", "kr", "cost", "huge",
                        "persist", "cluster", "hits", "tiny", "gossip", "tpm2", "fo")}
USERS = {"carol": "carol-pw", "dave": "dave-pw"}


def sha(text):
    return hashlib.sha256(text.encode()).hexdigest()


def key_block(name, *lines):
    body = "".join(f"    {l}\n" for l in lines)
    return f'<LLMKey "{name}">\n    LLMKeyHash sha256:{sha(SECRETS[name])}\n{body}</LLMKey>\n'


def bearer(name):
    return {"Authorization": f"Bearer {SECRETS[name]}"}


# Budgets are small so that a few hundred requests overrun them.
BUDGET = 5000
KEYS_CONF = (
    key_block("alpha", "LLMKeyTeam research")
    + key_block("models", 'LLMKeyModels "mock-*" small')
    + key_block("disabled", "LLMKeyDisabled")
    + key_block("budget", f"LLMBudget tokens={BUDGET} per=day")
    + key_block("budget-stream", f"LLMBudget tokens={BUDGET} per=day")
    + key_block("refund", "LLMBudget tokens=1000000 per=day")
    + key_block("rpm", "LLMRateLimit rpm=30")
    + key_block("tpm", "LLMRateLimit tpm=1500")
    + key_block("tpm2", "LLMRateLimit tpm=12000")
    + key_block("conc", "LLMRateLimit concurrent=3")
    + key_block("kr", "LLMBudget tokens=1000000 per=day",
                "LLMRateLimit concurrent=1 route=mock-large")
    + key_block("cost", "LLMBudget cost=0.002 per=month")
    + key_block("huge", "LLMBudget tokens=100000 per=day")
    + key_block("hits", "LLMBudget tokens=1000000 per=day")
    + key_block("tiny", "LLMBudget tokens=10 per=hour")
    + key_block("fo", "LLMBudget tokens=1000000 per=day")
    + "LLMPrice mock-small in=1 out=2\n"
)


def keys_extra(d, dead_port):
    """The keyed gateway's configuration: the keys, a route with limits and
    max_tokens, a route whose only member is down with a fallback route
    that has a budget of its own, APIs that need a key (OpenAI and
    Ollama) and one whose budget subject is the Basic-authenticated
    user."""
    with open(os.path.join(d, "htpasswd"), "w") as f:
        for u, pw in USERS.items():
            digest = base64.b64encode(hashlib.sha1(pw.encode()).digest()).decode()
            f.write(f"{u}:{{SHA}}{digest}\n")
    mods = "".join(f'LoadModule {m}_module "{env.MODULES_DIR}/mod_{m}.so"\n'
                   for m in ("authn_core", "authn_file", "auth_basic", "authz_user"))
    return mods + KEYS_CONF + f"""\
LogFormat "%u|%r|%>s|%{{{env.NOTES[env.NOTES.index('llm-key-team')]}}}n" keyed
CustomLog "{d}/keyed.log" keyed
<LLMRoute "lim-small">
    LLMBackend balancer://be
    LLMUpstreamModel mock-small
    LLMMaxTokens default=5 cap=8
    LLMRateLimit concurrent=64
</LLMRoute>
<LLMRoute "lim-ollama">
    LLMBackend balancer://ob dialect=ollama
    LLMUpstreamModel mock-small
    LLMMaxTokens default=6
    LLMRateLimit concurrent=64
</LLMRoute>
<Proxy "balancer://lim-down">
    BalancerMember "http://{env.HOST}:{dead_port}" retry=1
</Proxy>
<LLMRoute "lim-down">
    LLMBackend balancer://lim-down
    LLMUpstreamModel mock-small
    LLMFallback lim-fb
</LLMRoute>
<LLMRoute "lim-fb">
    LLMBackend balancer://be
    LLMUpstreamModel mock-large
    LLMBudget tokens=1000000 per=day
</LLMRoute>
<LLMUserLimits>
    LLMBudget tokens=400 per=day
</LLMUserLimits>
<Location "/k">
    LLMApi openai
    LLMRequireKey on
</Location>
<Location "/kollama">
    LLMApi ollama
    LLMRequireKey on
</Location>
<Location "/u">
    LLMApi openai
    LLMKeyFrom user
    LLMRequireKey on
    AuthType Basic
    AuthName "gateway"
    AuthUserFile "{d}/htpasswd"
    Require valid-user
</Location>
"""


@pytest.fixture(scope="module")
def gw_keys(request, workdir, ports, mocks):
    name = "gw-keys"
    d = env.make_server_dir(workdir, name)
    yield from env.serve_gateway(request, workdir, ports, name,
                                 keys_extra(d, ports["dead1"]))


CHAT = "/k/v1/chat/completions"


def chat(g, key=None, headers=None, path=CHAT, **kw):
    h = dict(bearer(key)) if key else {}
    h.update(headers or {})
    kw.setdefault("max_tokens", 16)
    return g.post(path, env.chat_body(**kw), headers=h)


def limits(g):
    """Each subject's line of /server-status?auto, as a dict of its
    numbers (budgetN: its limit, used, reserved, remote, remaining)."""
    out = {}
    for line in g.get("/server-status?auto").body.decode().splitlines():
        if not line.startswith("LLMLimit: "):
            continue
        name, *fields = line[len("LLMLimit: "):].split(" ")
        row = {}
        for f in fields:
            k, v = f.split("=", 1)
            if k.startswith("budget"):
                lim, *rest = v.split(",")
                row[k] = dict(limit=int(lim), **{p.split("=")[0]: int(p.split("=")[1])
                                                 for p in rest})
            else:
                row[k] = int(v)
        out[name] = row
    return out


def budget_of(g, subject):
    return limits(g)[subject]["budget0"]


def settled(g, subject, timeout=10):
    """The subject's budget once nothing is reserved or in flight."""
    deadline = time.monotonic() + timeout
    while True:
        row = limits(g)[subject]
        if row["inflight"] == 0 and row["budget0"]["reserved"] == 0:
            return row["budget0"]
        assert time.monotonic() < deadline, f"{subject} still holds {row}"
        time.sleep(0.05)


def log_usage(g, since, pred):
    """prompt + completion tokens of the access log's lines after SINCE
    that match PRED, as the gateway noted them."""
    total = 0
    for l in g.log_lines()[since:]:
        if pred(l) and l.total_tokens not in ("", "-"):
            total += int(l.total_tokens)
    return total


RATE_HEADERS = ("x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens",
                "x-ratelimit-reset-tokens")


# ---------------------------------------------------------------- who may ask

def test_no_key_is_401_in_openai_shape(gw_keys):
    r = chat(gw_keys)
    err = env.assert_openai_error(r, 401, "invalid_request_error", "invalid_api_key")
    assert "provide" in err["message"]
    assert r.header("WWW-Authenticate") == "Bearer"


@pytest.mark.parametrize("headers", [
    {"Authorization": "Bearer sk-test-nobody"},
    {"x-api-key": "sk-test-nobody"},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer   "},
    {"Authorization": "Bearer a b"},
    {"Authorization": "Bearer " + "k" * 600},
    {"Authorization": "Bearer k\xe9y"},
    {"Authorization": "Basic " + base64.b64encode(b"u:p").decode()},
])
def test_unknown_or_malformed_key_is_401(gw_keys, headers):
    r = chat(gw_keys, headers=headers)
    err = env.assert_openai_error(r, 401, code="invalid_api_key")
    assert "sk-test-nobody" not in err["message"]


def test_two_different_keys_are_refused(gw_keys):
    r = chat(gw_keys, headers={"Authorization": f"Bearer {SECRETS['alpha']}",
                               "x-api-key": SECRETS["models"]})
    env.assert_openai_error(r, 401, code="invalid_api_key")


def test_key_in_either_header_is_accepted(gw_keys, uniq):
    for h in (bearer("alpha"), {"x-api-key": SECRETS["alpha"]},
              {"Authorization": f"bearer  {SECRETS['alpha']}"}):
        r = chat(gw_keys, headers=h, model=f"gpt-{uniq}")
        assert r.status == 200, r.body[:300]


def test_key_names_user_and_team_and_stays_with_us(gw_keys, mocks, uniq):
    mark = len(open(os.path.join(gw_keys.dir, "keyed.log")).readlines()) \
        if os.path.exists(os.path.join(gw_keys.dir, "keyed.log")) else 0
    r = chat(gw_keys, "alpha", model=f"gpt-{uniq}", content=f"hello {uniq}")
    assert r.status == 200
    # The backend never sees the client's key.
    last = [m.last() for m in (mocks["a"], mocks["b"])
            if uniq in m.last().get("body", "")]
    assert last, "neither backend saw the request"
    last = last[0]
    assert not any(k.lower() in ("authorization", "x-api-key") for k in last["headers"])
    deadline = time.monotonic() + 5
    while True:
        lines = open(os.path.join(gw_keys.dir, "keyed.log")).readlines()[mark:]
        mine = [l for l in lines if f"POST {CHAT} " in l]
        if mine or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert mine and mine[0].startswith("alpha|") and mine[0].rstrip().endswith("|research")


def test_disabled_key_is_401(gw_keys):
    r = chat(gw_keys, "disabled")
    err = env.assert_openai_error(r, 401, code="invalid_api_key")
    assert "disabled" in err["message"]


def test_model_outside_the_keys_models_is_403(gw_keys, uniq):
    assert chat(gw_keys, "models", model="mock-small").status == 200
    assert chat(gw_keys, "models", model="small").status == 200
    r = chat(gw_keys, "models", model=f"gpt-{uniq}")
    env.assert_openai_error(r, 403, code="model_not_allowed", param="model")


def test_model_lists_show_a_key_only_its_models(gw_keys):
    """LLMKeyModels "mock-*" small: /v1/models, /api/tags and a model's own
    entry show that key only what it may ask for (404 as for a model not
    served), while a key without LLMKeyModels sees every model."""
    def ids(key):
        r = gw_keys.get("/k/v1/models", headers=bearer(key))
        assert r.status == 200, r.body
        return {m["id"] for m in r.json()["data"]}

    every, mine = ids("alpha"), ids("models")
    assert {"lim-small", "mock-small", "small"} <= every
    assert mine and mine == {n for n in every
                             if fnmatch.fnmatchcase(n, "mock-*") or n == "small"}
    assert gw_keys.get("/k/v1/models/lim-small",
                       headers=bearer("alpha")).status == 200
    env.assert_openai_error(gw_keys.get("/k/v1/models/lim-small",
                                        headers=bearer("models")), 404)
    assert gw_keys.get("/k/v1/models/small",
                       headers=bearer("models")).status == 200
    r = gw_keys.get("/kollama/api/tags", headers=bearer("models"))
    assert r.status == 200, r.body
    tags = {m["name"] for m in r.json()["models"]}
    assert "small" in tags and "lim-ollama" not in tags, tags
    assert "lim-ollama" in {m["name"] for m in gw_keys.get(
        "/kollama/api/tags", headers=bearer("alpha")).json()["models"]}
    r = gw_keys.post("/kollama/api/show", {"model": "lim-ollama"},
                     headers=bearer("models"))
    assert r.status == 404 and "not found" in r.json()["error"], r.body
    assert gw_keys.post("/kollama/api/show", {"model": "lim-ollama"},
                        headers=bearer("alpha")).status == 200


def test_ollama_api_refuses_in_its_shape(gw_keys):
    r = gw_keys.post("/kollama/api/chat", {"model": "mock-small", "messages": [
        {"role": "user", "content": "hi"}], "stream": False})
    assert r.status == 401 and r.content_type == "application/json"
    doc = r.json()
    assert isinstance(doc["error"], str) and "API key" in doc["error"]
    r = gw_keys.post("/kollama/api/chat", {"model": "mock-small", "messages": [
        {"role": "user", "content": "hi"}], "stream": False}, headers=bearer("alpha"))
    assert r.status == 200, r.body[:300]


def test_ollama_api_429_in_its_shape_with_headers(gw_keys):
    r = gw_keys.post("/kollama/api/chat", {"model": "mock-small", "messages": [
        {"role": "user", "content": "hi"}], "stream": False}, headers=bearer("tiny"))
    assert r.status == 429 and r.content_type == "application/json"
    assert isinstance(r.json()["error"], str) and "budget" in r.json()["error"]
    assert int(r.header("Retry-After")) >= 1
    assert r.header("x-ratelimit-limit-tokens") == "10"


@pytest.mark.parametrize("query", ["api_key={k}", "key={k}", "x=1&token={k}",
                                   "q={k}", "API_KEY=whatever"])
def test_key_in_query_string_is_refused_and_not_logged(gw_keys, query):
    secret = SECRETS["alpha"]
    q = query.format(k=secret)
    mark = gw_keys.log_mark()
    r = gw_keys.post(f"{CHAT}?{q}", env.chat_body(max_tokens=4), headers=bearer("alpha"))
    err = env.assert_openai_error(r, 401, code="invalid_api_key")
    assert "URL" in err["message"] and secret not in r.body.decode()
    line = gw_keys.wait_log_one(lambda l: "[redacted]" in l.request, mark)
    assert secret not in line.raw and "whatever" not in line.raw


def test_open_location_keeps_working_without_key(gw_keys, uniq):
    # /v1 has no LLMRequireKey: as before, with or without a foreign key.
    r = gw_keys.post("/v1/chat/completions", env.chat_body(model=f"gpt-{uniq}"))
    assert r.status == 200
    r = gw_keys.post("/v1/chat/completions", env.chat_body(model=f"gpt-{uniq}"),
                     headers={"Authorization": "Bearer sk-someone-elses"})
    assert r.status == 200
    assert "x-ratelimit-limit-tokens" not in r.headers


def test_user_budget_from_remote_user(gw_keys):
    auth = {"Authorization": "Basic " + base64.b64encode(b"carol:carol-pw").decode()}
    r = gw_keys.post("/u/v1/chat/completions", env.chat_body(max_tokens=8), headers=auth)
    assert r.status == 200, r.body[:300]
    assert int(r.header("x-ratelimit-limit-tokens")) == 400
    row = settled(gw_keys, "user:carol")
    assert row["used"] == r.json()["usage"]["total_tokens"]
    # Spend the rest: the 400 tokens run out with a 429, for carol only.
    statuses = [gw_keys.post("/u/v1/chat/completions", env.chat_body(max_tokens=8),
                             headers=auth).status for _ in range(40)]
    assert 429 in statuses
    assert settled(gw_keys, "user:carol")["used"] <= 400
    other = {"Authorization": "Basic " + base64.b64encode(b"dave:dave-pw").decode()}
    assert gw_keys.post("/u/v1/chat/completions", env.chat_body(max_tokens=8),
                        headers=other).status == 200
    # No user, no answer from the gateway (mod_auth_basic's 401).
    assert gw_keys.post("/u/v1/chat/completions", env.chat_body()).status == 401


# ---------------------------------------------------------------- budgets

def assert_refusal(r):
    """A 429 as OpenAI writes it, with its headers."""
    err = env.assert_openai_error(r, 429)
    assert err["code"] in ("rate_limit_exceeded", "insufficient_quota"), err
    assert int(r.header("Retry-After")) >= 1
    for h in RATE_HEADERS:
        assert r.header(h) is not None, (h, dict(r.headers))
    return err


def test_200_concurrent_requests_never_pass_the_budget(gw_keys):
    mark = gw_keys.log_mark()
    rs = env.in_threads([lambda: chat(gw_keys, "budget", max_tokens=16)
                         for _ in range(200)], timeout=120)
    ok = [r for r in rs if not isinstance(r, Exception) and r.status == 200]
    no = [r for r in rs if not isinstance(r, Exception) and r.status == 429]
    assert len(ok) + len(no) == 200, [r for r in rs if r not in ok and r not in no][:3]
    assert ok and no
    for r in no:
        assert_refusal(r)
    for r in ok:
        assert int(r.header("x-ratelimit-limit-tokens")) == BUDGET
        assert int(r.header("x-ratelimit-remaining-tokens")) >= 0
    row = settled(gw_keys, "key:budget")
    charged = sum(r.json()["usage"]["total_tokens"] for r in ok)
    assert row["used"] == charged <= BUDGET
    gw_keys.wait_log(lambda l: l.status in ("200", "429") and "/k/v1/" in l.request,
                     mark, count=200)
    # The budget is spent for good: a spent budget says so (insufficient_quota)
    # once nothing is in flight and what is left cannot hold a request.
    for _ in range(BUDGET):
        r = chat(gw_keys, "budget", max_tokens=16)
        if r.status == 429:
            break
    assert assert_refusal(r)["code"] == "insufficient_quota"


def test_200_concurrent_streams_are_charged_their_usage_chunks(gw_keys):
    mark = gw_keys.log_mark()

    def one(i):
        body = env.chat_body(max_tokens=16, stream=True)
        if i % 2:
            body["stream_options"] = {"include_usage": True}
        return gw_keys.stream(CHAT, body, headers=bearer("budget-stream"), timeout=60)
    rs = env.in_threads([lambda i=i: one(i) for i in range(200)], timeout=120)
    assert not [r for r in rs if isinstance(r, Exception)], rs
    ok = [r for r in rs if r.status == 200]
    assert ok and len(ok) < 200
    assert all(r.status == 429 for r in rs if r.status != 200)
    for r in ok:
        assert r.events[-1][1] == "[DONE]"
    # Those that asked see the usage chunk; the others do not, yet are
    # charged it all the same: the table matches the usage the gateway
    # read from every stream (the access log's notes).
    asked = [r for r in ok if any(c.get("usage") for c in r.chunks())]
    assert asked and len(asked) < len(ok)
    row = settled(gw_keys, "key:budget-stream")
    lines = gw_keys.wait_log(lambda l: "/k/v1/" in l.request and l.status == "200",
                             mark, count=len(ok))
    assert len(lines) == len(ok)
    assert all(l.total_tokens not in ("", "-") for l in lines)
    assert row["used"] == sum(int(l.total_tokens) for l in lines) <= BUDGET


def test_short_answer_refunds_the_rest(gw_keys):
    before = settled(gw_keys, "key:refund")["used"]
    r = chat(gw_keys, "refund", max_tokens=20)
    assert r.status == 200
    u = r.json()["usage"]
    # Reserved: the prompt's bound (its bytes and the template's share)
    # and all 20; charged: what it took.
    reserved = 1000000 - before - int(r.header("x-ratelimit-remaining-tokens"))
    assert reserved > u["total_tokens"]
    assert settled(gw_keys, "key:refund")["used"] - before == u["total_tokens"]


def test_backend_failure_charges_nothing(gw_keys):
    before = settled(gw_keys, "key:refund")["used"]
    for fault in ("500", "reset"):
        r = chat(gw_keys, "refund", headers={"X-Mock-Fault": fault})
        assert r.status >= 500
    assert settled(gw_keys, "key:refund")["used"] == before


def test_cut_stream_is_charged_what_was_generated(gw_keys):
    before = settled(gw_keys, "key:refund")["used"]
    body = env.chat_body(max_tokens=400, stream=True)
    s = gw_keys.stream(CHAT, body, headers={**bearer("refund"), "X-Mock-Fault": "cut",
                                            "X-Mock-Tokens": "40"})
    assert s.status == 200
    got = len([c for c in s.chunks() if c.get("choices") and
               (c["choices"][0].get("delta") or {}).get("content")])
    charged = settled(gw_keys, "key:refund")["used"] - before
    # At least the tokens it sent; at most the bytes it sent (a token is at
    # least a byte) plus the prompt's bound; never the whole 400 when less
    # came.
    assert got >= 1
    assert got <= charged <= len(s.raw) + 200
    assert charged < 400 + 200 or len(s.raw) >= 400


def test_client_that_leaves_is_charged_what_was_generated(gw_keys):
    before = settled(gw_keys, "key:refund")["used"]
    body = json.dumps(env.chat_body(max_tokens=2000, stream=True)).encode()
    sock = socket.create_connection((env.HOST, gw_keys.port), timeout=30)
    sock.sendall((f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  f"Authorization: Bearer {SECRETS['refund']}\r\nX-Mock-Tokens: 2000\r\n"
                  f"X-Mock-TPS: 50\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body)
    got = b""
    while got.count(b"data: ") < 5:
        got += sock.recv(65536)
    sock.close()
    charged = settled(gw_keys, "key:refund", timeout=20)["used"] - before
    # Something was generated; far from all 2000 (it left within ~0.1 s of
    # a 40 s answer).
    assert 0 < charged < 2000


def test_huge_max_tokens(gw_keys):
    r = chat(gw_keys, "huge", max_tokens=10 ** 9)
    err = assert_refusal(r)
    assert "token budget" in err["message"]
    r = chat(gw_keys, "huge", max_tokens=10 ** 15)
    env.assert_openai_error(r, 400, param="max_tokens")
    assert settled(gw_keys, "key:huge")["used"] == 0


def test_cost_budget(gw_keys):
    # in=1 out=2 per million tokens and 0.002 a month: 2000 micro-units,
    # about 60 requests of 16 words and 16 tokens.
    statuses = []
    for _ in range(200):
        r = chat(gw_keys, "cost", model="mock-small", max_tokens=16)
        statuses.append(r.status)
        if r.status == 429:
            break
    assert statuses[-1] == 429 and statuses.count(200) > 10
    row = limits(gw_keys)["key:cost"]
    assert row["budget0"]["limit"] == 2000
    assert row["cost"] <= 2000 and row["budget0"]["used"] == row["cost"]


# ---------------------------------------------------------------- max_tokens

def test_gateway_sets_max_tokens_where_client_gives_none(gw_keys, mocks):
    for m in mocks.values():
        pass
    r = chat(gw_keys, "alpha", model="lim-small", max_tokens=None)
    assert r.status == 200
    assert r.json()["usage"]["completion_tokens"] == 5     # LLMMaxTokens default=5
    r = chat(gw_keys, "alpha", model="lim-small", max_tokens=100)
    assert r.json()["usage"]["completion_tokens"] == 8     # cap=8
    # Ollama backends get it as options.num_predict.
    r = chat(gw_keys, "alpha", model="lim-ollama", max_tokens=None)
    assert r.status == 200, r.body[:300]
    assert r.json()["usage"]["completion_tokens"] == 6


# ---------------------------------------------------------------- rate limits

def test_rpm_holds_under_concurrency_and_refills(gw_keys):
    rs = env.in_threads([lambda: chat(gw_keys, "rpm", max_tokens=2) for _ in range(31)])
    assert sorted(r.status for r in rs) == [200] * 30 + [429]
    no = [r for r in rs if r.status == 429][0]
    err = assert_refusal_requests(no)
    assert err["code"] == "rate_limit_exceeded" and err["type"] == "requests"
    assert int(no.header("Retry-After")) == 2       # one request every 60/30 s
    t0 = time.monotonic()
    while chat(gw_keys, "rpm", max_tokens=2).status != 200:
        assert time.monotonic() - t0 < 4.5, "rpm did not refill in time"
        time.sleep(0.2)
    # Back after one request's refill (2 s), not a minute.
    assert 1.0 < time.monotonic() - t0 < 4.5
    assert chat(gw_keys, "rpm", max_tokens=2).status == 429


def assert_refusal_requests(r):
    err = env.assert_openai_error(r, 429)
    assert int(r.header("Retry-After")) >= 1
    assert int(r.header("x-ratelimit-limit-requests")) == 30
    assert int(r.header("x-ratelimit-remaining-requests")) == 0
    assert r.header("x-ratelimit-reset-requests").endswith("s")
    return err


def test_tpm_holds_under_concurrency(gw_keys):
    rs = env.in_threads([lambda: chat(gw_keys, "tpm", max_tokens=16) for _ in range(40)])
    ok = [r for r in rs if r.status == 200]
    no = [r for r in rs if r.status == 429]
    assert ok and no and len(ok) + len(no) == 40
    for r in no:
        err = env.assert_openai_error(r, 429, code="rate_limit_exceeded")
        assert err["type"] == "tokens"
        assert int(r.header("x-ratelimit-limit-tokens")) == 1500
    row = limits(gw_keys)["key:tpm"]
    assert row["prompt"] + row["completion"] <= 1500


def test_tpm_refills_on_time(gw_keys):
    # tpm=12000 refills 200 tokens a second: spend it (unpaced answers of
    # 64 tokens), then a request passes again within its Retry-After.
    fast = {"X-Mock-TPS": "0"}
    for _ in range(300):
        r = chat(gw_keys, "tpm2", headers=fast, max_tokens=64)
        if r.status == 429:
            break
        assert r.status == 200
    err = env.assert_openai_error(r, 429, code="rate_limit_exceeded")
    assert err["type"] == "tokens"
    retry = int(r.header("Retry-After"))
    assert 1 <= retry <= 3
    t0 = time.monotonic()
    while chat(gw_keys, "tpm2", headers=fast, max_tokens=64).status != 200:
        assert time.monotonic() - t0 < retry + 1.5, "tpm did not refill in time"
        time.sleep(0.1)


def test_concurrency_limit(gw_keys):
    slow = {"X-Mock-TTFT-Ms": "600"}
    rs = env.in_threads([lambda: chat(gw_keys, "conc", headers=slow, max_tokens=2)
                         for _ in range(8)])
    assert sorted(r.status for r in rs) == [200] * 3 + [429] * 5
    for r in rs:
        if r.status == 429:
            err = env.assert_openai_error(r, 429, code="rate_limit_exceeded")
            assert r.header("Retry-After") == "1"
    assert limits(gw_keys)["key:conc"]["inflight"] == 0
    rs = env.in_threads([lambda: chat(gw_keys, "conc", max_tokens=2) for _ in range(3)])
    assert [r.status for r in rs] == [200] * 3


def test_key_route_limit(gw_keys):
    slow = {"X-Mock-TTFT-Ms": "500"}
    rs = env.in_threads([lambda: chat(gw_keys, "kr", headers=slow, model="mock-large")
                         for _ in range(3)])
    assert sorted(r.status for r in rs) == [200, 429, 429]
    # Another route is not held by it.
    rs = env.in_threads([lambda: chat(gw_keys, "kr", headers=slow, model="mock-small")
                         for _ in range(3)])
    assert [r.status for r in rs] == [200] * 3
    assert limits(gw_keys)["key+route:kr/mock-large"]["requests"] == 1


# ---------------------------------------------------------------- persistence

PERSIST_LIMIT = 10 ** 6


@pytest.fixture
def gw_persist(request, workdir, ports, mocks, uniq):
    """A gateway of its own, to restart and kill."""
    yield from env.serve_gateway(
        request, workdir, ports, f"gw-persist-{uniq}",
        key_block("persist", f"LLMBudget tokens={PERSIST_LIMIT} per=day"))


def load(g, n):
    """N requests one after the other; the tokens they were charged."""
    total = 0
    for _ in range(n):
        r = chat(g, "persist", path="/v1/chat/completions", max_tokens=8)
        assert r.status == 200, r.body[:300]
        total += r.json()["usage"]["total_tokens"]
    return total


def new_generation(g, old, timeout=20):
    """Waits until none of the children OLD serves any more and the
    gateway answers."""
    deadline = time.monotonic() + timeout
    while True:
        kids = set(g.children())
        if kids and not kids & old:
            try:
                if g.get("/server-status?auto", timeout=2).status == 200:
                    return
            except OSError:
                pass
        assert time.monotonic() < deadline, "no new generation of children"
        time.sleep(0.1)


def snap_path(g):
    return os.path.join(g.dir, "run", "llm_gateway", "limits.snap")


def test_usage_survives_graceful_restart_and_config_change(gw_persist):
    g = gw_persist
    used = load(g, 10)
    assert settled(g, "key:persist")["used"] == used
    # A new limit in the config: the usage stays.
    with open(g.conf) as f:
        text = f.read()
    with open(g.conf, "w") as f:
        f.write(text.replace(f"tokens={PERSIST_LIMIT}", f"tokens={2 * PERSIST_LIMIT}"))
    # A request in flight across the restart settles in the table the new
    # generation uses: the segment is kept, not copied.
    slow = {}

    def straddle():
        slow["r"] = chat(g, "persist", path="/v1/chat/completions", max_tokens=8,
                         headers={"X-Mock-TTFT-Ms": "1500"})
    t = threading.Thread(target=straddle)
    t.start()
    time.sleep(0.5)
    old = set(g.children())
    os.kill(g.proc.pid, signal.SIGUSR1)
    new_generation(g, old)
    t.join(30)
    assert slow["r"].status == 200
    used += slow["r"].json()["usage"]["total_tokens"]
    row = settled(g, "key:persist")
    assert row["used"] == used and row["limit"] == 2 * PERSIST_LIMIT
    used += load(g, 3)
    assert settled(g, "key:persist")["used"] == used


def test_usage_survives_stop_and_start(gw_persist):
    g = gw_persist
    used = load(g, 10)
    assert settled(g, "key:persist")["used"] == used
    g.stop()
    assert os.path.exists(snap_path(g))
    g.start()
    row = settled(g, "key:persist")
    assert row["used"] == used
    assert "restored" in open(g.error_log).read()


def test_kill_9_during_load_loses_at_most_a_second(gw_persist):
    g = gw_persist
    done = []                       # (time it completed, tokens)
    stop = threading.Event()

    def client():
        while not stop.is_set():
            try:
                r = chat(g, "persist", path="/v1/chat/completions", max_tokens=8)
            except OSError:
                return
            if r.status == 200:
                done.append((time.monotonic(), r.json()["usage"]["total_tokens"]))
    threads = [threading.Thread(target=client) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(3)
    t_kill = time.monotonic()
    g.kill_all()
    stop.set()
    for t in threads:
        t.join(30)
    g.start()
    row = settled(g, "key:persist")
    # Every request in flight at the kill may have been charged before its
    # client saw the answer: three at most, 8 + a prompt of a few words each.
    seen = sum(tok for _, tok in done)
    assert row["used"] <= seen + 3 * 40
    # What settled more than the snapshot interval (1 s) and one tick of
    # the parent's (250 ms) before the kill is all there.
    early = sum(tok for t, tok in done if t < t_kill - 1.5)
    assert early > 0 and row["used"] >= early
    assert row["reserved"] == 0


# ---------------------------------------------------------------- two nodes

CLUSTER_LIMIT = 3000
SYNC_MS = 100


@pytest.fixture(scope="module")
def limits_mc(workdir):
    m = env.Memcached(workdir, name="memcached-limits").start()
    try:
        yield m
    finally:
        m.stop()


def cluster_node(request, workdir, ports, name, mc, extra="", more=""):
    conf = (key_block("cluster", f"LLMBudget tokens={CLUSTER_LIMIT} per=day")
            + key_block("hits", "LLMBudget tokens=1000000 per=day")
            + f"LLMLimitStore memcache {env.HOST}:{mc.port} interval={SYNC_MS}{extra}\n"
            + more)
    return env.serve_gateway(request, workdir, ports, name, conf)


@pytest.fixture(scope="module")
def node_a(request, workdir, ports, mocks, limits_mc):
    yield from cluster_node(request, workdir, ports, "gw-node-a", limits_mc,
                            more="LLMCacheBilling free\n")


@pytest.fixture(scope="module")
def node_b(request, workdir, ports, mocks, limits_mc):
    yield from cluster_node(request, workdir, ports, "gw-node-b", limits_mc,
                            " fail=closed stale=1")


def test_two_nodes_share_one_budget(node_a, node_b):
    done = {"a": [], "b": []}
    threads_per_node = 2

    def client(g, name):
        misses = 0
        while misses < 5:
            r = chat(g, "cluster", path="/v1/chat/completions", max_tokens=16)
            if r.status == 200:
                done[name].append(r.json()["usage"]["total_tokens"])
                misses = 0
            else:
                assert r.status == 429, r.body[:300]
                misses += 1
                time.sleep(0.05)
    t0 = time.monotonic()
    env.in_threads([lambda g=g, n=n: client(g, n)
                    for g, n in ((node_a, "a"), (node_b, "b"))
                    for _ in range(threads_per_node)], timeout=120)
    took = time.monotonic() - t0
    a = settled(node_a, "key:cluster")
    b = settled(node_b, "key:cluster")
    assert a["used"] == sum(done["a"]) and b["used"] == sum(done["b"])
    # The bound (docs/limits.md): the reservations in flight (two per node,
    # each the prompt's bound and 16) plus what the cluster settled in two
    # sync intervals.
    reservation = 200
    rate = (a["used"] + b["used"]) / took
    bound = 2 * threads_per_node * reservation + rate * 2 * SYNC_MS / 1000 + 16
    assert a["used"] + b["used"] <= CLUSTER_LIMIT + bound
    assert bound < CLUSTER_LIMIT / 2          # far below two budgets' worth
    # Each node saw the other's usage, and both served.
    assert a["used"] > 0 and b["used"] > 0 and a["remote"] > 0 and b["remote"] > 0


def test_memcached_outage_fails_open_or_closed_never_hangs(node_a, node_b, limits_mc):
    limits_mc.stop()
    try:
        time.sleep(1.6)                 # past node b's stale=1
        t0 = time.monotonic()
        ra = chat(node_a, "cluster", path="/v1/chat/completions", max_tokens=1,
                  model="mock-small")
        rb = chat(node_b, "cluster", path="/v1/chat/completions", max_tokens=1)
        assert time.monotonic() - t0 < 2
        # a fails open: it answers as its last view allows (the budget is
        # spent by the test before: a 429, not a 503); b fails closed.
        assert ra.status in (200, 429)
        env.assert_openai_error(rb, 503, code="limits_unavailable")
    finally:
        limits_mc.start()
    deadline = time.monotonic() + 10
    while chat(node_b, "cluster", path="/v1/chat/completions",
               max_tokens=1).status == 503:
        assert time.monotonic() < deadline, "node b never came back"
        time.sleep(0.2)


# ---------------------------------------------------------------- configuration

H = sha("sk-config-test")


def key_conf(*lines):
    """<LLMKey "c"> of the test key's hash, with these lines."""
    return "\n".join([f'<LLMKey "c">\nLLMKeyHash sha256:{H}', *lines,
                      "</LLMKey>"])


BAD_CONF = {
    "rpm_zero": ("LLMRateLimit", key_conf("LLMRateLimit rpm=0")),
    "rpm_negative": ("LLMRateLimit", key_conf("LLMRateLimit rpm=-5")),
    "rpm_fraction": ("LLMRateLimit", key_conf("LLMRateLimit rpm=1.5")),
    "rate_unknown": ("LLMRateLimit", key_conf("LLMRateLimit rph=5")),
    "rate_twice": ("LLMRateLimit", key_conf("LLMRateLimit rpm=5", "LLMRateLimit tpm=5")),
    "tokens_zero": ("LLMBudget", key_conf("LLMBudget tokens=0 per=day")),
    "tokens_text": ("LLMBudget", key_conf("LLMBudget tokens=lots per=day")),
    "budget_period": ("LLMBudget", key_conf("LLMBudget tokens=5 per=week")),
    "budget_twice": ("LLMBudget", key_conf("LLMBudget tokens=5 per=day", "LLMBudget tokens=6 per=day")),
    "cost_negative": ("LLMBudget", key_conf("LLMBudget cost=-1 per=day")),
    "hash_short": ("LLMKeyHash", f'<LLMKey "c">\nLLMKeyHash sha256:{H[:-1]}\n</LLMKey>'),
    "hash_not_hex": ("LLMKeyHash", f'<LLMKey "c">\nLLMKeyHash sha256:{H[:-1]}g\n</LLMKey>'),
    "hash_no_prefix": ("LLMKeyHash", f'<LLMKey "c">\nLLMKeyHash {H}\n</LLMKey>'),
    "no_hash": ("LLMKeyHash", '<LLMKey "c">\nLLMRateLimit rpm=5\n</LLMKey>'),
    "duplicate_name": ("LLMKey", f'<LLMKey "c">\nLLMKeyHash sha256:{H}\n</LLMKey>\n'
                                 f'<LLMKey "c">\nLLMKeyHash sha256:{sha("other")}\n</LLMKey>'),
    "duplicate_hash": ("LLMKey", f'<LLMKey "c">\nLLMKeyHash sha256:{H}\n</LLMKey>\n'
                                 f'<LLMKey "d">\nLLMKeyHash sha256:{H.upper()}\n</LLMKey>'),
    "limit_outside": ("LLMRateLimit", "LLMRateLimit rpm=5"),
    "route_unknown": ("route=", key_conf("LLMRateLimit rpm=5 route=nope")),
    "price_bad": ("LLMPrice", "LLMPrice mock-small in=cheap out=1"),
    "price_half": ("LLMPrice", "LLMPrice mock-small in=1"),
    "require_bad": ("LLMRequireKey", '<Location "/x">\nLLMRequireKey maybe\n</Location>'),
    "key_from_bad": ("LLMKeyFrom", '<Location "/x">\nLLMKeyFrom cookie\n</Location>'),
    "max_tokens_zero": ("LLMMaxTokens", '<LLMRoute "mt">\nLLMBackend balancer://be\n'
                                        'LLMMaxTokens default=0\n</LLMRoute>'),
    "store_bad": ("LLMLimitStore", "LLMLimitStore redis 127.0.0.1:1"),
    "store_interval": ("LLMLimitStore", "LLMLimitStore memcache 127.0.0.1:1 interval=5"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONF))
def test_bad_limit_config_names_file_and_line(config_test, case):
    directive, snippet = BAD_CONF[case]
    rc, out, conf, first, last = config_test(snippet)
    assert rc != 0 and "Syntax OK" not in out, f"accepted:\n{snippet}\n{out}"
    assert directive in out and conf in out, out
    mentioned = {int(n) for n in re.findall(r"\bline (\d+)\b", out)}
    mentioned |= {int(n) for n in re.findall(re.escape(conf) + r":(\d+)", out)}
    assert mentioned & set(range(first, last + 1)), out
    assert "sk-config-test" not in out


def test_good_limit_config(config_test):
    rc, out, *_ = config_test(KEYS_CONF)
    assert rc == 0, out


# ---------------------------------------------------------------- secrets

def test_keys_never_in_logs_status_or_headers(gw_keys):
    # A request with each kind of key, good and bad, then every place a key
    # could leak to is searched for every secret.
    seen_headers = []
    for name in SECRETS:
        for h in (bearer(name), {"x-api-key": SECRETS[name]}):
            r = chat(gw_keys, headers=h, max_tokens=2)
            seen_headers.append(str(r.headers) + r.body.decode(errors="replace"))
        r = gw_keys.post(f"{CHAT}?api_key={SECRETS[name]}", env.chat_body(max_tokens=2))
        seen_headers.append(str(r.headers) + r.body.decode(errors="replace"))
    status = gw_keys.get("/server-status").body.decode() \
        + gw_keys.get("/server-status?auto").body.decode()
    time.sleep(0.5)                 # the access log is written after the answer
    texts = {"status": status, "headers": "".join(seen_headers)}
    for f in os.listdir(gw_keys.dir):
        if f.endswith((".log", ".out")):
            texts[f] = open(os.path.join(gw_keys.dir, f), errors="replace").read()
    for where, text in texts.items():
        for name, secret in SECRETS.items():
            assert secret not in text, f"{name}'s key in {where}"
            assert sha(secret) not in text, f"{name}'s hash in {where}"
    assert "key:alpha" in status     # the status does show the subjects


# ---------------------------------------------------------------- cache hits

def cached_pair(g, uniq, path=CHAT, stream=False):
    """The same deterministic request twice: a miss, then a hit; the
    tokens the subject was charged for each."""
    out = []
    for want in ("MISS", "HIT"):
        before = settled(g, "key:hits")["used"]
        body = env.chat_body(model="mock-small", content=f"cache me {uniq}",
                             temperature=0, max_tokens=12, stream=stream)
        if stream:
            r = g.stream(path, body, headers=bearer("hits"))
        else:
            r = g.post(path, body, headers=bearer("hits"))
        assert r.status == 200 and r.headers.get("X-LLM-Cache") == want, \
            (want, r.headers.get("X-LLM-Cache"))
        out.append(settled(g, "key:hits")["used"] - before)
    return out


def test_cache_hit_is_billed_in_full_by_default(gw_keys, uniq):
    miss, hit = cached_pair(gw_keys, uniq)
    assert miss > 0 and hit == miss
    miss, hit = cached_pair(gw_keys, uniq + "s", stream=True)
    assert miss > 0 and hit == miss


def test_cache_hit_is_free_with_llmcachebilling_free(node_a, uniq):
    miss, hit = cached_pair(node_a, uniq, path="/v1/chat/completions")
    assert miss > 0 and hit == 0


def test_llmcache_memcache_syncs_limits_by_default(request, workdir, ports, mocks,
                                                   limits_mc, uniq):
    """Without LLMLimitStore, nodes whose cache is memcached sync through it."""
    conf = (key_block("gossip", "LLMBudget tokens=100000 per=day")
            + f"LLMCache memcache {env.HOST}:{limits_mc.port}\n")
    c = env.serve_gateway(request, workdir, ports, f"gw-node-c-{uniq}", conf)
    d = env.serve_gateway(request, workdir, ports, f"gw-node-d-{uniq}", conf)
    gc, gd = next(c), next(d)
    try:
        used = 0
        for _ in range(5):
            r = chat(gc, "gossip", path="/v1/chat/completions", max_tokens=4)
            assert r.status == 200
            used += r.json()["usage"]["total_tokens"]
        deadline = time.monotonic() + 5
        while settled(gd, "key:gossip")["remote"] < used:
            assert time.monotonic() < deadline, limits(gd)
            time.sleep(0.1)
        assert settled(gd, "key:gossip")["remote"] == used
    finally:
        for gen in (c, d):
            next(gen, None)


def test_failover_to_a_fallback_route_moves_the_reservation(gw_keys):
    # lim-down's only member refuses connections: the request fails over
    # to LLMFallback's lim-fb, which answers. Its reservation moved along
    # (llmgw_limits_retarget): the key and the fallback route are charged
    # the answer's usage once, and nothing stays reserved.
    before = budget_of(gw_keys, "route:lim-fb")["used"]
    key_before = budget_of(gw_keys, "key:fo")["used"]
    r = chat(gw_keys, "fo", model="lim-down", max_tokens=4)
    assert r.status == 200, r.body[:300]
    assert r.json()["model"] == "mock-large", r.body[:300]
    total = r.json()["usage"]["total_tokens"]
    assert settled(gw_keys, "route:lim-fb")["used"] == before + total
    assert settled(gw_keys, "key:fo")["used"] == key_before + total
