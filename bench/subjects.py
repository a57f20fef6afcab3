"""bench/subjects.py: starts and stops what build/bench measures, each on
its own 127.0.0.1 port, with configurations written to a run directory:
the emulated backends (test/mockllm), memcached, apache2
(bare mod_proxy_http and mod_llm_gateway), nginx and the Portkey gateway.

Only processes started here are ever signalled, by their own id (each runs
in a session of its own so that httpd's and nginx's children go with it).
Each also runs in a cgroup of its own where one can be made, so that the CPU
time of all its processes can be read (Proc.cpu_us, CpuAccount).
"""

import os
import shutil
import signal
import socket
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
LOOPBACK = "127.0.0.1"
MOCKLLM = os.path.join(TOP, "test", "mockllm", "mockllm")
PORTKEY_DIR = os.path.join(HERE, ".node", "node_modules", "@portkey-ai",
                           "gateway")
PORTKEY_MAIN = os.path.join(PORTKEY_DIR, "build", "start-server.js")
PORTKEY_PRELOAD = os.path.join(HERE, "portkey-loopback.mjs")
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") \
    else "python3"


class StartError(Exception):
    pass


def free_port():
    s = socket.socket()
    s.bind((LOOPBACK, 0))
    p = s.getsockname()[1]
    s.close()
    return p


def port_open(port):
    try:
        socket.create_connection((LOOPBACK, port), timeout=0.5).close()
        return True
    except OSError:
        return False


def children(pid):
    """pid and every descendant of it (from /proc)."""
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read()
            ppid = int(st[st.rindex(")") + 2:].split()[1])
        except (OSError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def memory_kb(pids):
    """(rss, pss) in kB summed over pids (PSS shares shared pages out)."""
    rss = pss = 0
    for p in pids:
        try:
            with open("/proc/%d/smaps_rollup" % p) as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
        except OSError:
            pass
    return rss, pss


# ---- CPU accounting ------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")
CG_PREFIX = "llmgw-bench."


def cgroup2_base():
    """This process's own cgroup v2 directory, or None: the cgroup2 mount
    (pure or hybrid hierarchy) plus the path of the 0:: line of
    /proc/self/cgroup."""
    mount = None
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) > 2 and parts[2] == "cgroup2":
                    mount = parts[1]
                    break
        with open("/proc/self/cgroup") as f:
            rel = next((l.strip()[3:] for l in f if l.startswith("0::")),
                       None)
    except OSError:
        return None
    if not mount or rel is None:
        return None
    return os.path.normpath(mount + "/" + rel)


def cgroup_cpu_us(d):
    """usage_usec of a cgroup v2's cpu.stat: the CPU time, exact to the
    microsecond (the scheduler's runtime, not ticks), of every thread that
    ever ran in it, exited ones included."""
    with open(os.path.join(d, "cpu.stat")) as f:
        for line in f:
            k, _, v = line.partition(" ")
            if k == "usage_usec":
                return float(v)
    raise OSError("no usage_usec in %s/cpu.stat" % d)


def proc_tree_cpu_us(pid):
    """The fallback without a cgroup: utime+stime of pid and every live
    descendant, plus cutime+cstime of each (what it reaped of children
    that exited), in clock ticks (10 ms each, per process)."""
    ticks = 0
    for p in children(pid):
        try:
            with open("/proc/%d/stat" % p) as f:
                st = f.read()
            fields = st[st.rindex(")") + 2:].split()
            # fields[0] is field 3 (state): utime..cstime are 14..17.
            ticks += sum(int(x) for x in fields[11:15])
        except (OSError, ValueError, IndexError):
            pass            # gone meanwhile: counted in its parent's cutime
    return ticks * 1e6 / CLK_TCK


class CpuAccount:
    """One cgroup v2 per started process tree, under a directory of this
    run (llmgw-bench.PID in this process's own cgroup), when one can be
    made here (root, a cgroup2 mount: cgroup v2 or the hybrid hierarchy's
    unified mount; no controller needs to be enabled, cpu.stat is always
    there). Else the CPU time is read from /proc (see proc_tree_cpu_us):
    as long as no process exits without being reaped by one that is
    still in the tree, that loses nothing, at a tick's precision."""

    def __init__(self):
        self.base = None
        self.why = None
        self.n = 0
        b = cgroup2_base()
        if os.environ.get("BENCH_NO_CGROUP"):
            self.why = "BENCH_NO_CGROUP is set"
            return
        if b is None:
            self.why = "no cgroup2 mount"
            return
        self.reap_stale(b)
        d = os.path.join(b, "%s%d" % (CG_PREFIX, os.getpid()))
        try:
            os.makedirs(d, exist_ok=True)
            probe = os.path.join(d, "probe")
            os.mkdir(probe)
            ok = os.path.exists(os.path.join(probe, "cpu.stat")) and \
                os.access(os.path.join(probe, "cgroup.procs"), os.W_OK)
            os.rmdir(probe)
        except OSError as e:
            self.why = "cannot create a cgroup under %s: %s" % (b, e)
            return
        if not ok:
            self.why = "a cgroup under %s has no cpu.stat or is not " \
                       "writable" % b
            os.rmdir(d)
            return
        self.base = d

    @staticmethod
    def reap_stale(b):
        """Removes the empty cgroups an earlier run that died left."""
        try:
            names = os.listdir(b)
        except OSError:
            return
        for n in names:
            pid = n[len(CG_PREFIX):]
            if not (n.startswith(CG_PREFIX) and pid.isdigit()):
                continue
            if os.path.exists("/proc/%s" % pid):
                continue
            d = os.path.join(b, n)
            for sub in os.listdir(d):
                if os.path.isdir(os.path.join(d, sub)):
                    try:
                        os.rmdir(os.path.join(d, sub))
                    except OSError:
                        pass
            try:
                os.rmdir(d)
            except OSError:
                pass

    @property
    def source(self):
        return "cgroup2 cpu.stat usage_usec" if self.base else \
            "/proc utime+stime+cutime+cstime (%s)" % self.why

    def new_group(self, name):
        """A new cgroup's directory, or None (then that process's CPU time
        is read from /proc)."""
        if not self.base:
            return None
        self.n += 1
        d = os.path.join(self.base, "%03d-%s" % (self.n, name))
        try:
            os.mkdir(d)
        except OSError:
            return None
        return d

    @staticmethod
    def remove_group(d):
        """rmdir once its processes are gone (they leave it as they are
        reaped, a moment after the kill)."""
        for _ in range(50):
            try:
                os.rmdir(d)
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.02)

    def close(self):
        if self.base:
            for sub in os.listdir(self.base):
                if os.path.isdir(os.path.join(self.base, sub)):
                    self.remove_group(os.path.join(self.base, sub))
            self.remove_group(self.base)
            self.base = None


_ACCOUNT = None


def cpu_account():
    """The run's CpuAccount (made on first use)."""
    global _ACCOUNT
    if _ACCOUNT is None:
        _ACCOUNT = CpuAccount()
    return _ACCOUNT


def cpu_account_close():
    global _ACCOUNT
    if _ACCOUNT is not None:
        _ACCOUNT.close()
        _ACCOUNT = None


# The wrapper that puts a process into its cgroup before it becomes what it
# is to run (exec keeps the pid; every child it makes starts in there too).
CG_ENTER = 'echo $$ >"$1" || exit 125; shift; exec "$@"'


class Proc:
    def __init__(self, name, popen, port, logfile, cgroup=None):
        self.name = name
        self.popen = popen
        self.port = port
        self.logfile = logfile
        self.cgroup = cgroup

    def cpu_us(self):
        """CPU time (user + system, µs) of every process of this tree so
        far, those that exited included."""
        if self.cgroup:
            return cgroup_cpu_us(self.cgroup)
        return proc_tree_cpu_us(self.pid)

    @property
    def pid(self):
        return self.popen.pid

    def alive(self):
        return self.popen.poll() is None

    def log_tail(self, n=15):
        try:
            with open(self.logfile, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""


class Stack:
    """The processes of one scenario; stop_all() ends every one of them."""

    def __init__(self, run_dir):
        self.run = run_dir
        os.makedirs(run_dir, exist_ok=True)
        os.chmod(run_dir, 0o755)
        self.procs = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop_all()

    def path(self, *p):
        return os.path.join(self.run, *p)

    def spawn(self, name, argv, port=None, wait_s=15.0, env=None,
              ready=None):
        logfile = self.path("%s.log" % name)
        log = open(logfile, "ab")
        cg = cpu_account().new_group(name)
        if cg:
            argv = ["/bin/sh", "-c", CG_ENTER, "sh",
                    os.path.join(cg, "cgroup.procs")] + list(argv)
        popen = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, env=env,
                                 start_new_session=True, cwd=self.run)
        log.close()
        proc = Proc(name, popen, port, logfile, cg)
        self.procs.append(proc)
        if port is not None:
            deadline = time.monotonic() + wait_s
            while not port_open(port):
                if not proc.alive() or time.monotonic() > deadline:
                    tail = proc.log_tail()
                    self.stop(proc)
                    raise StartError("%s did not start on port %d: %s" % (
                        name, port, tail.strip()[-600:] or "(no output)"))
                time.sleep(0.05)
        if ready is not None:
            deadline = time.monotonic() + wait_s
            while not ready():
                if not proc.alive() or time.monotonic() > deadline:
                    tail = proc.log_tail()
                    self.stop(proc)
                    raise StartError("%s did not get ready: %s" % (
                        name, tail.strip()[-600:] or "(no output)"))
                time.sleep(0.1)
        return proc

    def stop(self, proc, sig=signal.SIGTERM, wait_s=10.0):
        if proc.popen.poll() is None:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                proc.popen.wait(wait_s)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.popen.wait(5)
        # An httpd or nginx child can outlive its parent by a moment.
        try:
            os.killpg(proc.pid, 0)
            time.sleep(0.2)
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if proc.cgroup:
            CpuAccount.remove_group(proc.cgroup)
            proc.cgroup = None

    def kill(self, proc):
        """SIGKILL, as a crashing model server would go."""
        self.stop(proc, sig=signal.SIGKILL)

    def stop_all(self):
        for proc in reversed(self.procs):
            self.stop(proc)
        self.procs = []

    # ---- backends -------------------------------------------------------

    def mock(self, name, tps=0, ttft_ms=0, tokens=16, port=None,
             threads=0):
        port = port or free_port()
        argv = [globals()["MOCKLLM"], "--port", str(port), "--name", name,
                "--quiet",
                "--tokens", str(tokens)]
        if threads:
            argv += ["--threads", str(threads)]
        if tps:
            argv += ["--tps", str(tps)]
        if ttft_ms:
            argv += ["--ttft-ms", str(ttft_ms)]
        return self.spawn(name, argv, port)

    def modelsrv(self, name, slots, load_ms, gen_ms, per_token_ms, models,
                 port=None):
        """A server that has to load models, as Ollama or llama.cpp's
        server: mockllm keeping SLOTS of MODELS loaded (least recently used
        out first), LOAD_MS to load one, GEN_MS + PER_TOKEN_MS a token to
        answer; each answer's X-Mock-Load-Ms says how long it waited for a
        load, GET /mock/stats counts the loads."""
        port = port or free_port()
        argv = [globals()["MOCKLLM"], "--port", str(port), "--name", name,
                "--quiet", "--models", ",".join(models),
                "--max-loaded", str(slots), "--load-ms", str(load_ms),
                "--ttft-ms", str(gen_ms)]
        if per_token_ms:
            argv += ["--tps", "%g" % (1000.0 / per_token_ms)]
        return self.spawn(name, argv, port)

    # ---- apache2 ------------------------------------------------------------

    def httpd_conf(self, name, vhosts, mpm, global_lines="", load=None):
        """vhosts: [(port, text)]. mpm: dict of MPM directives. load: the
        LoadModule lines (default: build/lib.sh's, as build/bench exports
        them)."""
        d = self.path(name)
        os.makedirs(os.path.join(d, "run"), exist_ok=True)
        os.chmod(d, 0o755)
        load = load or os.environ.get("LLMGW_LOAD_MODULES") \
            or default_load_modules()
        user = "User www-data\nGroup www-data\n" if os.getuid() == 0 else ""
        lines = ["# Generated by build/bench.",
                 'ServerRoot "%s"' % d]
        lines += ["Listen %s:%d" % (LOOPBACK, p) for p, _ in vhosts]
        lines += ["ServerName %s" % LOOPBACK,
                  'PidFile "%s/httpd.pid"' % d,
                  'DefaultRuntimeDir "%s/run"' % d,
                  'ErrorLog "%s/error.log"' % d,
                  "LogLevel warn",
                  load, user.rstrip("\n"),
                  # mod_status (loaded, as by the demo) turns
                  # ExtendedStatus on: a times() call per request, for
                  # which the kernel sums the CPU time of every thread of
                  # the child (~5 us per request with 64 threads). Off, as
                  # a tuned proxy has it; the same for every subject.
                  "ExtendedStatus Off",
                  "KeepAlive On",
                  "MaxKeepAliveRequests 0",
                  "KeepAliveTimeout 30"]
        lines += ["%s %s" % kv for kv in mpm.items()]
        if global_lines:
            lines.append(global_lines)
        for p, text in vhosts:
            lines += ["<VirtualHost %s:%d>" % (LOOPBACK, p), text.strip("\n"),
                      "</VirtualHost>"]
        conf = os.path.join(d, "httpd.conf")
        with open(conf, "w") as f:
            f.write("\n".join(l for l in lines if l) + "\n")
        return d, conf

    def httpd(self, name, vhosts, mpm, global_lines="", load=None,
              env=None):
        """env: the environment of the httpd (default this process's)."""
        d, conf = self.httpd_conf(name, vhosts, mpm, global_lines, load)
        argv = ["/usr/sbin/apache2", "-d", d, "-f", conf, "-DFOREGROUND"]
        proc = self.spawn(name, argv, vhosts[0][0], env=env)
        for p, _ in vhosts[1:]:
            deadline = time.monotonic() + 10
            while not port_open(p):
                if time.monotonic() > deadline:
                    raise StartError("%s: port %d not open" % (name, p))
                time.sleep(0.05)
        proc.error_log = os.path.join(d, "error.log")
        return proc

    def httpd_accepts(self, name, vhosts, mpm, global_lines, load=None):
        """apache2 -t on such a configuration: (ok, message)."""
        d, conf = self.httpd_conf(name, vhosts, mpm, global_lines, load)
        p = subprocess.run(["/usr/sbin/apache2", "-t", "-d", d, "-f", conf],
                           capture_output=True, text=True, timeout=30)
        msg = (p.stderr + p.stdout).strip()
        return p.returncode == 0, msg

    # ---- nginx -----------------------------------------------------------

    def nginx(self, name, servers, workers=2, connections=4096):
        """servers: [(port, upstream_ports, buffering)]."""
        exe = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.path.exists(exe):
            raise StartError("nginx is not installed")
        d = self.path(name)
        os.makedirs(os.path.join(d, "tmp"), exist_ok=True)
        os.chmod(d, 0o755)
        ups, srv = [], []
        for i, (port, upstream, buffering) in enumerate(servers):
            ups.append("    upstream be%d {\n%s        keepalive 256;\n"
                       "    }" % (i, "".join(
                           "        server %s:%d;\n" % (LOOPBACK, u)
                           for u in upstream)))
            srv.append("""    server {
        listen %s:%d;
        location / {
            proxy_pass http://be%d;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering %s;
        }
    }""" % (LOOPBACK, port, i, "on" if buffering else "off"))
        user = "user www-data;\n" if os.getuid() == 0 else ""
        conf = """# Generated by build/bench.
%sdaemon off;
master_process on;
worker_processes %d;
worker_rlimit_nofile %d;
pid %s/nginx.pid;
error_log %s/error.log warn;
events {
    worker_connections %d;
}
http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 30s;
    client_body_temp_path %s/tmp/body;
    proxy_temp_path %s/tmp/proxy;
    fastcgi_temp_path %s/tmp/fastcgi;
    uwsgi_temp_path %s/tmp/uwsgi;
    scgi_temp_path %s/tmp/scgi;
%s
%s
}
""" % (user, workers, connections * 2 + 64, d, d, connections, d, d, d, d,
            d, "\n".join(ups), "\n".join(srv))
        path = os.path.join(d, "nginx.conf")
        with open(path, "w") as f:
            f.write(conf)
        return self.spawn(name, [exe, "-p", d + "/", "-c", path,
                                 "-e", os.path.join(d, "error.log")],
                          servers[0][0])

    # ---- Portkey ---------------------------------------------------------

    def portkey(self, name="portkey", port=None):
        if not os.path.exists(PORTKEY_MAIN):
            raise StartError(portkey_absent_reason())
        port = port or free_port()
        env = dict(os.environ)
        env["NODE_ENV"] = "production"
        env.pop("PORT", None)
        argv = [shutil.which("node") or "node", "--import", PORTKEY_PRELOAD,
                PORTKEY_MAIN, "--port=%d" % port, "--headless"]
        return self.spawn(name, argv, port, wait_s=30.0, env=env)


def portkey_headers(backend_port):
    """What makes the Portkey gateway call the emulated backend as an
    OpenAI provider at a custom host."""
    return {"x-portkey-provider": "openai",
            "x-portkey-custom-host": "http://%s:%d/v1" % (LOOPBACK,
                                                          backend_port),
            "Authorization": "Bearer sk-bench-unused"}


def portkey_absent_reason():
    r = os.environ.get("BENCH_PORTKEY_ABSENT")
    if r:
        return r
    return "@portkey-ai/gateway is not installed in bench/.node"


def portkey_version():
    try:
        import json
        with open(os.path.join(PORTKEY_DIR, "package.json")) as f:
            return json.load(f).get("version")
    except (OSError, ValueError):
        return None


def default_load_modules():
    """build/lib.sh's LoadModule lines (build/bench exports them; this is
    for running bench/bench.py by hand)."""
    p = subprocess.run(["bash", "-c", '. "$1/build/lib.sh" && '
                        "llmgw_load_modules", "-", TOP],
                       capture_output=True, text=True, check=True)
    return p.stdout.strip()
