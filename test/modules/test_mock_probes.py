# The emulated backend's probe endpoints, read by the gateway's own probe
# readers (test/unit/probe_read runs llmgw_probe_parse on one answer):
# vLLM's /metrics following the requests really in flight, llama.cpp's
# /health while a model loads and /slots while one generates, Ollama's
# /api/ps and /api/tags, /v1/models; and the flavors that lack them.
import concurrent.futures
import json
import os
import subprocess
import time

import llmgw_env as env

PROBE_READ = os.path.join(env.REPO, "test", "unit", "probe_read")


def probe(mock, kind, path):
    r = env.request(mock.port, "GET", path, timeout=10)
    p = subprocess.run([PROBE_READ, kind, str(r.status)], input=r.body,
                       capture_output=True, timeout=10)
    assert p.returncode == 0, p.stderr
    return r, json.loads(p.stdout)


def wait_for(pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.02)


def models(result):
    return {m["name"]: m for m in result["models"]}


def chat(mock, model, **extra):
    body = env.chat_body(content="probe me")
    body["model"] = model
    body.update(extra)
    return env.request(mock.port, "POST", "/v1/chat/completions", body, timeout=30)


def test_vllm_metrics_follow_requests_in_flight(workdir):
    """--flavor vllm: /metrics has vLLM's gauges per model, labelled as V1
    labels them (names escaped); --slots is its batch: two run, the third
    waits; all back to 0 after. /health is vLLM's empty 200."""
    odd = 'we"ird\\name'
    mock = env.MockBackend(env.mockllm_path(), workdir, "vllm", extra_args=[
        "--flavor", "vllm", "--slots", "2", "--models", "q1,q2," + odd,
        "--tps", "20", "--tokens", "20"]).start()
    try:
        r, got = probe(mock, "vllm-metrics", "/metrics")
        assert r.status == 200
        assert r.content_type == "text/plain"
        assert b"# TYPE vllm:num_requests_running gauge" in r.body
        assert b'vllm:num_requests_running{model_name="q1",engine="0"} 0.0' in r.body
        assert got["ok"] == 1 and got["state"] == "ready"
        assert set(got["knows"]) == {"state", "loaded", "queue", "kv"}
        assert got["running"] == 0 and got["waiting"] == 0
        assert set(models(got)) == {"q1", "q2", odd}

        with concurrent.futures.ThreadPoolExecutor(3) as ex:
            futs = [ex.submit(chat, mock, "q1") for _ in range(3)]
            busy = wait_for(lambda: (lambda g: g if g["running"] == 2
                                     and g["waiting"] == 1 else None)(
                probe(mock, "vllm-metrics", "/metrics")[1]))
            assert busy, "never saw 2 running and 1 waiting"
            q1 = models(busy)["q1"]
            assert (q1["running"], q1["waiting"]) == (2, 1)
            assert abs(q1["kv_usage"] - 1.0) < 1e-6
            assert models(busy)["q2"]["running"] == 0
            assert all(f.result().status == 200 for f in futs)
        _, idle = probe(mock, "vllm-metrics", "/metrics")
        assert idle["running"] == 0 and idle["waiting"] == 0

        h = env.request(mock.port, "GET", "/health")
        assert h.status == 200 and h.body == b""
        assert env.request(mock.port, "GET", "/slots").status == 404
        _, listed = probe(mock, "openai-models", "/v1/models")
        assert set(models(listed)) == {"q1", "q2", odd}
    finally:
        mock.stop()


def test_vllm_batch_defaults_to_256(workdir):
    """Without --slots the vLLM flavor runs as many as vLLM's default
    max_num_seqs (256): eight requests all run at once."""
    mock = env.MockBackend(env.mockllm_path(), workdir, "vllm256", extra_args=[
        "--flavor", "vllm", "--tps", "20", "--tokens", "20"]).start()
    try:
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            futs = [ex.submit(chat, mock, "mock-small") for _ in range(8)]
            seen = wait_for(lambda: (lambda g: g if g["running"] == 8 else None)(
                probe(mock, "vllm-metrics", "/metrics")[1]))
            assert seen and seen["waiting"] == 0
            assert abs(models(seen)["mock-small"]["kv_usage"] - 8 / 256) < 1e-6
            assert all(f.result().status == 200 for f in futs)
    finally:
        mock.stop()


def test_llamacpp_loading_and_slots(workdir):
    """--flavor llamacpp: /health is 503 "Loading model" while a --load-ms
    load runs (read as loading), ok after; /slots shows the busy slot."""
    mock = env.MockBackend(env.mockllm_path(), workdir, "llama", extra_args=[
        "--flavor", "llamacpp", "--slots", "2", "--load-ms", "700",
        "--tps", "20", "--tokens", "20"]).start()
    try:
        _, got = probe(mock, "llamacpp-health", "/health")
        assert (got["ok"], got["state"]) == (1, "ready")
        _, slots = probe(mock, "llamacpp-slots", "/slots")
        assert (slots["slots_total"], slots["slots_busy"]) == (2, 0)
        with concurrent.futures.ThreadPoolExecutor(1) as ex:
            fut = ex.submit(chat, mock, "mock-small")
            r, loading = probe(mock, "llamacpp-health", "/health")
            assert r.status == 503
            assert (loading["ok"], loading["state"]) == (1, "loading")
            generating = wait_for(lambda: (lambda g: g if g["slots_busy"] == 1
                                           else None)(
                probe(mock, "llamacpp-slots", "/slots")[1]))
            assert generating and generating["state"] == "ready"
            assert fut.result().status == 200
        _, got = probe(mock, "llamacpp-health", "/health")
        assert got["state"] == "ready"
    finally:
        mock.stop()


def test_ollama_ps_and_tags(workdir):
    """/api/ps lists the loaded models with a readable expires_at (last use
    + 5 minutes); /api/tags every model; both as the core reads them."""
    mock = env.MockBackend(env.mockllm_path(), workdir, "ollama", extra_args=[
        "--models", "llama3:latest,qwen", "--preload", "llama3:latest"]).start()
    try:
        _, ps = probe(mock, "ollama-ps", "/api/ps")
        assert ps["ok"] == 1 and set(ps["knows"]) == {"state", "loaded"}
        loaded = models(ps)
        assert set(loaded) == {"llama3:latest"}
        assert loaded["llama3:latest"]["size_vram"] == 776000000
        assert abs(loaded["llama3:latest"]["expires_at"] - (time.time() + 300)) < 30
        _, tags = probe(mock, "ollama-tags", "/api/tags")
        assert set(models(tags)) == {"llama3:latest", "qwen"}
        assert all(m["flags"] == ["available"] for m in tags["models"])
        assert chat(mock, "qwen").status == 200
        _, ps = probe(mock, "ollama-ps", "/api/ps")
        assert [m["name"] for m in ps["models"]] == ["qwen", "llama3:latest"]
    finally:
        mock.stop()


def test_metrics_only_in_the_vllm_flavor(workdir):
    """The other flavors keep their endpoints as they were: no /metrics."""
    for flavor in ("openai", "llamacpp"):
        mock = env.MockBackend(env.mockllm_path(), workdir, "no-metrics-" + flavor,
                               extra_args=["--flavor", flavor]).start()
        try:
            r = env.request(mock.port, "GET", "/metrics")
            assert r.status == 404 and r.json()["error"]["code"] == "unknown_endpoint"
            h = env.request(mock.port, "GET", "/health")
            assert h.status == 200 and h.json() == {"status": "ok"}
        finally:
            mock.stop()
    p = subprocess.run([env.mockllm_path(), "--port", "0", "--flavor", "tgi"],
                       capture_output=True, text=True, timeout=10)
    assert p.returncode == 2 and "invalid value for --flavor" in p.stderr
