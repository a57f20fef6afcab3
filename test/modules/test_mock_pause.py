# The emulated backend's X-Mock-Pause-Ms: a stream stalls after its first
# content piece (where the gateway's commit point is), in every dialect that
# streams, and the rest of the answer follows at its pace.
import http.client
import json
import time

import pytest

import llmgw_env as env

PAUSE_MS = 600


def content_of(event):
    """The generated text an event carries ('' for none), whatever the
    dialect: OpenAI chat and completions, llama.cpp, Ollama."""
    try:
        o = json.loads(event)
    except ValueError:
        return ""
    if not isinstance(o, dict):
        return ""
    for c in o.get("choices") or []:
        return (c.get("delta") or {}).get("content") or c.get("text") or ""
    if "message" in o:
        return o["message"].get("content") or ""
    return o.get("response") or o.get("content") or ""


def events(port, path, body, headers):
    """(seconds, event) as each SSE event or NDJSON line arrives."""
    conn = http.client.HTTPConnection(env.HOST, port, timeout=30)
    out, buf = [], b""
    try:
        t0 = time.monotonic()
        conn.request("POST", path, body=json.dumps(body),
                     headers=dict({"Content-Type": "application/json"}, **headers))
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()[:300]
        while True:
            piece = resp.read1(4096)
            if not piece:
                break
            now = time.monotonic() - t0
            buf += piece.replace(b"\r\n", b"\n")
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                line = line.decode()
                if line.startswith("data: "):
                    line = line[len("data: "):]
                if line.strip():
                    out.append((now, line))
    finally:
        conn.close()
    return out


DIALECTS = [
    ("openai", "/v1/chat/completions",
     {"model": "mock-small", "stream": True, "max_tokens": 4,
      "messages": [{"role": "user", "content": "pause here"}]}),
    ("openai", "/v1/completions",
     {"model": "mock-small", "stream": True, "max_tokens": 4, "prompt": "pause here"}),
    ("llamacpp", "/completion",
     {"prompt": "pause here", "stream": True, "n_predict": 4}),
    ("openai", "/api/chat",
     {"model": "mock-small", "messages": [{"role": "user", "content": "pause here"}],
      "options": {"num_predict": 4}}),
    ("openai", "/api/generate",
     {"model": "mock-small", "prompt": "pause here", "options": {"num_predict": 4}}),
]


@pytest.mark.parametrize("flavor, path, body", DIALECTS,
                         ids=[p for _, p, _ in DIALECTS])
def test_stream_pauses_after_its_first_content_piece(workdir, flavor, path, body):
    mock = env.MockBackend(env.mockllm_path(), workdir, "pause-" + flavor, None,
                           ["--flavor", flavor, "--tps", "100"]).start()
    try:
        plain = events(mock.port, path, body, {})
        got = events(mock.port, path, body, {"X-Mock-Pause-Ms": str(PAUSE_MS)})
    finally:
        mock.stop()
    # The same answer, the same events.
    assert [content_of(e) for _, e in got] == [content_of(e) for _, e in plain], got
    first = next(i for i, (_, e) in enumerate(got) if content_of(e))
    gaps = [b - a for (a, _), (b, _) in zip(got, got[1:])]
    # The stall comes right after the first content piece, and only there.
    assert gaps[first] >= PAUSE_MS / 1000 * 0.95, (first, gaps, got)
    assert all(g < PAUSE_MS / 1000 / 2 for i, g in enumerate(gaps) if i != first), gaps
    assert got[first][0] < PAUSE_MS / 1000 / 2, got


def test_pause_header_is_checked(workdir):
    mock = env.MockBackend(env.mockllm_path(), workdir, "pause-bad", None, []).start()
    try:
        for bad in ("-1", "x", "3600001"):
            r = env.request(mock.port, "POST", "/v1/chat/completions",
                            env.chat_body(stream=True), headers={"X-Mock-Pause-Ms": bad})
            assert r.status == 400 and b"X-Mock-Pause-Ms" in r.body, (bad, r.body)
    finally:
        mock.stop()
