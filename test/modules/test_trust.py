# What the gateway reads is what the backend reads: text that parsers could
# read two ways (U+0000, raw control characters, a key twice, lone
# surrogates) is refused before it is routed or keyed; numbers and every
# other byte reach the backend as the client sent them; cache keys tell
# apart every distinct number; the gateway's own JSON is valid UTF-8.
import json

import pytest

from llmgw_env import assert_openai_error

CHAT = "/v1/chat/completions"


def upstream_text(mocks, marker):
    """The raw body the backend got for the request carrying MARKER."""
    for m in (mocks["a"], mocks["b"]):
        body = m.last()["body"]
        if marker in body:
            return body
    raise AssertionError(f"no backend saw a request with {marker}")


AMBIGUOUS = [
    # A raw NUL inside a string (json-c's re-parse of a rewritten body
    # failed on it and the backend got {"model":...} alone).
    ('{"model":"small","messages":[{"role":"user","content":"a\x00b"}]}',
     "U+0000"),
    ('{"model":"small","stream":true,"messages":[{"role":"user",'
     '"content":"tab\there"}]}', "control character"),
    # U+0000 escaped: routed and keyed as mock-small, sent whole.
    ('{"model":"mock-small\\u0000evil","temperature":0,"messages":[]}',
     "U+0000"),
    ('{"model":"mock-small","temperature":0,"messages\\u0000":[{"role":'
     '"user","content":"evil"}],"messages":[]}', "U+0000"),
    # Parsers disagree on which of two keys counts.
    ('{"model":"nope","model":"mock-small","messages":[]}', "same key twice"),
    ('{"model":"mock-small","messages":[{"role":"user","content":'
     '"\\ud800"}]}', "surrogate"),
    ('{"model":"mock-small","seed":1,"temperature":1e999,"messages":[]}',
     "out of range"),
]


@pytest.mark.parametrize("body,why", AMBIGUOUS)
def test_ambiguous_json_is_refused_on_both_apis(gw, mocks, body, why):
    before = sum(m.stats()["requests"] for m in mocks.values())
    r = gw.post(CHAT, body.encode())
    err = assert_openai_error(r, 400, "invalid_request_error", "invalid_json")
    assert why in err["message"], err
    r = gw.post("/api/chat", body.encode())
    assert r.status == 400, r.body
    assert why in r.json()["error"], r.body
    after = sum(m.stats()["requests"] for m in mocks.values())
    assert after == before, "a refused request reached a backend"


def test_nul_model_does_not_poison_the_cache(gw_cache, uniq):
    content = f"poison {uniq}"
    evil = ('{"model":"mock-small\\u0000evil","temperature":0,"messages":'
            '[{"role":"user","content":"%s"}]}' % content)
    assert gw_cache.post(CHAT, evil.encode()).status == 400
    good = {"model": "mock-small", "temperature": 0,
            "messages": [{"role": "user", "content": content}]}
    r = gw_cache.post(CHAT, good)
    assert r.status == 200
    assert r.header("X-LLM-Cache") == "MISS"


def test_rewritten_body_keeps_the_clients_bytes(gw, mocks, uniq):
    # The alias "small" is renamed to mock-small and a stream gets
    # include_usage: only those two members change upstream.
    body = ('{"model":"small",  "seed":18446744073709551617,'
            '"temperature":0.70,"top_p":1e-7,"stream":true,'
            '"stream_options":{"include_usage":false},"messages":[{"role":'
            '"user","content":"caf\\u00e9 %s \\ud83d\\ude00"}]}' % uniq)
    s = gw.stream(CHAT, body.encode())
    assert s.status == 200 and s.data()[-1] == "[DONE]"
    sent = upstream_text(mocks, uniq)
    want = body.replace('"small"', '"mock-small"').replace(
        '"include_usage":false', '"include_usage":true')
    assert sent == want


def key_of(g, **kw):
    body = {"model": "mock-small", "max_tokens": 4,
            "messages": [{"role": "user", "content": "numbers"}]}
    body.update(kw)
    r = g.post(CHAT, json.dumps(body).encode())
    assert r.status == 200, r.body
    return r.header("X-LLM-Cache-Key")


def test_cache_keys_tell_every_number_apart(gw_cache):
    # APR's %.17g wrote 1e100 and 1e300 alike; big seeds were clamped.
    seeds = [2**63 - 1, 2**63, 2**64, 2**64 + 1]
    keys = {key_of(gw_cache, seed=s) for s in seeds}
    assert len(keys) == len(seeds)
    keys = {key_of(gw_cache, seed=1, top_p=v) for v in (1e100, 1e300, 5e300)}
    assert len(keys) == 3
    # Neighbouring doubles.
    keys = {key_of(gw_cache, seed=1, top_p=v)
            for v in (0.9, 0.9000000000000001, 0.9000000000000002)}
    assert len(keys) == 3
    # The same number written two ways is one key.
    raw = ('{"model":"mock-small","max_tokens":4,"seed":1,"top_p":%s,'
           '"messages":[{"role":"user","content":"numbers"}]}')
    k1 = gw_cache.post(CHAT, (raw % "0.5").encode()).header("X-LLM-Cache-Key")
    k2 = gw_cache.post(CHAT, (raw % "5e-1").encode()).header("X-LLM-Cache-Key")
    assert k1 == k2


def test_own_json_is_valid_utf8(gw):
    r = gw.get("/v1/models/mock-%ff")
    assert r.status == 404
    doc = json.loads(r.body.decode("utf-8"))   # strict: raises if invalid
    assert "\ufffd" in doc["error"]["message"]
    r = gw.post("/api/show", b'{"model":"x\\udc00"}')
    assert r.status == 400
    json.loads(r.body.decode("utf-8"))
