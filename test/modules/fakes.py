# Hostile peers on loopback for the fault tests: an HTTP backend whose every
# answer a test scripts byte by byte, and a memcached that answers wrong.
import json
import socket
import socketserver
import threading

HOST = "127.0.0.1"


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def _read_request(rfile):
    """(method, path, headers, body) of one HTTP/1.1 request, or None."""
    line = rfile.readline(65536)
    if not line:
        return None
    method, path, _ = line.decode("latin-1").split(" ", 2)
    headers = {}
    while True:
        h = rfile.readline(65536)
        if h in (b"\r\n", b"\n", b""):
            break
        k, v = h.decode("latin-1").split(":", 1)
        headers[k.strip().lower()] = v.strip()
    body = b""
    if "content-length" in headers:
        body = rfile.read(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int(rfile.readline().split(b";")[0], 16)
            if size == 0:
                rfile.readline()
                break
            body += rfile.read(size)
            rfile.readline()
    return method, path, headers, body


class FakeBackend:
    """An HTTP backend whose answers the test scripts, per model named in the
    request body: script(model, fn) with fn(request) returning an iterable of
    bytes, written to the socket as they come (status line and headers
    included, so anything can be sent); the connection closes after each."""

    def __init__(self):
        self.scripts = {}
        self.requests = []
        self.lock = threading.Lock()
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                req = _read_request(self.rfile)
                if req is None:
                    return
                method, path, headers, body = req
                try:
                    doc = json.loads(body) if body else {}
                except ValueError:
                    doc = {}
                model = doc.get("model", "")
                with outer.lock:
                    outer.requests.append((path, doc))
                    fn = outer.scripts.get(model)
                if fn is None:
                    self.wfile.write(response(b'{"error":"no script"}', 404))
                    return
                try:
                    for piece in fn(doc):
                        self.wfile.write(piece)
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = _Server((HOST, 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def script(self, model, fn):
        with self.lock:
            self.scripts[model] = fn

    def count(self, model):
        with self.lock:
            return sum(1 for _, d in self.requests if d.get("model") == model)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def response(body, status=200, ctype="application/json", length=None, close=True):
    """A whole HTTP response; length: the Content-Length to claim."""
    head = (f"HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body) if length is None else length}\r\n"
            + ("Connection: close\r\n" if close else "") + "\r\n")
    return head.encode() + body


def stream_head(ctype="text/event-stream"):
    return (f"HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode()


def chunk(data):
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"


def sse(*datas):
    """Whole SSE events, one HTTP chunk each."""
    return [chunk(b"data: " + (d if isinstance(d, bytes) else json.dumps(d).encode())
                  + b"\n\n") for d in datas]


def chat_chunk(content=None, finish=None, role=False, **extra):
    delta = {}
    if role:
        delta["role"] = "assistant"
    if content is not None:
        delta["content"] = content
    c = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1,
         "model": "fake", "choices": [{"index": 0, "delta": delta,
                                       "finish_reason": finish}]}
    c.update(extra)
    return c


def chat_answer(content="fake answer", usage=None, **extra):
    a = {"id": "chatcmpl-fake", "object": "chat.completion", "created": 1,
         "model": "fake", "choices": [{"index": 0, "message": {
             "role": "assistant", "content": content}, "finish_reason": "stop"}]}
    if usage is not None:
        a["usage"] = usage
    a.update(extra)
    return a


class FakeMemcached:
    """memcached's text protocol over a dict, honest until mode says how to
    answer a get instead (see get_reply); counts the gets it answered so."""

    def __init__(self):
        self.data = {}
        self.mode = None
        self.hostile_gets = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                try:
                    while outer.command(self.rfile, self.wfile):
                        pass
                except (BrokenPipeError, ConnectionResetError, ValueError):
                    pass

        self.server = _Server((HOST, 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def set_mode(self, mode):
        with self.lock:
            self.mode = mode
            self.hostile_gets = 0

    def gets(self):
        with self.lock:
            return self.hostile_gets

    def command(self, rfile, wfile):
        line = rfile.readline(4096)
        if not line:
            return False
        parts = line.decode("latin-1").split()
        if not parts:
            return True
        verb = parts[0]
        if verb in ("set", "add"):
            key, n = parts[1], int(parts[4])
            value = rfile.read(n + 2)[:n]
            with self.lock:
                if verb == "add" and key in self.data:
                    wfile.write(b"NOT_STORED\r\n")
                    return True
                self.data[key] = value
            wfile.write(b"STORED\r\n")
        elif verb == "delete":
            with self.lock:
                found = self.data.pop(parts[1], None) is not None
            wfile.write(b"DELETED\r\n" if found else b"NOT_FOUND\r\n")
        elif verb == "get":
            key = parts[1]
            with self.lock:
                mode = self.mode
                if mode:
                    self.hostile_gets += 1
            if mode:
                return self.get_reply(mode, key, wfile)
            with self.lock:
                v = self.data.get(key)
            if v is not None:
                wfile.write(b"VALUE %s 0 %d\r\n%s\r\n" % (key.encode(), len(v), v))
            wfile.write(b"END\r\n")
        else:
            wfile.write(b"ERROR\r\n")
        return True

    def get_reply(self, mode, key, wfile):
        """A hostile answer to 'get key'; False closes the connection."""
        k = key.encode()
        if mode == "huge":
            wfile.write(b"VALUE %s 0 9223372036854775807\r\n" % k)
        elif mode == "big":
            # A length memcached would never send, and the bytes to match:
            # read whole, they would take a child this much memory.
            n = 256 << 20
            wfile.write(b"VALUE %s 0 %d\r\n" % (k, n))
            block = b"x" * (1 << 20)
            for _ in range(n >> 20):
                wfile.write(block)
            wfile.write(b"\r\nEND\r\n")
        elif mode == "negative":
            wfile.write(b"VALUE %s 0 -1\r\nEND\r\n" % k)
        elif mode == "nondigit":
            wfile.write(b"VALUE %s 0 1x\r\nx\r\nEND\r\n" % k)
        elif mode == "wrongkey":
            # Another key's entry, as a confused or malicious server might.
            with self.lock:
                others = [(ok, v) for ok, v in self.data.items()
                          if ok != key and v.startswith(b"LLMGW") and ":" not in ok[6:]]
            if others:
                ok, v = others[0]
                wfile.write(b"VALUE %s 0 %d\r\n%s\r\nEND\r\n" % (ok.encode(), len(v), v))
            else:
                wfile.write(b"END\r\n")
        elif mode == "short":
            wfile.write(b"VALUE %s 0 100\r\nshort" % k)
            return False
        elif mode == "noend":
            wfile.write(b"VALUE %s 0 5\r\nhello\r\n" % k)
            return False
        elif mode == "garbage":
            wfile.write(b"\x00\xffHTTP/1.1 200 OK\r\n")
        elif mode == "longline":
            wfile.write(b"VALUE " + b"A" * (1 << 20))
        return True

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def reset_peaks(pids):
    """Start the processes' VmHWM afresh (Linux: "5" to clear_refs), so that
    a peak measured next is this test's, not an earlier one's."""
    for pid in pids:
        try:
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass


def memory_kb(pids):
    """{pid: (VmHWM, VmRSS)} in kB of the processes still there."""
    out = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                st = dict(l.split(":", 1) for l in f if ":" in l)
        except OSError:
            continue
        if "VmHWM" in st:       # not for a zombie
            out[pid] = (int(st["VmHWM"].split()[0]), int(st["VmRSS"].split()[0]))
    return out
