"""bench/allocs.py: build/bench --malloc, the malloc family's calls per
request of httpd's children, for bare mod_proxy and the gateway (miss, hit,
without its cache), since the gateway's request path promises r->pool only.

The counting is bench/malloc_count.c, preloaded into one httpd (parent and
children; each process counts into a file of its own). A subject's count
is the children's calls during a wrk run divided by the requests answered,
after a warm-up that lets every thread's pools and the connection pools
grow to their steady size.
"""

import os
import struct
import subprocess

import ab
import bench as b
import loadgen as lg
from subjects import StartError, free_port

HERE = os.path.dirname(os.path.abspath(__file__))
SHIM_SRC = os.path.join(HERE, "malloc_count.c")
FIELDS = ("malloc", "calloc", "realloc", "free", "memalign", "bytes")
MAGIC = 0x746e636f6c6c616d
SUBJECTS = ("mod_proxy", "gateway_nocache", "gateway_miss", "gateway_hit",
            "mod_proxy_stream", "gateway_nocache_stream",
            "gateway_miss_stream", "gateway_ollama")
# The *_stream subjects stream their answers (bench/loadgen.py's stream
# client, 8 connections, unique prompts): a miss with the cache on asks
# the backend for usage (stream_options.include_usage) and keeps the
# stream for the store.
STREAM_CONNS = 8
# gateway_ollama asks through Ollama's API (/api/chat), whose request and
# answer the gateway translates with json-c (trees of malloc'd values): a
# path that does allocate, so that a count of 0 elsewhere is known to be
# one the shim would have seen. (A body the gateway only edits, an alias
# or include_usage, no longer does: it is spliced in the pool.)
PROFILES = {"quick": {"rounds": 1, "secs": 1, "warm_s": 1},
            "full": {"rounds": 3, "secs": 2, "warm_s": 2}}


def build_shim(tmp):
    """Compiles the counting shim into tmp; returns its path."""
    out = os.path.join(tmp, "malloc_count.so")
    p = subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-Wall", "-Wextra",
                        "-Werror", "-o", out, SHIM_SRC],
                       capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        raise StartError("gcc could not build %s: %s" % (
            SHIM_SRC, (p.stderr or p.stdout).strip()[-600:]))
    return out


def read_counts(d, exclude=()):
    """{pid: {field: count}} of every process counted into d."""
    out = {}
    for name in os.listdir(d):
        if not name.isdigit() or int(name) in exclude:
            continue
        try:
            with open(os.path.join(d, name), "rb") as f:
                raw = f.read(64)
        except OSError:
            continue
        if len(raw) < 64:
            continue
        w = struct.unpack("<8Q", raw)
        if w[0] != MAGIC:
            continue
        out[int(name)] = dict(zip(FIELDS, w[2:]))
    return out


def total(counts):
    return {f: sum(c[f] for c in counts.values()) for f in FIELDS}


def per_request(before, after, n):
    t0, t1 = total(before), total(after)
    d = {f: t1[f] - t0[f] for f in FIELDS}
    d["allocations"] = sum(d[f] for f in ("malloc", "calloc", "realloc",
                                          "memalign"))
    return {f: (v / n if n else None) for f, v in d.items()}


def run_malloc(run, conns):
    k = PROFILES["quick" if run.args.quick else "full"]
    shim = build_shim(run.tmp)
    d = os.path.join(run.tmp, "malloc-counts")
    os.makedirs(d)
    os.chmod(d, 0o777)          # the children count as www-data
    env = dict(os.environ, LD_PRELOAD=shim, LLMGW_MALLOC_DIR=d)
    out = {"format": "mod_llm_gateway bench malloc v1",
           "mode": "malloc-" + ("quick" if run.args.quick else "full"),
           "params": dict(k, conns=conns, stream_conns=STREAM_CONNS,
                          tool="wrk; streams: bench/loadgen.py",
                          counting="bench/malloc_count.c preloaded into "
                          "httpd; calls of the children during each run "
                          "/ requests answered; bytes: asked for by every "
                          "call but free",
                          backend="test/mockllm --threads %d, zero think "
                          "time, 16 tokens" % b.FAST_THREADS),
           "subjects": {}}
    with run.stack("malloc") as st:
        fast = st.mock("mock-fast", tokens=16, threads=b.FAST_THREADS)
        ports = {"mod_proxy": free_port(), "gateway": free_port(),
                 "gateway_nocache": free_port()}
        routes = [("mock-small", "fast")]
        hp = st.httpd("httpd-malloc", [
            (ports["gateway"], b.gateway_vhost(routes, b.cache_directive())
             + '\n<Location "/api">\n    LLMApi ollama\n</Location>'),
            (ports["gateway_nocache"], b.gateway_vhost(routes,
                                                       "LLMCache off")),
            (ports["mod_proxy"], 'ProxyPass "/v1/" "balancer://fast/v1/"'),
        ], b.MPM_PROXY, b.balancer("fast", [fast.port]), env=env)
        eps = {"mod_proxy": b.Endpoint(ports["mod_proxy"]),
               "gateway_nocache": b.Endpoint(ports["gateway_nocache"]),
               "gateway_miss": b.Endpoint(ports["gateway"]),
               "gateway_hit": b.Endpoint(ports["gateway"], fixed=True),
               "gateway_ollama": b.Endpoint(ports["gateway"])}
        for n in ("mod_proxy", "gateway_nocache", "gateway_miss"):
            eps[n + "_stream"] = eps[n]
        path = {n: "/api/chat" if n == "gateway_ollama"
                else "/v1/chat/completions" for n in SUBJECTS}

        def load(name, secs, log=None):
            if name.endswith("_stream"):
                r = lg.stream_run(eps[name].port, STREAM_CONNS, secs)
                return dict(r, requests=r["streams"])
            return lg.wrk(eps[name].port, conns, secs, path=path[name],
                          fixed=eps[name].fixed, log=log)
        for name in ("mod_proxy", "gateway_nocache", "gateway_miss",
                     "gateway_hit"):
            why = b.check_subject(run, name, {"overhead": eps[name]},
                                  stream=False)
            if why:
                raise StartError("%s under the malloc counter: %s"
                                 % (name, why))
        for name in SUBJECTS:
            load(name, k["warm_s"])
        if not read_counts(d, exclude=(hp.pid,)):
            raise StartError("the malloc counter wrote no counts for httpd's "
                             "children into %s" % d)
        for name in SUBJECTS:
            rs = []
            for i in range(k["rounds"]):
                for _ in range(ab.ROUND_TRIES):
                    before = read_counts(d, exclude=(hp.pid,))
                    r = load(name, k["secs"], run.wrklog)
                    if r["requests"] >= ab.MIN_REQUESTS:
                        break
                    b.say("malloc %s r%d: %d requests in %d s (the machine "
                          "stalled); again" % (name, i + 1, r["requests"],
                                               k["secs"]))
                else:
                    raise StartError("%s answered fewer than %d requests in "
                                     "%d tries" % (name, ab.MIN_REQUESTS,
                                                   ab.ROUND_TRIES))
                if r["errors"]:
                    raise StartError("%s: %d of %d requests failed under the "
                                     "malloc counter" % (name, r["errors"],
                                                         r["requests"]))
                after = read_counts(d, exclude=(hp.pid,))
                pr = per_request(before, after, r["requests"])
                pr["requests"] = r["requests"]
                rs.append(pr)
                b.say("malloc %-15s r%d %7d requests  %6.2f allocations "
                      "%6.2f frees  %8.1f bytes per request" % (
                          name, i + 1, r["requests"], pr["allocations"],
                          pr["free"], pr["bytes"]))
            out["subjects"][name] = summarize(rs)
    return out


def summarize(rs):
    s = {f: b.r3(lg.median([r[f] for r in rs if r[f] is not None]))
         for f in FIELDS + ("allocations",)}
    s["requests"] = sum(r["requests"] for r in rs)
    s["rounds_allocations"] = [b.r3(r["allocations"]) for r in rs]
    return s


def markdown(res):
    p = res["params"]
    out = b.report.heading(res, "mod_llm_gateway allocations per request",
                           "build/bench --malloc") + [
           "%s; wrk c=%s (streams: %s connections of bench/loadgen.py), "
           "%s run(s) of %s s per subject after %s s of warm-up; %s. "
           "Median of the runs; allocations: malloc + calloc + realloc + "
           "memalign (a realloc moves a block, so frees can be fewer). "
           "`gateway_ollama` asks through Ollama's API, whose request and "
           "answer the gateway translates with json-c.\n" % (
               p["backend"], p["conns"], p["stream_conns"], p["rounds"],
               p["secs"], p["warm_s"], p["counting"])]
    rows = []
    for name, s in res["subjects"].items():
        rows.append(["`%s`" % name] + [b.report.f(s[f], 3) for f in (
            "allocations", "malloc", "calloc", "realloc", "memalign",
            "free")] + [b.report.f(s["bytes"], 0)])
    out.append(b.report.table(["subject", "allocations/request",
                               "malloc", "calloc", "realloc", "memalign",
                               "free", "bytes/request"], rows))
    return "\n".join(x.rstrip("\n") + "\n" for x in out)


def headline(res):
    return "malloc calls per request (allocations, frees): " + ", ".join(
        "%s %.2f/%.2f" % (n, s["allocations"], s["free"])
        for n, s in res["subjects"].items())


def write(run, res, mach, prefix):
    b.write_run(run, res, mach, prefix,
                ("format", "mode", "date", "duration_s", "machine", "params", "subjects"),
                markdown, "malloc.json")
