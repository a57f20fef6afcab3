"""bench/loadgen.py: the load generators of build/bench (stdlib only).

- wrk(): runs wrk with bench/post.lua and returns its numbers;
- a small asyncio HTTP/1.1 client (keep-alive, Content-Length or chunked)
  for the runs wrk cannot do: streams (time to first token and the gaps
  between tokens), and closed-loop workloads that record every request
  (failover, model switching, the seed's table).

Every run here is bounded in time, and every target is 127.0.0.1.
"""

import asyncio
import bisect
import json
import math
import os
import random
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))
LOOPBACK = "127.0.0.1"


def pct(values, p):
    """The p-th percentile (0..100) of values, nearest-rank; None if empty."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(math.ceil(p / 100.0 * len(s))) - 1))
    return s[k]


def median(values):
    if not values:
        return None
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2.0


def quantile(values, q):
    """The q-quantile (0..1) of values, interpolated between the nearest
    ranks (the quartiles of an IQR); None if empty."""
    if not values:
        return None
    s = sorted(values)
    x = q * (len(s) - 1)
    i = int(math.floor(x))
    j = min(i + 1, len(s) - 1)
    return s[i] + (s[j] - s[i]) * (x - i)


def median_ci(values, conf=0.95):
    """A distribution-free confidence interval of the median: the j-th
    smallest and j-th largest of values, j the largest rank such that
    fewer than j of n values fall below the true median with probability
    at most (1 - conf) / 2 (binomial, p = 1/2). None for too few values."""
    s = sorted(values)
    n = len(s)
    cum, j = 0.0, 0
    for i in range(n + 1):
        p = math.comb(n, i) / 2.0 ** n
        if cum + p > (1 - conf) / 2:
            break
        cum += p
        j = i + 1
    if j == 0:
        return None
    return s[j - 1], s[n - j]


def nonce():
    """A string no earlier request of this machine used: keeps requests
    meant to be unique from hitting a response cache filled by an earlier
    run."""
    return "%x%s" % (time.time_ns(), os.urandom(3).hex())


def rnd(x, nd=3):
    return None if x is None else round(float(x), nd)


# ---- wrk ------------------------------------------------------------------

def pin_tree(cpus, root=None):
    """Sets the CPU affinity of this process (or of root) and of every
    thread of its descendants (httpd's children and their threads, nginx's
    workers, node, the backends; the wrk started after it inherits it)."""
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            kids.setdefault(ppid, []).append(int(d))
    todo = [root or os.getpid()]
    while todo:
        pid = todo.pop()
        try:
            tids = os.listdir("/proc/%d/task" % pid)
        except OSError:
            continue
        for t in tids:
            try:
                os.sched_setaffinity(int(t), cpus)
            except OSError:
                pass            # gone meanwhile
        todo.extend(kids.get(pid, []))


def wrk(port, conns, secs, model="mock-small", fixed=False, headers=None,
        threads=None, path="/v1/chat/completions", log=None):
    """One wrk run against 127.0.0.1:port. Returns a dict of numbers."""
    if threads is None:
        threads = 1 if conns < 2 else 2
    env = dict(os.environ)
    env["BENCH_MODEL"] = model
    env["BENCH_FIXED"] = "1" if fixed else "0"
    env["BENCH_NONCE"] = nonce()
    env["BENCH_HEADERS"] = "\n".join(
        "%s: %s" % kv for kv in (headers or {}).items())
    argv = ["wrk", "-t%d" % threads, "-c%d" % conns, "-d%ds" % secs,
            "--timeout", "5s", "-s", os.path.join(HERE, "post.lua"),
            "http://%s:%d%s" % (LOOPBACK, port, path)]
    p = subprocess.run(argv, env=env, capture_output=True, text=True,
                       timeout=secs + 30)
    if log is not None:
        log.write("$ %s\n%s%s\n" % (" ".join(argv), p.stdout, p.stderr))
        log.flush()
    line = next((l for l in p.stdout.splitlines()
                 if l.startswith("BENCHJSON ")), None)
    if p.returncode != 0 or line is None:
        raise RuntimeError("wrk failed (rc %d): %s" % (
            p.returncode, (p.stderr or p.stdout).strip()[-300:]))
    d = json.loads(line[len("BENCHJSON "):])
    secs_real = d["duration_us"] / 1e6
    errors = d["connect"] + d["read"] + d["write"] + d["status"] \
        + d["timeout"]
    ok = max(0, d["requests"] - d["status"])
    return {
        "rps": ok / secs_real if secs_real > 0 else 0.0,
        "p50_ms": d["p50_us"] / 1000.0,
        "p90_ms": d["p90_us"] / 1000.0,
        "p99_ms": d["p99_us"] / 1000.0,
        "p999_ms": d["p999_us"] / 1000.0,
        "mean_ms": d["mean_us"] / 1000.0,
        "requests": d["requests"],
        "errors": errors,
    }


# ---- a minimal HTTP/1.1 client ------------------------------------------

class HTTPError(Exception):
    pass


class StaleConnection(HTTPError):
    """The server closed a kept-alive connection before answering."""

# What a reused keep-alive connection may fail with before any answer; a
# client then tries once more on a fresh connection, as HTTP clients do.
RETRYABLE = (StaleConnection, ConnectionResetError, BrokenPipeError)
FAILURES = (OSError, asyncio.TimeoutError, HTTPError,
            asyncio.IncompleteReadError)


class Conn:
    """One keep-alive connection to 127.0.0.1:port."""

    def __init__(self, port, timeout=30.0):
        self.port = port
        self.timeout = timeout
        self.r = self.w = None

    async def open(self):
        self.r, self.w = await asyncio.wait_for(
            asyncio.open_connection(LOOPBACK, self.port), self.timeout)

    def close(self):
        if self.w is not None:
            try:
                self.w.close()
            except Exception:
                pass
        self.r = self.w = None

    async def request(self, method, path, headers=None, body=b"",
                      on_data=None):
        """Sends one request; returns (status, headers, body). on_data(bytes,
        t) sees each piece of the body as it arrives (then body is b"")."""
        if self.w is None:
            await self.open()
        lines = ["%s %s HTTP/1.1" % (method, path),
                 "Host: %s:%d" % (LOOPBACK, self.port)]
        for k, v in (headers or {}).items():
            lines.append("%s: %s" % (k, v))
        if body or method == "POST":
            lines.append("Content-Length: %d" % len(body))
        data = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
        try:
            self.w.write(data)
            return await asyncio.wait_for(self._response(on_data),
                                          self.timeout)
        except BaseException:
            self.close()
            raise

    async def _response(self, on_data):
        r = self.r
        line = await r.readline()
        if not line:
            raise StaleConnection("connection closed before the status line")
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
            raise HTTPError("bad status line %r" % line[:80])
        status = int(parts[1])
        hdrs = {}
        while True:
            h = await r.readline()
            if not h:
                raise HTTPError("connection closed in the headers")
            if h in (b"\r\n", b"\n"):
                break
            k, _, v = h.decode("latin-1").partition(":")
            hdrs[k.strip().lower()] = v.strip()
        chunks = []

        def sink(b):
            if on_data is not None:
                on_data(b, time.monotonic())
            else:
                chunks.append(b)

        te = hdrs.get("transfer-encoding", "").lower()
        if "chunked" in te:
            while True:
                sz = await r.readline()
                if not sz:
                    raise HTTPError("connection closed in a chunk size")
                n = int(sz.split(b";")[0].strip() or b"0", 16)
                if n == 0:
                    while True:     # trailers
                        t = await r.readline()
                        if not t or t in (b"\r\n", b"\n"):
                            break
                    break
                sink(await r.readexactly(n))
                await r.readexactly(2)
        elif "content-length" in hdrs:
            left = int(hdrs["content-length"])
            while left > 0:
                b = await r.read(min(left, 65536))
                if not b:
                    raise HTTPError("connection closed in the body")
                left -= len(b)
                sink(b)
        else:
            while True:
                b = await r.read(65536)
                if not b:
                    break
                sink(b)
            self.close()
        if hdrs.get("connection", "").lower() == "close":
            self.close()
        return status, hdrs, b"".join(chunks)


def chat_body(model, content, stream=False, max_tokens=None):
    o = {"model": model, "temperature": 0,
         "messages": [{"role": "user", "content": content}]}
    if max_tokens is not None:
        o["max_tokens"] = max_tokens
    if stream:
        o["stream"] = True
    return json.dumps(o, separators=(",", ":")).encode()


JSON_HEADERS = {"Content-Type": "application/json"}


def one_request(port, body, headers=None, path="/v1/chat/completions",
                timeout=10.0, method="POST"):
    """A single blocking request; returns (status, headers, body)."""
    async def go():
        c = Conn(port, timeout)
        try:
            return await c.request(method, path,
                                   dict(JSON_HEADERS, **(headers or {})),
                                   body)
        finally:
            c.close()
    return asyncio.run(go())


def sequential(port, n, headers=None, fixed=False, model="mock-small",
               timeout=10.0, secs=None):
    """n requests one after another on one keep-alive connection (or as
    many as fit in secs seconds), unique (or all one body when fixed);
    returns {"requests": answered with 200, "errors": the others}."""
    hdrs = dict(JSON_HEADERS, **(headers or {}))
    salt = nonce()
    end = time.monotonic() + secs if secs else None

    async def go():
        c = Conn(port, timeout)
        ok = bad = 0
        try:
            for i in range(n):
                if end is not None and time.monotonic() > end:
                    break
                body = chat_body(model, "Say hello in five words. (%s)" % (
                    "fixed" if fixed else "%s-%d" % (salt, i)),
                    max_tokens=16)
                try:
                    st, _, b = await c.request("POST", "/v1/chat/"
                                               "completions", hdrs, body)
                except RETRYABLE:
                    st, b = 0, b""
                if st == 200 and b'"choices"' in b:
                    ok += 1
                else:
                    bad += 1
        finally:
            c.close()
        return {"requests": ok, "errors": bad}
    return asyncio.run(go())


# ---- streams -------------------------------------------------------------

class SSETimer:
    """Splits an SSE byte stream into events; notes when each generated
    token arrived (an event whose delta content or text is not empty)."""

    def __init__(self):
        self.buf = b""
        self.token_times = []
        self.done = False
        self.events = 0

    def feed(self, data, t):
        self.buf += data
        while True:
            i = self.buf.find(b"\n\n")
            if i < 0:
                return
            ev, self.buf = self.buf[:i], self.buf[i + 2:]
            for line in ev.split(b"\n"):
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                self.events += 1
                if payload == b"[DONE]":
                    self.done = True
                    continue
                try:
                    o = json.loads(payload)
                    ch = (o.get("choices") or [{}])[0]
                    text = (ch.get("delta") or {}).get("content") \
                        or ch.get("text")
                except (ValueError, AttributeError, IndexError):
                    continue
                if text:
                    self.token_times.append(t)


async def _stream_once(conn, path, headers, body):
    timer = SSETimer()
    t0 = time.monotonic()
    status, hdrs, _ = await conn.request("POST", path, headers, body,
                                         on_data=timer.feed)
    t1 = time.monotonic()
    return status, hdrs, timer, t0, t1


def stream_run(port, conns, secs, model="mock-small", headers=None,
               path="/v1/chat/completions", max_requests=None, raw=False,
               fixed=False, max_tokens=None, stagger_s=0.0):
    """Closed loop of streamed chat completions for secs seconds with
    conns connections. Returns rps (streams/s), latency of whole streams,
    time to first token, and the gaps between tokens. stagger_s spreads
    the connections' first requests over that long: streams of one length
    started together stay in step, and each wave would queue at once."""
    hdrs = dict(JSON_HEADERS, **(headers or {}))
    res = {"ttft": [], "total": [], "gaps": [], "errors": 0, "ok": 0,
           "incomplete": 0, "cache": {}}
    salt = nonce()

    async def worker(i, deadline, budget):
        conn = Conn(port, timeout=secs + 30)
        n = 0
        await asyncio.sleep(stagger_s * i / conns)
        while time.monotonic() < deadline and budget[0] > 0:
            budget[0] -= 1
            n += 1
            body = chat_body(model, "Stream, please." if fixed else
                             "Stream %s-%d-%d, please." % (salt, i, n),
                             stream=True, max_tokens=max_tokens)
            try:
                st, rh, timer, t0, t1 = await _stream_once(conn, path, hdrs,
                                                           body)
            except (OSError, asyncio.TimeoutError, HTTPError,
                    asyncio.IncompleteReadError):
                res["errors"] += 1
                conn.close()
                await asyncio.sleep(0.05)
                continue
            c = rh.get("x-llm-cache")
            if c:
                res["cache"][c] = res["cache"].get(c, 0) + 1
            if st != 200 or not timer.token_times:
                res["errors"] += 1
                continue
            if not timer.done:
                res["incomplete"] += 1
            res["ok"] += 1
            res["ttft"].append((timer.token_times[0] - t0) * 1000.0)
            res["total"].append((t1 - t0) * 1000.0)
            tt = timer.token_times
            res["gaps"].extend((tt[j + 1] - tt[j]) * 1000.0
                               for j in range(len(tt) - 1))
        conn.close()

    async def main():
        deadline = time.monotonic() + secs
        budget = [max_requests if max_requests else 1 << 60]
        t0 = time.monotonic()
        await asyncio.gather(*(worker(i, deadline, budget)
                               for i in range(conns)))
        return time.monotonic() - t0

    elapsed = asyncio.run(main())
    out = {
        "rps": res["ok"] / elapsed if elapsed > 0 else 0.0,
        "elapsed": elapsed,
        "p50_ms": median(res["total"]),
        "p99_ms": pct(res["total"], 99),
        "ttft_ms": median(res["ttft"]),
        "ttft_p99_ms": pct(res["ttft"], 99),
        "gap_p50_ms": median(res["gaps"]),
        "gap_p99_ms": pct(res["gaps"], 99),
        "gap_max_ms": max(res["gaps"]) if res["gaps"] else None,
        "streams": res["ok"],
        "incomplete": res["incomplete"],
        "errors": res["errors"],
        "cache": res["cache"],
    }
    if raw:
        out["raw"] = {k: res[k] for k in ("ttft", "total", "gaps")}
    return out


# ---- many concurrent streams (memory) ------------------------------------

def hold_streams(port, n, headers=None, model="mock-small", ramp_s=2.0,
                 settle_s=1.0, max_wait_s=20.0, sample=None):
    """Opens n streams (over ramp_s seconds), waits until each has its first
    token (or max_wait_s), calls sample() while all are open, then hangs
    up. Returns what sample() returned plus the times to first token."""
    hdrs = dict(JSON_HEADERS, **(headers or {}))
    salt = nonce()
    firsts = []
    errors = [0]
    started = []
    stop = None

    async def one(i):
        conn = Conn(port, timeout=max_wait_s + 60)
        got = asyncio.get_running_loop().create_future()
        timer = SSETimer()
        t0 = time.monotonic()

        def on_data(b, t):
            timer.feed(b, t)
            if timer.token_times and not got.done():
                got.set_result(t)

        body = chat_body(model, "Hold stream %s-%d" % (salt, i),
                         stream=True)
        task = asyncio.ensure_future(conn.request("POST", "/v1/chat/"
                                                  "completions", hdrs, body,
                                                  on_data=on_data))
        try:
            done, _ = await asyncio.wait({task, got},
                                         return_when=asyncio.FIRST_COMPLETED)
            if got.done():
                firsts.append((got.result() - t0) * 1000.0)
                await stop.wait()
            else:
                errors[0] += 1
                if not task.cancelled() and task.exception() is None:
                    pass
        except Exception:
            errors[0] += 1
        finally:
            task.cancel()
            try:
                await task
            except BaseException:
                pass
            conn.close()

    async def main():
        nonlocal stop
        stop = asyncio.Event()
        tasks = []
        step = ramp_s / max(1, n)
        for i in range(n):
            tasks.append(asyncio.ensure_future(one(i)))
            started.append(i)
            if step > 0:
                await asyncio.sleep(step)
        t_end = time.monotonic() + max_wait_s
        while len(firsts) + errors[0] < n and time.monotonic() < t_end:
            await asyncio.sleep(0.1)
        await asyncio.sleep(settle_s)
        open_now = len(firsts)
        s = await asyncio.get_running_loop().run_in_executor(
            None, sample) if sample else None
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        return s, open_now

    s, open_now = asyncio.run(main())
    return {"sample": s, "open": open_now, "errors": n - open_now,
            "ttft": firsts}


# ---- closed-loop workloads with a record of every request ----------------

class Zipf:
    """Draws 0..n-1 with P(k) proportional to 1/(k+1)^s."""

    def __init__(self, n, s, rng):
        w = [1.0 / (k + 1) ** s for k in range(n)]
        tot = sum(w)
        acc = 0.0
        self.cum = []
        for x in w:
            acc += x / tot
            self.cum.append(acc)
        self.rng = rng

    def draw(self):
        return min(bisect.bisect_left(self.cum, self.rng.random()),
                   len(self.cum) - 1)


async def post(conn, hdrs, body):
    """POST on conn; once more on a fresh connection if a kept-alive one
    turns out to be closed. Returns (status, headers); status 0: failed."""
    for attempt in (0, 1):
        reused = conn.w is not None
        try:
            st, rh, _ = await conn.request("POST", "/v1/chat/completions",
                                           hdrs, body)
            return st, rh
        except RETRYABLE:
            conn.close()
            if not reused or attempt:
                return 0, {}
        except FAILURES:
            conn.close()
            return 0, {}
    return 0, {}


# The key a log's headers get for the model the request asked for (no
# server sends a header by that name: it is the load generator's own).
MODEL_KEY = ":bench-model"


def tagged(rh, body):
    """The headers rh with the request body's model under MODEL_KEY, so
    per-request records can say which model each request was for."""
    try:
        model = json.loads(body).get("model")
    except (ValueError, AttributeError):
        model = None
    out = dict(rh)
    if model:
        out[MODEL_KEY] = model
    return out


def workload(ports, conns, secs, requests_for, headers=None, events=(),
             retry_pause_s=0.05, timeout=30.0):
    """conns workers, worker i sending to ports[i % len(ports)] the bodies
    requests_for(i) yields, for secs seconds. events: (at_s, fn) called in
    a thread at at_s after the start (kill a member, ...). Returns the list
    of (t_start, t_end, status, headers) with times relative to the start;
    status 0 is a connection failure."""
    hdrs = dict(JSON_HEADERS, **(headers or {}))
    log = []

    async def worker(i, t_base, deadline):
        port = ports[i % len(ports)]
        conn = Conn(port, timeout=timeout)
        gen = requests_for(i)
        while time.monotonic() < deadline:
            body = next(gen)
            t0 = time.monotonic()
            st, rh = await post(conn, hdrs, body)
            t1 = time.monotonic()
            log.append((t0 - t_base, t1 - t_base, st, tagged(rh, body)))
            if st != 200:
                await asyncio.sleep(retry_pause_s)
        conn.close()

    async def timed(t_base, at, fn):
        await asyncio.sleep(max(0.0, t_base + at - time.monotonic()))
        await asyncio.get_running_loop().run_in_executor(None, fn)

    async def main():
        t_base = time.monotonic()
        deadline = t_base + secs
        jobs = [worker(i, t_base, deadline) for i in range(conns)]
        jobs += [timed(t_base, at, fn) for at, fn in events]
        await asyncio.gather(*jobs)

    asyncio.run(main())
    return log


def openloop(ports, rate, secs, bodies, headers=None, events=(),
             max_conns=64, seed=1, timeout=30.0):
    """Requests arrive at rate per second (Poisson, seeded) for secs
    seconds; request k goes to ports[k % len(ports)] with the next body of
    the iterator bodies. Latency counts from the scheduled arrival, so a
    slow server cannot slow the arrivals down and hide its queue. At most
    max_conns connections per port; an arrival that finds none free waits.
    Returns a log like workload()'s."""
    rng = random.Random(seed)
    arrivals, t = [], 0.0
    while True:
        t += rng.expovariate(rate)
        if t >= secs:
            break
        arrivals.append(t)
    hdrs = dict(JSON_HEADERS, **(headers or {}))
    log = []

    async def main():
        idle = {p: [] for p in ports}
        sems = {p: asyncio.Semaphore(max_conns) for p in ports}
        t_base = time.monotonic()

        async def one(k, at, body):
            port = ports[k % len(ports)]
            await asyncio.sleep(max(0.0, t_base + at - time.monotonic()))
            async with sems[port]:
                conn = idle[port].pop() if idle[port] else Conn(port,
                                                                 timeout)
                st, rh = await post(conn, hdrs, body)
                if conn.w is not None:
                    idle[port].append(conn)
            log.append((at, time.monotonic() - t_base, st,
                        tagged(rh, body)))

        async def timed(at, fn):
            await asyncio.sleep(max(0.0, t_base + at - time.monotonic()))
            await asyncio.get_running_loop().run_in_executor(None, fn)

        jobs = [one(k, at, next(bodies)) for k, at in enumerate(arrivals)]
        jobs += [timed(at, fn) for at, fn in events]
        await asyncio.gather(*jobs)
        for conns in idle.values():
            for c in conns:
                c.close()

    asyncio.run(main())
    return log


def summarize(log, secs, kill_at=None):
    """rps, p50/p95/p99 of successful requests, errors, and, when a member
    was killed at kill_at seconds, the recovery time: from the kill to the
    end of the last failed request (0 when none failed)."""
    ok = [(t1 - t0) * 1000.0 for t0, t1, st, _ in log if st == 200]
    bad = [(t0, t1) for t0, t1, st, _ in log if st != 200]
    out = {
        "rps": len(ok) / secs if secs > 0 else 0.0,
        "p50_ms": median(ok),
        "p95_ms": pct(ok, 95),
        "p99_ms": pct(ok, 99),
        "ttft_ms": None,
        "errors": len(bad),
        "requests": len(log),
    }
    if kill_at is not None:
        after = [t1 for t0, t1 in bad if t1 >= kill_at]
        out["errors_before_kill"] = len(bad) - len(after)
        out["recovery_ms"] = (max(after) - kill_at) * 1000.0 if after else 0.0
    return out


def seeded(i, salt):
    return random.Random((i + 1) * 1000003 + salt)
