# The response cache as clients see it: X-LLM-Cache MISS/HIT/BYPASS, keys that
# change with every parameter, stream<->plain hits, TTL, size limit, policies,
# Cache-Control, the shm default, and memcached going away and coming back.
import os
import signal
import threading
import time

import pytest

from llmgw_env import chat_body

CHAT = "/v1/chat/completions"


def generations(mocks):
    return sum(m.stats()["generations"] for m in mocks.values())


def ask(g, body, headers=None):
    r = g.post(CHAT, body, headers=headers)
    assert r.status == 200, r.body
    return r


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


@pytest.mark.parametrize("change", [
    {"temperature": 0.0, "max_tokens": 7},
    {"top_p": 0.5},
    {"seed": 3},
    {"stop": ["x"]},
    {"response_format": {"type": "json_object"}},
    {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
    {"messages": [{"role": "user", "content": "another prompt"}]},
    {"model": "mock-large"},
])
def test_every_parameter_changes_the_key(gw_cache, uniq, change):
    base = det(uniq)
    ask(gw_cache, base)
    assert ask(gw_cache, base).header("X-LLM-Cache") == "HIT"
    changed = dict(base, **change)
    r = ask(gw_cache, changed)
    assert r.header("X-LLM-Cache") == "MISS", change
    assert r.header("X-LLM-Cache-Key") != ask(gw_cache, base).header("X-LLM-Cache-Key")


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
    assert s.content() == plain["choices"][0]["message"]["content"]
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
    r1 = ask(gw_cache, big)
    assert r1.header("X-LLM-Cache") == "MISS"
    assert r1.json()["usage"]["completion_tokens"] == 15000
    r2 = ask(gw_cache, big)
    assert r2.header("X-LLM-Cache") == "MISS", "a value over max-item was stored"
    assert r2.json()["choices"][0]["message"]["content"] == \
        r1.json()["choices"][0]["message"]["content"]
    small = det(uniq, max_tokens=2000)              # ~14 KB fits
    ask(gw_cache, small)
    assert ask(gw_cache, small).header("X-LLM-Cache") == "HIT"


def test_memcached_outage_loses_no_request(gw_cache, memcached, uniq):
    body = det(uniq)
    ask(gw_cache, body)
    results, stop = [], threading.Event()

    def load():
        n = 0
        while not stop.is_set() and n < 400:
            n += 1
            results.append(gw_cache.post(CHAT, body).status)
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
    assert results and all(s == 200 for s in results), \
        f"{sum(s != 200 for s in results)} of {len(results)} failed"
    # apr_memcache retries a dead server after a few seconds: the cache
    # comes back by itself.
    deadline = time.time() + 15
    state = None
    while time.time() < deadline:
        state = ask(gw_cache, body).header("X-LLM-Cache")
        if state == "HIT":
            break
        time.sleep(0.5)
    assert state == "HIT"


def test_shm_default_cache_shared_by_children(gw_shm, mocks, uniq):
    body = det(uniq)
    assert ask(gw_shm, body).header("X-LLM-Cache") == "MISS"
    before = generations(mocks)
    # New connections spread over both children: every one must hit.
    states = [ask(gw_shm, body).header("X-LLM-Cache") for _ in range(30)]
    assert states == ["HIT"] * 30
    assert generations(mocks) == before
    pids = {ask(gw_shm, body).header("X-LLM-Cache") for _ in range(3)}
    assert pids == {"HIT"}
    assert len(gw_shm.children()) >= 2


# ---- coalescing: identical requests in flight share one generation ----

def in_threads(fns):
    out = [None] * len(fns)

    def run(i, fn):
        try:
            out[i] = fn()
        except Exception as e:          # surfaced by the assertions below
            out[i] = e
    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(fns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


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
    assert len(texts) == 1, texts
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
    assert f1.json()["choices"] == f2.json()["choices"]
    # The failed generation, then exactly one more for both followers.
    assert generations(mocks) == before + 2


def test_answer_cut_midway_is_not_cached(gw_shm, uniq):
    # The backend stops half-way through a plain answer: mod_proxy reports
    # it, the client gets a broken answer, and nothing is kept to replay.
    body = det(uniq, max_tokens=10)
    try:
        cut = gw_shm.post(CHAT, body, headers={"X-Mock-Fault": "cut"})
        assert cut.status != 200 or "usage" not in cut.body, cut.body
    except Exception:                   # the body ends early: that is the cut
        pass
    again = ask(gw_shm, body)
    assert again.header("X-LLM-Cache") == "MISS", again.headers
    assert again.json()["usage"]["completion_tokens"] == 10


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
        assert max(took) < 2.0, took
    finally:
        os.kill(memcached.proc.pid, signal.SIGCONT)
    deadline = time.time() + 10
    state = None
    while time.time() < deadline:
        state = ask(gw_cache, body).header("X-LLM-Cache")
        if state == "HIT":
            break
        time.sleep(0.3)
    assert state == "HIT"
