"""bench/ab.py: build/bench --ab, two builds of the module measured against
each other in one run: each in its own httpd in front of one backend, the
same load on each in rounds A,B,B,A,A,B,... and the ratio B/A per round.

What is compared is the CPU time of each httpd's processes per request
answered (bench.cpu_window); the throughput ratio is reported beside it.
A round's two runs are seconds apart, so the machine's drift over minutes
cancels in their ratio, and alternating the order cancels a drift within
a round. The spread of the per-round ratios (their interquartile range)
says how far the median can be trusted: with identical builds it is the
noise floor (docs/benchmarks.md quotes one).
"""

import os
import re
import shutil

import bench as b
import loadgen as lg
import subjects
from subjects import StartError, free_port

# What each A/B scenario loads: the vhost of a build's httpd, and whether
# every request is the same one (a cache hit after the first).
AB_SCENARIOS = {
    "miss": ("gateway", False,
             "gateway with LLMCache shm, every request unique (the overhead "
             "scenario's gateway_miss)"),
    "hit": ("gateway", True,
            "gateway with LLMCache shm, one repeated request (gateway_hit)"),
    "nocache": ("nocache", False,
                "gateway with LLMCache off, every request unique"),
    "proxy": ("proxy", False,
              "bare mod_proxy vhost of an httpd that loads the module (what "
              "the module costs traffic it does not handle)"),
}
AB_DEFAULT = "miss"
# A run that answered fewer requests than this was a stall of the machine
# (a run of 1 s at c=32 has answered 0 while other sessions loaded it): its
# CPU per request means nothing, and the round is run again, at most
# ROUND_TRIES times; the results list the rounds run again.
MIN_REQUESTS = 100
ROUND_TRIES = 3

# Many short rounds: a round's two runs are closer in time, and the
# machine's load changes over seconds (48 rounds of 1 s had about half the
# interquartile range of 24 rounds of 2 s on this machine under load).
PROFILES = {
    "quick": {"rounds": 12, "secs": 1, "warm_s": 1},
    "full": {"rounds": 48, "secs": 1, "warm_s": 2},
}


def load_lines(so):
    """build/bench's LoadModule lines with the module at path so."""
    load = os.environ.get("LLMGW_LOAD_MODULES") or ""
    line = "LoadModule llm_gateway_module %s" % so
    out, n = re.subn(r"^LoadModule llm_gateway_module .*$", line, load,
                     flags=re.M)
    return out if n else (load + "\n" + line).strip()


def freeze(run, so, tag):
    """A copy of a build in the run directory (the tree or the build cache
    may change meanwhile); returns (path, sha256 prefix)."""
    import hashlib
    dst = os.path.join(run.tmp, "mod_llm_gateway-%s.so" % tag)
    shutil.copy(so, dst)
    os.chmod(dst, 0o755)
    with open(dst, "rb") as f:
        return dst, hashlib.sha256(f.read()).hexdigest()[:16]


def split_cpus():
    """(httpd's CPUs, everyone else's): the upper half and the lower half
    of this process's CPUs; None with fewer than two."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    h = len(cpus) // 2
    return set(cpus[h:]), set(cpus[:h])


def start_side(run, st, tag, so, fast):
    """One build's httpd: its gateway (cache on), the gateway with the cache
    off and a bare mod_proxy vhost, all in front of the backend fast."""
    ports = {"gateway": free_port(), "nocache": free_port(),
             "proxy": free_port()}
    routes = [("mock-small", "fast")]
    proc = st.httpd("httpd-" + tag, [
        (ports["gateway"], b.gateway_vhost(routes, b.cache_directive())),
        (ports["nocache"], b.gateway_vhost(routes, "LLMCache off")),
        (ports["proxy"], 'ProxyPass "/v1/" "balancer://fast/v1/"'),
    ], b.MPM_PROXY, b.balancer("fast", [fast.port]), load=load_lines(so))
    return proc, ports


def check_side(ep, tag):
    """One request must answer (and for a hit, the second must be a HIT)."""
    body = (b.POST_BODY % ("mock-small", "fixed" if ep.fixed
                           else "ab check " + lg.nonce())).encode()
    st_, h, body_ = lg.one_request(ep.port, body)
    if ep.fixed:
        st_, h, body_ = lg.one_request(ep.port, body)
        if h.get("x-llm-cache", "").upper() != "HIT":
            raise StartError("build %s: the repeated request was not a cache "
                             "hit (X-LLM-Cache: %s)" % (
                                 tag, h.get("x-llm-cache", "absent")))
    if st_ != 200 or b'"choices"' not in body_:
        raise StartError("build %s answered %d: %s" % (tag, st_,
                                                       body_[:160]))


def spread(values):
    """median, quartiles, min and max of values (rounded)."""
    if not values:
        return None
    ci = lg.median_ci(values)
    return {"median": b.r3(lg.median(values)),
            "q1": b.r3(lg.quantile(values, 0.25)),
            "q3": b.r3(lg.quantile(values, 0.75)),
            "ci95_low": b.r3(ci[0]) if ci else None,
            "ci95_high": b.r3(ci[1]) if ci else None,
            "min": b.r3(min(values)), "max": b.r3(max(values)),
            "n": len(values)}


def measure(run, eps, k, conns, name):
    """The rounds of one A/B scenario; eps: {"a": Endpoint, "b": ...}."""
    def go(tag, secs, log):
        ep = eps[tag]
        return b.cpu_window(ep, lambda: lg.wrk(
            ep.port, conns, secs, fixed=ep.fixed, log=log))
    for tag in ("a", "b"):
        check_side(eps[tag], tag)
        go(tag, k["warm_s"], None)
    rounds, redone = [], []
    for i in range(k["rounds"]):
        order = ("a", "b") if i % 2 == 0 else ("b", "a")
        for attempt in range(ROUND_TRIES):
            got = one_round(go, order, k["secs"], run.wrklog, name, i)
            stalled = [t for t in order
                       if got[t]["requests"] < MIN_REQUESTS]
            if not stalled:
                break
            redone.append(i + 1)
            b.say("ab %s r%d: %s answered %s requests in %d s (the "
                  "machine stalled); the round again" % (
                      name, i + 1, "/".join(t.upper() for t in stalled),
                      "/".join(str(got[t]["requests"]) for t in stalled),
                      k["secs"]))
        else:
            raise StartError("ab %s round %d: a build answered fewer than %d "
                             "requests in %d tries" % (name, i + 1,
                                                       MIN_REQUESTS,
                                                       ROUND_TRIES))
        for t in order:
            if not got[t].get("cpu_us_per_req") \
                    or got[t]["cpu_us_per_req"] <= 0:
                raise StartError("build %s: no CPU time measured (%r, %s)"
                                 % (t.upper(), got[t].get("cpu_us_per_req"),
                                    subjects.cpu_account().source))
        rounds.append(got)
    return rounds, redone


def one_round(go, order, secs, log, name, i):
    got = {}
    for tag in order:
        r = go(tag, secs, log)
        got[tag] = r
        b.say("ab %s r%d %s %9.0f rps  cpu %7.2f us/req  err %d" % (
            name, i + 1, tag.upper(), r["rps"],
            r["cpu_us_per_req"] or -1, r["errors"]))
    return got


def summarize(rounds, labels, params):
    out = {"params": params}
    for tag in ("a", "b"):
        rs = [r[tag] for r in rounds]
        out[tag] = {
            "label": labels[tag],
            "rps": b.r3(lg.median([r["rps"] for r in rs])),
            "cpu_us_per_req": b.r3(lg.median(
                [r["cpu_us_per_req"] for r in rs])),
            "backend_cpu_us_per_req": b.r3(lg.median(
                [r.get("backend_cpu_us_per_req") or 0 for r in rs])),
            "errors": sum(r["errors"] for r in rs),
            "rounds_rps": [round(r["rps"], 1) for r in rs],
            "rounds_cpu_us_per_req": [round(r["cpu_us_per_req"], 2)
                                      for r in rs],
        }
    cpu = [r["b"]["cpu_us_per_req"] / r["a"]["cpu_us_per_req"]
           for r in rounds if r["a"]["cpu_us_per_req"]
           and r["b"]["cpu_us_per_req"]]
    rps = [r["b"]["rps"] / r["a"]["rps"] for r in rounds
           if r["a"]["rps"] and r["b"]["rps"]]
    out["cpu_ratio_b_a"] = spread(cpu)
    out["rps_ratio_b_a"] = spread(rps)
    out["cpu_diff_us"] = spread([r["b"]["cpu_us_per_req"]
                                 - r["a"]["cpu_us_per_req"] for r in rounds])
    return out


def pin(split, httpds):
    """httpd's trees on their half of the CPUs; this process (and so wrk,
    started later) and the backend on the other."""
    httpd_cpus, rest = split
    lg.pin_tree(rest)
    for p in httpds:
        lg.pin_tree(httpd_cpus, root=p.pid)


def run_ab(run, builds, labels, only, conns, pin_mode):
    """builds: {"a": so, "b": so}. Returns the results dict."""
    k = dict(PROFILES["quick" if run.args.quick else "full"])
    if run.args.rounds:
        k["rounds"] = run.args.rounds
    if run.args.secs:
        k["secs"] = run.args.secs
    frozen = {t: freeze(run, builds[t], t) for t in ("a", "b")}
    split = split_cpus() if pin_mode == "split" else None
    all_cpus = os.sched_getaffinity(0)
    res = {"format": "mod_llm_gateway bench A/B v1",
           "mode": "ab-" + ("quick" if run.args.quick else "full"),
           "scenarios": {}}
    with run.stack("ab") as st:
        fast = st.mock("mock-fast", tokens=16, threads=b.FAST_THREADS)
        sides = {t: start_side(run, st, t, frozen[t][0], fast)
                 for t in ("a", "b")}
        if split:
            pin(split, [sides[t][0] for t in ("a", "b")])
        elif pin_mode == "one":
            lg.pin_tree({min(all_cpus)})
        try:
            for name in only:
                vhost, fixed, what = AB_SCENARIOS[name]
                eps = {t: b.Endpoint(sides[t][1][vhost], fixed=fixed,
                                     proc=sides[t][0], backend=fast)
                       for t in ("a", "b")}
                b.say("== ab %s: %s; %d rounds of %d s, c=%d, pinning %s" % (
                    name, what, k["rounds"], k["secs"], conns,
                    pin_mode if split or pin_mode != "split"
                    else "none (one CPU)"))
                rounds, redone = measure(run, eps, k, conns, name)
                params = dict(k, conns=conns, what=what, order="A,B,B,A,...",
                              pin=describe_pin(pin_mode, split),
                              backend="test/mockllm --threads %d, zero "
                              "think time, 16 tokens, non-streamed"
                              % b.FAST_THREADS)
                res["scenarios"][name] = summarize(
                    rounds, labels, params)
                res["scenarios"][name]["rounds_run_again"] = redone
                b.say(headline_one(name, res["scenarios"][name]))
        finally:
            lg.pin_tree(all_cpus)
    res["builds"] = {t: {"label": labels[t], "path": builds[t],
                         "module_sha256": frozen[t][1]} for t in ("a", "b")}
    return res


def describe_pin(mode, split):
    if mode == "one":
        return "every process (httpd, wrk, the backend) on CPU %d" % min(
            os.sched_getaffinity(0))
    if mode != "split" or not split:
        return "none: every process may run on every CPU"
    return ("httpd on CPU %s; wrk, the backend and the harness on CPU %s"
            % (",".join(map(str, sorted(split[0]))),
               ",".join(map(str, sorted(split[1])))))


def pct_change(r):
    return "%+.1f %%" % (100 * (r - 1)) if r is not None else "–"


def headline_one(name, sc):
    c, r = sc["cpu_ratio_b_a"], sc["rps_ratio_b_a"]
    def ci(s):
        if s["ci95_low"] is None:
            return "no CI with %d rounds" % s["n"]
        return "95%% CI %.3f-%.3f" % (s["ci95_low"], s["ci95_high"])
    return ("ab %s: B/A CPU us/request %.3f (%s, %+.2f us; IQR %.3f-%.3f; "
            "%s; %d rounds), rps %.3f (IQR %.3f-%.3f; %s); A %.1f us "
            "%0.f rps, B %.1f us %.0f rps" % (
                name, c["median"], pct_change(c["median"]),
                sc["cpu_diff_us"]["median"], c["q1"], c["q3"], ci(c), c["n"],
                r["median"], r["q1"], r["q3"], ci(r),
                sc["a"]["cpu_us_per_req"], sc["a"]["rps"],
                sc["b"]["cpu_us_per_req"], sc["b"]["rps"]))


def markdown(res):
    m = res["machine"]
    bl = res["builds"]
    out = b.report.heading(res, "mod_llm_gateway A/B benchmark",
                           "build/bench --ab") + [
           "**A:** %s (module sha256 %s)  \n**B:** %s (module sha256 %s)\n"
           % (bl["a"]["label"], bl["a"]["module_sha256"], bl["b"]["label"],
              bl["b"]["module_sha256"])]
    for name, sc in res["scenarios"].items():
        p = sc["params"]
        out.append("\n## %s\n" % name)
        out.append("%s; %s. wrk c=%s, %s rounds of %s s per build, in the "
                   "order %s; %s. CPU: user + system time of each build's "
                   "httpd (parent and children) per request answered, "
                   "from %s.\n" % (
                       p["what"], p["backend"], p["conns"], p["rounds"],
                       p["secs"], p["order"], p["pin"],
                       m.get("cpu_accounting")))
        rows = []
        for key, label, nd in (("cpu_ratio_b_a", "B/A CPU µs/request", 3),
                               ("cpu_diff_us", "B−A CPU µs/request", 2),
                               ("rps_ratio_b_a", "B/A requests/s", 3)):
            s = sc[key]
            rows.append([label] + [b.report.f(s[x], nd) for x in
                                   ("median", "q1", "q3", "ci95_low",
                                    "ci95_high", "min", "max")])
        out.append(b.report.table(["per round", "median", "q1", "q3",
                                   "median's 95 % CI from", "to", "min",
                                   "max"], rows))
        if sc.get("rounds_run_again"):
            out.append("\nRun again after a stall (a build answered under "
                       "%d requests): round(s) %s.\n" % (
                           MIN_REQUESTS, ", ".join(
                               map(str, sc["rounds_run_again"]))))
        rows = [[t.upper(), b.report.f(sc[t]["cpu_us_per_req"], 2),
                 b.report.f(sc[t]["rps"], 0),
                 b.report.f(sc[t]["backend_cpu_us_per_req"], 1),
                 b.report.f(sc[t]["errors"], 0)] for t in ("a", "b")]
        out.append("\n" + b.report.table(
            ["build", "CPU µs/request (median)", "requests/s (median)",
             "backend µs/request", "errors"], rows))
    return "\n".join(x.rstrip("\n") + "\n" for x in out)


def write(run, res, mach, prefix):
    b.write_run(run, res, mach, prefix,
                ("format", "mode", "date", "duration_s", "machine", "builds", "scenarios"),
                markdown, "ab.json")
