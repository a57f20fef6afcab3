# Load across the balancer: both members share the work, many concurrent plain
# and streamed requests all succeed, several httpd children really serve them.
import threading
import time

from llmgw_env import chat_body

CHAT = "/v1/chat/completions"


def test_several_children(gw):
    # Shared memory (balancer state, model table) only matters across processes.
    assert len(gw.children()) >= 2, gw.children()


def test_sequential_requests_use_both_members(gw):
    time.sleep(1.5)     # members put in error by earlier fault tests return
    seen = {}
    for _ in range(40):
        r = gw.post(CHAT, chat_body(max_tokens=1))
        assert r.status == 200, r.body
        name = r.header("X-Mock-Backend")
        seen[name] = seen.get(name, 0) + 1
    assert set(seen) == {"a", "b"}, seen


def test_concurrent_mixed_requests(gw, uniq):
    n = 64
    # Generation is deterministic, so one answer tells what all must say.
    ref = gw.post(CHAT, chat_body("gpt-ref", max_tokens=8))
    assert ref.status == 200, ref.body
    expected = ref.json()["choices"][0]["message"]["content"]
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
