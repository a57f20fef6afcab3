#!/usr/bin/env python3
"""build/check_directives.py: every directive in the module's table
(src/httpd/mod_llmgw_config.c, llmgw_cmds) has its section in
docs/directives.md ("## `Name`" or "## `<Name>`"), and every such section
names a directive in the table. Exits 1 naming what differs."""
import os
import re
import sys

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLE = os.path.join(TOP, "src", "httpd", "mod_llmgw_config.c")
DOCS = os.path.join(TOP, "docs", "directives.md")


def main():
    with open(TABLE, encoding="utf-8") as f:
        src = f.read()
    m = re.search(r"const command_rec llmgw_cmds\[\] = \{(.*?)\n\};", src,
                  re.S)
    if not m:
        print(f"directives check failed: no llmgw_cmds table in {TABLE}")
        return 1
    table = set(re.findall(r'AP_INIT_\w+\(\s*"<?(\w+)"', m.group(1)))
    with open(DOCS, encoding="utf-8") as f:
        docs = set(re.findall(r"^## `<?(LLM\w+)>?`", f.read(), re.M))
    missing, stale = sorted(table - docs), sorted(docs - table)
    if missing or stale:
        print("directives check failed:")
        for d in missing:
            print(f"  {d}: in the table, no section in docs/directives.md")
        for d in stale:
            print(f"  {d}: a section in docs/directives.md, not in the "
                  "table")
        return 1
    print(f"directives check: {len(table)} directives, each documented")
    return 0


if __name__ == "__main__":
    sys.exit(main())
