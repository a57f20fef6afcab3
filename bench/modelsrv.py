#!/usr/bin/env python3
"""bench/modelsrv.py: an emulated model server that has to load models.

test/mockllm answers for any model at once; a real inference server
(Ollama, llama.cpp server, LM Studio) keeps a few models in memory and loads
the one a request names when it is not there, evicting the least recently
used. This server emulates that for build/bench's model-switching and
seed-table scenarios:

  --slots N       models kept loaded at once (default 1)
  --load-ms N     time to load a model (default 200); one load at a time,
                  requests for a model being loaded wait for it
  --gen-ms N      generation time of a response (default 100), plus
  --per-token-ms  per completion token (default 2), tokens from max_tokens
                  (default 16)

POST /v1/chat/completions answers an OpenAI chat.completion (not streamed)
with the header X-Model-Load-Ms: how long this request waited for a model
load (0 when its model was loaded). GET /stats: loads, requests. Listens on
127.0.0.1 only; stdlib asyncio, HTTP/1.1 keep-alive.
"""

import argparse
import asyncio
import json
import signal
import time


class Server:
    def __init__(self, a):
        self.a = a
        self.loaded = []            # most recently used last
        self.lock = asyncio.Lock()
        self.loads = 0
        self.requests = 0
        self.n = 0

    async def ensure(self, model):
        """Waits until model is loaded; returns the ms spent waiting."""
        t0 = time.monotonic()
        while True:
            if model in self.loaded:
                self.loaded.remove(model)
                self.loaded.append(model)
                break
            async with self.lock:       # one load at a time
                if model in self.loaded:
                    continue
                await asyncio.sleep(self.a.load_ms / 1000.0)
                self.loads += 1
                self.loaded.append(model)
                while len(self.loaded) > self.a.slots:
                    self.loaded.pop(0)
                break
        return (time.monotonic() - t0) * 1000.0

    async def generate(self, req):
        model = req.get("model") or "unknown"
        tokens = int(req.get("max_tokens") or 16)
        wait = await self.ensure(model)
        await asyncio.sleep((self.a.gen_ms + tokens * self.a.per_token_ms)
                            / 1000.0)
        self.n += 1
        words = " ".join("w%d" % (k % 97) for k in range(tokens))
        body = {
            "id": "chatcmpl-%s-%d" % (self.a.name, self.n),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": words}}],
            "usage": {"prompt_tokens": 8, "completion_tokens": tokens,
                      "total_tokens": 8 + tokens},
        }
        return 200, json.dumps(body).encode(), wait

    async def handle(self, r, w):
        try:
            while True:
                line = await r.readline()
                if not line:
                    break
                method, path = (line.decode("latin-1").split() + ["", ""])[:2]
                hdrs = {}
                while True:
                    h = await r.readline()
                    if not h:
                        return
                    if h in (b"\r\n", b"\n"):
                        break
                    k, _, v = h.decode("latin-1").partition(":")
                    hdrs[k.strip().lower()] = v.strip()
                n = int(hdrs.get("content-length") or 0)
                body = await r.readexactly(n) if n else b""
                extra = ""
                if method == "POST" and path.endswith("/chat/completions"):
                    self.requests += 1
                    try:
                        req = json.loads(body)
                    except ValueError:
                        req = None
                    if not isinstance(req, dict):
                        st, wait = 400, 0
                        out = b'{"error":{"message":"bad json"}}'
                    else:
                        st, out, wait = await self.generate(req)
                    extra = "X-Model-Load-Ms: %d\r\n" % round(wait)
                elif method == "GET" and path == "/stats":
                    st, out = 200, json.dumps({
                        "loads": self.loads, "requests": self.requests,
                        "loaded": self.loaded}).encode()
                elif method == "GET" and path in ("/health", "/v1/models"):
                    st, out = 200, b'{"object":"list","data":[]}'
                else:
                    st, out = 404, b'{"error":{"message":"not found"}}'
                close = hdrs.get("connection", "").lower() == "close"
                w.write(("HTTP/1.1 %d X\r\nContent-Type: application/json\r\n"
                         "Content-Length: %d\r\nX-Mock-Backend: %s\r\n%s%s\r\n"
                         % (st, len(out), self.a.name, extra,
                            "Connection: close\r\n" if close else "")
                         ).encode() + out)
                await w.drain()
                if close:
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            w.close()


async def main(a):
    srv = Server(a)
    server = await asyncio.start_server(srv.handle, "127.0.0.1", a.port,
                                        backlog=1024)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--name", default="modelsrv")
    p.add_argument("--slots", type=int, default=1)
    p.add_argument("--load-ms", type=float, default=200.0)
    p.add_argument("--gen-ms", type=float, default=100.0)
    p.add_argument("--per-token-ms", type=float, default=2.0)
    asyncio.run(main(p.parse_args()))
