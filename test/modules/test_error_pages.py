# Requests httpd refuses before the gateway's hooks run (a bad Content-Length,
# an encoded '/' or NUL in the path, a header too large): under an LLMApi
# location the answer is still the API's JSON error, with the status httpd
# chose, and the connection is kept or closed as httpd decided.
import json
import socket

import pytest

import llmgw_env as env
from llmgw_env import assert_openai_error


class Headers(dict):
    """Response headers by lower-case name, looked up in any case."""

    def get(self, name, default=None):
        return super().get(name.lower(), default)


class RawConnection:
    """One client connection on which we write exactly the bytes we want
    and read answers one by one."""

    def __init__(self, port):
        self.sock = socket.create_connection((env.HOST, port), timeout=10)
        self.buf = b""

    def close(self):
        self.sock.close()

    def send(self, data):
        self.sock.sendall(data)

    def _more(self):
        piece = self.sock.recv(65536)
        if not piece:
            raise EOFError(f"connection closed; have {self.buf[:300]!r}")
        self.buf += piece

    def response(self):
        while b"\r\n\r\n" not in self.buf:
            self._more()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = Headers()
        for line in lines[1:]:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                while b"\r\n" not in self.buf:
                    self._more()
                size, self.buf = self.buf.split(b"\r\n", 1)
                n = int(size.split(b";")[0], 16)
                while len(self.buf) < n + 2:
                    self._more()
                body, self.buf = body + self.buf[:n], self.buf[n + 2:]
                if n == 0:
                    break
        else:
            n = int(headers.get("content-length", "0"))
            while len(self.buf) < n:
                self._more()
            body, self.buf = self.buf[:n], self.buf[n:]
        return env.Response(status, headers, body, 0.0)

    def closed_by_server(self):
        """True when the server closed the connection (EOF within 3 s)."""
        self.sock.settimeout(3)
        try:
            return self.sock.recv(1) == b""
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True


def raw_request(method, path, headers=(), body=b""):
    lines = [f"{method} {path} HTTP/1.1", f"Host: {env.HOST}"] + list(headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def assert_ollama_error(r, status):
    body = r.body.decode(errors="replace")
    assert r.status == status, f"expected {status}, got {r.status}: {body[:300]}"
    assert r.content_type == "application/json", (r.content_type, body[:300])
    doc = json.loads(r.body)
    assert set(doc) == {"error"} and isinstance(doc["error"], str) and doc["error"], doc
    return doc["error"]


def assert_api_error(api, r, status, code=None):
    if api == "openai":
        return assert_openai_error(r, status, code=code)["message"]
    return assert_ollama_error(r, status)


APIS = {"openai": ("/v1/chat/completions", "/v1/models"),
        "ollama": ("/api/chat", "/api/tags")}

BAD_LENGTHS = {
    "not a number": ["Content-Length: abc"],
    "negative": ["Content-Length: -1"],
    "two different": ["Content-Length: 2", "Content-Length: 7"],
}


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("case", BAD_LENGTHS)
def test_bad_content_length_gets_the_api_error(gw, api, case):
    # httpd refuses these while reading the headers (400), before any hook
    # of the gateway, and closes the connection: the body's length is not
    # known, so nothing after it can be read as a request.
    path, _ = APIS[api]
    c = RawConnection(gw.port)
    try:
        c.send(raw_request("POST", path, ["Content-Type: application/json"]
                           + BAD_LENGTHS[case], b"{}"))
        r = c.response()
        msg = assert_api_error(api, r, 400, "bad_request")
        assert "Content-Length" in msg, msg
        assert r.headers.get("connection") == "close", r.headers
        assert c.closed_by_server()
    finally:
        c.close()


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("method,tail", [("GET", "%2Fx"), ("POST", "%00")])
def test_encoded_slash_or_nul_gets_the_api_error(gw, api, method, tail):
    # httpd refuses an encoded '/' (AllowEncodedSlashes Off) or NUL in the
    # path with 404 after its location walk, whose result it then drops.
    # The request itself was whole: the connection stays usable.
    path, listing = APIS[api]
    target = (listing if method == "GET" else path) + tail
    body = b'{"model":"mock-small"}' if method == "POST" else b""
    c = RawConnection(gw.port)
    try:
        c.send(raw_request(method, target, ["Content-Type: application/json",
                                             f"Content-Length: {len(body)}"],
                           body))
        r = c.response()
        msg = assert_api_error(api, r, 404, "invalid_path")
        assert "%2F" in msg and "%00" in msg, msg
        assert r.headers.get("connection") != "close", r.headers
        # The next request on the same connection is served as usual.
        c.send(raw_request("GET", listing))
        again = c.response()
        assert again.status == 200, again.body[:300]
        assert again.content_type == "application/json"
        assert json.loads(again.body)
    finally:
        c.close()


@pytest.mark.parametrize("api", APIS)
def test_header_too_large_gets_the_api_error(gw, api):
    # A header over LimitRequestFieldSize (8190) is refused while the
    # headers are read (httpd 2.4 answers 400, not 431), with httpd's own
    # reason, and without the header it would echo.
    path, _ = APIS[api]
    c = RawConnection(gw.port)
    try:
        c.send(raw_request("POST", path, ["X-Big: " + "x" * 9000,
                                          "Content-Length: 2"], b"{}"))
        r = c.response()
        msg = assert_api_error(api, r, 400)
        assert "header" in msg and "xxxx" not in msg, msg
        assert c.closed_by_server()
    finally:
        c.close()


def refused_twice(port, method, path, headers, body):
    """The same refused request on an API path and on a path outside any
    LLMApi location: (answer, closed afterwards) for each."""
    out = []
    for target in (path, "/plain"):
        c = RawConnection(port)
        try:
            c.send(raw_request(method, target, headers, body))
            r = c.response()
            out.append((r, c.closed_by_server()))
        finally:
            c.close()
    return out


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("headers,status,word", [
    (["Transfer-Encoding: gzip"], 400, "Transfer-Encoding"),
    (["Expect: something", "Content-Length: 2"], 417, "Expect"),
    (["Content-Length: abc"], 400, "Content-Length"),
], ids=["transfer-encoding", "expect", "content-length"])
def test_refusals_keep_httpds_connection_handling(gw, api, headers, status, word):
    # A Transfer-Encoding other than chunked, an Expect other than
    # 100-continue, a bad Content-Length: the API's error, and the
    # connection kept or closed (with or without saying so) exactly as
    # httpd does for the same request elsewhere.
    path, _ = APIS[api]
    (r, closed), (page, page_closed) = refused_twice(gw.port, "POST", path,
                                                     headers, b"{}")
    assert page.status == status and page.content_type == "text/html"
    msg = assert_api_error(api, r, status)
    assert word in msg, msg
    assert r.headers.get("connection") == page.headers.get("connection")
    assert closed == page_closed


@pytest.fixture(scope="module")
def gw_locked(request, workdir, ports, mocks):
    """The gateway with access control on parts of both APIs."""
    extra = "LLMCache off\n" + "".join(
        f'<Location "{p}/locked">\n    Require all denied\n</Location>\n'
        for p in ("/v1", "/api"))
    yield from env.serve_gateway(request, workdir, ports, "gw-locked", extra)


@pytest.mark.parametrize("api", APIS)
def test_access_denied_gets_the_api_error(gw_locked, api):
    # Require runs after the location walk and before the gateway's fixups.
    prefix = "/v1" if api == "openai" else "/api"
    r = gw_locked.get(prefix + "/locked/models")
    assert_api_error(api, r, 403)


def test_outside_the_api_httpd_pages_stay(gw):
    # LLMApi off below /v1/off, and nothing outside the API locations is
    # the gateway's to change.
    for target in ("/v1/off/x%2Fy", "/plain%2Fx"):
        c = RawConnection(gw.port)
        try:
            c.send(raw_request("GET", target))
            r = c.response()
            assert r.status == 404
            assert r.content_type == "text/html", (target, r.headers)
        finally:
            c.close()
