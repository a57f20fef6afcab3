# The benchmark harness itself (not a benchmark: no time is asserted):
# `build/bench --smoke` starts every subject (the backend alone, bare
# mod_proxy, nginx, Portkey, the gateway missing and hitting its cache) and
# the model server of the switch scenario, and each must answer one
# request and one stream. And the backend mode the bench runs its
# zero-think-time runs on.
import concurrent.futures
import json
import os
import re
import subprocess

import llmgw_env as env

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_bench_smoke_every_subject_answers():
    p = subprocess.run([os.path.join(TOP, "build", "bench"), "--smoke"],
                       cwd=TOP, capture_output=True, text=True, timeout=900)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-3000:]
    m = re.search(r"smoke: (\d+) passed, (\d+) failed", out)
    assert m, out[-3000:]
    assert (int(m.group(1)), int(m.group(2))) == (7, 0), out[-3000:]
    assert "SKIP" not in out, out[-3000:]


def test_mock_threads_pool_answers_like_thread_per_connection(workdir):
    """mockllm --threads N (the bench's zero-think-time backend) serves many
    connections from a few epoll threads: the same answers, plain and
    streamed, as one thread per connection; bad values are refused."""
    binary = env.mockllm_path()
    pooled = env.MockBackend(binary, workdir, "pool2", extra_args=["--threads", "2"]).start()
    single = env.MockBackend(binary, workdir, "pool1", extra_args=["--threads", "1"]).start()
    plain = env.MockBackend(binary, workdir, "perconn").start()
    try:
        body = env.chat_body(content="same words from every mode")
        want = env.request(plain.port, "POST", "/v1/chat/completions", body).json()
        for m in (pooled, single):
            with concurrent.futures.ThreadPoolExecutor(24) as ex:
                answers = list(ex.map(
                    lambda _: env.request(m.port, "POST", "/v1/chat/completions", body),
                    range(48)))
            assert all(r.status == 200 for r in answers)
            got = answers[0].json()
            assert got["choices"] == want["choices"] and got["usage"] == want["usage"]
            s = env.stream(m.port, "/v1/chat/completions", dict(body, stream=True))
            assert s.status == 200 and s.events[-1][1] == "[DONE]"
            text = "".join(json.loads(d)["choices"][0]["delta"].get("content") or ""
                           for _, d in s.events[:-1] if json.loads(d)["choices"])
            assert text == want["choices"][0]["message"]["content"]
            assert m.stats()["generations"] == 49
    finally:
        for m in (pooled, single, plain):
            m.stop()
    for bad in ("-1", "257", "two"):
        p = subprocess.run([binary, "--port", "0", "--threads", bad],
                           capture_output=True, text=True, timeout=10)
        assert p.returncode == 2 and "invalid value for --threads" in p.stderr
