#!/usr/bin/env python3
"""build/check_layout.py: the layout's rules, from the #include lines.

- src/core/ (the httpd-free core) includes no httpd header and no glue
  header: its files include only system, APR, json-c headers and core
  headers (llmgw_*.h).
- src/httpd/ (the glue) includes core headers, mod_llmgw.h (what all glue
  shares), its own part's header (mod_llmgw_PART.h) and generated
  mod_llmgw_version.h; another part's header only where ALLOWED says why.
- A private header (*_int.h) is included by its own part's files only.
- No include cycles between the project's headers.
Exits 1 and says what is wrong; prints one line when all holds."""
import os
import re
import sys

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORE = os.path.join(TOP, "src", "core")
GLUE = os.path.join(TOP, "src", "httpd")
# httpd's headers (apache2-dev's include dir, less APR's): by name.
HTTPD = re.compile(r"^(httpd|http_\w+|ap_\w+|util_\w+|mod_\w+|mpm\w*|"
                   r"scoreboard|unixd|os|apreq\w*|heartbeat)\.h$")
# glue file -> other parts' headers it may include, and why.
ALLOWED = {
    "mod_llmgw_proxy.c": {"mod_llmgw_output.h": "adds the output filter",
                          "mod_llmgw_limits.h": "authenticates and admits",
                          "mod_llmgw_failover.h": "arms the attempts"},
    "mod_llmgw_output.c": {"mod_llmgw_limits.h": "settles at the answer's end",
                           "mod_llmgw_failover.h":
                           "holds the answer until its commit point"},
    "mod_llmgw_answer.c": {"mod_llmgw_limits.h": "settles cache hits"},
    "mod_llmgw_config.c": {
        "mod_llmgw_health.h": "the directive table names the health part's",
        "mod_llmgw_manage.h": "the directive table names the manage part's"},
    "mod_llmgw_failover.c": {"mod_llmgw_proxy.h":
                             "re-dispatches to a fallback route",
                             "mod_llmgw_health.h":
                             "reports each attempt's outcome and skips "
                             "members the breaker keeps out"},
    "mod_llmgw_lifecycle.c": {
        "mod_llmgw_limits.h": "the lifecycle calls each part's steps",
        "mod_llmgw_failover.h": "the lifecycle calls each part's steps",
        "mod_llmgw_models.h": "the lifecycle calls each part's steps",
        "mod_llmgw_store.h": "the lifecycle calls each part's steps",
        "mod_llmgw_health.h": "the lifecycle calls each part's steps",
        "mod_llmgw_metrics.h": "the lifecycle calls each part's steps",
        "mod_llmgw_console.h": "the lifecycle calls each part's steps",
        "mod_llmgw_manage.h": "the lifecycle calls each part's steps"},
    "mod_llmgw_manage.c": {"mod_llmgw_members.h":
                           "commits member changes to mod_proxy's "
                           "balancers"},
    "mod_llmgw_members.c": {"mod_llmgw_health.h":
                            "probes a member added at run time before it "
                            "takes traffic, then puts it in the health "
                            "table"},
    "mod_llmgw_health.c": {"mod_llmgw_members.h":
                           "finds the workers of a member another child "
                           "added (the balancer synced under its lock)"},
    "mod_llmgw_console.c": {
        "mod_llmgw_metrics.h": "the console shows the counters and keeps "
                               "its shared memory the same way",
        "mod_llmgw_limits.h": "the console shows the keys' usage",
        "mod_llmgw_health.h": "the console shows the members' health",
        "mod_llmgw_manage.h": "the console's forms make the run-time "
                              "changes"},
}
TOP_FILE = "mod_llm_gateway.c"   # the module record: every part's register
INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]', re.M)


def includes(path):
    with open(path, encoding="utf-8") as f:
        return INCLUDE.findall(f.read())


def sources(d):
    return sorted(os.path.join(d, n) for n in os.listdir(d)
                  if n.endswith((".c", ".h")))


def part_of(name):
    """The part a file belongs to: llmgw_ollama_front.c -> llmgw_ollama
    (the stem before an _int.h, or the file's own stem)."""
    return re.sub(r"(_int)?\.(c|h)$", "", name)


def main():
    errors = []
    headers = {}                 # header name -> headers it includes
    for path in sources(CORE) + sources(GLUE):
        name = os.path.basename(path)
        glue = path.startswith(GLUE)
        for kind, inc in includes(path):
            base = os.path.basename(inc)
            if name.endswith(".h") and kind == '"':
                headers.setdefault(name, set()).add(base)
            if not glue:
                if HTTPD.match(base) or base.startswith("mod_llmgw"):
                    errors.append(f"{path}: includes {inc}: the core is "
                                  "httpd-free")
                elif kind == '"' and not base.startswith("llmgw_"):
                    errors.append(f"{path}: includes \"{inc}\", not a "
                                  "core header")
            elif kind == '"' and base.startswith("mod_llmgw"):
                own = name.rsplit(".", 1)[0] + ".h"
                if base in ("mod_llmgw.h", own, "mod_llmgw_version.h"):
                    continue
                if base not in ALLOWED.get(name, {}):
                    errors.append(f"{path}: includes {inc}, another part's "
                                  "header (parts share mod_llmgw.h; add it "
                                  "to ALLOWED with the reason if it must)")
            if base.endswith("_int.h"):
                stem = base[:-len("_int.h")]
                if not (name.startswith(stem + "_") or
                        name.startswith(stem + ".")):
                    errors.append(f"{path}: includes {inc}, private to "
                                  f"{stem}")
    for kind, inc in includes(os.path.join(TOP, TOP_FILE)):
        if kind == '"' and not re.match(r"mod_llmgw\w*\.h$", inc):
            errors.append(f"{TOP_FILE}: includes {inc}: the module record "
                          "includes the glue's headers only")

    # Cycles: a depth-first walk over header -> header.
    state = {}

    def visit(h, stack):
        state[h] = 1
        for nxt in sorted(headers.get(h, ())):
            if state.get(nxt) == 1:
                cyc = stack[stack.index(nxt):] + [nxt] if nxt in stack \
                    else [h, nxt]
                errors.append("include cycle: " + " -> ".join(cyc))
            elif nxt in headers and not state.get(nxt):
                visit(nxt, stack + [nxt])
        state[h] = 2
    for h in sorted(headers):
        if not state.get(h):
            visit(h, [h])

    if errors:
        print("layout check failed:")
        for e in errors:
            print("  " + e)
        return 1
    print(f"layout check: {len(sources(CORE))} core and "
          f"{len(sources(GLUE))} glue files, no httpd header in the core, "
          "no include cycle")
    return 0


if __name__ == "__main__":
    sys.exit(main())
