# Load across the balancer: both members share the work, many concurrent plain
# and streamed requests all succeed, several httpd children really serve them.
import threading
import time

import llmgw_env as env
from llmgw_env import chat_body

CHAT = "/v1/chat/completions"


def test_several_children(gw, uniq):
    """Requests really land in several httpd children (shared memory, the
    balancer state and the model table, only matters across processes):
    24 requests at once, each held 1 s by the backend, are more than one
    child's 16 threads, so another child must take some. The access log
    says which process served each (%P)."""
    n = 24
    results = [None] * n
    start = threading.Event()

    def one(i):
        body = chat_body(f"gpt-kids-{uniq}-{i}", content=f"child {i}", max_tokens=3)
        start.wait(10)
        try:
            results[i] = gw.post(CHAT, body, headers={"X-Mock-TTFT-Ms": "1000"})
        except Exception as e:  # noqa: BLE001 - reported below with its index
            results[i] = e

    mark = gw.log_mark()
    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    start.set()
    for t in threads:
        t.join(60)
    for i, r in enumerate(results):
        assert not isinstance(r, Exception) and r is not None, (i, r)
        assert r.status == 200, (i, r.body[:200])
        assert r.json()["choices"][0]["message"]["content"] == \
            env.mock_text("mock-large", [{"role": "user", "content": f"child {i}"}], 3)
    lines = gw.wait_log(lambda l: l.model.startswith(f"gpt-kids-{uniq}-"), since=mark,
                        count=n)
    assert len(lines) == n, [l.raw for l in lines]
    pids = {int(l.pid) for l in lines}
    assert len(pids) >= 2, f"all {n} requests served by one process: {pids}"
    assert gw.proc.pid not in pids          # children, not the parent


def test_sequential_requests_use_both_members(gw):
    time.sleep(1.5)     # members put in error by earlier fault tests return
    seen = {}
    for _ in range(40):
        r = gw.post(CHAT, chat_body(max_tokens=1))
        assert r.status == 200, r.body
        assert r.json()["choices"][0]["message"]["content"] == \
            env.mock_text("mock-small", chat_body()["messages"], 1)
        name = r.header("X-Mock-Backend")
        assert r.json()["system_fingerprint"] == f"mock-{name}"
        seen[name] = seen.get(name, 0) + 1
    assert set(seen) == {"a", "b"}, seen


def test_concurrent_mixed_requests(gw, uniq):
    n = 64
    # Generation is deterministic, so one answer tells what all must say.
    ref = gw.post(CHAT, chat_body("gpt-ref", max_tokens=8))
    assert ref.status == 200, ref.body
    expected = ref.json()["choices"][0]["message"]["content"]
    assert expected == env.mock_text("mock-large", chat_body()["messages"], 8)
    results = [None] * n
    start = threading.Event()

    def one(i):
        model = f"gpt-load-{uniq}-{i}"
        body = chat_body(model, max_tokens=8)
        start.wait(10)
        try:
            if i % 2:
                s = gw.stream(CHAT, dict(body, stream=True), timeout=30)
                ok = s.status == 200 and s.data()[-1] == "[DONE]" and s.content() == expected
                results[i] = (ok, s.status, s.raw[-200:])
            else:
                r = gw.post(CHAT, body, timeout=30)
                ok = (r.status == 200
                      and r.json()["choices"][0]["message"]["content"] == expected)
                results[i] = (ok, r.status, r.body[:200])
        except Exception as e:  # noqa: BLE001 - reported below with its index
            results[i] = (False, None, repr(e))

    mark = gw.log_mark()
    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    start.set()
    deadline = time.monotonic() + 60
    for t in threads:
        t.join(max(0.1, deadline - time.monotonic()))
    bad = [(i, res) for i, res in enumerate(results) if not res or not res[0]]
    assert not bad, f"{len(bad)} of {n} failed, e.g. {bad[:3]}"

    def ours(line):
        return line.model.startswith(f"gpt-load-{uniq}-")
    lines = gw.wait_log(ours, since=mark, count=n, timeout=10)
    assert len(lines) == n, f"{len(lines)} log lines for {n} requests"
    for line in lines:
        assert line.status == "200", line.raw
        assert line.completion_tokens == "8", line.raw
        assert int(line.total_tokens) == int(line.prompt_tokens) + 8, line.raw
    assert {l.stream for l in lines} == {"0", "1"}
