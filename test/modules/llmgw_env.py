# Test harness for mod_llm_gateway: starts/stops the emulated backends and a real
# apache2, writes its config, and offers small HTTP/SSE/access-log helpers.
import atexit
import http.client
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
APACHE2 = os.environ.get("APACHE2", "/usr/sbin/apache2")
MODULES_DIR = os.environ.get("APACHE2_MODULES", "/usr/lib/apache2/modules")
HOST = "127.0.0.1"

# Order matters: mod_proxy must precede its providers and our module.
STD_MODULES = [
    ("mpm_event_module", "mod_mpm_event.so"),
    ("authz_core_module", "mod_authz_core.so"),
    ("unixd_module", "mod_unixd.so"),
    ("setenvif_module", "mod_setenvif.so"),
    ("proxy_module", "mod_proxy.so"),
    ("proxy_http_module", "mod_proxy_http.so"),
    ("slotmem_shm_module", "mod_slotmem_shm.so"),
    ("proxy_balancer_module", "mod_proxy_balancer.so"),
    ("lbmethod_byrequests_module", "mod_lbmethod_byrequests.so"),
    ("status_module", "mod_status.so"),
]

def _module_names(prefix):
    """The module's names for the tests, from where it defines them once
    (src/httpd/mod_llmgw.h): #define LLMGW_<PREFIX><NAME> "value", in order."""
    path = os.path.join(REPO, "src", "httpd", "mod_llmgw.h")
    with open(path) as f:
        return re.findall(r'^#define LLMGW_%s\w* "([^"]+)"' % prefix, f.read(),
                          re.M)


# The request notes (llm-model, ...), as the module names them.
NOTES = _module_names("NOTE_")
# The variable that keeps a request out of the cache (llm-no-cache).
ENV_NO_CACHE = _module_names("ENV_NO_CACHE")[0]
LOG_FIELDS = (["request", "status"]
              + [n[len("llm-"):].replace("-", "_") for n in NOTES]
              + ["pid", "remote_port", "keepalives"])
# After the gateway's notes: the child that served the request (%P), the
# client's port (%{remote}p) and the requests served before it on the same
# connection (%k), so tests can see which process and which TCP connection
# served what.
LOG_FORMAT = "|".join(["%r", "%>s"] + ["%{" + n + "}n" for n in NOTES]
                      + ["%P", "%{remote}p", "%k"])

# Lines in the error log that mean a child died under us.
CRASH_MARKERS = ("exit signal", "Segmentation fault", "AH00052", "AH00060")


# LLMGW_ASAN=1: every apache2 runs the module built with gcc's ASan+UBSan
# (make -f build/sanitize.mk asan-module), the runtime preloaded; findings
# are logged in <server dir>/san/ and fail the gateway's teardown.
ASAN = os.environ.get("LLMGW_ASAN") == "1"
ASAN_MODULE = os.path.join(REPO, "build-san", "module", "mod_llm_gateway.so")


def module_path():
    default = ASAN_MODULE if ASAN else os.path.join(REPO, ".libs", "mod_llm_gateway.so")
    return os.environ.get("LLMGW_MODULE", default)


_asan_runtime = None


def sanitizer_env(d):
    """The environment for an apache2 with server dir D: as it is, or in
    ASan mode with the runtime preloaded (it must come first) and the
    findings logged under D/san, the child going on after one so that a
    finding is a log line, not a hang or a lost request."""
    if not ASAN:
        return None
    global _asan_runtime
    if _asan_runtime is None:
        _asan_runtime = subprocess.run(["gcc", "-print-file-name=libasan.so"],
                                       capture_output=True, text=True,
                                       timeout=30).stdout.strip()
    logdir = os.path.join(d, "san")
    os.makedirs(logdir, exist_ok=True)
    os.chmod(logdir, 0o777)     # children run as www-data when root starts them
    e = dict(os.environ)
    e["LD_PRELOAD"] = _asan_runtime
    # detect_leaks=0: httpd exits without freeing its pools.
    e["ASAN_OPTIONS"] = (f"detect_leaks=0:log_path={logdir}/asan:abort_on_error=0:"
                         f"halt_on_error=0")
    e["UBSAN_OPTIONS"] = f"print_stacktrace=1:log_path={logdir}/ubsan:halt_on_error=0"
    return e


def sanitizer_findings(d):
    """The sanitizer reports apache2 with server dir D wrote, as text: ASan's
    in D/san, UBSan's (beside ASan it writes to stderr) in the error log."""
    if not ASAN:
        return ""
    logdir = os.path.join(d, "san")
    try:
        names = sorted(n for n in os.listdir(logdir) if n.startswith(("asan.", "ubsan.")))
    except FileNotFoundError:
        names = []
    found = "".join(f"--- {os.path.join(logdir, n)}:\n{tail(os.path.join(logdir, n), 200)}\n"
                    for n in names)
    try:
        with open(os.path.join(d, "error.log"), errors="replace") as f:
            ub = [l for l in f if "runtime error:" in l]
    except FileNotFoundError:
        ub = []
    if ub:
        found += f"--- {os.path.join(d, 'error.log')}:\n" + "".join(ub[:50])
    return found


# Children httpd starts with: a test that counts them waits for all.
START_SERVERS = 2


def mockllm_path():
    return os.environ.get("MOCKLLM", os.path.join(REPO, "test", "mockllm", "mockllm"))


class PortAllocator:
    """Loopback ports for one test session, never one twice. Ports are
    chosen while holding a bound socket on each, so one call cannot return
    a port twice, and a port handed out earlier (even one whose server is
    stopped for a while) is never handed out again. Dead ports stay bound
    for the whole session (bound, not listening: a connect is refused), so
    neither a later call nor another program on the machine can start
    listening there."""

    def __init__(self):
        self._given = set()
        self._dead = []

    def _bind(self, n):
        socks, chosen, spare = [], [], []
        try:
            while len(chosen) < n:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.bind((HOST, 0))
                port = s.getsockname()[1]
                # Every socket stays open until we are done: while it is
                # bound, the kernel cannot offer its port again.
                if port in self._given:
                    spare.append(s)
                else:
                    socks.append(s)
                    chosen.append(port)
            self._given.update(chosen)
            return socks, chosen
        except BaseException:
            for s in socks:
                s.close()
            raise
        finally:
            for s in spare:
                s.close()

    def take(self, n=1):
        """N distinct ports for servers about to bind them."""
        socks, chosen = self._bind(n)
        for s in socks:
            s.close()
        return chosen

    def dead(self, n=1):
        """N distinct ports where nothing answers, for the session."""
        socks, chosen = self._bind(n)
        self._dead += socks
        return chosen

    def is_dead(self, port):
        return any(s.getsockname()[1] == port for s in self._dead)


PORTS = PortAllocator()


def free_port():
    return PORTS.take(1)[0]


def tail(path, n=40):
    try:
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
        return "\n".join(lines[-n:])
    except OSError as e:
        return f"<cannot read {path}: {e}>"


def wait_port(port, proc, logfiles, what, timeout=10.0):
    """Wait until PORT accepts connections; fail with the log tails if PROC died."""
    if isinstance(logfiles, str):
        logfiles = [logfiles]

    def logs():
        return "\n".join(f"--- {f}:\n{tail(f)}" for f in logfiles)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening on "
                               f"{port}\n{logs()}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} not listening on {port} after {timeout}s\n{logs()}")


_started = []


def _stop_all_at_exit():
    # Safety net for interrupted runs whose fixture teardown never happened.
    for proc in _started:
        if proc.poll() is None:
            proc.kill()


atexit.register(_stop_all_at_exit)


def spawn(args, logfile, env=None):
    with open(logfile, "ab") as logf:
        proc = subprocess.Popen(args, stdout=logf, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env)
    _started.append(proc)
    return proc


def kill_pids(pids):
    """SIGKILL each of pids that is still there."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def stop_process(proc, timeout=10.0):
    """SIGTERM, then SIGKILL after TIMEOUT; returns the exit code."""
    if proc is None or proc.poll() is not None:
        return None if proc is None else proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(5)


def child_pids(ppid):
    return [pid for pid, fields in proc_stats() if int(fields[1]) == ppid]


def proc_stats():
    """(pid, fields) of each live process: the fields of /proc/PID/stat after
    the command name (which may hold spaces and parens: those after the last
    ')' are fixed). fields[0] is the state, [1] the parent, [3] the session."""
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        yield int(d), stat.rsplit(")", 1)[1].split()


# ---------------------------------------------------------------- backends

class MockBackend:
    def __init__(self, binary, workdir, name, port=None, extra_args=()):
        self.binary = binary
        self.name = name
        self.port = port or free_port()
        self.log = os.path.join(workdir, f"mock-{name}.log")
        self.args = [binary, "--host", HOST, "--port", str(self.port), "--name", name,
                     *extra_args]
        self.proc = None

    def start(self):
        self.proc = spawn(self.args, self.log)
        wait_port(self.port, self.proc, self.log, f"mockllm {self.name}")
        return self

    def stop(self):
        return stop_process(self.proc)

    def _call(self, method, path):
        r = request(self.port, method, path, timeout=10)
        assert r.status == 200, f"mock {self.name} {method} {path}: {r.status} {r.body[:200]!r}"
        return r.json()

    def stats(self):
        return self._call("GET", "/mock/stats")

    def reset(self):
        return self._call("POST", "/mock/reset")

    def last(self):
        """What the gateway sent upstream for the last generation request."""
        return self._call("GET", "/mock/last")

    def last_body(self):
        return json.loads(self.last()["body"])


class Memcached:
    """A private memcached on a free loopback port, stoppable and restartable
    on the same port (to test the cache surviving an outage)."""

    def __init__(self, workdir, name="memcached", port=None):
        self.port = port or free_port()
        self.log = os.path.join(workdir, f"{name}.log")
        user = ["-u", "root"] if os.geteuid() == 0 else []
        self.args = ["memcached", "-l", HOST, "-p", str(self.port), "-m", "64",
                     "-U", "0", *user]
        self.proc = None

    def start(self):
        self.proc = spawn(self.args, self.log)
        wait_port(self.port, self.proc, self.log, "memcached")
        return self

    def stop(self):
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


# ---------------------------------------------------------------- gateway

def gateway_config(d, port, ports, module, extra=""):
    """The gateway config under test; `ports` maps be_a, be_b, slow, dead1, dead2."""
    lines = [f'ServerRoot "{d}"', f"Listen {HOST}:{port}", f"ServerName {HOST}",
             f'PidFile "{d}/run/httpd.pid"', f'DefaultRuntimeDir "{d}/run"',
             f'ErrorLog "{d}/error.log"',
             f'LogFormat "{LOG_FORMAT}" llm', f'CustomLog "{d}/access.log" llm',
             f'DocumentRoot "{d}/htdocs"']
    # Debian compiles some modules in (e.g. unixd); loading those again is an error.
    builtin = compiled_in_modules()
    for name, so in STD_MODULES:
        if so.replace(".so", ".c") not in builtin:
            lines.append(f'LoadModule {name} "{MODULES_DIR}/{so}"')
    if module:
        lines.append(f'LoadModule llm_gateway_module "{module}"')
    # Per-module levels resolve at parse time: only after the LoadModule lines.
    lines.append("LogLevel warn llm_gateway:debug proxy:warn" if module else "LogLevel warn")
    if os.geteuid() == 0:
        # Root starts children as www-data: they must still reach the tmp dir.
        lines += ["User www-data", "Group www-data"]
    lines += f"""\
StartServers {START_SERVERS}
ServerLimit 4
ThreadsPerChild 16
ThreadLimit 16
MaxRequestWorkers 64
MinSpareThreads 16
MaxSpareThreads 64
Timeout 30
KeepAlive On
<Location "/server-status">
    SetHandler server-status
</Location>
""".splitlines()
    lines += f"""\
# retry=1: a member that dropped a connection (fault tests) is back in a
# second, not mod_proxy's default 60 s, so later tests see both members.
<Proxy "balancer://be">
    BalancerMember "http://{HOST}:{ports['be_a']}" retry=1
    BalancerMember "http://{HOST}:{ports['be_b']}" retry=1
</Proxy>
# Nothing listens on these ports.
<Proxy "balancer://dead">
    BalancerMember "http://{HOST}:{ports['dead1']}"
    BalancerMember "http://{HOST}:{ports['dead2']}"
</Proxy>
<Proxy "balancer://slow">
    BalancerMember "http://{HOST}:{ports['slow']}" timeout=2
</Proxy>
# Mock a again, for faults that put a member in error (mod_proxy takes a
# member that dropped a connection out for retry= seconds).
<Proxy "balancer://flaky">
    BalancerMember "http://{HOST}:{ports['be_a']}" retry=1
</Proxy>
<Proxy "balancer://llama">
    BalancerMember "http://{HOST}:{ports['llama']}" retry=1
</Proxy>
<Proxy "balancer://disc">
    BalancerMember "http://{HOST}:{ports['disc']}"
</Proxy>
<Proxy "balancer://disc2">
    BalancerMember "http://{HOST}:{ports['disc2']}"
</Proxy>
# The same mocks, spoken to in Ollama's native dialect.
<Proxy "balancer://ob">
    BalancerMember "http://{HOST}:{ports['be_a']}" retry=1
    BalancerMember "http://{HOST}:{ports['be_b']}" retry=1
</Proxy>
""".splitlines()
    if module:
        lines += """\
LLMMaxRequestBody 1048576
<LLMRoute "mock-small" "small">
    LLMBackend balancer://be dialect=openai
</LLMRoute>
<LLMRoute "mock-large">
    LLMBackend balancer://be
</LLMRoute>
<LLMRoute "gpt-*">
    LLMBackend balancer://be
    LLMUpstreamModel mock-large
</LLMRoute>
<LLMRoute "dead-model">
    LLMBackend balancer://dead
</LLMRoute>
<LLMRoute "slow-model">
    LLMBackend balancer://slow
</LLMRoute>
<LLMRoute "flaky-*">
    LLMBackend balancer://flaky
    LLMUpstreamModel mock-small
</LLMRoute>
<LLMRoute "ollama-small">
    LLMBackend balancer://ob dialect=ollama
    LLMUpstreamModel mock-small
</LLMRoute>
<LLMRoute "llamacpp-small">
    LLMBackend balancer://llama dialect=llamacpp
    LLMUpstreamModel mock-small
</LLMRoute>
<LLMRoute "disc-*">
    LLMBackend balancer://disc
    LLMDiscover on interval=1
</LLMRoute>
<LLMRoute "ollama-g*">
    LLMBackend balancer://disc2 dialect=ollama
    LLMDiscover on
</LLMRoute>
<Location "/v1">
    LLMApi openai
</Location>
<Location "/v1/off">
    LLMApi off
</Location>
<Location "/api">
    LLMApi ollama
</Location>
# The server's root only, which the ollama CLI asks first.
<LocationMatch "^/$">
    LLMApi ollama
</LocationMatch>
""".splitlines()
    if extra:
        lines += extra.rstrip("\n").splitlines()
    return "\n".join(lines) + "\n"


_builtin = None


def compiled_in_modules():
    global _builtin
    if _builtin is None:
        out = subprocess.run([APACHE2, "-l"], capture_output=True, text=True, timeout=30).stdout
        _builtin = {l.strip() for l in out.splitlines()[1:] if l.strip()}
    return _builtin


def make_server_dir(parent, name):
    d = os.path.join(parent, name)
    for sub in ("", "run", "htdocs"):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
        os.chmod(os.path.join(d, sub), 0o755)
    return d


@dataclass
class LogLine:
    raw: str
    fields: dict = field(default_factory=dict)

    def __getattr__(self, name):
        try:
            return self.__dict__["fields"][name]
        except KeyError:
            raise AttributeError(name)


def parse_log_line(line):
    parts = line.rstrip("\n").split("|")
    if len(parts) != len(LOG_FIELDS):
        return LogLine(line, {"request": line})
    return LogLine(line, dict(zip(LOG_FIELDS, parts)))


class Gateway:
    def __init__(self, workdir, ports, module, name="gw", extra=""):
        self.dir = make_server_dir(workdir, name)
        self.port = free_port()
        self.ports = ports
        self.module = module
        self.conf = os.path.join(self.dir, "httpd.conf")
        self.error_log = os.path.join(self.dir, "error.log")
        self.access_log = os.path.join(self.dir, "access.log")
        self.stdout_log = os.path.join(self.dir, "apache2.out")
        with open(self.conf, "w") as f:
            f.write(gateway_config(self.dir, self.port, ports, module, extra))
        with open(os.path.join(self.dir, "htdocs", "index.html"), "w") as f:
            f.write("<html><body>plain</body></html>\n")
        self.proc = None

    def cmd(self, *args):
        return [APACHE2, "-d", self.dir, "-f", self.conf, *args]

    def start(self):
        self.proc = spawn(self.cmd("-DFOREGROUND"), self.stdout_log,
                          sanitizer_env(self.dir))
        try:
            wait_port(self.port, self.proc, [self.stdout_log, self.error_log], "apache2")
            # The parent binds before children accept: wait for a real answer.
            deadline = time.monotonic() + 10
            while True:
                try:
                    # Serving, with every child it starts with: a test
                    # that sees the children change then knows why.
                    if (request(self.port, "GET", "/server-status?auto",
                                timeout=2).status == 200
                            and len(self.children()) >= START_SERVERS):
                        break
                except OSError:
                    pass
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"apache2 not serving on {self.port}\n"
                                       f"--- {self.stdout_log}:\n{tail(self.stdout_log)}\n"
                                       f"--- {self.error_log}:\n{tail(self.error_log)}")
                time.sleep(0.1)
        except Exception:
            self.stop()
            raise
        return self

    def stop(self):
        if self.proc is None:
            return None
        kids = child_pids(self.proc.pid)
        rc = stop_process(self.proc)
        # A SIGKILLed parent leaves its children behind; they are ours to reap.
        kill_pids(kids)
        return rc

    def kill_all(self):
        """kill -9 of the parent and every child, as a crash of the whole
        server would leave things; start() brings it back."""
        kids = self.children()
        os.kill(self.proc.pid, signal.SIGKILL)
        kill_pids(kids)
        self.proc.wait(10)

    def graceful_restart(self):
        """SIGUSR1, then wait (20 s at most) until the error log says the
        new generation is serving."""
        with open(self.error_log) as f:
            resumed = f.read().count("resuming normal operations")
        os.kill(self.proc.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 20
        while True:
            with open(self.error_log) as f:
                if f.read().count("resuming normal operations") > resumed:
                    break
            assert time.monotonic() < deadline, tail(self.error_log)
            time.sleep(0.1)

    def children(self):
        return child_pids(self.proc.pid)

    def sanitizer_findings(self):
        return sanitizer_findings(self.dir)

    def crash_lines(self):
        try:
            with open(self.error_log, errors="replace") as f:
                return [l for l in f if any(m in l for m in CRASH_MARKERS)]
        except FileNotFoundError:
            return []

    # -- access log

    def log_lines(self):
        try:
            with open(self.access_log, errors="replace") as f:
                return [parse_log_line(l) for l in f if l.strip()]
        except FileNotFoundError:
            return []

    def log_mark(self):
        return len(self.log_lines())

    def wait_log(self, pred, since=0, count=1, timeout=5.0):
        """Lines after mark SINCE matching PRED; waits until COUNT of them exist,
        because httpd writes the line after the client already has the response."""
        deadline = time.monotonic() + timeout
        while True:
            found = [l for l in self.log_lines()[since:] if pred(l)]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def wait_log_one(self, pred, since=0, timeout=5.0):
        found = self.wait_log(pred, since, 1, timeout)
        assert found, (f"no access log line after #{since} matched; last lines:\n"
                       + "\n".join(l.raw for l in self.log_lines()[-5:]))
        return found[-1]

    # -- HTTP

    def request(self, method, path, body=None, headers=None, timeout=30):
        return request(self.port, method, path, body, headers, timeout)

    def post(self, path, body, headers=None, timeout=30):
        return self.request("POST", path, body, headers, timeout)

    def get(self, path, headers=None, timeout=30):
        return self.request("GET", path, None, headers, timeout)

    def stream(self, path, body, headers=None, timeout=30, on_event=None):
        return stream(self.port, path, body, headers, timeout, on_event)

    def connect(self, timeout=30):
        return RawConnection(self.port, timeout)

    def curl(self, *args, timeout=60):
        return curl(self.port, *args, timeout=timeout)

    def url(self, path):
        return f"http://{HOST}:{self.port}{path}"


def serve_gateway(request, workdir, ports, name, extra):
    """A pytest fixture's body: yields a started Gateway; at teardown stops it,
    fails on crashed children or (LLMGW_ASAN=1) sanitizer findings, and
    then asks the session to keep the work dir."""
    g = Gateway(workdir, ports, module_path(), name=name, extra=extra)
    g.start()
    try:
        yield g
    finally:
        crashed = g.crash_lines()
        g.stop()
    # After the stop: children write their reports until they exit.
    found = g.sanitizer_findings()
    # Fails the teardown of the last test, which testsfailed does not count yet.
    request.config._llmgw_keep = (getattr(request.config, "_llmgw_keep", False)
                                  or bool(crashed or found))
    assert not crashed, "apache2 children crashed:\n" + "".join(crashed)
    assert not found, "sanitizer findings (LLMGW_ASAN=1):\n" + found


def config_test(workdir, name, ports, module, extra=""):
    """`apache2 -t` on the gateway config with EXTRA appended.
    Returns (exit code, combined output, config path, first and last line of EXTRA)."""
    d = make_server_dir(workdir, name)
    conf = os.path.join(d, "httpd.conf")
    text = gateway_config(d, free_port(), ports, module, extra)
    with open(conf, "w") as f:
        f.write(text)
    total = text.count("\n")
    n_extra = extra.rstrip("\n").count("\n") + 1 if extra else 0
    first = total - n_extra + 1
    p = subprocess.run([APACHE2, "-t", "-d", d, "-f", conf], capture_output=True, text=True,
                       timeout=60, env=sanitizer_env(d))
    found = sanitizer_findings(d)
    if ASAN:
        found += "".join(l + "\n" for l in p.stderr.splitlines() if "runtime error:" in l)
    assert not found, "sanitizer findings in apache2 -t:\n" + found
    return p.returncode, p.stdout + p.stderr, conf, first, total


# ---------------------------------------------------------------- HTTP clients

@dataclass
class Response:
    status: int
    headers: object
    body: bytes
    elapsed: float

    def header(self, name, default=None):
        return self.headers.get(name, default)

    def json(self):
        return json.loads(self.body)

    @property
    def content_type(self):
        return (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()


def _encode(body):
    if body is None or isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body).encode()


def request(port, method, path, body=None, headers=None, timeout=30):
    """One request on a fresh connection: mod_proxy treats failures on reused
    client connections differently (closes instead of answering)."""
    data = _encode(body)
    hdrs = {"Connection": "close"}
    if data is not None:
        hdrs["Content-Type"] = "application/json"
    hdrs.update(headers or {})
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    t0 = time.monotonic()
    try:
        try:
            conn.request(method, path, body=data, headers=hdrs)
        except (BrokenPipeError, ConnectionResetError):
            # The server may answer (e.g. 413) before reading all we send.
            pass
        resp = conn.getresponse()
        payload = resp.read()
        return Response(resp.status, resp.headers, payload, time.monotonic() - t0)
    finally:
        conn.close()


@dataclass
class Stream:
    status: int
    headers: object
    events: list      # (seconds since request sent, data string) per SSE event
    raw: bytes

    @property
    def content_type(self):
        return (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()

    def data(self):
        return [d for _, d in self.events]

    def chunks(self):
        """Decoded JSON events, without the [DONE] terminator."""
        return [json.loads(d) for d in self.data() if d != "[DONE]"]

    def content(self):
        out = []
        for c in self.chunks():
            for ch in c.get("choices") or []:
                delta = ch.get("delta") or {}
                out.append(delta.get("content") or ch.get("text") or "")
        return "".join(out)

    def content_times(self):
        times = []
        for t, d in self.events:
            if d == "[DONE]":
                continue
            for ch in json.loads(d).get("choices") or []:
                if (ch.get("delta") or {}).get("content") or ch.get("text"):
                    times.append(t)
        return times


def parse_sse(raw):
    """SSE data payloads of complete events (multi-line data joined by \\n)."""
    events = []
    for block in raw.replace(b"\r\n", b"\n").split(b"\n\n"):
        datas = [l[5:].lstrip(b" ") for l in block.split(b"\n") if l.startswith(b"data:")]
        if datas:
            events.append(b"\n".join(datas).decode())
    return events


def stream(port, path, body, headers=None, timeout=30, on_event=None):
    """POST and read the SSE answer in small reads, timestamping each event
    as it becomes complete, to see whether tokens really trickle in.
    ON_EVENT(seconds, data), if given, is called as each event arrives."""
    hdrs = {"Content-Type": "application/json", "Accept": "text/event-stream",
            "Connection": "close"}
    hdrs.update(headers or {})
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    t0 = time.monotonic()
    try:
        conn.request("POST", path, body=_encode(body), headers=hdrs)
        resp = conn.getresponse()
        raw, buf, events = b"", b"", []
        while True:
            piece = resp.read1(4096)
            if not piece:
                break
            now = time.monotonic() - t0
            raw += piece
            buf += piece.replace(b"\r\n", b"\n")
            while b"\n\n" in buf:
                block, buf = buf.split(b"\n\n", 1)
                for d in parse_sse(block + b"\n\n"):
                    events.append((now, d))
                    if on_event:
                        on_event(now, d)
        return Stream(resp.status, resp.headers, events, raw)
    finally:
        conn.close()


class RawConnection:
    """Several requests on one TCP connection, HTTP/1.1 read by hand.
    http.client silently opens a new connection when the server closed the
    last one, which hides a server that breaks keep-alive; this one raises
    instead, so a test knows every answer came on the same connection."""

    def __init__(self, port, timeout=30):
        self.timeout = timeout
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.local_port = self.sock.getsockname()[1]
        self.served = 0
        self._buf = b""

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _fill(self, what):
        piece = self.sock.recv(65536)
        if not piece:
            raise ConnectionError(f"server closed the connection after {self.served} "
                                  f"answer(s), in the middle of {what}")
        self._buf += piece

    def _line(self):
        while b"\r\n" not in self._buf:
            self._fill("a header")
        line, self._buf = self._buf.split(b"\r\n", 1)
        return line

    def _exactly(self, n):
        while len(self._buf) < n:
            self._fill("a body")
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def _chunked(self):
        body = b""
        while True:
            size = int(self._line().split(b";")[0], 16)
            if size == 0:
                while self._line():         # trailers, up to the empty line
                    pass
                return body
            body += self._exactly(size)
            assert self._exactly(2) == b"\r\n", "chunk not followed by CRLF"

    def request(self, method, path, body=None, headers=None):
        """Sends one request and reads its whole answer; ConnectionError if
        the server closed the connection instead of answering."""
        data = _encode(body)
        hdrs = {"Host": f"{HOST}"}
        if data is not None:
            hdrs["Content-Type"] = "application/json"
            hdrs["Content-Length"] = str(len(data))
        hdrs.update(headers or {})
        head = f"{method} {path} HTTP/1.1\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
        t0 = time.monotonic()
        self.sock.sendall(head.encode() + (data or b""))
        while True:
            status_line = self._line()
            lines = []
            while True:
                line = self._line()
                if not line:
                    break
                lines.append(line)
            status = int(status_line.split()[1])
            if status >= 200:
                break                       # else 100 Continue: the answer follows
        msg = http.client.parse_headers(io.BytesIO(b"\r\n".join(lines) + b"\r\n\r\n"))
        if method == "HEAD" or status in (204, 304):
            payload = b""
        elif "chunked" in (msg.get("Transfer-Encoding") or "").lower():
            payload = self._chunked()
        elif msg.get("Content-Length") is not None:
            payload = self._exactly(int(msg["Content-Length"]))
        else:
            raise AssertionError(f"{method} {path}: {status} without a length "
                                 f"(the body ends with the connection)")
        self.served += 1
        return Response(status, msg, payload, time.monotonic() - t0)

    def is_open(self):
        """Whether the server still holds the connection open: no EOF or
        reset waiting to be read, and no bytes it sent unasked."""
        self.sock.setblocking(False)
        try:
            self.sock.recv(1, socket.MSG_PEEK)
            return False                    # EOF, or bytes nobody asked for
        except BlockingIOError:
            return not self._buf
        except OSError:
            return False
        finally:
            self.sock.settimeout(self.timeout)


@dataclass
class CurlResult:
    rc: int
    status: int
    headers: dict
    body: bytes
    stderr: str


def curl(port, *args, timeout=60):
    """Run curl against the gateway; ARGS end with the path. Headers are dumped
    separately so the body is exactly what curl received."""
    *opts, path = args
    with tempfile.NamedTemporaryFile() as hf:
        p = subprocess.run(["curl", "-sS", "-N", "--max-time", str(timeout - 5),
                            "-D", hf.name, *opts, f"http://{HOST}:{port}{path}"],
                           capture_output=True, timeout=timeout)
        head = open(hf.name, "rb").read().decode("latin-1")
    status, headers = 0, {}
    # With 100-continue curl dumps several header blocks: keep the final one.
    for block in head.replace("\r\n", "\n").strip().split("\n\n"):
        lines = block.split("\n")
        if lines and lines[0].startswith("HTTP/"):
            status = int(lines[0].split()[1])
            headers = {}
            for l in lines[1:]:
                if ":" in l:
                    k, v = l.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
    return CurlResult(p.returncode, status, headers, p.stdout, p.stderr.decode(errors="replace"))


# ---------------------------------------------------------------- assertions

def assert_openai_error(r, status, type_=None, code=None, param=...):
    """A gateway error as a user's OpenAI client sees it: JSON, not an HTML page."""
    body = r.body.decode(errors="replace")
    assert r.status == status, f"expected {status}, got {r.status}: {body[:300]}"
    assert r.content_type == "application/json", f"Content-Type {r.content_type}: {body[:300]}"
    doc = json.loads(r.body)
    err = doc.get("error")
    assert isinstance(err, dict), doc
    assert set(err) >= {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"], err
    assert isinstance(err["type"], str), err
    assert err["param"] is None or isinstance(err["param"], str), err
    assert err["code"] is None or isinstance(err["code"], str), err
    if type_ is not None:
        assert err["type"] == type_, err
    if code is not None:
        assert err["code"] == code, err
    if param is not ...:
        assert err["param"] == param, err
    return err


def new_workdir():
    d = tempfile.mkdtemp(prefix="llmgw-test-", dir="/tmp")
    os.chmod(d, 0o755)
    return d


def remove_workdir(d):
    shutil.rmtree(d, ignore_errors=True)


# The emulated backend's generated text (test/mockllm/README.md, "Reference
# implementation of the text"): what a given request must be answered with.
VOCAB = ("the of and to in is that for it as with on this be are by from at "
         "an or model token data system gateway request response stream "
         "server client value time first next result simple quick large "
         "small fast mock test state query cache route queue limit batch "
         "input output layer vector text word line node point signal world "
         "light river stone cloud").split()
M64 = (1 << 64) - 1


def _fnv1a(data, h=0xcbf29ce484222325):
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & M64
    return h


def _jc(x):
    return json.dumps(x, separators=(',', ':'), ensure_ascii=False).replace('/', '\\/')


def mock_text(model, messages_or_prompt, n, seed=None):
    """The N words mockllm answers MODEL (the upstream name) with, for these
    messages (chat) or this prompt (completions)."""
    h = _fnv1a((model + "\n" + _jc(messages_or_prompt) + "\n"
                + ("" if seed is None else _jc(seed))).encode())
    s, words = h or 0x9e3779b97f4a7c15, []
    for _ in range(n):
        s ^= (s << 13) & M64
        s ^= s >> 7
        s ^= (s << 17) & M64
        words.append(VOCAB[((s * 0x2545f4914f6cdd1d) & M64) >> 58])
    return "".join(w + " " for w in words)


def in_threads(fns, timeout=60):
    """Calls each of FNS at once, each in a thread of its own, and gives
    their results in order; a call that raised gives its exception (for the
    caller's assertions). Waits up to TIMEOUT seconds for each thread."""
    out = [None] * len(fns)

    def run(i, fn):
        try:
            out[i] = fn()
        except Exception as e:
            out[i] = e
    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(fns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    return out


def chat_body(model="mock-small", content="say hello to the gateway", **kw):
    body = {"model": model, "messages": [{"role": "user", "content": content}]}
    body.update(kw)
    return body


def running(make):
    """For a fixture: the fake server MAKE starts, stopped when it is done
    (use as `yield from env.running(fakes.FakeBackend)`)."""
    server = make()
    yield server
    server.stop()


def proxy(name, *ports, lbmethod=None):
    """A balancer of the servers on these ports, none held back on an
    error (retry=0)."""
    lines = [f'<Proxy "balancer://{name}">']
    lines += [f'    BalancerMember "http://{HOST}:{p}" retry=0' for p in ports]
    if lbmethod:
        lines.append(f"    ProxySet lbmethod={lbmethod}")
    return "\n".join(lines + ["</Proxy>"])


def route(name, backend, *directives, model="mock-small"):
    """<LLMRoute name> on balancer://backend (and its options), of the
    upstream model (none: model=None), then the directives."""
    lines = [f'<LLMRoute "{name}">', f"    LLMBackend balancer://{backend}"]
    if model:
        lines.append(f"    LLMUpstreamModel {model}")
    lines += ["    " + d for d in directives]
    return "\n".join(lines + ["</LLMRoute>"])
