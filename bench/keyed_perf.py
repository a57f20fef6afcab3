#!/usr/bin/env python3
"""bench/keyed_perf.py: where a keyed request's CPU goes. Starts the test
harness's gateway (tests' config, LLMCache shm) with a key that has every
kind of limit and needs it, loads it with wrk (bench/post.lua, unique
requests, c=32) and samples its children with perf for 8 s; prints the
share of all samples (kernel included) in the module and in what keys and
limits run (authentication, estimate, reservation, settlement, headers).
A measure that load from other processes does not blur, unlike a ratio of
two throughput runs. Run from the top of the tree, as root, after a build:
    /usr/bin/python3 bench/keyed_perf.py"""
import hashlib
import os
import re
import subprocess
import sys
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, "test", "modules"))
import llmgw_env as env                                 # noqa: E402

KEY = "llmgw-bench-key-0123456789abcdef0123456789abcdef"
DATA = "/tmp/llmgw-keyed-perf.data"
# Symbols of the module that only keys and limits run.
LIMITS = re.compile(r"llmgw_limits_|llmgw_estimate|^key_|presented_key|"
                    r"authenticated|find_subjects|price_of|model_allowed|"
                    r"^reserve$|^refused$|end_cleanup|^give$|^lm_|"
                    r"budget_view|chat_bound|text_bound|count_member|"
                    r"choices_of|llmgw_sha256_(init|update|final)$")


def main():
    wd = env.new_workdir()
    names = ("be_a", "be_b", "slow", "disc", "disc2", "llama", "dead1",
             "dead2")
    ports = dict(zip(names, env.PORTS.take(len(names))))
    mocks = [env.MockBackend(env.mockllm_path(), wd, n, ports[k],
                             ["--models", "mock-small,mock-large",
                              "--threads", "2"]).start()
             for n, k in (("a", "be_a"), ("b", "be_b"))]
    extra = ("LLMCache shm\n<LLMKey \"bench\">\n    LLMKeyHash sha256:%s\n"
             "    LLMRateLimit rpm=1000000000 tpm=1000000000 "
             "concurrent=100000\n    LLMBudget tokens=4000000000000000 "
             "per=day\n</LLMKey>\n<Location \"/k\">\n    LLMApi openai\n"
             "    LLMRequireKey on\n</Location>\n"
             % hashlib.sha256(KEY.encode()).hexdigest())
    g = env.Gateway(wd, ports, env.module_path(), "perfgw", extra).start()
    try:
        e = dict(os.environ, BENCH_HEADERS="Authorization: Bearer " + KEY,
                 BENCH_NONCE=str(time.time()))
        w = subprocess.Popen(["wrk", "-t2", "-c32", "-d12s", "-s",
                              os.path.join(TOP, "bench", "post.lua"),
                              "http://127.0.0.1:%d/k/v1/chat/completions"
                              % g.port], env=e, stdout=subprocess.PIPE,
                             text=True)
        time.sleep(2)
        subprocess.run(["perf", "record", "-F", "2000", "-o", DATA, "-p",
                        ",".join(map(str, g.children())), "--", "sleep",
                        "8"], capture_output=True, check=True)
        out = w.communicate()[0]
    finally:
        g.stop()
        for m in mocks:
            m.stop()
        env.remove_workdir(wd)
    rep = subprocess.run(["perf", "report", "-i", DATA, "--no-children",
                          "--sort", "dso,symbol", "--stdio"],
                         capture_output=True, text=True).stdout
    module = limits = 0.0
    for line in rep.splitlines():
        m = re.match(r"\s+([\d.]+)%\s+(\S+)\s+\[.\]\s+(\S+)", line)
        if m and "mod_llm_gateway" in m.group(2):
            module += float(m.group(1))
            if LIMITS.search(m.group(3)):
                limits += float(m.group(1))
    rps = [l.split()[-1] for l in out.splitlines() if "Requests/sec" in l]
    bad = [l for l in out.splitlines() if "Non-2xx" in l]
    print("keyed requests: %s/s%s; samples in the module %.2f %%, in keys "
          "and limits %.2f %% (of all httpd samples, kernel included)"
          % (rps[0] if rps else "?", " (%s)" % bad[0].strip() if bad else "",
             module, limits))


if __name__ == "__main__":
    main()
