# build/demo as a user runs it: it prints its ready: lines, serves chats and
# streams on LLMGW_PORT, and SIGTERM stops every process it started.
import os
import signal
import subprocess
import time

import llmgw_env as env
from llmgw_env import chat_body

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def session_processes(sid):
    """Live processes of session sid: the demo runs in its own session, so
    everything it started (httpd and its children, mock backends) is here."""
    found = []
    for pid, fields in env.proc_stats():
        if int(fields[3]) != sid or fields[0] == "Z":
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        found.append((pid, cmd))
    return found


def test_demo_serves_and_stops_everything():
    port = env.free_port()
    proc = subprocess.Popen([os.path.join(TOP, "build", "demo")],
                            env=dict(os.environ, LLMGW_PORT=str(port)),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    ready, out = [], []
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            out.append(line)
            if line.startswith("ready:"):
                ready.append(line)
            if line.startswith("logs:"):
                break
        assert any(f"http://127.0.0.1:{port}/v1" in l for l in ready), "".join(out)
        run_dir = [l for l in out if l.startswith("logs:")][0].split()[1]
        run_dir = os.path.dirname(run_dir)

        r = env.request(port, "GET", "/v1/models")
        assert r.status == 200
        ids = [m["id"] for m in r.json()["data"]]
        assert "mock-small" in ids and "gpt-4o-mini" in ids
        r = env.request(port, "POST", "/v1/chat/completions",
                        chat_body("gpt-4o-mini", max_tokens=3))
        assert r.status == 200, r.body
        assert r.json()["choices"][0]["message"]["content"]
        cold = chat_body("mock-small", temperature=0, max_tokens=3)
        first = env.request(port, "POST", "/v1/chat/completions", cold)
        again = env.request(port, "POST", "/v1/chat/completions", cold)
        assert (first.header("X-LLM-Cache"), again.header("X-LLM-Cache")) == \
            ("MISS", "HIT")
        # Every backend dialect, and the Ollama API on the same port.
        for model in ("qwen-mock", "llama-mock"):
            r = env.request(port, "POST", "/v1/chat/completions",
                            chat_body(model, max_tokens=2))
            assert r.status == 200, (model, r.body)
        r = env.request(port, "POST", "/api/chat",
                        dict(chat_body("qwen-mock"), stream=False))
        assert r.status == 200 and r.json()["message"]["content"], r.body
        tags = [m["name"] for m in env.request(port, "GET", "/api/tags").json()["models"]]
        assert {"mock-small", "qwen-mock", "llama-mock"} <= set(tags)
        # What the ollama CLI asks first (OLLAMA_HOST=127.0.0.1:PORT).
        assert env.request(port, "HEAD", "/").status == 200
        assert env.request(port, "GET", "/").body == b"Ollama is running"
        s = env.stream(port, "/v1/chat/completions",
                       chat_body("mock-small", stream=True, max_tokens=3))
        assert s.data()[-1] == "[DONE]"
        started = [cmd for _, cmd in session_processes(proc.pid)]
        assert any("apache2" in c for c in started), started
        assert sum("mockllm" in c for c in started) == 3, started
        assert any(c.startswith("memcached") for c in started), started
    finally:
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
        out.append(rest)
    assert proc.returncode == 0, "".join(out)
    assert "demo stopped" in rest
    deadline = time.time() + 10
    while session_processes(proc.pid) and time.time() < deadline:
        time.sleep(0.2)
    assert not session_processes(proc.pid), session_processes(proc.pid)
    assert not os.path.exists(run_dir)
