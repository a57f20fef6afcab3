# API keys, rate limits and token budgets through a real httpd: who may ask
# (401/403), admission under concurrency (429s with OpenAI's headers, used <=
# limit), exact settlement (plain, streamed, cut, failed), persistence across
# restarts and a kill -9, one budget across two nodes sharing memcached, and
# keys never showing up in a log, a status page or a header.
import base64
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
                        "persist", "cluster")}
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
    + key_block("conc", "LLMRateLimit concurrent=3")
    + key_block("kr", "LLMBudget tokens=1000000 per=day",
                "LLMRateLimit concurrent=1 route=mock-large")
    + key_block("cost", "LLMBudget cost=0.002 per=month")
    + key_block("huge", "LLMBudget tokens=100000 per=day")
    + "LLMPrice mock-small in=1 out=2\n"
)


def keys_extra(d):
    """The keyed gateway's configuration: the keys, a route with limits and
    max_tokens, APIs that need a key (OpenAI and Ollama) and one whose
    budget subject is the Basic-authenticated user."""
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
    yield from env.serve_gateway(request, workdir, ports, name, keys_extra(d))


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


def test_ollama_api_refuses_in_its_shape(gw_keys):
    r = gw_keys.post("/kollama/api/chat", {"model": "mock-small", "messages": [
        {"role": "user", "content": "hi"}], "stream": False})
    assert r.status == 401 and r.content_type == "application/json"
    doc = r.json()
    assert isinstance(doc["error"], str) and "API key" in doc["error"]
    r = gw_keys.post("/kollama/api/chat", {"model": "mock-small", "messages": [
        {"role": "user", "content": "hi"}], "stream": False}, headers=bearer("alpha"))
    assert r.status == 200, r.body[:300]


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
