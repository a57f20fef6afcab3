#!/usr/bin/env python3
"""bench/bench.py: the benchmark harness behind build/bench.

Puts mod_llm_gateway side by side with the emulated backend alone
(direct), bare mod_proxy_http on the same httpd, nginx proxy_pass and the
Portkey gateway, all on 127.0.0.1, and measures them in one run so that the
ratios between them are what counts. Scenarios: overhead, stream, failover,
switch, memory and seed (see docs/benchmarks.md). Writes
bench/results/latest.json and latest.md.

usage: bench/bench.py [--quick | --smoke] [--only S1,S2] [--out PREFIX]
                      [--keep] [--lbmethod NAME]
Use build/bench, which installs what is missing and builds first.
"""

import argparse
import concurrent.futures
import datetime
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# bench/ab.py imports this file as "bench": let it find this one.
sys.modules.setdefault("bench", sys.modules[__name__])

import ab                                               # noqa: E402
import allocs                                           # noqa: E402
import loadgen as lg                                    # noqa: E402
import report                                           # noqa: E402
import subjects                                         # noqa: E402
from subjects import (Stack, StartError, free_port, children,  # noqa: E402
                      memory_kb, portkey_headers, portkey_absent_reason,
                      portkey_version, PORTKEY_MAIN, TOP)

HERE = os.path.dirname(os.path.abspath(__file__))
SUBJECTS = ["direct", "mod_proxy", "nginx", "portkey", "gateway_miss",
            "gateway_hit"]
SCENARIOS = ["overhead", "stream", "failover", "switch", "memory", "seed"]

# The one body template of wrk's bench/post.lua, for warming the cache and
# for checks with the same bytes.
POST_BODY = ('{"model":"%s","temperature":0,"max_tokens":16,"messages":'
             '[{"role":"user","content":"Say hello in five words. (%s)"}]}')

PROFILES = {
    # name: knobs of every scenario
    "smoke": {},
    "quick": {
        "overhead": {"levels": [1, 32], "main": 32, "rounds": 1, "secs": 2,
                     "main_rounds": 6, "main_secs": 1, "warm_s": 2},
        "stream": {"conns": 16, "secs": 2, "rounds": 1, "tps": 50,
                   "ttft_ms": 20, "tokens": 20},
        "failover": {"conns": 16, "secs": 3, "kill_at": 1.0,
                     "restart_after": 1.0, "ttft_ms": 20},
        "switch": {"conns": 8, "secs": 3, "slots": 1, "load_ms": 200,
                   "gen_ms": 50, "per_token_ms": 1, "models": 3},
        "memory": {"streams": 200, "ramp_s": 0.5, "settle_s": 0.5},
        "seed": {"rate": 8, "secs": 6, "kill_at": 2.5,
                 "restart_after": 1.0},
    },
    "full": {
        # c=32's rounds are many and short: the ratios are taken within
        # a round, and the closer in time its runs, the less the machine's
        # load changed between them (--ab: 48 rounds of 1 s had about half
        # the spread of 24 of 2 s).
        "overhead": {"levels": [1, 32, 128], "main": 32, "rounds": 3,
                     "secs": 3, "main_rounds": 24, "main_secs": 1,
                     "warm_s": 2},
        "stream": {"conns": 16, "secs": 6, "rounds": 2, "tps": 50,
                   "ttft_ms": 20, "tokens": 20},
        "failover": {"conns": 16, "secs": 8, "kill_at": 2.5,
                     "restart_after": 3.0, "ttft_ms": 20},
        "switch": {"conns": 8, "secs": 10, "slots": 1, "load_ms": 200,
                   "gen_ms": 50, "per_token_ms": 1, "models": 3},
        "memory": {"streams": 1000, "ramp_s": 3.0, "settle_s": 1.0},
        "seed": {"rate": 8, "secs": 30, "kill_at": 12.0,
                 "restart_after": 3.0},
    },
}

# The seed workload: repeated prompts in a Zipf mix, several models, a
# model-load delay, and a member that fails.
SEED = {"prompts": 200, "prompt_zipf_s": 1.1, "models": 3,
        "model_zipf_s": 1.0, "slots": 1, "load_ms": 250, "gen_ms": 80,
        "per_token_ms": 2, "tokens_min": 16, "tokens_max": 64}

# What the seed article claims, quoted next to what we measure.
SEED_CLAIMS = {
    "direct": {"p95_ms": 840, "cache_hit_rate": 0.12,
               "switch_overhead_ms": 210, "recovery_ms": 4200},
    "gateway": {"p95_ms": 310, "cache_hit_rate": 0.68,
                "switch_overhead_ms": 45, "recovery_ms": 180},
}

# Members that fail in a scenario are tried again 2 s after an error (the
# default, 60 s, would leave a balancer on one member for the rest of a run
# once the failed member is back).
RETRY = " retry=2"

# One child per core (at least two, so that the cache is shared between
# processes): with four children of 64 threads on two cores, the 32
# connections of a run spread over the children differently each time, and
# the same subject's throughput moved by up to 40 % from one run to the next
# (two children: about 10 %).
NCHILD = max(2, os.cpu_count() or 2)
# No child exits during a run (httpd's default MaxConnectionsPerChild, 0,
# said out loud): every child's CPU time stays in the counts (/proc too).
MPM_PROXY = {"StartServers": NCHILD, "ServerLimit": NCHILD,
             "ThreadsPerChild": 64, "MaxRequestWorkers": 64 * NCHILD,
             "MinSpareThreads": 32, "MaxSpareThreads": 64 * NCHILD,
             "ThreadLimit": 64, "MaxConnectionsPerChild": 0}
MPM_MEMORY = {"StartServers": 16, "ServerLimit": 16, "ThreadsPerChild": 64,
              "MaxRequestWorkers": 1024, "MinSpareThreads": 64,
              "MaxSpareThreads": 1024, "ThreadLimit": 64}
# The zero-think-time backend answers from epoll threads, one per core:
# with a thread per connection, waking the connection's thread for each
# request cost it ~65 us of CPU per request proxied (~40 us so), CPU that
# the subjects on this machine did not get.
FAST_THREADS = os.cpu_count() or 2
# The CPU placement by default of --ab and of the overhead scenario at c>1
# (see docs/benchmarks.md, "Where the processes run").
AB_PIN = "split"
OVERHEAD_PIN = "none"


class Run:
    """State shared by the scenarios of one run."""

    def __init__(self, args):
        self.args = args
        self.profile = "smoke" if args.smoke else (
            "quick" if args.quick else "full")
        self.knobs = PROFILES[self.profile]
        self.t0 = time.time()
        self.tmp = tempfile.mkdtemp(prefix="llmgw-bench.")
        os.chmod(self.tmp, 0o755)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.raw = os.path.join(HERE, "results", "raw", stamp)
        os.makedirs(self.raw, exist_ok=True)
        self.wrklog = open(os.path.join(self.raw, "wrk.log"), "w")
        self.notes = []
        self.absent = {}        # subject -> reason (for every scenario)
        self.scenarios = {}
        self.params = {}
        self.cache = None       # None: unknown; else dict(ok=, why=)
        self.n_stack = 0
        self.module = freeze_module(self.tmp)

    def stack(self, name):
        self.n_stack += 1
        return Stack(os.path.join(self.tmp, "%02d-%s" % (self.n_stack, name)))

    def note(self, msg):
        if msg not in self.notes:
            self.notes.append(msg)
        say("note: " + msg)

    def mark_absent(self, subject, why):
        if subject not in self.absent:
            self.absent[subject] = why
            say("absent: %s: %s" % (subject, why))


def freeze_module(tmp):
    """Copies the module and the emulated backend into the run directory
    and runs them from there, so that the whole run uses one build even if
    the tree is rebuilt meanwhile. Returns the module's sha256."""
    import hashlib
    src = os.path.join(TOP, ".libs", "mod_llm_gateway.so")
    dst = os.path.join(tmp, "mod_llm_gateway.so")
    shutil.copy(src, dst)
    os.chmod(dst, 0o755)
    load = os.environ.get("LLMGW_LOAD_MODULES")
    if not load:
        from subjects import default_load_modules
        load = default_load_modules()
    os.environ["LLMGW_LOAD_MODULES"] = load.replace(src, dst)
    mock = os.path.join(tmp, "mockllm")
    shutil.copy(subjects.MOCKLLM, mock)
    os.chmod(mock, 0o755)
    subjects.MOCKLLM = mock
    with open(dst, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def say(msg):
    print("[bench %s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


def r3(x):
    return lg.rnd(x, 3)


BASE_KEYS = ("rps", "p50_ms", "p99_ms", "ttft_ms", "errors")


def entry(d, extra=()):
    """A subject's numbers in the documented shape, plus extras."""
    out = {k: (r3(d.get(k)) if isinstance(d.get(k), (int, float))
               and not isinstance(d.get(k), bool) else d.get(k))
           for k in BASE_KEYS}
    out["errors"] = int(d.get("errors") or 0)
    for k in extra:
        if k in d:
            v = d[k]
            out[k] = r3(v) if isinstance(v, float) else v
    return out


# ---- the LLMCache probe ---------------------------------------------------

def cache_directive():
    # The single-node default store (its default size, 16 MB): a look-up is
    # a shared-memory read. (memcached, for several nodes, adds a network
    # round trip to each look-up and store.)
    return "LLMCache shm ttl=600"


def gateway_vhost(routes, cache="", route_extra=""):
    """routes: [(model, balancer)]; cache: an LLMCache line or "";
    route_extra: lines in every <LLMRoute>."""
    out = [cache] if cache else []
    for model, bal in routes:
        out.append('<LLMRoute "%s">\n    LLMBackend balancer://%s\n%s'
                   '</LLMRoute>' % (model, bal, route_extra))
    out.append('<Location "/v1">\n    LLMApi openai\n</Location>')
    return "\n".join(out)


# gateway_keyed: the gateway_miss vhost with a key that has every kind of
# limit (none of which refuses), required on its API: what authentication,
# admission and settlement add to a miss.
BENCH_KEY = "llmgw-bench-key-0123456789abcdef0123456789abcdef"


def keyed_lines():
    import hashlib
    return ('<LLMKey "bench">\n    LLMKeyHash sha256:%s\n'
            '    LLMRateLimit rpm=1000000000 tpm=1000000000 '
            'concurrent=100000\n'
            '    LLMBudget tokens=4000000000000000 per=day\n'
            '</LLMKey>\n<Location "/v1">\n    LLMRequireKey on\n</Location>'
            % hashlib.sha256(BENCH_KEY.encode()).hexdigest())


def balancer(name, ports, lbmethod=None, extra=""):
    members = "".join('    BalancerMember "http://127.0.0.1:%d"%s\n'
                      % (p, extra) for p in ports)
    lb = "    ProxySet lbmethod=%s\n" % lbmethod if lbmethod else ""
    return '<Proxy "balancer://%s">\n%s%s</Proxy>' % (name, members, lb)


def probe_cache(run):
    """Does this build's apache2 -t accept the LLMCache line?"""
    st = Stack(os.path.join(run.tmp, "00-probe"))
    port = free_port()
    ok, msg = st.httpd_accepts(
        "probe-cache", [(port, gateway_vhost(
            [("mock-small", "be")], cache_directive()))], MPM_PROXY,
        balancer("be", [port + 1 if port < 65535 else port - 1]))
    if ok:
        run.cache = {"ok": True, "why": None}
        return
    lines = msg.splitlines() or ["apache2 -t failed"]
    line = next((l for l in lines if "LLMCache" in l
                 or "Invalid command" in l), lines[-1])
    run.cache = {"ok": False, "why": "apache2 -t does not accept "
                 "'%s': %s" % (cache_directive(), line.strip()[:200])}


def cache_line(run, cached=False):
    """The LLMCache line of a gateway vhost: the cache, or explicitly off
    (so a default cache cannot turn misses into hits)."""
    if not (run.cache and run.cache["ok"]):
        return ""
    return cache_directive() if cached else "LLMCache off"


# ---- the proxy stack: every subject in front of two emulated backends -----

class Endpoint:
    """Where a subject listens; proc: the process tree whose CPU time is the
    subject's (for direct, the backend itself); backend: the backend's."""

    def __init__(self, port, headers=None, fixed=False, proc=None,
                 backend=None):
        self.port = port
        self.headers = headers or {}
        self.fixed = fixed
        self.proc = proc
        self.backend = backend


def cpu_window(ep, fn, count="requests"):
    """Runs fn() (a load against ep) and adds to its result the CPU time
    the subject's processes (cpu_us) and the backend's (backend_cpu_us)
    spent meanwhile, and per request answered (cpu_us_per_req: from the
    load's count of answers, res[count])."""
    procs = [ep.proc, ep.backend if ep.backend is not ep.proc else None]
    before = [p.cpu_us() if p else None for p in procs]
    res = fn()
    after = [p.cpu_us() if p else None for p in procs]
    n = res.get(count) or 0
    for key, b, a in zip(("cpu_us", "backend_cpu_us"), before, after):
        if b is not None:
            res[key] = a - b
            res[key + "_per_req"] = (a - b) / n if n else None
    if ep.backend is ep.proc and "cpu_us" in res:
        res["backend_cpu_us"] = res["cpu_us"]
        res["backend_cpu_us_per_req"] = res["cpu_us_per_req"]
    res.setdefault("cpu_us_per_req", None)
    return res


def build_proxy_stack(run, st, stream_knobs):
    """Starts: mock-fast (zero think time), mock-paced (paced tokens),
    one apache2 with bare mod_proxy,
    the gateway with its cache and the gateway without, nginx, Portkey.
    Returns {subject: {"overhead": Endpoint, "stream": Endpoint}}."""
    fast = st.mock("mock-fast", tokens=16, threads=FAST_THREADS)
    paced = st.mock("mock-paced", tps=stream_knobs["tps"],
                    ttft_ms=stream_knobs["ttft_ms"],
                    tokens=stream_knobs["tokens"])
    subj = {"direct": {"overhead": Endpoint(fast.port, proc=fast,
                                            backend=fast),
                       "stream": Endpoint(paced.port, proc=paced,
                                          backend=paced)}}
    bal = balancer("fast", [fast.port]) + "\n" + balancer("paced",
                                                          [paced.port])
    routes = [("mock-small", "fast"), ("mock-paced", "paced")]
    mp_fast, mp_paced, gw, gwn, gwk = (free_port(), free_port(),
                                       free_port(), free_port(), free_port())
    # The cache once apache2 -t accepts LLMCache (probe_cache).
    cached = run.cache["ok"]
    hp = st.httpd("httpd-proxy", [
        (mp_fast, 'ProxyPass "/v1/" "balancer://fast/v1/"'),
        (mp_paced, 'ProxyPass "/v1/" "balancer://paced/v1/"'),
        (gw, gateway_vhost(routes, cache_line(run, cached))),
        (gwk, gateway_vhost(routes, cache_line(run, cached)) + "\n"
         + keyed_lines()),
    ] + ([(gwn, gateway_vhost(routes, cache_line(run)))] if cached else []),
        MPM_PROXY, bal)
    # The httpd subjects are vhosts of one httpd, loaded one at a time:
    # its CPU time during a subject's load is that subject's.
    def on(proc, port, sport=None, fixed=False):
        return {"overhead": Endpoint(port, fixed=fixed, proc=proc,
                                     backend=fast),
                "stream": Endpoint(sport or port, fixed=fixed, proc=proc,
                                   backend=paced)}
    subj["mod_proxy"] = on(hp, mp_fast, mp_paced)
    subj["gateway_miss"] = on(hp, gw)
    key = {"Authorization": "Bearer " + BENCH_KEY}
    subj["gateway_keyed"] = {
        "overhead": Endpoint(gwk, key, proc=hp, backend=fast),
        "stream": Endpoint(gwk, key, proc=hp, backend=paced)}
    if cached:
        subj["gateway_hit"] = on(hp, gw, fixed=True)
        # The same gateway with LLMCache off: what the cache adds to a miss.
        subj["gateway_nocache"] = on(hp, gwn)
        run.note("gateway_miss and gateway_hit are one gateway with its "
                 "shared-memory cache (LLMCache shm, the single-node "
                 "default) and coalescing on: gateway_miss sends unique "
                 "requests "
                 "(each pays a look-up and a store), gateway_hit one "
                 "repeated request")
    else:
        run.mark_absent("gateway_hit", "no response cache: %s; reported as "
                        "null, not estimated" % run.cache["why"])
        run.note("gateway_miss is the gateway without a cache")

    try:
        ng_fast, ng_paced = free_port(), free_port()
        ng = st.nginx("nginx", [(ng_fast, [fast.port], True),
                                (ng_paced, [paced.port], False)])
        subj["nginx"] = on(ng, ng_fast, ng_paced)
    except StartError as e:
        run.mark_absent("nginx", str(e))

    try:
        pk = st.portkey()
        subj["portkey"] = {
            "overhead": Endpoint(pk.port, portkey_headers(fast.port),
                                 proc=pk, backend=fast),
            "stream": Endpoint(pk.port, portkey_headers(paced.port),
                               proc=pk, backend=paced)}
    except StartError as e:
        run.mark_absent("portkey", str(e))
    return subj


def check_subject(run, name, ends, stream=True):
    """One request (and one stream): does the subject answer? For
    gateway_hit: the warmed request must come back X-LLM-Cache: HIT."""
    ep = ends["overhead"]
    try:
        if ep.fixed:
            body = (POST_BODY % ("mock-small", "fixed")).encode()
            lg.one_request(ep.port, body, ep.headers)
            st_, h, b = lg.one_request(ep.port, body, ep.headers)
            if h.get("x-llm-cache", "").upper() != "HIT":
                return "the repeated request was not a cache hit " \
                       "(X-LLM-Cache: %s)" % h.get("x-llm-cache", "absent")
        else:
            body = (POST_BODY % ("mock-small", "check " + lg.nonce())
                    ).encode()
            st_, h, b = lg.one_request(ep.port, body, ep.headers)
        if st_ != 200 or b'"choices"' not in b:
            return "POST answered %d: %s" % (st_, b[:160])
        if stream:
            se = ends["stream"]
            r = lg.stream_run(se.port, 1, 10, model="mock-paced",
                              headers=se.headers, max_requests=1,
                              max_tokens=3)
            if r["streams"] != 1:
                return "the stream did not deliver tokens (%d errors)" \
                    % r["errors"]
    except Exception as e:                      # noqa: BLE001
        return "%s: %s" % (type(e).__name__, e)
    return None


def checked_subjects(run, subj, stream=True):
    ok = {}
    for name in SUBJECTS + ["gateway_nocache", "gateway_keyed"]:
        if name not in subj:
            continue
        why = check_subject(run, name, subj[name], stream)
        if why:
            run.mark_absent(name, "started but did not answer: " + why)
        else:
            ok[name] = subj[name]
    return ok


# ---- scenario: overhead ---------------------------------------------------

def paired(a, b):
    """The median over rounds of a[i] / b[i] (two subjects' rps in round
    i): each ratio is of two runs seconds apart, which the machine's drift
    moves less than it moves two columns' medians."""
    ratios = [x / y for x, y in zip(a, b) if x and y]
    return lg.median(ratios) if ratios else None


CPU_KEYS = ("cpu_us_per_req", "rounds_cpu_us_per_req",
            "backend_cpu_us_per_req")


def cpu_summary(rs):
    """The CPU figures of a subject's runs: the median over them of the
    subject's CPU µs per request (each run's CPU time / its answers), each
    run's, and the backend's median."""
    per = [r.get("cpu_us_per_req") for r in rs]
    be = [r.get("backend_cpu_us_per_req") for r in rs
          if r.get("backend_cpu_us_per_req") is not None]
    # A run that answered nothing (the machine stalled) has none: its
    # round stays in the list as null, so that rounds still pair up.
    got = [v for v in per if v is not None]
    return {"cpu_us_per_req": lg.median(got),
            "rounds_cpu_us_per_req": [None if v is None else round(v, 1)
                                      for v in per],
            "backend_cpu_us_per_req": lg.median(be) if be else None}


def scenario_overhead(run, subj):
    k = run.knobs["overhead"]
    run.params["overhead"] = dict(k, backend="test/mockllm --threads %d, "
                                  "zero think time, 16 tokens, non-streamed"
                                  % FAST_THREADS, tool="wrk",
                                  body="unique per request (gateway_hit: "
                                       "one repeated request)",
                                  c1_cpus="every process of the run on one "
                                          "CPU")
    # The order of a round puts the subjects of each target ratio next to
    # each other (hit, mod_proxy, miss, portkey); rotating it keeps them so.
    names = [s for s in ("direct", "nginx", "gateway_hit", "mod_proxy",
                         "gateway_miss", "gateway_keyed", "portkey",
                         "gateway_nocache")
             if s in subj]
    say("overhead: subjects %s" % ", ".join(names))

    def go(name, conns, secs, log=run.wrklog):
        ep = subj[name]["overhead"]
        return lg.wrk(ep.port, conns, secs, fixed=ep.fixed,
                      headers=ep.headers, log=log)

    def measured(name, conns, secs):
        return cpu_window(subj[name]["overhead"],
                          lambda: go(name, conns, secs))

    # Warm every path (connection pools, the cache entry, node's JIT) at
    # once; these numbers are thrown away.
    with concurrent.futures.ThreadPoolExecutor(len(names)) as ex:
        list(ex.map(lambda n: go(n, k["main"], k["warm_s"], None), names))
    # The main level, whose ratios are the targets, gets more and shorter
    # rounds: the machine's speed drifts over seconds, and a ratio is taken
    # within each round (see paired()). c=1 measures a path's latency: with
    # its processes on two CPUs, the hypervisor's wake-up of an idle vCPU
    # (tens to hundreds of µs, at random) outweighs any proxy, so those runs
    # put every process of the run, wrk included, on one CPU.
    all_cpus = os.sched_getaffinity(0)
    runs = {}                                   # (name, c) -> [result]
    # --pin split: at c>1 the subject's processes on half of the CPUs, wrk
    # and the backend on the other (for direct, the backend is the subject).
    split = ab.split_cpus() if run.args.pin == "split" else None
    run.params["overhead"]["pin"] = ab.describe_pin(run.args.pin, split) \
        if split else "none at c>1"

    def one_cell(rnd, c, name, main):
        if split and c != 1:
            lg.pin_tree(split[1])
            lg.pin_tree(split[0], root=subj[name]["overhead"].proc.pid)
        res = measured(name, c, k["main_secs"] if main else k["secs"])
        runs.setdefault((name, c), []).append(res)
        say("overhead r%d c=%d %-12s %9.0f rps  p50 %.3f ms  p99 %.3f ms  "
            "cpu %6.1f us/req  err %d" % (
                rnd + 1, c, name, res["rps"], res["p50_ms"], res["p99_ms"],
                res["cpu_us_per_req"] or -1, res["errors"]))

    for rnd in range(max(k["rounds"], k["main_rounds"])):
        for li, c in enumerate(k["levels"]):
            main = c == k["main"]
            if rnd >= (k["main_rounds"] if main else k["rounds"]):
                continue
            shift = (rnd + li) % len(names)
            order = names[shift:] + names[:shift]
            if c == 1:
                lg.pin_tree({min(all_cpus)})
            try:
                for name in order:
                    one_cell(rnd, c, name, main)
            finally:
                if c == 1 or split:
                    lg.pin_tree(all_cpus)
    out = {}
    for name in SUBJECTS + ["gateway_nocache", "gateway_keyed"]:
        if name not in names:
            out[name] = None
            continue
        by_c = {}
        for c in k["levels"]:
            rs = runs[(name, c)]
            agg = {"rps": lg.median([r["rps"] for r in rs]),
                   "p50_ms": lg.median([r["p50_ms"] for r in rs]),
                   "p99_ms": lg.median([r["p99_ms"] for r in rs]),
                   "ttft_ms": None,
                   "errors": sum(r["errors"] for r in rs),
                   "rounds_rps": [round(r["rps"], 1) for r in rs]}
            agg.update(cpu_summary(rs))
            ref = runs.get(("mod_proxy", c))
            if ref:
                agg["vs_mod_proxy"] = paired([r["rps"] for r in rs],
                                             [r["rps"] for r in ref])
                agg["cpu_vs_mod_proxy"] = paired(
                    [r.get("cpu_us_per_req") for r in rs],
                    [r.get("cpu_us_per_req") for r in ref])
            by_c[str(c)] = entry(agg, ("rounds_rps", "vs_mod_proxy")
                                 + CPU_KEYS + ("cpu_vs_mod_proxy",))
        e = dict(by_c[str(k["main"])])
        e["concurrency"] = k["main"]
        e["by_concurrency"] = by_c
        out[name] = e
    nocache = out.pop("gateway_nocache")
    if nocache and out.get("gateway_miss"):
        out["gateway_miss"]["without_cache"] = nocache
    keyed = out.pop("gateway_keyed")
    if keyed and out.get("gateway_miss"):
        out["gateway_miss"]["with_key"] = keyed
    run.scenarios["overhead"] = out


# ---- scenario: stream -----------------------------------------------------

def scenario_stream(run, subj):
    k = run.knobs["stream"]
    expected_gap = 1000.0 / k["tps"]
    run.params["stream"] = dict(k, backend="test/mockllm paced: ttft %d ms, "
                                "%d tokens at %d tokens/s" % (
                                    k["ttft_ms"], k["tokens"], k["tps"]),
                                tool="bench/loadgen.py stream client",
                                expected_gap_ms=expected_gap)
    names = [s for s in SUBJECTS + ["gateway_nocache"] if s in subj]
    # The connections start spread over one stream's length: started
    # together, streams of one length stay in step, and every wave of
    # first requests would queue at once.
    stagger = k["ttft_ms"] / 1000.0 + k["tokens"] / float(k["tps"])
    run.params["stream"]["stagger_s"] = stagger
    raw = {}
    for rnd in range(k["rounds"]):
        shift = rnd % len(names)
        for name in names[shift:] + names[:shift]:
            ep = subj[name]["stream"]
            r = cpu_window(ep, lambda: lg.stream_run(
                ep.port, k["conns"], k["secs"], model="mock-paced",
                headers=ep.headers, raw=True, fixed=ep.fixed,
                stagger_s=stagger), count="streams")
            acc = raw.setdefault(name, {"ttft": [], "total": [],
                                        "gaps": [], "errors": 0,
                                        "streams": 0, "elapsed": 0.0,
                                        "incomplete": 0, "cache": {},
                                        "cpu_us": 0.0})
            for key in ("ttft", "total", "gaps"):
                acc[key].extend(r["raw"][key])
            for key in ("errors", "streams", "incomplete", "cpu_us"):
                acc[key] += r.get(key) or 0
            acc["elapsed"] += r["elapsed"]
            for c, n in r["cache"].items():
                acc["cache"][c] = acc["cache"].get(c, 0) + n
            say("stream r%d %-12s %6.1f streams/s  ttft p50 %.2f ms  "
                "gap p50 %.2f p99 %.2f ms  err %d" % (
                    rnd + 1, name, r["rps"], r["ttft_ms"] or -1,
                    r["gap_p50_ms"] or -1, r["gap_p99_ms"] or -1,
                    r["errors"]))
    out = {}
    for name in SUBJECTS + ["gateway_nocache"]:
        if name not in raw:
            out[name] = None
            continue
        a = raw[name]
        gaps = a["gaps"]
        burst = (sum(1 for g in gaps if g < 0.25 * expected_gap) / len(gaps)
                 if gaps else None)
        d = {"rps": a["streams"] / a["elapsed"] if a["elapsed"] else 0.0,
             "p50_ms": lg.median(a["total"]), "p99_ms": lg.pct(a["total"],
                                                               99),
             "ttft_ms": lg.median(a["ttft"]),
             "ttft_p99_ms": lg.pct(a["ttft"], 99),
             "gap_p50_ms": lg.median(gaps), "gap_p99_ms": lg.pct(gaps, 99),
             "gap_max_ms": max(gaps) if gaps else None,
             "burst_fraction": burst, "streams": a["streams"],
             "incomplete": a["incomplete"], "errors": a["errors"],
             # Per stream (every round's CPU time / every round's streams):
             # the streams' pacing, not the CPU, bounds their rate here.
             "cpu_us_per_req": (a["cpu_us"] / a["streams"]
                                if a["streams"] else None)}
        if a["cache"]:
            d["x_llm_cache"] = a["cache"]
        out[name] = entry(d, ("ttft_p99_ms", "gap_p50_ms", "gap_p99_ms",
                              "gap_max_ms", "burst_fraction", "streams",
                              "incomplete", "x_llm_cache",
                              "cpu_us_per_req"))
    nocache = out.pop("gateway_nocache")
    if nocache and out.get("gateway_miss"):
        out["gateway_miss"]["without_cache"] = nocache
    run.scenarios["stream"] = out


def scenario_proxy(run, todo):
    """overhead and stream share one stack: every subject in front of a
    zero-think-time backend and a paced one."""
    with run.stack("proxy") as st:
        subj = checked_subjects(run, build_proxy_stack(
            run, st, run.knobs["stream"]), stream="stream" in todo)
        if "overhead" in todo:
            say("== overhead")
            scenario_overhead(run, subj)
        if "stream" in todo:
            say("== stream")
            scenario_stream(run, subj)


# ---- scenario: failover ---------------------------------------------------

def failover_subject(run, st, name, a, b):
    """Starts the subject in front of members a and b; returns its
    (ports, headers) for the workload, or None."""
    if name == "direct":
        return [a.port, b.port], {}
    if name == "mod_proxy":
        p = free_port()
        st.httpd("httpd", [(p, 'ProxyPass "/v1/" "balancer://be/v1/"')],
                 MPM_PROXY, balancer("be", [a.port, b.port], extra=RETRY))
        return [p], {}
    if name == "gateway_miss":
        p = free_port()
        st.httpd("httpd", [(p, gateway_vhost([("mock-small", "be")],
                                             cache_line(run)))],
                 MPM_PROXY, balancer("be", [a.port, b.port], extra=RETRY))
        return [p], {}
    if name == "nginx":
        p = free_port()
        st.nginx("nginx", [(p, [a.port, b.port], True)])
        return [p], {}
    if name == "portkey":
        pk = st.portkey()

        def t(port):
            return {"provider": "openai", "api_key": "sk-bench-unused",
                    "custom_host": "http://127.0.0.1:%d/v1" % port}
        cfg = {"strategy": {"mode": "loadbalance"}, "targets": [
            {"strategy": {"mode": "fallback"}, "targets": [t(a.port),
                                                          t(b.port)]},
            {"strategy": {"mode": "fallback"}, "targets": [t(b.port),
                                                          t(a.port)]}]}
        return [pk.port], {"x-portkey-config": json.dumps(
            cfg, separators=(",", ":"))}
    return None


def scenario_failover(run):
    k = run.knobs["failover"]
    run.params["failover"] = dict(
        k, backend="two test/mockllm members, ttft %d ms, 16 tokens"
        % k["ttft_ms"], tool="bench/loadgen.py closed loop",
        what="member A is killed (SIGKILL) at kill_at s and restarted "
             "restart_after s later; a failed request is retried by the "
             "client after 50 ms; recovery_ms: from the kill to the end of "
             "the last failed request; direct: the clients are split over "
             "the two members, as without a gateway")
    out = {}
    names = ["direct", "mod_proxy", "nginx", "portkey", "gateway_miss"]
    for name in names:
        if name in run.absent:
            out[name] = None
            continue
        with run.stack("failover-" + name) as st:
            a = st.mock("member-a", ttft_ms=k["ttft_ms"])
            b = st.mock("member-b", ttft_ms=k["ttft_ms"])
            try:
                ports, hdrs = failover_subject(run, st, name, a, b)
            except StartError as e:
                run.mark_absent(name, str(e))
                out[name] = None
                continue
            state = {"a": a}

            def kill():
                st.kill(state["a"])

            def restart():
                state["a"] = st.mock("member-a2", ttft_ms=k["ttft_ms"],
                                     port=a.port)

            n = [0]
            salt = lg.nonce()

            def bodies(i):
                while True:
                    n[0] += 1
                    yield lg.chat_body("mock-small", "Failover %s-%d-%d"
                                       % (salt, i, n[0]), max_tokens=16)

            log = lg.workload(ports, k["conns"], k["secs"], bodies, hdrs,
                              events=[(k["kill_at"], kill),
                                      (k["kill_at"] + k["restart_after"],
                                       restart)])
        s = lg.summarize(log, k["secs"], kill_at=k["kill_at"])
        out[name] = entry(s, ("recovery_ms", "requests",
                              "errors_before_kill"))
        say("failover %-12s %7.0f rps  errors %d  recovery %.0f ms" % (
            name, s["rps"], s["errors"], s["recovery_ms"]))
    run.scenarios["failover"] = out


# ---- model-load workloads (switch, seed) ----------------------------------

def model_names(n):
    return ["model-%s" % chr(ord("a") + i) for i in range(n)]


# gateway_affinity: the gateway as it is meant for models that load: its
# llm_affinity lbmethod, probes of what each member has loaded (Ollama's
# /api/ps, which mockllm answers), what each member serves at once (the
# emulated members run any number of generations together; 8 is every
# client of switch) and its breaker; with --affinity-models N also how
# many models a member holds at once (N=1, the members' own --max-loaded:
# the gateway then groups requests by model, with its default turn; 0, the
# default: no grouping, as LLMCapacity's own default).
AFFINITY = "llm_affinity"
BREAKER = "LLMBreaker on fails=3 successes=2 backoff=1000 backoff-max=8000"
PROBES = ("    LLMHealthCheck on probe=ollama interval=100 timeout=1000\n"
          "    LLMCapacity max=8 queue=64 wait=30000 models=%d\n")


def gateway_models_stack(run, st, name, members, models, cached=False,
                         affinity=False):
    p = free_port()
    bal = balancer("models", [m.port for m in members],
                   lbmethod=AFFINITY if affinity else run.args.lbmethod,
                   extra=RETRY)
    if affinity:
        bal = BREAKER + "\n" + bal
    probes = PROBES % run.args.affinity_models if affinity else ""
    st.httpd(name, [(p, gateway_vhost([(m, "models") for m in models],
                                      cache_line(run, cached), probes))],
             MPM_PROXY, bal)
    return p


def header_ms(h, name):
    try:
        return float(h.get(name, 0))
    except ValueError:
        return 0.0


def load_stats(log):
    """The model-load figures of a log: switch_overhead_ms, the mean wait
    for a load at the member (X-Mock-Load-Ms); hold_ms, the mean time the
    gateway held a request back to group it by model (X-LLM-Hold-Ms, 0
    where it did not); switch_wait_ms, their sum: what a request waited
    for models in all, so a wait moved from the member into the gateway
    still shows."""
    waits, holds, hits = [], [], 0
    ok = 0
    for _, _, stt, h in log:
        if stt != 200:
            continue
        ok += 1
        if h.get("x-llm-cache", "").upper() == "HIT":
            hits += 1
        waits.append(header_ms(h, "x-mock-load-ms"))
        holds.append(header_ms(h, "x-llm-hold-ms"))
    mean = (lambda v: sum(v) / len(v)) if waits else (lambda v: None)
    return {"switch_overhead_ms": mean(waits),
            "hold_ms": mean(holds),
            "switch_wait_ms": mean([w + d for w, d in zip(waits, holds)]),
            "switch_wait_fraction": (sum(1 for w in waits if w > 0)
                                     / len(waits)) if waits else None,
            "cache_hit_rate": hits / ok if ok else 0.0}


def write_records(st, log):
    """One JSON line per request into the stack's directory (kept with
    --keep): times, status, model, member, load wait, hold, cache."""
    with open(st.path("records.jsonl"), "w") as f:
        for t0, t1, stt, h in log:
            f.write(json.dumps({
                "t0": round(t0, 4), "t1": round(t1, 4), "status": stt,
                "model": h.get(lg.MODEL_KEY),
                "backend": h.get("x-mock-backend"),
                "load_ms": header_ms(h, "x-mock-load-ms"),
                "hold_ms": header_ms(h, "x-llm-hold-ms"),
                "cache": h.get("x-llm-cache")}) + "\n")


def scenario_switch(run):
    k = run.knobs["switch"]
    models = model_names(k["models"])
    run.params["switch"] = dict(
        k, backend="two test/mockllm members: %d model slot(s) each, "
        "%d ms to load a model, %d ms + %d ms/token to generate" % (
            k["slots"], k["load_ms"], k["gen_ms"], k["per_token_ms"]),
        models=models, mix="Zipf s=1 over the models, every prompt unique",
        lbmethod=run.args.lbmethod or "byrequests (round robin)",
        affinity_models=run.args.affinity_models,
        what="switch_overhead_ms: mean time a request waited for a model "
             "load (X-Mock-Load-Ms); direct: clients split over the two "
             "members; gateway_affinity: lbmethod=llm_affinity")
    out = {}

    salt = lg.nonce()

    def bodies(i):
        rng = lg.seeded(i, 7)
        z = lg.Zipf(len(models), 1.0, rng)
        n = 0
        while True:
            n += 1
            yield lg.chat_body(models[z.draw()], "Switch %s-%d-%d"
                               % (salt, i, n), max_tokens=16)

    for name in ("direct", "gateway_miss", "gateway_affinity"):
        with run.stack("switch-" + name) as st:
            members = [st.modelsrv("msrv-%d" % i, k["slots"], k["load_ms"],
                                   k["gen_ms"], k["per_token_ms"], models)
                       for i in range(2)]
            if name == "direct":
                ports = [m.port for m in members]
            else:
                ports = [gateway_models_stack(
                    run, st, "httpd", members, models,
                    affinity=name == "gateway_affinity")]
            log = lg.workload(ports, k["conns"], k["secs"], bodies)
            write_records(st, log)
            loads = 0
            for m in members:
                try:
                    _, _, b = lg.one_request(m.port, b"", path="/mock/stats",
                                             method="GET")
                except Exception:               # noqa: BLE001
                    b = b"{}"
                loads += json.loads(b or b"{}").get("loads", 0)
        s = lg.summarize(log, k["secs"])
        s.update(load_stats(log))
        s["model_loads"] = loads
        out[name] = entry(s, ("p95_ms", "switch_overhead_ms", "hold_ms",
                              "switch_wait_ms", "switch_wait_fraction",
                              "model_loads", "requests"))
        say("switch %-12s %6.1f rps  p50 %.0f p99 %.0f ms  switch overhead "
            "%.1f ms/request (+ held %.1f ms)  loads %d" % (
                name, s["rps"], s["p50_ms"] or -1, s["p99_ms"] or -1,
                s["switch_overhead_ms"] or -1, s["hold_ms"] or 0, loads))
    run.scenarios["switch"] = out


def seed_prompts():
    """SEED["prompts"] prompts, each with its model and length, fixed."""
    models = model_names(SEED["models"])
    rng = lg.seeded(0, 4242)
    zm = lg.Zipf(len(models), SEED["model_zipf_s"], rng)
    out = []
    for p in range(SEED["prompts"]):
        out.append(lg.chat_body(
            models[zm.draw()], "Seed prompt %d: explain topic %d briefly."
            % (p, p), max_tokens=rng.randint(SEED["tokens_min"],
                                             SEED["tokens_max"])))
    return out


def scenario_seed(run):
    k = run.knobs["seed"]
    prompts = seed_prompts()
    models = model_names(SEED["models"])
    run.params["seed"] = dict(
        k, **SEED, backend="two test/mockllm members (--max-loaded, "
        "--load-ms)",
        affinity_models=run.args.affinity_models,
        what="open loop: requests arrive at rate per second (Poisson, the "
             "same arrivals and prompts for every subject), latency from "
             "the scheduled arrival; prompts drawn Zipf(s=%.1f) from %d, "
             "each with a fixed model and length; member A is killed at "
             "kill_at s and restarted restart_after s later (with no model "
             "loaded); direct: requests alternate between the two members "
             "(a client per member); cache hit rate from X-LLM-Cache: HIT; "
             "switch overhead: mean X-Mock-Load-Ms per request; recovery:"
             " kill to the end of the last failed request; "
             "gateway_affinity: lbmethod=llm_affinity, LLMBreaker on and "
             "the cache on (the whole gateway)"
             % (SEED["prompt_zipf_s"], SEED["prompts"]))

    def draws():
        z = lg.Zipf(len(prompts), SEED["prompt_zipf_s"], lg.seeded(0, 99))
        while True:
            yield z.draw()

    def bodies():
        for i in draws():
            yield prompts[i]

    def hit_ceiling(n):
        """The most hits any cache can have in the run's n requests: the
        share that repeat an earlier prompt of the run (the first of each
        must miss)."""
        seen, repeats, d = set(), 0, draws()
        for _ in range(n):
            i = next(d)
            repeats += i in seen
            seen.add(i)
        return repeats / n if n else 0.0

    out = {}
    for name in ("direct", "gateway_miss", "gateway_hit", "gateway_affinity"):
        if name == "gateway_hit" and not (run.cache and run.cache["ok"]):
            out[name] = None
            continue
        with run.stack("seed-" + name) as st:
            mk = lambda nm, port=None: st.modelsrv(  # noqa: E731
                nm, SEED["slots"], SEED["load_ms"], SEED["gen_ms"],
                SEED["per_token_ms"], models, port=port)
            a, b = mk("msrv-a"), mk("msrv-b")
            if name == "direct":
                ports = [a.port, b.port]
            else:
                cached = name == "gateway_hit" or (
                    name == "gateway_affinity" and run.cache
                    and run.cache["ok"])
                ports = [gateway_models_stack(
                    run, st, "httpd", [a, b], models,
                    cached=bool(cached),
                    affinity=name == "gateway_affinity")]
            state = {"a": a}
            log = lg.openloop(
                ports, k["rate"], k["secs"], bodies(), seed=7,
                events=[(k["kill_at"], lambda: st.kill(state["a"])),
                        (k["kill_at"] + k["restart_after"],
                         lambda: state.update(a=mk("msrv-a2", a.port)))])
            write_records(st, log)
        s = lg.summarize(log, k["secs"], kill_at=k["kill_at"])
        s.update(load_stats(log))
        s["cache_hit_ceiling"] = hit_ceiling(len(log))
        out[name] = entry(s, ("p95_ms", "cache_hit_rate",
                              "cache_hit_ceiling", "switch_overhead_ms",
                              "hold_ms", "switch_wait_ms",
                              "switch_wait_fraction", "recovery_ms",
                              "requests"))
        say("seed %-12s p95 %.0f ms  hit %.0f%% (at most %.0f%%)  switch "
            "%.1f ms (+ held %.1f ms)  recovery %.0f ms  errors %d" % (
                name, s["p95_ms"] or -1, 100 * s["cache_hit_rate"],
                100 * s["cache_hit_ceiling"], s["switch_overhead_ms"] or -1,
                s["hold_ms"] or 0, s["recovery_ms"], s["errors"]))
    run.scenarios["seed"] = out


# ---- scenario: memory -----------------------------------------------------

def scenario_memory(run):
    k = run.knobs["memory"]
    n = k["streams"]
    run.params["memory"] = dict(
        k, backend="test/mockllm paced: 400 tokens at 5 tokens/s (streams "
        "outlast the sample)", mpm=MPM_MEMORY,
        what="n streams held open at once; RSS and PSS of all the "
             "subject's processes (httpd: parent and children) idle and "
             "with every stream past its first token")
    out = {}
    for name in ("mod_proxy", "nginx", "portkey", "gateway_miss"):
        if name in run.absent:
            out[name] = None
            continue
        with run.stack("memory-" + name) as st:
            m = st.mock("mock-long", tps=5, tokens=400)
            p = free_port()
            hdrs = {}
            try:
                if name == "mod_proxy":
                    proc = st.httpd("httpd", [
                        (p, 'ProxyPass "/v1/" "balancer://be/v1/"')],
                        MPM_MEMORY, balancer("be", [m.port]))
                elif name == "gateway_miss":
                    proc = st.httpd("httpd", [
                        (p, gateway_vhost([("mock-small", "be")],
                                          cache_line(run)))],
                        MPM_MEMORY, balancer("be", [m.port]))
                elif name == "nginx":
                    proc = st.nginx("nginx", [(p, [m.port], False)])
                else:
                    proc = st.portkey(port=p)
                    hdrs = portkey_headers(m.port)
            except StartError as e:
                run.mark_absent(name, str(e))
                out[name] = None
                continue
            time.sleep(k["settle_s"])
            root = proc.pid

            def sample():
                pids = children(root)
                rss, pss = memory_kb(pids)
                crss, cpss = memory_kb([q for q in pids if q != root])
                return {"rss": rss, "pss": pss, "crss": crss, "cpss": cpss,
                        "procs": len(pids)}
            idle = sample()
            r = lg.hold_streams(p, n, headers=hdrs, ramp_s=k["ramp_s"],
                                settle_s=k["settle_s"], sample=sample)
        busy = r["sample"] or {}
        t = r["ttft"]
        d = {"rps": None, "p50_ms": lg.median(t), "p99_ms": lg.pct(t, 99),
             "ttft_ms": lg.median(t), "errors": r["errors"],
             "streams": r["open"],
             "rss_mb": busy.get("rss", 0) / 1024.0,
             "pss_mb": busy.get("pss", 0) / 1024.0,
             "children_rss_mb": (busy.get("crss", 0) / 1024.0
                                 if name in ("mod_proxy", "gateway_miss")
                                 else None),
             "idle_rss_mb": idle["rss"] / 1024.0,
             "idle_pss_mb": idle["pss"] / 1024.0,
             "per_stream_kb": ((busy.get("pss", 0) - idle["pss"])
                               / max(1, r["open"])),
             "processes": busy.get("procs")}
        out[name] = entry(d, ("streams", "rss_mb", "pss_mb",
                              "children_rss_mb", "idle_rss_mb",
                              "idle_pss_mb", "per_stream_kb", "processes"))
        say("memory %-12s %d/%d streams  rss %.1f MB  pss %.1f MB (idle "
            "%.1f)  %.1f kB/stream" % (name, r["open"], n, d["rss_mb"],
                                       d["pss_mb"], d["idle_pss_mb"],
                                       d["per_stream_kb"]))
    run.scenarios["memory"] = out


# ---- smoke ----------------------------------------------------------------

SMOKE_CPU_REQUESTS = 100


def smoke_cpu(ep):
    """The subject's CPU µs per request over SMOKE_CPU_REQUESTS requests
    in a row (without a cgroup, whose time is exact, as many as fit in a
    second: /proc counts in ticks of 10 ms), or a reason why there is
    none."""
    exact = subjects.cpu_account().base is not None
    r = cpu_window(ep, lambda: lg.sequential(
        ep.port, SMOKE_CPU_REQUESTS if exact else 1 << 30, ep.headers,
        fixed=ep.fixed, secs=None if exact else 1.0))
    if r["errors"]:
        return None, "%d of %d requests failed" % (
            r["errors"], r["errors"] + r["requests"])
    v = r.get("cpu_us_per_req")
    if not v or v <= 0:
        return None, "no CPU time measured (%r)" % v
    return v, None


def smoke(run):
    """Every subject starts and answers one request and one stream, and
    the CPU time of its processes per request is measured."""
    passed = failed = 0
    cpu = {}
    with run.stack("smoke") as st:
        subj = build_proxy_stack(run, st, {"tps": 200, "ttft_ms": 5,
                                           "tokens": 5})
        for name in SUBJECTS:
            if name not in subj:
                print("SKIP %-12s %s" % (name, run.absent.get(name, "")))
                continue
            why = check_subject(run, name, subj[name])
            if not why:
                cpu[name], why = smoke_cpu(subj[name]["overhead"])
            if why:
                failed += 1
                print("FAIL %-12s %s" % (name, why))
            else:
                passed += 1
                print("ok   %-12s cpu %.1f us/request" % (name, cpu[name]))
        try:
            m = st.modelsrv("msrv", 1, 5, 5, 0, model_names(1))
            s, h, _ = lg.one_request(m.port, lg.chat_body("model-a", "x"))
            good = s == 200 and "x-mock-load-ms" in h
        except Exception as e:                  # noqa: BLE001
            good, h = False, {"error": str(e)}
        print("%s modelsrv" % ("ok  " if good else "FAIL"))
        passed, failed = passed + good, failed + (not good)
    print("smoke cpu_us_per_req (%s): %s" % (
        subjects.cpu_account().source, json.dumps(
            {k: r3(v) for k, v in cpu.items()}, sort_keys=True)))
    print("smoke: %d passed, %d failed" % (passed, failed))
    return failed == 0


# ---- machine and results --------------------------------------------------

def cmd_out(argv):
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        return (p.stdout + p.stderr).strip()
    except (OSError, subprocess.TimeoutExpired):
        return None


def machine():
    cpu = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = None
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
            mem = round(kb / 1024 / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    osname = None
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    osname = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass

    def first(s, pat=None):
        if not s:
            return None
        if pat:
            m = re.search(pat, s)
            return m.group(1) if m else s.splitlines()[0]
        return s.splitlines()[0]
    head = cmd_out(["git", "-C", TOP, "rev-parse", "--short", "HEAD"])
    dirty = cmd_out(["git", "-C", TOP, "status", "--porcelain", "--",
                     "src", "mod_llm_gateway.c"])
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": mem,
        "kernel": platform.release(),
        "os": osname,
        "apache2": first(cmd_out(["/usr/sbin/apache2", "-v"]),
                         r"Server version: Apache/(\S+)"),
        "nginx": first(cmd_out(["nginx", "-v"]) if shutil.which("nginx")
                       else None, r"nginx version: nginx/(\S+)"),
        "portkey": portkey_version(),
        "node": cmd_out(["node", "--version"]) if shutil.which("node")
        else None,
        "wrk": first(cmd_out(["wrk", "--version"]), r"^wrk (?:debian/)?(\S+)"),
        "memcached": first(cmd_out(["memcached", "-V"]), r"memcached (\S+)"),
        "python": platform.python_version(),
        "gateway_commit": (head + ("+local changes" if dirty else ""))
        if head else None,
        "loadavg_start": None,
        "loadavg_end": None,
    }


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return None


def targets(run):
    """The issue's targets, each a ratio or difference within this run."""
    sc = run.scenarios
    ov = sc.get("overhead") or {}
    stm = sc.get("stream") or {}

    def rps(s):
        return (ov.get(s) or {}).get("rps")

    def c1(s, key):
        return (((ov.get(s) or {}).get("by_concurrency") or {})
                .get("1") or {}).get(key)

    def ratio(a, b):
        return round(a / b, 3) if a and b else None

    nocache = (ov.get("gateway_miss") or {}).get("without_cache") or {}

    def paired_rps(a, b):
        """a's rps / b's (subject names, or entries), as the median of the
        per-round ratios."""
        ea = a if isinstance(a, dict) else ov.get(a) or {}
        eb = b if isinstance(b, dict) else ov.get(b) or {}
        ra, rb = ea.get("rounds_rps"), eb.get("rounds_rps")
        if not ra or not rb:
            return ratio(ea.get("rps"), eb.get("rps"))
        return r3(paired(ra, rb))

    def paired_cpu(a, b):
        """a's CPU µs per request / b's, the median of the per-round
        ratios (< 1: a costs less)."""
        ea = a if isinstance(a, dict) else ov.get(a) or {}
        eb = b if isinstance(b, dict) else ov.get(b) or {}
        ra = ea.get("rounds_cpu_us_per_req")
        rb = eb.get("rounds_cpu_us_per_req")
        if not ra or not rb:
            return ratio(ea.get("cpu_us_per_req"), eb.get("cpu_us_per_req"))
        return r3(paired(ra, rb))

    def diff(a, b):
        return round(a - b, 3) if a is not None and b is not None else None

    t = {}

    def add(key, what, value, goal, cmp, why_null=None):
        met = None if value is None else (value >= goal if cmp == ">="
                                          else value <= goal)
        t[key] = {"what": what, "value": value,
                  "target": "%s %s" % (cmp, goal), "met": met}
        if value is None and why_null:
            t[key]["absent"] = why_null

    main = (run.knobs.get("overhead") or {}).get("main")
    # Each throughput target is followed by the same as CPU cost: the
    # subject's processes' CPU time per request answered against the
    # other's, whose goal is the throughput goal's inverse (0.9 x the
    # requests/s is 1/0.9 x the CPU a request).
    add("miss_vs_mod_proxy", "gateway_miss rps / mod_proxy rps (overhead, "
        "c=%s)" % main, paired_rps("gateway_miss", "mod_proxy"), 0.9, ">=")
    add("miss_cpu_vs_mod_proxy", "gateway_miss CPU us/request / mod_proxy's "
        "(overhead, c=%s)" % main, paired_cpu("gateway_miss", "mod_proxy"),
        round(1 / 0.9, 3), "<=")
    keyed = (ov.get("gateway_miss") or {}).get("with_key")
    add("keyed_vs_miss", "gateway_keyed rps / gateway_miss rps (a key "
        "with limits, overhead, c=%s)" % main,
        paired_rps(keyed, ov.get("gateway_miss") or {}) if keyed else None,
        0.95, ">=")
    add("keyed_cpu_vs_miss", "gateway_keyed CPU us/request / gateway_miss's "
        "(overhead, c=%s)" % main,
        paired_cpu(keyed, ov.get("gateway_miss") or {}) if keyed else None,
        1.05, "<=")
    add("hit_vs_mod_proxy", "gateway_hit rps / mod_proxy rps (overhead, "
        "c=%s)" % main, paired_rps("gateway_hit", "mod_proxy"), 2.0, ">=",
        run.absent.get("gateway_hit"))
    add("hit_cpu_vs_mod_proxy", "gateway_hit CPU us/request / mod_proxy's "
        "(overhead, c=%s)" % main, paired_cpu("gateway_hit", "mod_proxy"),
        0.5, "<=", run.absent.get("gateway_hit"))
    add("gateway_vs_portkey", "gateway_miss rps / portkey rps (overhead, "
        "c=%s)" % main, paired_rps("gateway_miss", "portkey"), 10.0, ">=",
        run.absent.get("portkey"))
    add("miss_cpu_vs_portkey", "gateway_miss CPU us/request / portkey's "
        "(overhead, c=%s)" % main, paired_cpu("gateway_miss", "portkey"),
        0.1, "<=", run.absent.get("portkey"))
    add("added_p99_ms", "gateway_miss p99 - direct p99 (overhead, c=1), ms",
        diff(c1("gateway_miss", "p99_ms"), c1("direct", "p99_ms")), 1.0,
        "<=")
    add("ttft_overhead_ms", "gateway_miss ttft - direct ttft (stream, "
        "median), ms", diff((stm.get("gateway_miss") or {}).get("ttft_ms"),
                            (stm.get("direct") or {}).get("ttft_ms")), 1.0,
        "<=")
    g, d = stm.get("gateway_miss") or {}, stm.get("direct") or {}
    val = None
    if g.get("burst_fraction") is not None and \
            d.get("burst_fraction") is not None:
        val = round(g["burst_fraction"] - d["burst_fraction"], 4)
    add("token_bursts", "share of token gaps < 1/4 of the paced gap, "
        "gateway_miss minus direct (0: no per-token buffering)", val, 0.02,
        "<=")
    sw, sd = sc.get("switch") or {}, sc.get("seed") or {}

    def of(scen, subject, key):
        return (scen.get(subject) or {}).get(key)

    def share(a, b):        # as ratio, but 0 over something is 0
        return round(a / b, 3) if a is not None and b else None

    if sw.get("gateway_affinity"):
        add("affinity_switch_vs_direct", "gateway_affinity switch overhead "
            "/ direct's (switch)",
            share(of(sw, "gateway_affinity", "switch_overhead_ms"),
                  of(sw, "direct", "switch_overhead_ms")), 0.2, "<=")
    if sd.get("gateway_affinity"):
        for key, what, goal, cmp in (
                ("p95_ms", "p95", 0.37, "<="),
                ("switch_overhead_ms", "switch overhead", 0.21, "<="),
                ("recovery_ms", "recovery", 0.043, "<=")):
            add("seed_%s_vs_direct" % key.split("_")[0], "gateway_affinity "
                "%s / direct's (seed)" % what,
                share(of(sd, "gateway_affinity", key), of(sd, "direct", key)),
                goal, cmp)
        add("seed_hit_rate", "gateway_affinity cache hit rate (seed)",
            of(sd, "gateway_affinity", "cache_hit_rate"), 0.68, ">=")
    ctx = {
        "mod_proxy_vs_portkey": paired_rps("mod_proxy", "portkey"),
        "nginx_vs_mod_proxy": paired_rps("nginx", "mod_proxy"),
        "mod_proxy_vs_direct": paired_rps("mod_proxy", "direct"),
        "gateway_miss_vs_nginx": paired_rps("gateway_miss", "nginx"),
        "gateway_nocache_vs_mod_proxy": paired_rps(nocache, "mod_proxy"),
        "gateway_nocache_vs_portkey": paired_rps(nocache, "portkey"),
        "nginx_cpu_vs_mod_proxy": paired_cpu("nginx", "mod_proxy"),
        "gateway_nocache_cpu_vs_mod_proxy": paired_cpu(nocache, "mod_proxy"),
        "mod_proxy_cpu_us_per_req": (ov.get("mod_proxy") or {}).get(
            "cpu_us_per_req"),
        "backend_cpu_us_per_req": (ov.get("mod_proxy") or {}).get(
            "backend_cpu_us_per_req"),
        "mod_proxy_added_p99_ms": diff(c1("mod_proxy", "p99_ms"),
                                       c1("direct", "p99_ms")),
        "gateway_nocache_added_p99_ms": diff(
            ((nocache.get("by_concurrency") or {}).get("1") or {})
            .get("p99_ms"), c1("direct", "p99_ms")),
        "gateway_nocache_ttft_overhead_ms": diff(
            ((stm.get("gateway_miss") or {}).get("without_cache") or {})
            .get("ttft_ms"), (stm.get("direct") or {}).get("ttft_ms")),
        "mod_proxy_ttft_overhead_ms": diff(
            (stm.get("mod_proxy") or {}).get("ttft_ms"),
            (stm.get("direct") or {}).get("ttft_ms")),
    }
    return t, ctx


def save_results(res, prefix, markdown, raw_copy=None):
    """Writes RES as PREFIX.json and, as MARKDOWN renders it, PREFIX.md; a
    copy of the JSON goes to RAW_COPY when given."""
    os.makedirs(os.path.dirname(prefix), exist_ok=True)
    with open(prefix + ".json", "w") as f:
        json.dump(res, f, indent=1, sort_keys=False)
        f.write("\n")
    with open(prefix + ".md", "w") as f:
        f.write(markdown(res))
    if raw_copy:
        shutil.copy(prefix + ".json", raw_copy)


def write_run(run, res, mach, prefix, keys, markdown, raw_name):
    """A run's results: RES with the date, the run's duration and the
    machine MACH, its members KEYS in that order, saved (save_results) with
    a copy in the run's raw directory as RAW_NAME. Returns what was saved."""
    res["date"] = datetime.datetime.now(datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    res["duration_s"] = round(time.time() - run.t0, 1)
    res["machine"] = mach
    order = {k: res[k] for k in keys}
    save_results(order, prefix, markdown, os.path.join(run.raw, raw_name))
    return order


def write_results(run, mach, prefix):
    t, ctx = targets(run)
    res = {
        "format": "mod_llm_gateway bench results v1",
        "mode": run.profile,
        "targets": t,
        "context": ctx,
        "absent": run.absent,
        "notes": run.notes,
        "params": run.params,
        "seed_claims": SEED_CLAIMS,
        "scenarios": run.scenarios,
    }
    return write_run(run, res, mach, prefix,
                     ("format", "mode", "date", "duration_s", "machine",
                      "targets", "context", "absent", "notes", "params",
                      "seed_claims", "scenarios"),
                     report.markdown, "results.json")


def rerender(prefix):
    """Recomputes the targets and the Markdown of an existing results file
    (after a change to this script's summaries, without measuring again)."""
    import types
    with open(prefix + ".json") as f:
        res = json.load(f)
    fake = types.SimpleNamespace(
        scenarios=res["scenarios"], absent=res.get("absent", {}),
        knobs={"overhead": (res.get("params") or {}).get("overhead", {})})
    res["targets"], res["context"] = targets(fake)
    save_results(res, prefix, report.markdown)
    print(report.headline(res))
    return 0


def run_ab(run, args, only):
    """build/bench --ab: see bench/ab.py."""
    if shutil.which("wrk") is None:
        say("wrk is not installed (apt-get install wrk)")
        return 2
    sos = args.ab.split(",")
    if len(sos) > 2:
        raise SystemExit("--ab takes one or two module builds")
    builds = {"a": sos[0], "b": sos[1] if len(sos) > 1 else os.path.join(
        TOP, ".libs", "mod_llm_gateway.so")}
    for t, so in builds.items():
        if not os.path.isfile(so):
            raise SystemExit("--ab: %s: no such module build" % so)
    labels = {t: (args.ab_label[i] if len(args.ab_label) > i
                  else builds[t]) for i, t in enumerate(("a", "b"))}
    mach = machine()
    mach["loadavg_start"] = loadavg()
    mach["cpu_accounting"] = subjects.cpu_account().source
    say("A/B run; machine: %d cores, %s; load average %s; A: %s; B: %s" % (
        mach["cores"] or 0, mach["cpu"], mach["loadavg_start"], labels["a"],
        labels["b"]))
    try:
        res = ab.run_ab(run, builds, labels, only or [ab.AB_DEFAULT],
                        args.conns, args.pin)
    except StartError as e:
        say("ab: could not measure: %s" % e)
        return 1
    mach["loadavg_end"] = loadavg()
    ab.write(run, res, mach, args.out)
    say("wrote %s.json and %s.md" % (os.path.relpath(args.out, TOP),
                                     os.path.relpath(args.out, TOP)))
    for name, sc in res["scenarios"].items():
        print(ab.headline_one(name, sc))
    return 0


def run_malloc(run, args):
    """build/bench --malloc: see bench/allocs.py."""
    if shutil.which("wrk") is None:
        say("wrk is not installed (apt-get install wrk)")
        return 2
    mach = machine()
    mach["loadavg_start"] = loadavg()
    mach["module_sha256"] = run.module
    try:
        res = allocs.run_malloc(run, args.conns)
    except StartError as e:
        say("malloc: could not measure: %s" % e)
        return 1
    mach["loadavg_end"] = loadavg()
    allocs.write(run, res, mach, args.out)
    say("wrote %s.json and %s.md" % (os.path.relpath(args.out, TOP),
                                     os.path.relpath(args.out, TOP)))
    print(allocs.headline(res))
    return 0


def main():
    ap = argparse.ArgumentParser(description="mod_llm_gateway benchmarks")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true",
                   help="short runs, all scenarios (under 2 minutes)")
    g.add_argument("--smoke", action="store_true",
                   help="start every subject, one request each, no numbers")
    ap.add_argument("--only", default="",
                    help="comma-separated scenarios (default: all)")
    ap.add_argument("--out", default=None,
                    help="results path prefix (.json and .md are added; "
                         "default bench/results/latest, with --ab "
                         "bench/results/ab)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the run directory (configurations, logs)")
    ap.add_argument("--rerender", action="store_true",
                    help="measure nothing: recompute the targets and the "
                         "Markdown of the results at --out")
    ap.add_argument("--lbmethod", default=None,
                    help="lbmethod of the gateway's balancer in the switch "
                         "and seed scenarios (default: byrequests)")
    ap.add_argument("--affinity-models", type=int, default=0,
                    help="LLMCapacity models= of gateway_affinity in the "
                         "switch and seed scenarios (default 0, the "
                         "directive's: no grouping by model; the members' "
                         "model slots, 1, groups)")
    ap.add_argument("--ab", metavar="A.so[,B.so]", default=None,
                   help="A/B: two module builds (B default: the tree's "
                        "build), each in its own httpd, rounds interleaved; "
                        "--only picks of %s (default %s)" % (
                            ",".join(ab.AB_SCENARIOS), ab.AB_DEFAULT))
    ap.add_argument("--malloc", action="store_true",
                    help="malloc calls per request of httpd's children for "
                         "bare mod_proxy and the gateway (miss, hit, no "
                         "cache), counted by a preloaded shim")
    ap.add_argument("--ab-label", action="append", default=[],
                    help="a name for A, then B (build/bench passes the "
                         "revisions)")
    ap.add_argument("--rounds", type=int, default=0,
                    help="--ab: rounds (default 48, --quick 12)")
    ap.add_argument("--secs", type=int, default=0,
                    help="--ab: seconds of load per build and round "
                         "(default 1)")
    ap.add_argument("--conns", type=int, default=32,
                    help="--ab, --malloc: wrk connections (default 32)")
    ap.add_argument("--pin", choices=("none", "split", "one"),
                    default=None,
                    help="where the processes run: 'split' puts the "
                         "subject (httpd) on half of the CPUs and wrk, the "
                         "backend and this harness on the other; 'one' (--ab "
                         "only) puts them all on one CPU (default: --ab %s, "
                         "the overhead scenario at c>1 %s; see "
                         "docs/benchmarks.md)" % (AB_PIN, OVERHEAD_PIN))
    args = ap.parse_args()
    only = [s for s in args.only.split(",") if s]
    known = list(ab.AB_SCENARIOS) if args.ab else SCENARIOS
    bad = [s for s in only if s not in known]
    if bad:
        ap.error("unknown scenario(s) %s; known: %s" % (
            ", ".join(bad), ", ".join(known)))
    if sum(map(bool, (args.ab, args.smoke, args.malloc))) > 1:
        ap.error("--ab, --malloc and --smoke exclude each other")
    if args.malloc and only:
        ap.error("--malloc measures its own subjects; no --only")
    if args.pin is None:
        args.pin = AB_PIN if args.ab else OVERHEAD_PIN
    if args.pin == "one" and not args.ab:
        ap.error("--pin one is for --ab")
    if args.out is None:
        args.out = os.path.join(HERE, "results", "ab" if args.ab else
                                "malloc" if args.malloc else "latest")
    if args.rerender:
        return rerender(args.out)
    run = Run(args)
    limit = {"smoke": 180, "quick": 300, "full": 1500}[run.profile]
    if args.ab:
        k = ab.PROFILES[run.profile]
        limit = 120 + 2 * (args.rounds or k["rounds"]) * (
            (args.secs or k["secs"]) + 1) * max(1, len(only))

    def on_signal(sig, _frame):
        raise SystemExit("stopped by signal %d" % sig)

    def on_alarm(_sig, _frame):
        raise SystemExit("run exceeded its %d s bound; stopped" % limit)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(limit)
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = min(hard, 16384) if hard != resource.RLIM_INFINITY else 16384
        if soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ImportError, ValueError, OSError):
        pass
    if not os.path.exists(PORTKEY_MAIN):
        run.mark_absent("portkey", portkey_absent_reason())
    if shutil.which("nginx") is None and not os.path.exists(
            "/usr/sbin/nginx"):
        run.mark_absent("nginx", "nginx is not installed")
    ok = True
    try:
        if args.ab:
            return run_ab(run, args, only)
        if args.malloc:
            return run_malloc(run, args)
        if run.profile == "smoke":
            probe_cache(run)
            ok = smoke(run)
            return 0 if ok else 1
        if shutil.which("wrk") is None:
            say("wrk is not installed (apt-get install wrk)")
            return 2
        probe_cache(run)
        if not run.cache["ok"]:
            run.mark_absent("gateway_hit", "no response cache: %s; "
                            "reported as null, not estimated"
                            % run.cache["why"])
        mach = machine()
        mach["loadavg_start"] = loadavg()
        mach["module_sha256"] = run.module
        mach["cpu_accounting"] = subjects.cpu_account().source
        say("%s run; machine: %d cores, %s; load average %s" % (
            run.profile, mach["cores"] or 0, mach["cpu"],
            mach["loadavg_start"]))
        todo = only or SCENARIOS
        groups = []
        both = [x for x in ("overhead", "stream") if x in todo]
        if both:                                # one stack for the two
            groups.append(("/".join(both), both,
                           lambda: scenario_proxy(run, both)))
        funcs = {"failover": scenario_failover, "switch": scenario_switch,
                 "memory": scenario_memory, "seed": scenario_seed}
        for name in SCENARIOS:
            if name in todo and name in funcs:
                groups.append((name, [name],
                               lambda f=funcs[name]: f(run)))
        for label, scs, fn in groups:
            t0 = time.time()
            if label not in ("overhead", "stream", "overhead/stream"):
                say("== %s" % label)
            try:
                fn()
            except Exception as e:              # noqa: BLE001
                ok = False
                run.note("scenario %s could not start: %s" % (label, e))
                for sc in scs:
                    run.scenarios.setdefault(sc, {s: None
                                                  for s in SUBJECTS})
            say("== %s done in %.0f s" % (label, time.time() - t0))
        mach["loadavg_end"] = loadavg()
        res = write_results(run, mach, args.out)
        say("wrote %s.json and %s.md (%.0f s)" % (
            os.path.relpath(args.out, TOP), os.path.relpath(args.out, TOP),
            res["duration_s"]))
        print(report.headline(res))
        return 0 if ok else 1
    finally:
        signal.alarm(0)
        run.wrklog.close()
        subjects.cpu_account_close()
        if args.keep:
            say("run directory kept: %s" % run.tmp)
        else:
            shutil.rmtree(run.tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
