# build/demo as a user runs it: it prints its ready: lines, serves chats and
# streams on LLMGW_PORT, and however it ends (SIGTERM, Ctrl-C, a port in use)
# it stops every process it started and removes its run directory.
import os
import signal
import socket
import subprocess
import time

import pytest

import llmgw_env as env
from llmgw_env import chat_body

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(TOP, "build", "demo")


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


def default_sigint():
    """As a terminal starts it: with SIGINT at its default. A shell that
    inherits SIGINT ignored (pytest run in the background of a script)
    cannot trap it, so the Ctrl-C case would test the launcher instead:
    the demo never sees the signal and httpd, which sets its own handler,
    exits under it (seen once in a full run)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Demo:
    """build/demo ARGS in a session of its own, on a fresh LLMGW_PORT."""

    def __init__(self, *args, extra_env=None):
        self.port = env.free_port()
        self.proc = subprocess.Popen(
            [DEMO, *args],
            env=dict(os.environ, LLMGW_PORT=str(self.port), **(extra_env or {})),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True, preexec_fn=default_sigint)
        self.out = []
        self.run_dir = None

    def wait_ready(self, timeout=120):
        """Reads its output up to the logs: line (it names the run dir)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.out.append(line)
            if line.startswith("logs:"):
                self.run_dir = os.path.dirname(line.split()[1])
                return self
        raise AssertionError("demo not ready:\n" + self.text())

    def ready(self):
        return [l for l in self.out if l.startswith("ready:")]

    def text(self):
        return "".join(self.out)

    def finish(self, timeout=60):
        """Its remaining output, once it has exited."""
        try:
            rest, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            rest, _ = self.proc.communicate(timeout=10)
            self.out.append(rest)
            raise AssertionError("demo did not exit:\n" + self.text())
        self.out.append(rest)
        return rest

    def leftovers(self, timeout=10):
        """What is still running of its session, after up to TIMEOUT s."""
        deadline = time.time() + timeout
        while session_processes(self.proc.pid) and time.time() < deadline:
            time.sleep(0.2)
        return session_processes(self.proc.pid)

    def kill_all(self):
        if self.proc.poll() is None or session_processes(self.proc.pid):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_demo_serves_and_stops_everything():
    demo = Demo()
    port = demo.port
    try:
        demo.wait_ready()
        assert any(f"http://127.0.0.1:{port}/v1" in l for l in demo.ready()), demo.text()

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
        started = [cmd for _, cmd in session_processes(demo.proc.pid)]
        assert any("apache2" in c for c in started), started
        assert sum("mockllm" in c for c in started) == 3, started
        assert any(c.startswith("memcached") for c in started), started
    finally:
        demo.proc.send_signal(signal.SIGTERM)
        rest = demo.finish()
        demo.kill_all()
    assert demo.proc.returncode == 0, demo.text()
    assert "demo stopped" in rest
    assert not demo.leftovers(), demo.leftovers()
    assert not os.path.exists(demo.run_dir)


# How a user stops it: SIGTERM to the script (as above), SIGTERM to all of
# it (kill -- -PGID), Ctrl-C (SIGINT to the terminal's process group, which
# httpd gets too and stops on by itself).
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM],
                         ids=["ctrl-c", "sigterm-to-group"])
def test_demo_stops_everything_on(sig):
    demo = Demo()
    try:
        demo.wait_ready()
        r = env.request(demo.port, "POST", "/v1/chat/completions",
                        chat_body("mock-small", max_tokens=2))
        assert r.status == 200, r.body
        os.killpg(demo.proc.pid, sig)
        rest = demo.finish()
        left = demo.leftovers()
    finally:
        demo.kill_all()
    assert demo.proc.returncode == 0, demo.text()
    assert "demo stopped" in rest, demo.text()
    assert "httpd exited" not in rest, demo.text()
    assert not left, left
    assert not os.path.exists(demo.run_dir), demo.text()


def test_demo_refuses_a_port_in_use(tmp_path):
    """Someone else listens on LLMGW_PORT: the demo says so and starts
    nothing (before, httpd failed after the backends were up, the demo
    took the other server for its own and said ready)."""
    taken = socket.socket()
    taken.bind((env.HOST, 0))
    taken.listen(8)
    port = taken.getsockname()[1]
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    demo = subprocess.Popen([DEMO], env=dict(os.environ, LLMGW_PORT=str(port),
                                             TMPDIR=str(tmp)),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = demo.communicate(timeout=120)
        left = session_processes(demo.pid)
    finally:
        taken.close()
        if session_processes(demo.pid):
            os.killpg(demo.pid, signal.SIGKILL)
    assert demo.returncode == 1, out
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in out, out
    assert "LLMGW_PORT=" in out, out
    assert "ready:" not in out, out
    assert not left, left
    assert not os.listdir(tmp), os.listdir(tmp)


def test_demo_routes_each_model_on_its_own(workdir):
    """--model A --model B: B reaches the backend as B, not as an alias of
    A."""
    mock = env.MockBackend(env.mockllm_path(), workdir, "demo-real").start()
    demo = Demo("--backend", f"http://{env.HOST}:{mock.port}",
                "--model", "mock-small", "--model", "mock-large")
    try:
        demo.wait_ready()
        assert "ready: models: mock-small, mock-large\n" in demo.out, demo.text()
        ids = [m["id"] for m in
               env.request(demo.port, "GET", "/v1/models").json()["data"]]
        assert ids == ["mock-small", "mock-large"]
        for model in ("mock-large", "mock-small"):
            r = env.request(demo.port, "POST", "/v1/chat/completions",
                            chat_body(model, max_tokens=2))
            assert r.status == 200, r.body
            assert r.json()["model"] == model
            assert mock.last_body()["model"] == model
        demo.proc.send_signal(signal.SIGTERM)
        demo.finish()
    finally:
        demo.kill_all()
        mock.stop()
    assert demo.proc.returncode == 0, demo.text()


def test_demo_stops_everything_when_httpd_dies():
    """httpd goes away on its own (a crash, an admin's kill): the demo says
    so, exits 1 and still stops the rest (before, its cleanup stopped at
    the kill of the httpd that was gone: backends, memcached and the run
    directory were left)."""
    demo = Demo()
    try:
        demo.wait_ready()
        parent = [pid for pid, fields in env.proc_stats()
                  if int(fields[1]) == demo.proc.pid and fields[0] != "Z"
                  and "apache2" in open(f"/proc/{pid}/cmdline", "rb").read().decode()]
        assert len(parent) == 1, session_processes(demo.proc.pid)
        os.kill(parent[0], signal.SIGTERM)
        rest = demo.finish()
        left = demo.leftovers()
    finally:
        demo.kill_all()
    assert demo.proc.returncode == 1, demo.text()
    assert "httpd exited" in rest and "demo stopped" in rest, demo.text()
    assert not left, left
    assert not os.path.exists(demo.run_dir), demo.text()


def test_demo_stops_everything_when_httpd_cannot_start(tmp_path):
    """httpd refuses to start (here a stand-in that says why and exits 1):
    the demo shows its log, exits 1 and stops what it had started."""
    fake = tmp_path / "apache2"
    fake.write_text("#!/bin/sh\necho 'AH00526: Syntax error (a stand-in)' >&2\nexit 1\n")
    fake.chmod(0o755)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    demo = Demo(extra_env={"APACHE2": str(fake), "TMPDIR": str(tmp)})
    try:
        rest = demo.finish(timeout=120)
        left = demo.leftovers()
    finally:
        demo.kill_all()
    assert demo.proc.returncode == 1, demo.text()
    assert "httpd did not start; its log:" in rest, demo.text()
    assert "AH00526: Syntax error (a stand-in)" in rest, demo.text()
    assert "ready:" not in rest and "demo stopped" in rest, demo.text()
    assert not left, left
    assert not os.listdir(tmp), os.listdir(tmp)
