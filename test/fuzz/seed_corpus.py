#!/usr/bin/python3
# seed_corpus.py: writes the seed files of test/fuzz/corpus/: real requests,
# the emulated backend's real answers, streams and probe answers
# (test/mockllm, every flavor), cache records made by the gateway's own
# code from them, and the limits' values.
# Run from anywhere after the in-tree build: test/fuzz/seed_corpus.py
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
CORPUS = os.path.join(HERE, "corpus")
MOCK = os.path.join(TOP, "test", "mockllm", "mockllm")

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="

# OpenAI requests: (endpoint, body); endpoint 0 chat, 1 completions, 2 embeddings.
OPENAI = {
    "chat-min": (0, {"model": "mock-small", "messages": [{"role": "user", "content": "Hi"}]}),
    "chat-det": (0, {"model": "mock-small", "temperature": 0, "seed": 42, "max_tokens": 8,
                     "messages": [{"role": "system", "content": "Be brief."},
                                  {"role": "user", "content": "Say hello"}]}),
    "chat-stream": (0, {"model": "gpt-4o-mini", "stream": True, "messages": [
        {"role": "user", "content": "Count to three"}]}),
    "chat-stream-usage": (0, {"model": "mock-small", "stream": True,
                              "stream_options": {"include_usage": True},
                              "messages": [{"role": "user", "content": "Hi"}]}),
    "chat-tools": (0, {"model": "mock-small", "tools": TOOLS, "tool_choice": "auto",
                       "messages": [{"role": "user", "content": "What is the weather in Paris?"}]}),
    "chat-tool-result": (0, {"model": "mock-small", "tools": TOOLS, "messages": [
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_0", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_0", "content": "{\"temp\":21}"}]}),
    "chat-image": (0, {"model": "mock-small", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is in this image?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + PNG}}]}]}),
    "chat-json-schema": (0, {"model": "mock-small", "response_format": {
        "type": "json_schema", "json_schema": {"name": "a", "schema": {
            "type": "object", "properties": {"answer": {"type": "string"}}}}},
        "top_p": 0.9, "presence_penalty": 0.5, "frequency_penalty": -0.25,
        "stop": ["\n\n", "END"], "n": 1, "user": "u-1", "metadata": {"k": "v"},
        "reasoning_effort": "low",
        "messages": [{"role": "user", "content": "JSON please"}]}),
    "chat-unicode": (0, {"model": "mock-small", "temperature": 0.0, "messages": [
        {"role": "user", "content": "caf\u00e9 \u20ac \U0001F600 \u65e5\u672c \"quoted\" \\ back\n"}]}),
    "completions": (1, {"model": "mock-small", "prompt": "Once upon a time", "max_tokens": 5,
                        "temperature": 0}),
    "completions-stream": (1, {"model": "mock-large", "prompt": ["a", "b"], "stream": True,
                               "suffix": "end", "seed": 7}),
    "embeddings": (2, {"model": "mock-small", "input": "hello world"}),
    "embeddings-batch": (2, {"model": "mock-small", "input": ["a", "b", "c"],
                             "encoding_format": "base64", "dimensions": 4}),
}

# Ollama requests: (endpoint, body); 3 chat, 4 generate, 5 embed, 6 embeddings.
OLLAMA = {
    "ollama-chat": (3, {"model": "qwen-mock", "messages": [{"role": "user", "content": "Hi"}]}),
    "ollama-chat-nostream": (3, {"model": "mock-small", "stream": False, "options": {
        "temperature": 0, "seed": 1, "num_predict": 8, "top_k": 20, "top_p": 0.8,
        "stop": ["\n"], "num_ctx": 2048, "repeat_penalty": 1.1},
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": "Say hello"}]}),
    "ollama-chat-tools": (3, {"model": "mock-small", "tools": TOOLS, "messages": [
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": "{\"temp\":21}", "tool_name": "get_weather"}]}),
    "ollama-chat-image": (3, {"model": "mock-small", "think": True, "format": "json",
                              "keep_alive": "5m", "messages": [
                                  {"role": "user", "content": "describe", "images": [PNG]}]}),
    "ollama-generate": (4, {"model": "mock-small", "prompt": "Why is the sky blue?",
                            "system": "Be brief.", "stream": False, "format": {
                                "type": "object", "properties": {"a": {"type": "string"}}},
                            "options": {"temperature": 0}}),
    "ollama-generate-stream": (4, {"model": "mock-small", "prompt": "Hi", "raw": True,
                                   "suffix": "x", "images": [PNG]}),
    "ollama-embed": (5, {"model": "mock-small", "input": ["a", "b"], "truncate": True,
                         "dimensions": 4}),
    "ollama-embeddings": (6, {"model": "mock-small", "prompt": "hello"}),
}


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def split_plan(*lens):
    """The split header of the stream targets (fuzz.h): count, lengths."""
    return bytes([len(lens) - 1, *lens])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port, path, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def sse_payloads(raw):
    out = []
    for block in raw.replace(b"\r\n", b"\n").split(b"\n\n"):
        for line in block.split(b"\n"):
            if line.startswith(b"data: ") and line[6:] != b"[DONE]":
                out.append(line[6:])
    return out


# Feeds answers to llmgw_record_* and writes what the store would get.
RECORD_TOOL = r'''
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <apr_general.h>
#include "llmgw_cache.h"
int main(int argc, char **argv)
{
    /* argv: endpoint (0 chat, 1 completions, 2 embeddings), mode (s|p),
     * input file (chunks one a line, or the body), output file */
    static char buf[1 << 20];
    apr_pool_t *p;
    llmgw_endpoint_t eps[] = { LLMGW_EP_CHAT, LLMGW_EP_COMPLETIONS,
                               LLMGW_EP_EMBEDDINGS };
    llmgw_record_t *rec;
    FILE *f = fopen(argv[3], "rb");
    size_t n = fread(buf, 1, sizeof(buf), f), len;
    const char *text;
    char *s, *nl;

    fclose(f);
    apr_initialize();
    apr_pool_create(&p, NULL);
    rec = llmgw_record_create(p, eps[atoi(argv[1])], 1 << 20);
    if (argv[2][0] == 'p') {
        llmgw_record_set_response(rec, buf, n);
    }
    else {
        for (s = buf; s < buf + n; s = nl + 1) {
            nl = memchr(s, '\n', (size_t)(buf + n - s));
            if (!nl) {
                nl = buf + n;
            }
            llmgw_record_add_chunk(rec, s, (size_t)(nl - s));
        }
    }
    text = llmgw_record_serialize(rec, &len);
    if (!text) {
        return 1;
    }
    f = fopen(argv[4], "wb");
    fwrite(text, 1, len, f);
    fclose(f);
    return 0;
}
'''


def build_record_tool(tmp):
    src = os.path.join(tmp, "record_tool.c")
    exe = os.path.join(tmp, "record_tool")
    with open(src, "w") as f:
        f.write(RECORD_TOOL)
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "apr-1", "apr-util-1", "json-c"],
                           capture_output=True, text=True, check=True).stdout.split()
    core = [os.path.join(TOP, "src", f"llmgw_{n}.c") for n in (
        "json", "dialect", "route", "stream", "sha256", "shmtab", "cache", "memcache",
        "ollama", "front")]
    subprocess.run(["gcc", "-O1", "-I" + os.path.join(TOP, "src"), "-o", exe, src, *core,
                    *flags, "-lpthread"], check=True)
    return exe


def make_record(tool, tmp, ep, mode, data):
    inp = os.path.join(tmp, "in")
    out = os.path.join(tmp, "out")
    with open(inp, "wb") as f:
        f.write(data)
    if subprocess.run([tool, str(ep), mode, inp, out]).returncode != 0:
        return None
    with open(out, "rb") as f:
        return f.read()


def start_mock(*args):
    port = free_port()
    mock = subprocess.Popen([MOCK, "--port", str(port), "--name", "seed", "--tokens", "6",
                             "--quiet", *args], stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    return port, mock


def get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def main():
    mocks = []
    try:
        port, m = start_mock()
        mocks.append(m)
        with tempfile.TemporaryDirectory() as tmp:
            seed(port, build_record_tool(tmp), tmp)
        flavors = {}
        for flavor in ("llamacpp", "vllm"):
            flavors[flavor], m = start_mock("--flavor", flavor, "--preload", "mock-small")
            mocks.append(m)
        seed_probes(port, flavors)
    finally:
        for m in mocks:
            m.terminate()
            m.wait(10)


# fuzz_probe's kinds and statuses (its selector byte).
PROBE_KINDS = {"ollama-ps": 0, "ollama-tags": 1, "llamacpp-health": 2,
               "llamacpp-slots": 3, "vllm-metrics": 4, "openai-models": 5}
PROBE_STATUS = {200: 0, 503: 2, 429: 3, 404: 4, 500: 5}


def probe_seed(name, kind, status, body):
    write("probe", name, bytes([PROBE_KINDS[kind] | PROBE_STATUS[status] << 3]) + body)


def seed_probes(port, flavors):
    # A generation first, so the backends have a model loaded and a
    # request counted.
    for p in (port, flavors["llamacpp"], flavors["vllm"]):
        post(p, "/v1/chat/completions", json.dumps(
            {"model": "mock-small", "messages": [{"role": "user", "content": "Hi"}]}).encode())
    for name, (p, path) in {"ollama-ps": (port, "/api/ps"), "ollama-tags": (port, "/api/tags"),
                            "llamacpp-health": (flavors["llamacpp"], "/health"),
                            "llamacpp-slots": (flavors["llamacpp"], "/slots"),
                            "vllm-metrics": (flavors["vllm"], "/metrics"),
                            "openai-models": (flavors["vllm"], "/v1/models")}.items():
        status, body = get(p, path)
        probe_seed(name, name, status if status in PROBE_STATUS else 200, body)
        if name == "vllm-metrics":
            write("prom", "vllm", body)
    probe_seed("llamacpp-loading", "llamacpp-health", 503,
               b'{"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}')
    probe_seed("llamacpp-slots-busy", "llamacpp-slots", 200,
               b'[{"id":0,"is_processing":true},{"id":1,"is_processing":false,"state":0}]')
    probe_seed("ollama-ps-expires", "ollama-ps", 200,
               b'{"models":[{"name":"llama3:8b","model":"llama3:8b","size":5137025024,'
               b'"size_vram":5137025024,"expires_at":"2026-12-01T21:55:03.146391+01:00"}]}')
    probe_seed("ollama-busy", "ollama-ps", 429, b'{"error":"server busy"}')
    write("prom", "escapes", b'# HELP x A metric.\n# TYPE x gauge\n'
          b'x{model_name="a\\"b\\\\c\\nd",engine="0"} 1.5e3 1700000000000\n'
          b'vllm:num_requests_running{model_name="m"} +Inf\r\n'
          b'vllm:kv_cache_usage_perc{model_name="m"} NaN\n')
    seed_limits()


# fuzz_limits: a mode byte, then its input.
def seed_limits():
    import struct
    cases = {
        "rate": b"\x00rpm=600 tpm=200000",
        "rate-concurrent": b"\x00concurrent=8",
        "budget": b"\x01tokens=2000000 per=day|cost=12.50 per=month",
        "budget-hour": b"\x01tokens=1000 per=hour",
        "price": b"\x02in=0.15 out=0.60",
        "subject-key-route": b"\x03\x02team-a\troute-x",
        "subject-long": b"\x03\x00" + b"k" * 200,
        "duration": b"\x04" + struct.pack("<q", 3723 * 1000000 + 4500),
        "snapshot": b"\x05",
        "snapshot-damaged": b"\x05\x00\x40\x01\x00\x80\xff",
        "snapshot-unsealed": b"\x0d\x00\x10\x01",
        "sync": b"\x06" + struct.pack("<QQQQ", 0, 10, 1 << 40, 7),
    }
    for name, data in cases.items():
        write("limits", name, data)


def seed(port, tool, tmp):
    paths = {0: "/v1/chat/completions", 1: "/v1/completions", 2: "/v1/embeddings",
             3: "/api/chat", 4: "/api/generate", 5: "/api/embed", 6: "/api/embeddings"}
    records = []
    for name, (ep, body) in {**OPENAI, **OLLAMA}.items():
        text = json.dumps(body, ensure_ascii=False).encode()
        # fuzz_request: the selector, then the body; openai and ollama
        # backends, renamed or not.
        write("request", name, bytes([ep]) + text)
        write("request", name + "-ollama-renamed", bytes([ep | 8 | 16]) + text)
        write("json", name, text)
        status, answer = post(port, paths[ep], text)
        stream = body.get("stream", ep in (3, 4))
        if ep <= 2:
            if stream:
                # fuzz_sse / fuzz_ollama_ndjson: flags, split plan, stream.
                write("sse", name, b"\x01" + split_plan(7, 64, 1) + answer)
                write("sse", name + "-whole", b"\x00" + split_plan(255) + answer)
                write("ollama_ndjson", name, bytes([ep == 1]) + split_plan(13, 0, 200) + answer)
                chunks = b"\n".join(sse_payloads(answer))
                # Mode: the endpoint, a stream, a 64 KB limit (8 << 3).
                write("record_build", name, bytes([ep | 8 << 3]) + chunks)
                rec = make_record(tool, tmp, ep, "s", chunks)
            else:
                write("record_build", name, bytes([ep | 4 | 8 << 3]) + answer)
                write("json", name + "-answer", answer)
                # An OpenAI backend answering an Ollama client.
                if ep == 0:
                    write("answer", name, bytes([3]) + answer)
                elif ep == 1:
                    write("answer", name, bytes([4]) + answer)
                else:
                    write("answer", name, bytes([5]) + answer)
                    write("answer", name + "-legacy", bytes([6]) + answer)
                rec = make_record(tool, tmp, ep, "p", answer)
            if rec:
                records.append((name, rec))
        else:
            # An Ollama backend: its NDJSON stream and plain answers.
            oep = {3: 0, 4: 1, 5: 2, 6: 2}[ep]
            if stream:
                write("ollama_sse", name, bytes([oep == 1]) + split_plan(9, 1, 77) + answer)
                write("ollama_sse", name + "-usage", bytes([(oep == 1) | 2]) + split_plan(255)
                      + answer)
            else:
                write("answer", name, bytes([oep]) + answer)
                write("json", name + "-answer", answer)
        if status != 200:
            print(f"note: {name}: status {status}", file=sys.stderr)
    # Backend errors as the translators see them.
    write("answer", "ollama-error-404", bytes([0 | (2 << 3)])
          + b'{"error":"model \\"x\\" not found, try pulling it first"}')
    write("answer", "openai-error-500", bytes([3 | (3 << 3)])
          + b'{"error":{"message":"boom","type":"server_error","param":null,"code":null}}')
    write("answer", "vllm-error-400", bytes([4 | (1 << 3)])
          + b'{"object":"error","message":"bad","type":"BadRequestError","code":400}')
    write("ollama_sse", "error-line", b"\x00" + split_plan(5)
          + b'{"model":"m","message":{"role":"assistant","content":"a"},"done":false}\n'
          + b'{"error":"out of memory"}\n')
    write("ollama_ndjson", "error-event", b"\x00" + split_plan(3)
          + b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"a"}}]}\n\n'
          + b'data: {"error":{"message":"overloaded","type":"server_error"}}\n\n')
    write("sse", "comments-crlf", b"\x01" + split_plan(2, 3)
          + b': ping\r\n\r\nevent: x\r\ndata: {"id":"c","object":"chat.completion.chunk",'
          + b'"created":1,"model":"m","choices":[{"index":0,"delta":{"content":"hi"}}],'
          + b'"usage":null}\r\n\r\ndata: [DONE]\r\n\r\n')
    for name, rec in records:
        # fuzz_record: flags (bit 0 full, bit 1 usage), then the value.
        write("record", name, b"\x00" + rec)
        write("record", name + "-full", b"\x03" + rec)
    # fuzz_memcache: replies as memcached sends them.
    rec = records[0][1]
    replies = {
        "hit": b"VALUE fuzz:key 0 5\r\nhello\r\nEND\r\n",
        "hit-record": b"VALUE fuzz:key 0 %d\r\n%s\r\nEND\r\n" % (len(rec), rec),
        "miss": b"END\r\n",
        "stored": b"STORED\r\n",
        "not-stored": b"NOT_STORED\r\n",
        "deleted": b"DELETED\r\n",
        "not-found": b"NOT_FOUND\r\n",
        "server-error": b"SERVER_ERROR out of memory storing object\r\n",
        "error": b"ERROR\r\n",
        "two-replies": b"STORED\r\nEND\r\n",
    }
    for name, reply in replies.items():
        write("memcache", name, reply)
    # fuzz_route: the test suite's routes, then a model.
    table = (b"mock-small\tsmall\nmock-large\ngpt-*\ndead-model\nslow-model\nflaky-*\n"
             b"ollama-small\nllamacpp-small\ndisc-*\nollama-g*\n")
    for model in (b"mock-small", b"small", b"gpt-4o-mini", b"ollama-gamma", b"nope",
                  b"org/model:7b-q4", b"[a-z]*"):
        write("route", model.decode().replace("/", "_").replace("*", "x")
              .replace("[", "").replace("]", ""), table + model)
    write("route", "classes", b"llama3*\tqwen2.5:[0-9]*b\t[!x]?\nmy-assistant\n\\*\nqwen2.5:7b")


if __name__ == "__main__":
    main()
