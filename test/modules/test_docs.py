# The README and docs/ are true: every ```apache block passes `apache2 -t`,
# the configuration a2enmod installs starts httpd, and the README's tour,
# run against build/demo, prints what the README shows.
#
# What the Markdown can say to this test, in an HTML comment on the line
# before a block (and nothing else is needed):
#   <!-- doctest: skip: REASON -->   the block is not run or configtested
#                                    (say why)
#   <!-- doctest: needs CMD -->      run only where CMD is installed
#   <!-- doctest: access-log -->     the block's lines are the last lines of
#                                    the demo's access log at that point
# An ```apache block is configtested alone, with what it names but does not
# define (balancers, routes) supplied, in the section its directive's
# Context row names (<LLMRoute>, <Location>) when it does not show one.
# In a ```sh block of the tour, a line "$ CMD" is a command whose output
# follows (up to the next "$ " line); a block without "$ " lines is all
# commands, each of which must succeed. In a shown output, a line "..."
# stands for any lines and "..." within a line for any text. The tour's
# port 8080 is replaced by the demo's.
import glob
import json
import os
import re
import shutil
import subprocess
import time
import warnings

import pytest

import llmgw_env as env
from test_demo import Demo

TOP = env.REPO
README = os.path.join(TOP, "README.md")
DOCS = sorted(glob.glob(os.path.join(TOP, "docs", "*.md")))
ALL_MD = [README] + DOCS + sorted(glob.glob(os.path.join(TOP, "test", "*", "README.md")))
CONFORMANCE = os.path.join(TOP, "test", "conformance")
# Debian's module files, which a2enmod reads (Depends lines).
MODS_AVAILABLE = "/etc/apache2/mods-available"
MARKER = re.compile(r"^<!--\s*doctest:\s*(.*?)\s*-->$")


class Block:
    def __init__(self, path, line, info, lines, marker):
        self.path, self.line, self.info = path, line, info
        self.lines, self.marker = lines, marker

    def __repr__(self):
        return f"{os.path.relpath(self.path, TOP)}:{self.line}"

    def text(self):
        return "".join(l + "\n" for l in self.lines)


def blocks(path):
    """The fenced blocks of a Markdown file, in order, each with the doctest
    marker of the line before it (or None)."""
    with open(path) as f:
        lines = f.read().splitlines()
    found, i, previous = [], 0, ""
    while i < len(lines):
        if lines[i].startswith("```"):
            start, info = i + 1, lines[i][3:].strip()
            m = MARKER.match(previous.strip())
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                i += 1
            found.append(Block(path, start, info, lines[start:i],
                               m.group(1) if m else None))
        elif lines[i].strip():
            previous = lines[i]
        i += 1
    return found


def section(path, heading):
    """The blocks under a ## heading, up to the next one."""
    with open(path) as f:
        text = f.read().splitlines()
    first = text.index(heading) + 1
    last = next((n for n in range(first, len(text)) if text[n].startswith("## ")),
                len(text))
    return [b for b in blocks(path) if first < b.line <= last]


def context(block):
    """The Context row of the directive section BLOCK is in, or ""."""
    with open(block.path) as f:
        lines = f.read().splitlines()[:block.line]
    for line in reversed(lines):
        m = re.match(r"^\| Context \| (.*) \|$", line)
        if m:
            return m.group(1)
        if line.startswith("## "):
            return ""
    return ""


def in_context(block):
    """BLOCK's text, in the section that the Context row of its directive
    says it goes in when the block does not show it: an example of a
    directive inside <LLMRoute> may be that directive alone."""
    text, where = block.text(), context(block)
    if where.startswith("inside `<LLMRoute>`") and not re.search(r"^\s*<LLMRoute", text, re.M):
        backend = "" if re.search(r"^\s*LLMBackend", text, re.M) else \
            "    LLMBackend balancer://doctest\n"
        return f'<LLMRoute "doctest-route">\n{backend}{text}</LLMRoute>\n'
    if where.startswith("directory") and not re.search(r"^\s*<(Location|Directory)", text, re.M):
        return f'<Location "/doctest">\n{text}</Location>\n'
    return text


def apache_blocks():
    return [b for path in [README] + DOCS for b in blocks(path) if b.info == "apache"]


# ---------------------------------------------------------------- fences

@pytest.mark.parametrize("path", ALL_MD, ids=lambda p: os.path.relpath(p, TOP))
def test_every_fence_is_closed(path):
    """A closing fence is ``` alone: "``` text" opens no block and closes
    none, so the rest of the file renders as code."""
    with open(path) as f:
        lines = f.read().splitlines()
    inside, bad = False, []
    for n, line in enumerate(lines, 1):
        if not line.startswith("```"):
            continue
        if not inside:
            inside = True
        elif line.strip() == "```":
            inside = False
        else:
            bad.append(f"{n}: {line}")
    assert not bad, "closing fences with text after them:\n" + "\n".join(bad)
    assert not inside, "a block is not closed"


# ---------------------------------------------------------------- configtest

# What `apt-get install apache2` enables on Debian (12): the modules a block
# may use without saying so (Require ip, AuthType Basic, SetEnvIf, ...).
DEBIAN_DEFAULT = ("mpm_event access_compat alias auth_basic authn_core authn_file "
                  "authz_core authz_host authz_user autoindex deflate dir env "
                  "filter mime negotiation reqtimeout setenvif status").split()


def block_modules():
    """LoadModule lines of a stock Debian apache2 after `a2enmod
    llm_gateway`; elsewhere those of the gateway's tests."""
    if not os.path.isdir(MODS_AVAILABLE):
        builtin = env.compiled_in_modules()
        return [f'LoadModule {name} "{env.MODULES_DIR}/{so}"'
                for name, so in env.STD_MODULES if so.replace(".so", ".c") not in builtin] + \
            [f'LoadModule llm_gateway_module "{env.module_path()}"']
    seen = list(DEBIAN_DEFAULT)
    lines = [l for name in DEBIAN_DEFAULT for l in debian_modules(name, seen)]
    return lines + modules_of(gateway_load(), seen)


def gateway_load():
    """conf/llm_gateway.load, naming the module the build made."""
    with open(os.path.join(TOP, "conf", "llm_gateway.load.in")) as f:
        return f.read().replace("@APACHE_LIBEXECDIR@/mod_llm_gateway.so", env.module_path())


def server_config(d, port, body):
    """A server around BODY: where it lives, how it logs."""
    return "\n".join([f'ServerRoot "{d}"', f"Listen {env.HOST}:{port}",
                      f"ServerName {env.HOST}", f'PidFile "{d}/httpd.pid"',
                      f'DefaultRuntimeDir "{d}"', f'ErrorLog "{d}/error.log"',
                      # Debian's envvars define it; the docs' CustomLog uses it.
                      f'Define APACHE_LOG_DIR "{d}"', body]) + "\n"


def configtest(d, text):
    conf = os.path.join(d, "httpd.conf")
    with open(conf, "w") as f:
        f.write(text)
    p = subprocess.run([env.APACHE2, "-t", "-d", d, "-f", conf], capture_output=True,
                       text=True, timeout=60, env=env.sanitizer_env(d))
    return p.returncode, (p.stdout + p.stderr).strip(), conf


def supplied(text):
    """What block TEXT names but does not define: each balancer (one member,
    where nothing listens) and each route (route=NAME), on a balancer of
    its own."""
    balancers = set(re.findall(r"balancer://([\w.-]+)", text)) - \
        set(re.findall(r'<Proxy\s+"?balancer://([\w.-]+)', text))
    routes = set(re.findall(r"\broute=([^\s,\"]+)", text)) - \
        set(re.findall(r'<LLMRoute\s+"?([^\s">]+)', text))
    if routes:
        balancers.add("doctest")
    dead = env.PORTS.dead(1)[0]
    return "".join(f'<Proxy "balancer://{b}">\n    BalancerMember '
                   f'"http://{env.HOST}:{dead}"\n</Proxy>\n' for b in sorted(balancers)) + \
        "".join(f'<LLMRoute "{r}">\n    LLMBackend balancer://doctest\n</LLMRoute>\n'
                for r in sorted(routes))


@pytest.mark.parametrize("block", apache_blocks(), ids=repr)
def test_apache_block_passes_configtest(block, tmp_path):
    """Each block alone, in a stock Debian apache2 after `a2enmod
    llm_gateway`, in its directive's context (in_context()), with what it
    names and does not show (supplied())."""
    if (block.marker or "").startswith("skip"):
        pytest.skip(f"{block}: {block.marker}")
    d = str(tmp_path)
    text = in_context(block)
    rc, out, conf = configtest(d, server_config(d, env.free_port(), "\n".join(
        block_modules()) + "\n" + supplied(text) + "# --- the block\n" + text))
    assert (rc, out) == (0, "Syntax OK"), f"{block}: {out}\n--- {conf}:\n{open(conf).read()}"


def debian_modules(name, seen):
    """Module NAME's LoadModule lines as a2enmod enables it, from Debian's
    mods-available; SEEN: the modules enabled so far (grows)."""
    with open(os.path.join(MODS_AVAILABLE, f"{name}.load")) as f:
        return modules_of(f.read(), seen)


def modules_of(load_text, seen):
    """The LoadModule lines of a .load file, after those of its Depends
    (recursively) that are not in SEEN yet."""
    lines = []
    m = re.search(r"^# Depends:(.*)$", load_text, re.M)
    for dep in (m.group(1).split() if m else []):
        if dep not in seen:
            seen.append(dep)
            lines += debian_modules(dep, seen)
    return lines + [l for l in load_text.splitlines() if l.startswith("LoadModule")]


def installed_config(d, port, uncomment):
    """httpd as Debian's apache2 with only mpm_event and authz_core, plus
    what `a2enmod llm_gateway` enables (conf/llm_gateway.load, with the
    module where the build put it, and its Depends) and conf/llm_gateway.conf;
    UNCOMMENT: with its example turned on (the commented lines that are
    configuration: those starting with <, LLM or BalancerMember)."""
    seen = ["mpm_event", "authz_core"]
    mods = debian_modules("mpm_event", seen) + debian_modules("authz_core", seen)
    mods += modules_of(gateway_load(), seen)
    with open(os.path.join(TOP, "conf", "llm_gateway.conf")) as f:
        conf = f.read()
    if uncomment:
        conf = re.sub(r"^(\s*)#\s+((?:<|LLM|BalancerMember).*)$", r"\1\2", conf, flags=re.M)
    return server_config(d, port, "\n".join(mods) + "\n" + conf)


@pytest.mark.skipif(not os.path.isdir(MODS_AVAILABLE), reason="not Debian's apache2 layout")
@pytest.mark.parametrize("uncomment", [False, True], ids=["as-shipped", "example-on"])
def test_installed_conf_passes_configtest(uncomment, tmp_path):
    d = str(tmp_path)
    rc, out, conf = configtest(d, installed_config(d, env.free_port(), uncomment))
    assert (rc, out) == (0, "Syntax OK"), f"{out}\n--- {conf}:\n{open(conf).read()}"
    if uncomment:
        assert re.search(r"^\s*<LLMRoute", open(conf).read(), re.M), "nothing uncommented"


@pytest.mark.skipif(not os.path.isdir(MODS_AVAILABLE), reason="not Debian's apache2 layout")
def test_installed_conf_example_serves(tmp_path):
    """configtest does not look up a balancer's method: only a start shows
    that a2enmod enabled all the example needs."""
    d = str(tmp_path)
    os.chmod(d, 0o755)
    port = env.free_port()
    conf = os.path.join(d, "httpd.conf")
    with open(conf, "w") as f:
        f.write(installed_config(d, port, True)
                + ("User www-data\nGroup www-data\n" if os.geteuid() == 0 else ""))
    proc = env.spawn([env.APACHE2, "-d", d, "-f", conf, "-DFOREGROUND"],
                     os.path.join(d, "apache2.out"), env.sanitizer_env(d))
    try:
        env.wait_port(port, proc, [os.path.join(d, "apache2.out"),
                                   os.path.join(d, "error.log")], "apache2")
        r = env.request(port, "GET", "/v1/models")
        assert r.status == 200, r.body
        assert r.json()["object"] == "list"
    finally:
        env.stop_process(proc)


# ---------------------------------------------------------------- the tour

def expected_regex(lines):
    parts = []
    for line in lines:
        if line.strip() == "...":
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            parts.append(".*".join(re.escape(p) for p in line.rstrip().split("..."))
                         + r"\n")
    return re.compile("".join(parts))


def matches(expected, actual):
    text = "".join(l.rstrip() + "\n" for l in actual.replace("\r", "").splitlines())
    return expected_regex(expected).fullmatch(text) is not None


def commands(block):
    """(command, expected output or None) of a sh block."""
    lines = block.lines
    shown = any(l.startswith("$ ") for l in lines)
    found, i = [], 0
    while i < len(lines):
        line = lines[i]
        if shown and not line.startswith("$ "):
            raise AssertionError(f"{block}: output before any command: {line}")
        cmd = [line[2:] if shown else line]
        while cmd[-1].endswith("\\") and i + 1 < len(lines):
            i += 1
            cmd.append(lines[i])
        i += 1
        out = None
        if shown:
            out = []
            while i < len(lines) and not lines[i].startswith("$ "):
                out.append(lines[i])
                i += 1
        if "\n".join(cmd).strip():
            found.append(("\n".join(cmd), out))
    return found


def check_answer(what, out):
    """What a command without shown output printed: JSON lines (plain or
    NDJSON) and SSE data that read, none an error, a stream ending with
    [DONE]."""
    data = []
    for line in out.replace("\r", "").splitlines():
        payload = line[len("data: "):] if line.startswith("data: ") else line
        if line.startswith("data: "):
            data.append(payload)
        if payload.startswith("{"):
            doc = json.loads(payload)
            assert "error" not in doc, f"{what}: {line}"
    if data:
        assert data[-1] == "[DONE]", f"{what}: stream ends with {data[-1]}"


class Tour:
    def __init__(self, demo):
        self.demo, self.port, self.skipped = demo, demo.port, []

    def local(self, text):
        return text.replace("127.0.0.1:8080", f"127.0.0.1:{self.port}")

    def run(self, cmd, checked):
        """Runs CMD with bash in the tree; CHECKED: no output is shown, so
        curl must get a 2xx (--fail-with-body) and the command succeed."""
        prelude = "set -o pipefail\n"
        if checked:
            prelude += 'curl() { command curl -sS --fail-with-body "$@"; }\n'
        p = subprocess.run(["bash", "-c", prelude + self.local(cmd)], cwd=TOP,
                           capture_output=True, text=True, timeout=120)
        if checked:
            assert p.returncode == 0, f"{cmd}\nexit {p.returncode}:\n{p.stdout}{p.stderr}"
        return p.stdout

    def sh(self, block):
        for cmd, out in commands(block):
            if cmd == "build/demo":
                # Started by the test, on its port: its output so far.
                assert matches([self.local(l) for l in out], self.demo.text()), \
                    f"{block}: README shows\n" + "\n".join(out) + \
                    "\nthe demo printed\n" + self.demo.text()
                continue
            # A second demo would take the port of a user's gateway, or wait.
            assert not re.match(r"\s*(\S+=\S*\s+)*build/demo\b", cmd), \
                f"{block}: another demo; mark the block (doctest: skip: ...)"
            actual = self.run(cmd, out is None)
            if out is None:
                check_answer(f"{block}: {cmd}", actual)
            else:
                want = [self.local(l) for l in out]
                assert matches(want, actual), (f"{block}: {cmd}\nREADME shows\n"
                                               + "\n".join(want) + "\nit printed\n" + actual)

    def access_log(self, block):
        log = os.path.join(self.demo.run_dir, "access.log")
        want = block.lines
        deadline = time.monotonic() + 5
        while True:
            with open(log) as f:
                last = f.read().splitlines()[-len(want):]
            if matches(want, "\n".join(last)) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert matches(want, "\n".join(last)), \
            f"{block}: README shows\n" + "\n".join(want) + "\nthe log has\n" + "\n".join(last)

    def js(self, block, tmp):
        """The openai client example, with the client test/conformance pins."""
        modules = os.path.join(CONFORMANCE, "node_modules")
        if not shutil.which("node") or not os.path.isdir(os.path.join(modules, "openai")):
            self.skipped.append(f"{block}: needs node and test/conformance/node_modules "
                                f"(npm ci there)")
            return
        d = os.path.join(tmp, "js")
        os.makedirs(d)
        os.symlink(modules, os.path.join(d, "node_modules"))
        with open(os.path.join(d, "tour.mjs"), "w") as f:
            f.write(self.local(block.text()))
        p = subprocess.run(["node", "tour.mjs"], cwd=d, capture_output=True, text=True,
                           timeout=120)
        assert p.returncode == 0 and p.stdout.strip(), f"{block}:\n{p.stdout}{p.stderr}"

    def block(self, block, tmp):
        marker = block.marker or ""
        if marker.startswith("skip"):
            self.skipped.append(f"{block}: {marker}")
        elif marker.startswith("needs ") and not shutil.which(marker.split()[1]):
            self.skipped.append(f"{block}: {marker}")
        elif marker == "access-log":
            self.access_log(block)
        elif block.info == "sh":
            self.sh(block)
        elif block.info == "js":
            self.js(block, tmp)
        else:
            raise AssertionError(f"{block}: the tour has a ```{block.info} block this "
                                 f"test cannot check; mark it")


def demo_suggestions(text):
    """The commands the demo prints under "try:", continuation lines joined."""
    lines = text.split("\ntry:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    found = []
    for line in (l.strip() for l in lines):
        if found and found[-1].endswith("\\"):
            found[-1] += "\n" + line
        elif line and not line.startswith("#"):
            found.append(line)
    return found


def conformance_demo_models():
    """The models test/conformance/README.md says the demo serves."""
    with open(os.path.join(CONFORMANCE, "README.md")) as f:
        text = " ".join(f.read().split())
    m = re.search(r"`build/demo` serves ((?:`[^`]+`(?:, | and )?)+)", text)
    assert m, "test/conformance/README.md: no sentence '`build/demo` serves `...`'"
    return re.findall(r"`([^`]+)`", m.group(1))


def test_readme_tour_against_the_demo(tmp_path):
    tour_blocks = section(README, "## A 5-minute tour")
    assert tour_blocks and tour_blocks[0].lines[0] == "$ build/demo"
    demo = Demo()
    tour = Tour(demo)
    try:
        demo.wait_ready()
        for block in tour_blocks:
            tour.block(block, str(tmp_path))
        # What the demo itself suggests is true as well.
        suggested = demo_suggestions(demo.text())
        assert len(suggested) >= 4, demo.text()
        for cmd in suggested:
            check_answer(cmd, tour.run(cmd, True))
        served = [m["id"] for m in env.request(demo.port, "GET", "/v1/models").json()["data"]]
        assert conformance_demo_models() == served
    finally:
        demo.proc.terminate()
        demo.finish()
        demo.kill_all()
    for s in tour.skipped:
        warnings.warn(f"not run: {s}")
