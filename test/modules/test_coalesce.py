# Coalesced generations when things go wrong around them: the leader's
# client hanging up, and a cache so small that the pieces of shared streams
# are evicted before their followers read them.
import json
import socket
import threading
import time

import pytest

import llmgw_env as env
from llmgw_env import chat_body, in_threads

CHAT = "/v1/chat/completions"


def generations(mocks):
    return sum(m.stats()["generations"] for m in mocks.values())


def det(uniq, **kw):
    kw.setdefault("temperature", 0)
    return chat_body(content=f"coalesce test {uniq}", **kw)


def wait_cache_up(g, uniq):
    """The store as it is when this test starts: memcached may still count
    as down (it is skipped for 2 s after it failed) when an earlier test
    stopped or stalled it. Waits until a cacheable request is no BYPASS."""
    deadline = time.monotonic() + 10
    n = 0
    while True:
        n += 1
        r = g.post(CHAT, det(f"{uniq}-up-{n}", max_tokens=1))
        state = r.header("X-LLM-Cache")
        if state != "BYPASS" or time.monotonic() > deadline:
            return state
        time.sleep(0.2)


def stream_and_hang_up(port, body, headers, events=2, linger=0.0,
                       answered=None):
    """POSTs a stream on a raw socket, reads EVENTS complete SSE events,
    waits LINGER seconds and closes the connection: a client that leaves in
    the middle. Sets the event ANSWERED (if given) once the response head
    came. Returns the response head and the time it hung up."""
    data = json.dumps(body).encode()
    head = [f"POST {CHAT} HTTP/1.1", f"Host: {env.HOST}",
            "Content-Type: application/json", f"Content-Length: {len(data)}"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    s = socket.create_connection((env.HOST, port), timeout=20)
    try:
        s.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        buf = b""
        while True:
            piece = s.recv(4096)
            assert piece, f"the stream ended before {events} events: {buf!r}"
            buf += piece
            resp_head, sep, rest = buf.partition(b"\r\n\r\n")
            if sep and answered:
                answered.set()
            if rest.count(b"\n\n") >= events:
                time.sleep(linger)
                return resp_head.decode("latin-1"), time.monotonic()
    finally:
        s.close()


def assert_whole_stream(s, expected, usage_tokens=None):
    """A follower's stream, as its client sees it: the role first, every
    word, the finish reason, [DONE], no error event."""
    assert not isinstance(s, Exception), s
    assert s.status == 200, s.raw[:300]
    assert s.data()[-1] == "[DONE]", s.data()[-3:]
    chunks = s.chunks()
    assert not [c for c in chunks if "error" in c], s.data()[-3:]
    assert chunks[0]["choices"][0]["delta"].get("role") == "assistant", chunks[0]
    finish = [c["choices"][0]["finish_reason"] for c in chunks if c.get("choices")]
    assert finish[-1] in ("stop", "length"), finish
    assert s.content() == expected
    usage = [c for c in chunks if "usage" in c and c.get("choices") == []]
    if usage_tokens is None:
        assert not usage, usage
    else:
        assert len(usage) == 1 and \
            usage[0]["usage"]["completion_tokens"] == usage_tokens, usage


@pytest.mark.parametrize("fixture", ["gw_cache", "gw_shm"])
def test_leader_client_leaving_does_not_end_the_followers(request, mocks, uniq,
                                                          fixture):
    # The leader's client reads two events and hangs up while ten followers
    # (on other connections and children; with memcached, through the store
    # as other nodes would) tail its stream: they still get the whole
    # answer, from the one generation, which is also stored for later.
    g = request.getfixturevalue(fixture)
    assert wait_cache_up(g, uniq) == "MISS"
    body = det(uniq, stream=True, max_tokens=16)
    slow = {"X-Mock-TPS": "20"}             # a token every 50 ms
    expected = g.post(CHAT, dict(body, stream=False),
                      headers={"Cache-Control": "no-store"}).json()
    expected = expected["choices"][0]["message"]["content"]
    before = generations(mocks)
    mark = g.log_mark()

    # The leader has its lease once its answer began (the lease is taken
    # before the backend is asked): only then do the followers come, so
    # that none of them can lead, however slow the machine.
    answered = threading.Event()

    def follower(i):
        assert answered.wait(20), "the leader got no answer"
        opts = {"stream_options": {"include_usage": True}} if i % 2 else {}
        return g.stream(CHAT, dict(body, **opts), headers=slow)

    fns = [lambda: stream_and_hang_up(g.port, body, slow, linger=0.3,
                                      answered=answered)]
    fns += [lambda i=i: follower(i) for i in range(10)]
    results = in_threads(fns, timeout=120)
    head, _ = results[0]
    assert "X-LLM-Cache: MISS" in head, head
    states = [f.headers.get("X-LLM-Cache") if not isinstance(f, Exception) else f
              for f in results[1:]]
    assert states == ["COALESCED"] * 10, states
    for i, f in enumerate(results[1:]):
        assert_whole_stream(f, expected, 16 if i % 2 else None)
    assert generations(mocks) == before + 1, "a follower asked the backend"
    # The leader's request ends with its generation, and what it made is
    # the cache's answer.
    g.wait_log_one(lambda l: l.cache == "MISS" and l.stream == "1", since=mark)
    hit = g.stream(CHAT, body)
    assert hit.headers.get("X-LLM-Cache") == "HIT"
    assert_whole_stream(hit, expected)
    assert generations(mocks) == before + 1


def test_client_leaving_alone_stops_the_generation(gw_cache, uniq):
    # Without followers to serve (not cacheable: no temperature), a client
    # that leaves ends the request at once: mod_proxy stops reading the
    # backend rather than generate 40 tokens for no one.
    model = f"gpt-{uniq}"
    body = chat_body(model, content=f"alone {uniq}", stream=True, max_tokens=40)
    mark = gw_cache.log_mark()
    head, left = stream_and_hang_up(gw_cache.port, body, {"X-Mock-TPS": "10"})
    assert "X-LLM-Cache: BYPASS" in head, head
    gw_cache.wait_log_one(lambda l: l.model == model, since=mark, timeout=10)
    # 40 tokens at 10/s would end 4 s after the start.
    assert time.monotonic() - left < 2.0


def test_shared_streams_survive_a_small_evicting_cache(gw_shm_small, uniq):
    # LLMCache shm size=64k max-item=8k: an index of some 120 entries and a
    # ring of 62k. Each round, eight streams with three followers each
    # write about 150 entries (pieces, leases, end marks, answers), so
    # pieces are pushed out while their followers are still to read them
    # (about ten times a run: "left the store before this follower read it"
    # in the error log). Each follower must still get its whole stream, the
    # rest from the stored answer (eight answers of 3.5k fit in the ring),
    # never an error, and never hang.
    g = gw_shm_small
    tokens, groups, followers, rounds = 12, 8, 3, 30
    slow = {"X-Mock-TPS": "200"}        # 60 ms per stream
    bad, states = [], {}

    def lead(b):
        return "lead", b, g.stream(CHAT, b, headers=slow)

    def follow(b, i):
        time.sleep(0.01 + 0.02 * i)
        if i == 1:
            return "usage", b, g.stream(CHAT, dict(b, stream_options={
                "include_usage": True}), headers=slow)
        return "follow", b, g.stream(CHAT, b, headers=slow)

    for n in range(rounds):
        fns = []
        for k in range(groups):
            b = det(f"{uniq} r{n} g{k}", stream=True, max_tokens=tokens)
            fns.append(lambda b=b: lead(b))
            fns += [lambda b=b, i=i: follow(b, i) for i in range(followers)]
        contents = {}
        for res in in_threads(fns, timeout=120):
            if isinstance(res, Exception):
                bad.append(f"round {n}: {res!r}")
                continue
            kind, b, s = res
            state = s.headers.get("X-LLM-Cache")
            states[state] = states.get(state, 0) + 1
            try:
                assert s.data()[-1] == "[DONE]", s.data()[-2:]
                if kind != "lead":
                    assert_whole_stream(s, s.content(),
                                        tokens if kind == "usage" else None)
                    assert len(s.content().split()) == tokens, s.content()
                contents.setdefault(b["messages"][0]["content"],
                                    set()).add(s.content())
            except AssertionError as e:
                bad.append(f"round {n} {kind} {state}: {e}")
        bad += [f"round {n}: {k!r} got {len(v)} answers"
                for k, v in contents.items() if len(v) != 1]
    assert not bad, "\n".join(bad[:10])
    # Most followers followed (the others came late or after an eviction
    # of the lease, and asked the backend or got the stored answer).
    assert states.get("COALESCED", 0) > rounds * groups, states


def test_stalled_leader_ends_a_started_follower_with_the_error_event(gw_cache,
                                                                    uniq):
    # LLMCoalesce timeout=1: the leader's backend sends the role chunk and
    # the first content piece, then nothing for 3 s (X-Mock-Pause-Ms): the
    # leader is past its commit point (the first delta), so what it got is
    # published. A streaming follower that joined then has sent that to its
    # client, so it cannot start again on its own: after 1 s without
    # progress its stream ends with the error chunk, the error event
    # (upstream_timeout) and [DONE] (docs/directives.md, LLMCoalesce), long
    # before the leader's second token.
    assert wait_cache_up(gw_cache, uniq) == "MISS"
    body = det(uniq, stream=True, max_tokens=4)
    stall = {"X-Mock-Pause-Ms": "3000"}
    first = []

    def leader():
        def seen(t, d):
            try:
                c = json.loads(d)["choices"][0]["delta"].get("content")
            except (ValueError, KeyError, IndexError, TypeError):
                return
            if c:
                first.append((t, c))
        return gw_cache.stream(CHAT, body, headers=stall, on_event=seen)

    def follower():
        deadline = time.monotonic() + 10
        while not first and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)             # the leader has published its first piece
        t0 = time.monotonic()
        f = gw_cache.stream(CHAT, body, headers=stall)
        return t0, time.monotonic(), f

    lead, (t0, t1, f) = in_threads([leader, follower], timeout=60)
    assert lead.status == 200 and lead.data()[-1] == "[DONE]", lead.raw[-300:]
    assert "X-LLM-Cache: MISS" in str(lead.headers), lead.headers
    assert first, lead.raw[:500]
    assert f.status == 200, f.raw[:300]
    assert f.headers.get("X-LLM-Cache") == "COALESCED", f.headers
    chunks = f.chunks()
    assert chunks[0]["choices"][0]["delta"].get("role") == "assistant", chunks
    errors = [c["error"] for c in chunks if "error" in c]
    assert [e["code"] for e in errors] == ["upstream_timeout"], f.data()
    assert f.data()[-1] == "[DONE]", f.data()[-3:]
    # It had sent the first piece, and ended before the second came.
    assert f.content() == first[0][1], (f.data(), first)
    assert lead.content().startswith(first[0][1]) and lead.content() != first[0][1]
    assert t1 - t0 < 2.5, t1 - t0
