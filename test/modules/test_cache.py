# The response cache as clients see it: X-LLM-Cache MISS/HIT/BYPASS, keys that
# change with every parameter, stream<->plain hits, TTL, size limit, policies,
# Cache-Control, the shm default, and memcached going away and coming back.
import json
import os
import signal
import threading
import time

import pytest

import llmgw_env as env
from llmgw_env import chat_body, in_threads

CHAT = "/v1/chat/completions"


def generations(mocks):
    return sum(m.stats()["generations"] for m in mocks.values())


def ask(g, body, headers=None):
    r = g.post(CHAT, body, headers=headers)
    assert r.status == 200, r.body
    return r


def ask_settled(g, body):
    """ask(), and wait for the request's access-log line: httpd writes it
    after the answer is stored, and the client has the last byte before
    that, so a request sent at once could still find the first one's lease
    (COALESCED) rather than its stored answer."""
    mark = g.log_mark()
    r = ask(g, body)
    g.wait_log_one(lambda l: l.request.startswith(f"POST {CHAT}"), since=mark)
    return r


def wait_for_hit(g, body, timeout, pause):
    """The cache's answer to BODY, asked every PAUSE seconds until it is HIT
    or TIMEOUT seconds have passed."""
    deadline = time.time() + timeout
    state = None
    while time.time() < deadline:
        state = ask(g, body).header("X-LLM-Cache")
        if state == "HIT":
            break
        time.sleep(pause)
    return state


def det(uniq, **kw):
    """A deterministic (cacheable) chat request unique to the test."""
    kw.setdefault("temperature", 0)
    kw.setdefault("max_tokens", 6)
    return chat_body(content=f"cache test {uniq}", **kw)


def test_miss_then_hit_without_backend(gw_cache, mocks, uniq):
    body = det(uniq)
    r1 = ask(gw_cache, body)
    assert r1.header("X-LLM-Cache") == "MISS"
    key = r1.header("X-LLM-Cache-Key")
    assert key and len(key) == 64
    before = generations(mocks)
    r2 = ask(gw_cache, body)
    assert r2.header("X-LLM-Cache") == "HIT"
    assert r2.header("X-LLM-Cache-Key") == key
    assert r2.json() == r1.json()
    assert r2.content_type.startswith("application/json")
    assert generations(mocks) == before, "a hit reached the backend"


TOOL = {"type": "function", "function": {"name": "f", "parameters": {}}}


@pytest.mark.parametrize("change", [
    {"max_tokens": 7},
    {"max_completion_tokens": 7},
    {"top_p": 0.5},
    {"seed": 3},
    {"stop": ["x"]},
    {"frequency_penalty": 0.5},
    {"presence_penalty": 0.5},
    {"logit_bias": {"50256": -100}},
    {"response_format": {"type": "json_object"}},
    {"tools": [TOOL]},
    {"messages": [{"role": "user", "content": "another prompt"}]},
    {"messages": [{"role": "system", "content": "be brief"},
                  {"role": "user", "content": "cache test"}]},
    {"model": "mock-large"},
], ids=lambda c: "+".join(c))
def test_every_parameter_changes_the_key(gw_cache, uniq, change):
    base = det(uniq)
    ask(gw_cache, base)
    assert ask(gw_cache, base).header("X-LLM-Cache") == "HIT"
    changed = dict(base, **change)
    r = ask(gw_cache, changed)
    assert r.header("X-LLM-Cache") == "MISS", change
    assert r.header("X-LLM-Cache-Key") != ask(gw_cache, base).header("X-LLM-Cache-Key")


# Each pair differs in one parameter only, on top of a request already
# cacheable without it (temperature 0, or a seed).
@pytest.mark.parametrize("base,variants", [
    ({"seed": 1}, [{"temperature": 0.5}, {"temperature": 0.7}, {"temperature": 1},
                   {"temperature": 1.5}, {"temperature": 0.5000001}]),
    ({}, [{"top_p": 0.9}, {"top_p": 1}, {"max_tokens": 5}, {"max_tokens": 60},
          {"stop": ["y"]}, {"stop": ["x", "y"]}, {"stop": "x"},
          {"tools": [TOOL, dict(TOOL, function={"name": "g", "parameters": {}})]},
          {"tools": [dict(TOOL, function={"name": "g", "parameters": {}})]},
          {"tool_choice": "none", "tools": [TOOL]},
          {"response_format": {"type": "text"}},
          {"response_format": {"type": "json_schema", "json_schema": {"name": "s"}}}]),
], ids=["temperature", "others"])
def test_parameter_values_give_their_own_entries(gw_shm, uniq, base, variants):
    """Every value of a parameter is its own cache entry: the first ask of
    each is a miss though the others are stored, the second a hit under
    its own key, and no two keys are alike."""
    start = det(uniq, **base)
    keys = []
    for v in [{}] + variants:
        body = dict(start, **v)
        first = ask(gw_shm, body)
        assert first.header("X-LLM-Cache") == "MISS", v
        again = ask(gw_shm, body)
        assert again.header("X-LLM-Cache") == "HIT", v
        assert again.header("X-LLM-Cache-Key") == first.header("X-LLM-Cache-Key"), v
        assert again.json() == first.json(), v
        keys.append(first.header("X-LLM-Cache-Key"))
    assert len(set(keys)) == len(keys), list(zip([{}] + variants, keys))


def test_temperature_equal_values_share_an_entry(gw_shm, uniq):
    """0 and 0.0, 0.5 and 0.50 are one temperature: one entry."""
    base = det(uniq, seed=1)
    key = ask(gw_shm, base).header("X-LLM-Cache-Key")
    r = ask(gw_shm, dict(base, temperature=0.0))
    assert (r.header("X-LLM-Cache"), r.header("X-LLM-Cache-Key")) == ("HIT", key)
    half = ask(gw_shm, dict(base, temperature=0.5))
    assert half.header("X-LLM-Cache-Key") != key
    raw = json.dumps(dict(base, temperature=0.5)).replace('"temperature": 0.5',
                                                          '"temperature": 0.50')
    assert '"temperature": 0.50' in raw
    r = ask(gw_shm, raw.encode())
    assert (r.header("X-LLM-Cache"), r.header("X-LLM-Cache-Key")) == \
        ("HIT", half.header("X-LLM-Cache-Key"))


def test_equal_meaning_same_key(gw_cache, uniq):
    # Key order, 0 vs 0.0 and the user field do not change the answer.
    a = det(uniq)
    b = {"user": "someone", "max_tokens": 6, "temperature": 0.0,
         "messages": a["messages"], "model": a["model"]}
    ka = ask(gw_cache, a).header("X-LLM-Cache-Key")
    r = ask(gw_cache, b)
    assert r.header("X-LLM-Cache-Key") == ka
    assert r.header("X-LLM-Cache") == "HIT"


def test_plain_entry_replays_as_stream(gw_cache, uniq):
    body = det(uniq)
    plain = ask(gw_cache, body).json()
    s = gw_cache.stream(CHAT, dict(body, stream=True))
    assert s.status == 200
    assert s.headers.get("X-LLM-Cache") == "HIT"
    assert s.content_type.startswith("text/event-stream")
    assert s.data()[-1] == "[DONE]"
    assert s.content() == plain["choices"][0]["message"]["content"] == \
        env.mock_text("mock-small", body["messages"], 6)
    first = s.chunks()[0]
    assert first["choices"][0]["delta"].get("role") == "assistant", first
    assert {(c["id"], c["object"], c["model"]) for c in s.chunks()} == \
        {(plain["id"], "chat.completion.chunk", plain["model"])}
    assert not [c for c in s.chunks() if "usage" in c]
    finish = [c["choices"][0]["finish_reason"] for c in s.chunks() if c.get("choices")]
    assert finish[-1] == plain["choices"][0]["finish_reason"]


def test_stream_entry_replays_chunks_and_serves_plain(gw_cache, mocks, uniq):
    body = det(uniq, stream=True, max_tokens=5)
    first = gw_cache.stream(CHAT, body)
    assert first.headers.get("X-LLM-Cache") == "MISS"
    before = generations(mocks)
    again = gw_cache.stream(CHAT, body)
    assert again.headers.get("X-LLM-Cache") == "HIT"
    # The same chunk sequence: one chunk per token, as the backend sent it.
    assert again.data() == first.data()
    plain = ask(gw_cache, dict(body, stream=False))
    assert plain.header("X-LLM-Cache") == "HIT"
    j = plain.json()
    assert j["object"] == "chat.completion"
    assert j["choices"][0]["message"]["content"] == first.content()
    assert j["usage"]["completion_tokens"] == 5
    assert generations(mocks) == before


def test_stream_hit_with_usage_when_asked(gw_cache, uniq):
    body = det(uniq, stream=True)
    gw_cache.stream(CHAT, body)
    s = gw_cache.stream(CHAT, dict(body, stream_options={"include_usage": True}))
    assert s.headers.get("X-LLM-Cache") == "HIT"
    usage = [c for c in s.chunks() if c.get("choices") == []]
    assert len(usage) == 1 and usage[0]["usage"]["completion_tokens"] == 6


def test_hit_is_logged_with_tokens(gw_cache, uniq):
    body = det(uniq)
    usage = ask(gw_cache, body).json()["usage"]
    mark = gw_cache.log_mark()
    ask(gw_cache, body)
    line = gw_cache.wait_log_one(lambda l: l.cache == "HIT", since=mark)
    # LLMCacheBilling full (the default): a hit counts the original tokens.
    assert line.total_tokens == str(usage["total_tokens"])
    assert line.cached_tokens == str(usage["total_tokens"])


def test_free_billing_counts_no_tokens_for_hits(gw_cache_b, uniq):
    body = det(uniq)
    usage = ask(gw_cache_b, body).json()["usage"]
    mark = gw_cache_b.log_mark()
    assert ask(gw_cache_b, body).header("X-LLM-Cache") == "HIT"
    line = gw_cache_b.wait_log_one(lambda l: l.cache == "HIT", since=mark)
    assert (line.prompt_tokens, line.completion_tokens, line.total_tokens) == \
        ("0", "0", "0"), line.raw
    assert line.cached_tokens == str(usage["total_tokens"])


def test_not_deterministic_is_bypassed(gw_cache, uniq):
    body = chat_body(content=f"warm {uniq}", max_tokens=3)      # no temperature
    r = ask(gw_cache, body)
    assert r.header("X-LLM-Cache") == "BYPASS"
    assert r.header("X-LLM-Cache-Key") is None
    assert ask(gw_cache, body).header("X-LLM-Cache") == "BYPASS"
    hot = dict(body, temperature=0.7)
    assert ask(gw_cache, hot).header("X-LLM-Cache") == "BYPASS"


def test_route_policies(gw_cache, uniq):
    body = chat_body("cache-all", content=f"policy {uniq}", max_tokens=3)
    assert ask(gw_cache, body).header("X-LLM-Cache") == "MISS"
    assert ask(gw_cache, body).header("X-LLM-Cache") == "HIT"
    off = chat_body("cache-off", content=f"policy {uniq}", max_tokens=3, temperature=0)
    assert ask(gw_cache, off).header("X-LLM-Cache") == "BYPASS"
    assert ask(gw_cache, off).header("X-LLM-Cache") == "BYPASS"


def test_cache_control_from_client(gw_cache, mocks, uniq):
    body = det(uniq)
    r = ask(gw_cache, body, headers={"Cache-Control": "no-store"})
    assert r.header("X-LLM-Cache") == "BYPASS"
    assert ask(gw_cache, body).header("X-LLM-Cache") == "MISS"   # nothing was stored
    before = generations(mocks)
    r = ask(gw_cache, body, headers={"Cache-Control": "no-cache"})
    assert r.header("X-LLM-Cache") == "MISS"
    assert generations(mocks) == before + 1, "no-cache must reach the backend"
    assert ask(gw_cache, body).header("X-LLM-Cache") == "HIT"


def test_per_key_opt_out(gw_cache, uniq):
    # SetEnvIf Authorization "^Bearer nocache-" llm-no-cache
    body = det(uniq)
    ask(gw_cache, body)
    assert ask(gw_cache, body).header("X-LLM-Cache") == "HIT"
    r = ask(gw_cache, body, headers={"Authorization": "Bearer nocache-team-b"})
    assert r.header("X-LLM-Cache") == "BYPASS"
    r = ask(gw_cache, body, headers={"Authorization": "Bearer team-a"})
    assert r.header("X-LLM-Cache") == "HIT"


def test_embeddings_cached(gw_cache, uniq):
    body = {"model": "mock-small", "input": [f"embed {uniq}", "two"]}
    r1 = gw_cache.post("/v1/embeddings", body)
    assert r1.status == 200 and r1.header("X-LLM-Cache") == "MISS"
    r2 = gw_cache.post("/v1/embeddings", body)
    assert r2.header("X-LLM-Cache") == "HIT"
    assert r2.json()["data"] == r1.json()["data"]


def test_ttl_expiry(gw_cache, uniq):
    body = det(uniq)
    ask(gw_cache, body)
    assert ask(gw_cache, body).header("X-LLM-Cache") == "HIT"
    time.sleep(4.2)                                  # the gateway's ttl=3
    assert ask(gw_cache, body).header("X-LLM-Cache") == "MISS"


def test_large_answers_skipped_not_truncated(gw_cache, uniq):
    big = det(uniq, max_tokens=15000)               # ~100 KB > max-item=64k
    r1 = ask_settled(gw_cache, big)
    assert r1.header("X-LLM-Cache") == "MISS"
    assert r1.json()["usage"]["completion_tokens"] == 15000
    assert r1.json()["choices"][0]["message"]["content"] == \
        env.mock_text("mock-small", big["messages"], 15000)
    r2 = ask_settled(gw_cache, big)
    assert r2.header("X-LLM-Cache") == "MISS", "a value over max-item was stored"
    assert r2.json()["choices"][0]["message"]["content"] == \
        r1.json()["choices"][0]["message"]["content"]
    small = det(uniq, max_tokens=2000)              # ~14 KB fits
    ask_settled(gw_cache, small)
    assert ask(gw_cache, small).header("X-LLM-Cache") == "HIT"


def test_memcached_outage_loses_no_request(gw_cache, memcached, uniq):
    body = det(uniq)
    want = ask(gw_cache, body).json()
    assert want["choices"][0]["message"]["content"] == \
        env.mock_text("mock-small", body["messages"], 6)
    results, stop = [], threading.Event()

    def load():
        n = 0
        while not stop.is_set() and n < 400:
            n += 1
            try:
                r = gw_cache.post(CHAT, body)
                doc = r.json() if r.status == 200 else None
                ok = (doc is not None and doc["choices"] == want["choices"]
                      and doc["usage"] == want["usage"]
                      and r.header("X-LLM-Cache") in ("HIT", "MISS", "BYPASS", "COALESCED"))
                results.append((ok, r.status, r.header("X-LLM-Cache"), r.body[:200]))
            except Exception as e:  # noqa: BLE001 - a lost request, reported below
                results.append((False, None, None, repr(e)))
            time.sleep(0.01)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        memcached.stop()
        time.sleep(1.0)
        memcached.start()               # same port, empty
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    bad = [r for r in results if not r[0]]
    assert results and not bad, f"{len(bad)} of {len(results)} wrong, e.g. {bad[:3]}"
    # The outage was seen: some answers went around the store.
    assert any(r[2] != "HIT" for r in results), {r[2] for r in results}
    # apr_memcache retries a dead server after a few seconds: the cache
    # comes back by itself.
    assert wait_for_hit(gw_cache, body, 15, 0.5) == "HIT"
    wait_out_store_retry()


def test_shm_default_cache_shared_by_children(gw_shm, mocks, uniq):
    """What one child stored, another serves. 24 different requests at once,
    each held 1 s by the backend, need more than one child's 16 threads, so
    their answers are stored by several children; asked again, every one is
    a hit, and at least one is served by a child that did not store it (if
    one child served all the hits, the others stored some of them). The
    access log says which process did what (%P)."""
    n = 24

    def body(i):
        return det(uniq, model=f"gpt-share-{uniq}-{i}",
                   messages=[{"role": "user", "content": f"share {uniq} {i}"}], max_tokens=3)

    def by_model(since):
        lines = gw_shm.wait_log(lambda l: l.model.startswith(f"gpt-share-{uniq}-"),
                                since=since, count=n)
        assert len(lines) == n, [l.raw for l in lines]
        return {int(l.model.rsplit("-", 1)[1]): l for l in lines}

    mark = gw_shm.log_mark()
    first = in_threads([lambda i=i: gw_shm.post(CHAT, body(i),
                                                headers={"X-Mock-TTFT-Ms": "1000"})
                        for i in range(n)])
    for i, r in enumerate(first):
        assert not isinstance(r, Exception), (i, r)
        assert (r.status, r.header("X-LLM-Cache")) == (200, "MISS"), (i, r.body[:200])
        assert r.json()["choices"][0]["message"]["content"] == \
            env.mock_text("mock-large", body(i)["messages"], 3)
    stored = by_model(mark)
    assert len({l.pid for l in stored.values()}) >= 2, [l.raw for l in stored.values()]

    before = generations(mocks)
    mark = gw_shm.log_mark()
    hits = in_threads([lambda i=i: gw_shm.post(CHAT, body(i)) for i in range(n)])
    for i, r in enumerate(hits):
        assert not isinstance(r, Exception), (i, r)
        assert (r.status, r.header("X-LLM-Cache")) == (200, "HIT"), (i, r.headers)
        assert r.json() == first[i].json(), i
    assert generations(mocks) == before
    served = by_model(mark)
    across = [i for i in range(n) if served[i].pid != stored[i].pid]
    assert across, "no hit was served by another child than the one that stored it"
    assert str(gw_shm.proc.pid) not in {l.pid for l in served.values()}


# ---- coalescing: identical requests in flight share one generation ----

def test_identical_requests_in_flight_generate_once(gw_cache, mocks, uniq):
    body = det(uniq, max_tokens=8)
    slow = {"X-Mock-TPS": "40"}         # ~200 ms of generation to share
    before = generations(mocks)
    fns = []
    for i in range(8):
        if i % 2:
            fns.append(lambda: gw_cache.stream(CHAT, dict(body, stream=True),
                                               headers=slow))
        else:
            fns.append(lambda: gw_cache.post(CHAT, body, headers=slow))
    results = in_threads(fns)
    assert generations(mocks) == before + 1, "identical requests reached the backend"
    texts, states = set(), []
    for res in results:
        assert not isinstance(res, Exception), res
        assert res.status == 200
        states.append(res.headers.get("X-LLM-Cache"))
        if hasattr(res, "chunks"):
            assert res.data()[-1] == "[DONE]"
            texts.add(res.content())
        else:
            texts.add(res.json()["choices"][0]["message"]["content"])
    assert texts == {env.mock_text("mock-small", body["messages"], 8)}, texts
    assert states.count("MISS") == 1, states
    assert "COALESCED" in states, states


def test_stream_follower_tails_the_leader(gw_cache, mocks, uniq):
    body = det(uniq, stream=True, max_tokens=10)
    slow = {"X-Mock-TPS": "20"}         # a token every 50 ms
    before = generations(mocks)

    def follower():
        time.sleep(0.15)
        return gw_cache.stream(CHAT, body, headers=slow)
    leader, follow = in_threads([lambda: gw_cache.stream(CHAT, body, headers=slow),
                                 follower])
    assert generations(mocks) == before + 1
    assert follow.headers.get("X-LLM-Cache") == "COALESCED"
    assert follow.content() == leader.content()
    assert follow.data()[-1] == "[DONE]"
    # It got tokens as they were generated, not all at the end.
    times = follow.content_times()
    assert times[-1] - times[0] >= 0.2, times


def lead_then_follow(g, lead_body, follow_bodies):
    """A leader stream, then, once its first event (the role chunk) is in,
    so it surely leads and is under way, FOLLOW_BODIES streamed at once.
    The backend waits 0.4 s before the first token (well under the
    followers' 1 s LLMCoalesce timeout) and takes 0.45 s more for the
    rest: the followers join long before the generation ends."""
    slow = {"X-Mock-TTFT-Ms": "400", "X-Mock-TPS": "20"}
    started = threading.Event()
    leader = []
    t = threading.Thread(target=lambda: leader.append(
        g.stream(CHAT, lead_body, headers=slow, on_event=lambda *_: started.set())))
    t.start()
    try:
        assert started.wait(10), "the leader got no first event"
        follows = in_threads([lambda b=b: g.stream(CHAT, b) for b in follow_bodies])
    finally:
        t.join(60)
    assert leader, "the leader's stream failed"
    return leader[0], follows


def without_usage(chunks):
    """Chunks as a client that did not ask for usage gets them: no usage-only
    chunk, no "usage": null member."""
    out = []
    for c in chunks:
        if c.get("choices") == [] and "usage" in c:
            continue
        assert c.get("usage", None) is None, c
        out.append({k: v for k, v in c.items() if k != "usage"})
    return out


def assert_usage_tail(s, completion_tokens):
    """The one usage-only chunk, last before [DONE], with the real counts."""
    assert s.data()[-1] == "[DONE]"
    usage = [c for c in s.chunks() if c.get("choices") == []]
    assert len(usage) == 1, s.data()
    assert s.chunks()[-1] is not None and s.chunks()[-1].get("choices") == [], s.data()[-3:]
    u = usage[0]["usage"]
    assert u["completion_tokens"] == completion_tokens, u
    assert u["total_tokens"] == u["prompt_tokens"] + completion_tokens, u
    # No chunk before it has a usage: the backend's "usage": null is not
    # in OpenAI's schema (an object when present), and the gateway drops it.
    assert not any("usage" in c for c in s.chunks()[:-1]), s.data()


def test_stream_followers_get_the_whole_chunk_sequence(gw_cache, mocks, uniq):
    """A follower replays the leader's chunks from the first (the role
    chunk) to [DONE], every field alike; the usage chunk only for a
    follower that asked for it."""
    body = det(uniq, stream=True, max_tokens=10)
    asks = dict(body, stream_options={"include_usage": True})
    before = generations(mocks)
    leader, (plain, usage) = lead_then_follow(gw_cache, body, [body, asks])
    assert generations(mocks) == before + 1
    assert leader.headers.get("X-LLM-Cache") == "MISS"
    for f in (plain, usage):
        assert not isinstance(f, Exception), f
        assert f.status == 200
        assert f.headers.get("X-LLM-Cache") == "COALESCED", f.headers
    first = leader.chunks()[0]
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}, first
    assert leader.content() == env.mock_text("mock-small", body["messages"], 10)
    assert not [c for c in leader.chunks() if "usage" in c], leader.data()
    # The follower that did not ask: exactly the leader's events.
    assert plain.data() == leader.data()
    # The one that asked: the same chunks with usage, and the usage chunk.
    assert_usage_tail(usage, 10)
    assert without_usage(usage.chunks()) == leader.chunks()


def test_stream_follower_of_a_leader_with_usage(gw_cache, mocks, uniq):
    """The leader asked for usage, its follower did not: no usage for it."""
    body = det(uniq, stream=True, max_tokens=10)
    asks = dict(body, stream_options={"include_usage": True})
    before = generations(mocks)
    leader, (follow,) = lead_then_follow(gw_cache, asks, [body])
    assert generations(mocks) == before + 1
    assert not isinstance(follow, Exception), follow
    assert follow.headers.get("X-LLM-Cache") == "COALESCED", follow.headers
    assert_usage_tail(leader, 10)
    assert b"usage" not in follow.raw, follow.data()
    assert follow.chunks() == without_usage(leader.chunks())
    assert follow.data()[-1] == "[DONE]"
    assert follow.chunks()[0]["choices"][0]["delta"].get("role") == "assistant"


def test_leader_failure_handed_over(gw_cache, mocks, uniq):
    body = det(uniq, max_tokens=10)
    before = generations(mocks)

    def leader():
        # Cut after about half of its tokens.
        return gw_cache.stream(CHAT, dict(body, stream=True),
                               headers={"X-Mock-Fault": "cut", "X-Mock-TPS": "20"})

    def follower():
        time.sleep(0.1)
        return gw_cache.post(CHAT, body)
    lead, f1, f2 = in_threads([leader, follower, follower])
    assert lead.status == 200
    assert lead.chunks()[-1].get("error", {}).get("code") == "upstream_stream_error"
    for f in (f1, f2):
        assert f.status == 200, f.body
        assert "usage" in f.json(), (f.headers, f.body)
        assert f.json()["usage"]["completion_tokens"] == 10
        assert f.json()["choices"][0]["message"]["content"] == \
            env.mock_text("mock-small", body["messages"], 10)
    assert f1.json()["choices"] == f2.json()["choices"]
    # The failed generation, then exactly one more for both followers.
    assert generations(mocks) == before + 2


def test_answer_cut_midway_is_not_cached(gw_shm, mocks, uniq):
    # The backend stops half-way through a plain answer: mod_proxy reports
    # it, the client gets a visibly broken answer, and nothing is kept to
    # replay.
    body = det(uniq, max_tokens=10)
    c = gw_shm.curl("-H", "Content-Type: application/json", "-H", "X-Mock-Fault: cut",
                    "--data-binary", json.dumps(body), CHAT)
    if c.status == 200:
        # Headers were out: the chunked body ends without its last chunk.
        assert c.rc == 18, (c.rc, c.stderr, c.body)
        with pytest.raises(ValueError):
            json.loads(c.body)
    else:
        assert c.rc == 0 and c.status >= 500, (c.rc, c.status, c.body)
        assert json.loads(c.body)["error"]["message"], c.body
    before = generations(mocks)
    again = ask(gw_shm, body)
    assert again.header("X-LLM-Cache") == "MISS", again.headers
    assert generations(mocks) == before + 1
    assert again.json()["usage"]["completion_tokens"] == 10
    assert again.json()["choices"][0]["message"]["content"] == \
        env.mock_text("mock-small", body["messages"], 10)


def test_follower_does_not_wait_past_its_timeout(gw_cache, uniq):
    body = det(uniq)

    def leader():
        try:
            return gw_cache.post(CHAT, body, headers={"X-Mock-Fault": "hang"},
                                 timeout=4)
        except OSError as e:
            return e

    def follower():
        time.sleep(0.2)
        t0 = time.monotonic()
        r = gw_cache.post(CHAT, body)
        return r, time.monotonic() - t0
    _, (r, took) = in_threads([leader, follower])
    assert r.status == 200, r.body
    assert r.json()["choices"][0]["message"]["content"] == \
        env.mock_text("mock-small", body["messages"], 6)
    # LLMCoalesce timeout=1: the follower gave up on the stuck leader.
    assert 0.9 <= took < 3.0, took


def test_two_nodes_share_cache_and_generation(gw_cache, gw_cache_b, mocks, uniq):
    body = det(uniq, max_tokens=8)
    slow = {"X-Mock-TPS": "40"}
    before = generations(mocks)
    nodes = [gw_cache, gw_cache_b] * 3
    results = in_threads([lambda g=g: g.post(CHAT, body, headers=slow) for g in nodes])
    assert all(r.status == 200 for r in results), results
    assert len({r.body for r in results}) == 1
    assert results[0].json()["choices"][0]["message"]["content"] == \
        env.mock_text("mock-small", body["messages"], 8)
    assert generations(mocks) == before + 1, "two nodes generated the same answer"
    # And the answer one node made is a hit on the other.
    other = dict(body, max_tokens=9)
    assert ask(gw_cache, other).header("X-LLM-Cache") == "MISS"
    assert ask(gw_cache_b, other).header("X-LLM-Cache") == "HIT"


def test_shm_coalesces_across_children(gw_shm, mocks, uniq):
    body = det(uniq, max_tokens=8)
    slow = {"X-Mock-TPS": "40"}
    before = generations(mocks)
    results = in_threads([lambda: gw_shm.post(CHAT, body, headers=slow)] * 6)
    assert all(r.status == 200 for r in results), results
    assert len({r.body for r in results}) == 1
    assert results[0].json()["choices"][0]["message"]["content"] == \
        env.mock_text("mock-small", body["messages"], 8)
    assert generations(mocks) == before + 1


def test_shm_churn_never_mixes_answers(gw_shm_small, uniq):
    # 360 different requests, many asked twice or more, from 8 threads over
    # all children, through a cache that holds some fifty answers: the
    # ring is overwritten while others read it without a lock. Each answer
    # must be its own request's: its token counts say which one it is.
    import json
    import random

    def body(v, k):
        return det(uniq + " w" * v, max_tokens=k)

    p0 = json.loads(ask(gw_shm_small, body(0, 1)).body)["usage"]["prompt_tokens"]
    rnd = random.Random(5)
    todo = [(rnd.randrange(30), rnd.randrange(1, 13)) for _ in range(480)]
    states = {}

    def worker(part):
        bad = []
        for v, k in part:
            r = gw_shm_small.post(CHAT, body(v, k))
            state = r.header("X-LLM-Cache")
            states[state] = states.get(state, 0) + 1
            u = json.loads(r.body)["usage"] if r.status == 200 else None
            if not u or (u["prompt_tokens"], u["completion_tokens"]) != (p0 + v, k):
                bad.append((v, k, r.status, state, r.body[:200]))
        return bad

    results = in_threads([lambda i=i: worker(todo[i::8]) for i in range(8)])
    assert all(isinstance(b, list) for b in results), results
    assert [b for b in results if b] == [], "answers mixed up"
    served = states.get("HIT", 0) + states.get("COALESCED", 0)
    assert served > 20, states                      # repeats were served
    assert states.get("MISS", 0) > len(set(todo)) + 50, states  # and evicted


def wait_out_store_retry():
    """Every child that met a memcached outage skips memcached for 2 s after
    its last failure (docs/directives.md, LLMCache), and a request reaches
    only one child: a test that stopped memcached waits that out, so that
    the shared gateway is left as found and later tests get no BYPASS."""
    time.sleep(2.2)


def _stop(pid):
    """SIGSTOP pid and wait until every thread of it stopped: kill() returns
    before they do, and meanwhile a memcached thread may still answer."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        states = []
        for t in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{t}/stat") as f:
                    states.append(f.read().rsplit(")", 1)[1].split()[0])
            except OSError:
                pass
        if states and all(st == "T" for st in states):
            return
        time.sleep(0.001)
    raise AssertionError(f"{pid} did not stop")


def test_stalled_memcached_costs_a_bounded_wait(gw_cache, memcached, uniq):
    # A memcached that accepts but never answers (SIGSTOP): each request waits
    # at most the store timeout (250 ms) once, then skips the store.
    body = det(uniq)
    ask(gw_cache, body)
    _stop(memcached.proc.pid)
    try:
        took = []
        for _ in range(6):
            t0 = time.monotonic()
            r = gw_cache.post(CHAT, body, timeout=10)
            took.append(time.monotonic() - t0)
            assert r.status == 200, r.body
            assert r.header("X-LLM-Cache") == "BYPASS", r.headers
            assert r.json()["choices"][0]["message"]["content"] == \
                env.mock_text("mock-small", body["messages"], 6)
        assert max(took) < 2.0, took
    finally:
        os.kill(memcached.proc.pid, signal.SIGCONT)
        wait_out_store_retry()
    assert wait_for_hit(gw_cache, body, 10, 0.3) == "HIT"
