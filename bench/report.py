"""bench/report.py: the Markdown table (bench/results/latest.md) and the
closing summary of build/bench, both made from the results JSON."""

SUBJECTS = ["direct", "mod_proxy", "nginx", "portkey", "gateway_miss",
            "gateway_hit", "gateway_affinity"]


def f(v, nd=1, unit=""):
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int) and not nd:
        return "%d%s" % (v, unit)
    return ("%." + str(nd) + "f%s") % (v, unit)


def pctf(v):
    return "–" if v is None else "%.0f%%" % (100 * v)


def table(head, rows):
    out = ["| " + " | ".join(head) + " |",
           "|" + "|".join(" --- " if i == 0 else " ---: "
                          for i in range(len(head))) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def machine_line(m):
    parts = ["%s cores (%s)" % (m.get("cores"), m.get("cpu")),
             "%s GB" % m.get("memory_gb"), m.get("os") or "",
             "kernel %s" % m.get("kernel")]
    vers = ["%s %s" % (k, m[k]) for k in ("apache2", "nginx", "portkey",
                                          "node", "wrk", "memcached",
                                          "python") if m.get(k)]
    s = ", ".join(p for p in parts if p) + ". " + ", ".join(vers) + "."
    if m.get("gateway_commit"):
        s += " Gateway at commit %s." % m["gateway_commit"]
    if m.get("loadavg_start"):
        s += " Load average %s at the start, %s at the end." % (
            m.get("loadavg_start"), m.get("loadavg_end"))
    return s


def rows_for(sc, cols):
    rows = []
    for s in SUBJECTS:
        if s not in sc:
            continue
        e = sc[s]
        if e is None:
            rows.append(["`%s`" % s] + ["absent"] + [""] * (len(cols) - 1))
            continue
        rows.append(["`%s`" % s] + [fn(e) for _, fn in cols])
        if e.get("without_cache"):
            rows.append(["`%s` without cache" % s]
                        + [fn(e["without_cache"]) for _, fn in cols])
        if e.get("with_key"):
            rows.append(["`gateway_keyed` (a key with limits)"]
                        + [fn(e["with_key"]) for _, fn in cols])
    return rows


def heading(res, title, command, how="how to read this"):
    """The first lines of a results page: its TITLE, the COMMAND that wrote
    it, when and in how long, a pointer to the docs (HOW they help), and the
    machine."""
    return ["# %s\n" % title,
            "Written by `%s` on %s in %.0f s; %s: "
            "[docs/benchmarks.md](../../docs/benchmarks.md).\n"
            % (command, res["date"], res["duration_s"], how),
            "**Machine:** " + machine_line(res["machine"]) + "\n"]


def markdown(res):
    m = res["machine"]
    sc = res["scenarios"]
    out = heading(res, "mod_llm_gateway benchmarks",
                  "build/bench" + ("" if res["mode"] == "full"
                                   else " --" + res["mode"]),
                  "method and how to read this")

    out.append("## Targets\n")
    out.append("Each is a ratio or a difference between subjects measured "
               "in this run.\n")
    rows = []
    for k, t in res["targets"].items():
        v = t["value"]
        rows.append([t["what"], "absent" if v is None else f(v, 3),
                     t["target"],
                     "–" if t["met"] is None else ("yes" if t["met"]
                                                   else "**no**")])
    out.append(table(["target", "measured", "goal", "met"], rows))
    c = res.get("context") or {}
    out.append("\nFor context: mod_proxy / portkey %s×, nginx / mod_proxy "
               "%s×, mod_proxy / direct %s×, gateway_miss / nginx %s×, "
               "the gateway without its cache / mod_proxy %s× and / "
               "portkey %s×; "
               "bare mod_proxy adds %s ms to p99 at c=1 and %s ms to the "
               "time to first token, the gateway without its cache %s ms "
               "and %s ms.\n" % (
                   f(c.get("mod_proxy_vs_portkey"), 2),
                   f(c.get("nginx_vs_mod_proxy"), 2),
                   f(c.get("mod_proxy_vs_direct"), 2),
                   f(c.get("gateway_miss_vs_nginx"), 2),
                   f(c.get("gateway_nocache_vs_mod_proxy"), 2),
                   f(c.get("gateway_nocache_vs_portkey"), 2),
                   f(c.get("mod_proxy_added_p99_ms"), 3),
                   f(c.get("mod_proxy_ttft_overhead_ms"), 3),
                   f(c.get("gateway_nocache_added_p99_ms"), 3),
                   f(c.get("gateway_nocache_ttft_overhead_ms"), 3)))
    if c.get("mod_proxy_cpu_us_per_req") is not None:
        out.append("\nIn CPU time per request: bare mod_proxy %s µs (the "
                   "backend %s µs per request proxied to it), nginx %s× "
                   "bare mod_proxy's, the gateway without its cache %s×.\n"
                   % (f(c.get("mod_proxy_cpu_us_per_req"), 1),
                      f(c.get("backend_cpu_us_per_req"), 1),
                      f(c.get("nginx_cpu_vs_mod_proxy"), 3),
                      f(c.get("gateway_nocache_cpu_vs_mod_proxy"), 3)))

    p = res.get("params") or {}
    if sc.get("overhead"):
        po = p.get("overhead", {})
        levels = [str(x) for x in po.get("levels", [])]
        main = str(po.get("main"))
        out.append("\n## overhead: non-streamed, zero think time\n")
        out.append("wrk, %s s × %s round(s) per cell (c=%s: %s s × %s), "
                   "subjects interleaved; median of the rounds. Requests "
                   "per second (2xx), latency in ms.\n"
                   % (po.get("secs"), po.get("rounds"), main,
                      po.get("main_secs", po.get("secs")),
                      po.get("main_rounds", po.get("rounds"))))
        cols = []
        for lv in levels:
            cols.append(("rps c=%s" % lv, lambda e, lv=lv: f(
                e["by_concurrency"][lv]["rps"], 0)))
            cols.append(("p50 c=%s" % lv, lambda e, lv=lv: f(
                e["by_concurrency"][lv]["p50_ms"], 3)))
            cols.append(("p99 c=%s" % lv, lambda e, lv=lv: f(
                e["by_concurrency"][lv]["p99_ms"], 3)))
        cols.append(("errors", lambda e: f(e["errors"], 0)))
        out.append(table(["subject"] + [h for h, _ in cols],
                         rows_for(sc["overhead"], cols)))
        rel = [(s, e.get("vs_mod_proxy")) for s, e in sc["overhead"].items()
               if e and e.get("vs_mod_proxy")]
        if rel:
            out.append("\nRelative to bare mod_proxy at c=%s (the median of "
                       "the rounds' ratios, each of two runs close in "
                       "time): %s.\n" % (main, ", ".join(
                           "%s %.2f×" % (s, v) for s, v in rel)))
        if any(e and e.get("cpu_us_per_req") for e in sc["overhead"].values()):
            out.append(cpu_table(sc["overhead"], levels, main, m))

    if sc.get("stream"):
        ps = p.get("stream", {})
        out.append("\n## stream: paced tokens\n")
        out.append("%s; %s concurrent streams (their starts spread over "
                   "%.2f s) for %s s × %s round(s). Time to first token and "
                   "the gaps between tokens as the client saw them "
                   "(expected gap %.0f ms); bursts: share of gaps under a "
                   "quarter of that, the mark of buffering.\n"
                   % (ps.get("backend"), ps.get("conns"),
                      ps.get("stagger_s", 0), ps.get("secs"),
                      ps.get("rounds"), ps.get("expected_gap_ms", 0)))
        cols = [("streams/s", lambda e: f(e["rps"], 1)),
                ("ttft p50", lambda e: f(e["ttft_ms"], 2)),
                ("ttft p99", lambda e: f(e.get("ttft_p99_ms"), 2)),
                ("gap p50", lambda e: f(e.get("gap_p50_ms"), 2)),
                ("gap p99", lambda e: f(e.get("gap_p99_ms"), 2)),
                ("gap max", lambda e: f(e.get("gap_max_ms"), 1)),
                ("bursts", lambda e: pctf(e.get("burst_fraction"))),
                ("stream p50", lambda e: f(e["p50_ms"], 1)),
                ("CPU µs/stream", lambda e: f(e.get("cpu_us_per_req"), 0)),
                ("errors", lambda e: f(e["errors"], 0))]
        out.append(table(["subject"] + [h for h, _ in cols],
                         rows_for(sc["stream"], cols)))
        if sc["stream"].get("gateway_hit"):
            out.append("\n`gateway_hit`'s streams are replays from the "
                       "cache, sent at once by design: bursts of 100 % are "
                       "expected there, not buffering.\n")

    if sc.get("failover"):
        pf = p.get("failover", {})
        out.append("\n## failover: a member killed under load\n")
        out.append("%s; %s clients for %s s; %s\n" % (
            pf.get("backend"), pf.get("conns"), pf.get("secs"),
            pf.get("what")))
        cols = [("rps", lambda e: f(e["rps"], 0)),
                ("p50 ms", lambda e: f(e["p50_ms"], 1)),
                ("p99 ms", lambda e: f(e["p99_ms"], 1)),
                ("failed requests", lambda e: f(e["errors"], 0)),
                ("recovery ms", lambda e: f(e.get("recovery_ms"), 0))]
        out.append(table(["subject"] + [h for h, _ in cols],
                         rows_for(sc["failover"], cols)))

    if sc.get("switch"):
        pw = p.get("switch", {})
        out.append("\n## switch: mixed models, model-load delay\n")
        out.append("%s; %s; lbmethod %s; %s clients for %s s. %s.\n" % (
            pw.get("backend"), pw.get("mix"), pw.get("lbmethod"),
            pw.get("conns"), pw.get("secs"), pw.get("what")))
        cols = [("rps", lambda e: f(e["rps"], 1)),
                ("p50 ms", lambda e: f(e["p50_ms"], 0)),
                ("p99 ms", lambda e: f(e["p99_ms"], 0)),
                ("switch overhead ms/request",
                 lambda e: f(e.get("switch_overhead_ms"), 1)),
                ("held in the gateway ms/request",
                 lambda e: f(e.get("hold_ms"), 1)),
                ("load + held ms/request",
                 lambda e: f(e.get("switch_wait_ms"), 1)),
                ("requests that waited",
                 lambda e: pctf(e.get("switch_wait_fraction"))),
                ("model loads", lambda e: f(e.get("model_loads"), 0)),
                ("errors", lambda e: f(e["errors"], 0))]
        out.append(table(["subject"] + [h for h, _ in cols],
                         rows_for(sc["switch"], cols)))

    if sc.get("memory"):
        pm = p.get("memory", {})
        out.append("\n## memory: %s concurrent streams\n" % pm.get("streams"))
        out.append("%s. %s. PSS counts shared pages once.\n" % (
            pm.get("backend"), pm.get("what")))
        cols = [("streams open", lambda e: f(e.get("streams"), 0)),
                ("RSS MB", lambda e: f(e.get("rss_mb"), 1)),
                ("PSS MB", lambda e: f(e.get("pss_mb"), 1)),
                ("httpd children RSS MB",
                 lambda e: f(e.get("children_rss_mb"), 1)),
                ("idle PSS MB", lambda e: f(e.get("idle_pss_mb"), 1)),
                ("PSS kB/stream", lambda e: f(e.get("per_stream_kb"), 1)),
                ("ttft p50 ms", lambda e: f(e["ttft_ms"], 1)),
                ("errors", lambda e: f(e["errors"], 0))]
        out.append(table(["subject"] + [h for h, _ in cols],
                         rows_for(sc["memory"], cols)))

    if sc.get("seed"):
        out.append(seed_table(res))

    if res.get("absent"):
        out.append("\n## Absent\n")
        for s, why in res["absent"].items():
            out.append("- `%s`: %s\n" % (s, why))
    if res.get("notes"):
        out.append("\n## Notes\n")
        for n in res["notes"]:
            out.append("- %s\n" % n)
    return "\n".join(x.rstrip("\n") + "\n" for x in out)


def cpu_table(ov, levels, main, mach):
    """The overhead scenario's CPU cost per request, subject by subject."""
    cols = []
    for lv in levels:
        cols.append(("µs/req c=%s" % lv, lambda e, lv=lv: f(
            (e["by_concurrency"][lv]).get("cpu_us_per_req"), 1)))
    cols.append(("× mod_proxy c=%s" % main,
                 lambda e: f(e.get("cpu_vs_mod_proxy"), 3)))
    def span(e):
        v = [x for x in e.get("rounds_cpu_us_per_req") or [] if x]
        return "%.1f–%.1f" % (min(v), max(v)) if v else "–"
    cols.append(("rounds c=%s: min–max µs" % main, span))
    cols.append(("backend µs/req c=%s" % main,
                 lambda e: f(e.get("backend_cpu_us_per_req"), 1)))
    return ("\nCPU time of the subject's own processes (httpd: parent and "
            "children; nginx: master and workers; Portkey: node; direct: "
            "the backend) per request answered, in µs: user + system time "
            "from %s over each run, divided by wrk's count of answers; "
            "the median of the rounds. × mod_proxy: the median of the "
            "rounds' ratios to bare mod_proxy's (lower is cheaper). The "
            "backend's CPU per request proxied to it is for scale.\n\n"
            % (mach.get("cpu_accounting") or "the kernel")
            + table(["subject"] + [h for h, _ in cols], rows_for(ov, cols)))


def seed_table(res):
    sd = res["scenarios"]["seed"]
    claims = res.get("seed_claims") or {}
    ps = (res.get("params") or {}).get("seed", {})
    d, g, h = sd.get("direct"), sd.get("gateway_miss"), sd.get("gateway_hit")
    a = sd.get("gateway_affinity")
    cd, cg = claims.get("direct", {}), claims.get("gateway", {})

    def col(e, key, fmt):
        return "absent" if e is None else fmt(e.get(key))

    ms = lambda v: f(v, 0, " ms")               # noqa: E731
    rows = [
        ["p95 latency", ms(cd.get("p95_ms")), ms(cg.get("p95_ms")),
         col(d, "p95_ms", ms), col(g, "p95_ms", ms), col(h, "p95_ms", ms),
         col(a, "p95_ms", ms)],
        ["cache hit rate", pctf(cd.get("cache_hit_rate")),
         pctf(cg.get("cache_hit_rate")), col(d, "cache_hit_rate", pctf),
         col(g, "cache_hit_rate", pctf), col(h, "cache_hit_rate", pctf),
         col(a, "cache_hit_rate", pctf)],
        ["model switch overhead (per request)",
         ms(cd.get("switch_overhead_ms")), ms(cg.get("switch_overhead_ms")),
         col(d, "switch_overhead_ms", lambda v: f(v, 1, " ms")),
         col(g, "switch_overhead_ms", lambda v: f(v, 1, " ms")),
         col(h, "switch_overhead_ms", lambda v: f(v, 1, " ms")),
         col(a, "switch_overhead_ms", lambda v: f(v, 1, " ms"))],
        ["held in the gateway (per request)", "–", "–",
         col(d, "hold_ms", lambda v: f(v, 1, " ms")),
         col(g, "hold_ms", lambda v: f(v, 1, " ms")),
         col(h, "hold_ms", lambda v: f(v, 1, " ms")),
         col(a, "hold_ms", lambda v: f(v, 1, " ms"))],
        ["cache hit rate any cache could reach", "–", "–",
         col(d, "cache_hit_ceiling", pctf), col(g, "cache_hit_ceiling", pctf),
         col(h, "cache_hit_ceiling", pctf), col(a, "cache_hit_ceiling", pctf)],
        ["error recovery time", ms(cd.get("recovery_ms")),
         ms(cg.get("recovery_ms")), col(d, "recovery_ms", ms),
         col(g, "recovery_ms", ms), col(h, "recovery_ms", ms),
         col(a, "recovery_ms", ms)],
        ["failed requests", "–", "–", col(d, "errors", lambda v: f(v, 0)),
         col(g, "errors", lambda v: f(v, 0)),
         col(h, "errors", lambda v: f(v, 0)),
         col(a, "errors", lambda v: f(v, 0))],
        ["throughput", "–", "–", col(d, "rps", lambda v: f(v, 1, " rps")),
         col(g, "rps", lambda v: f(v, 1, " rps")),
         col(h, "rps", lambda v: f(v, 1, " rps")),
         col(a, "rps", lambda v: f(v, 1, " rps"))],
    ]
    heads = ["", "seed: direct", "seed: gateway", "measured: direct",
             "measured: gateway, no cache", "measured: gateway, cache on",
             "measured: gateway, cache on, llm_affinity"]
    if "gateway_affinity" not in sd:    # results from before it
        heads, rows = heads[:-1], [r[:-1] for r in rows]
    s = ["\n## The seed's table, measured\n",
         "One workload for all: %s requests/s arriving for %s s; %d "
         "prompts drawn "
         "Zipf(s=%s), %d models (Zipf s=%s), %d model slot(s) per server, "
         "%d ms to load a model, %d ms + %d ms/token to generate "
         "(%d–%d tokens); member A killed at %s s, back %s s later. "
         "The seed article's numbers are its claims, not measured here.\n"
         % (ps.get("rate"), ps.get("secs"), ps.get("prompts", 0),
            ps.get("prompt_zipf_s"), ps.get("models", 0),
            ps.get("model_zipf_s"), ps.get("slots", 0), ps.get("load_ms", 0),
            ps.get("gen_ms", 0), ps.get("per_token_ms", 0),
            ps.get("tokens_min", 0), ps.get("tokens_max", 0),
            ps.get("kill_at"), ps.get("restart_after")),
         table(heads, rows)]
    return "\n".join(s)


def headline(res):
    lines = ["", "targets (%s run):" % res["mode"]]
    for k, t in res["targets"].items():
        v = t["value"]
        lines.append("  %-20s %-10s %-8s %s" % (
            k, "absent" if v is None else "%.3f" % v, t["target"],
            "" if t["met"] is None else ("met" if t["met"] else "NOT MET")))
    if res.get("absent"):
        lines.append("absent: " + "; ".join(
            "%s (%s)" % (s, w) for s, w in res["absent"].items()))
    return "\n".join(lines)
