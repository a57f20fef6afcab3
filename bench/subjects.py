"""bench/subjects.py: starts and stops what build/bench measures, each on
its own 127.0.0.1 port, with configurations written to a run directory:
the emulated backends (test/mockllm, bench/modelsrv.py), memcached, apache2
(bare mod_proxy_http and mod_llm_gateway), nginx and the Portkey gateway.

Only processes started here are ever signalled, by their own id (each runs
in a session of its own so that httpd's and nginx's children go with it).
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
MODELSRV = os.path.join(HERE, "modelsrv.py")
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


class Proc:
    def __init__(self, name, popen, port, logfile):
        self.name = name
        self.popen = popen
        self.port = port
        self.logfile = logfile

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
        popen = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, env=env,
                                 start_new_session=True, cwd=self.run)
        log.close()
        proc = Proc(name, popen, port, logfile)
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

    def modelsrv(self, name, slots, load_ms, gen_ms, per_token_ms, port=None):
        port = port or free_port()
        argv = [PYTHON, MODELSRV, "--port", str(port), "--name", name,
                "--slots", str(slots), "--load-ms", str(load_ms),
                "--gen-ms", str(gen_ms), "--per-token-ms", str(per_token_ms)]
        return self.spawn(name, argv, port)

    # ---- apache2 ------------------------------------------------------------

    def httpd_conf(self, name, vhosts, mpm, global_lines=""):
        """vhosts: [(port, text)]. mpm: dict of MPM directives."""
        d = self.path(name)
        os.makedirs(os.path.join(d, "run"), exist_ok=True)
        os.chmod(d, 0o755)
        load = os.environ.get("LLMGW_LOAD_MODULES") or default_load_modules()
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

    def httpd(self, name, vhosts, mpm, global_lines=""):
        d, conf = self.httpd_conf(name, vhosts, mpm, global_lines)
        argv = ["/usr/sbin/apache2", "-d", d, "-f", conf, "-DFOREGROUND"]
        proc = self.spawn(name, argv, vhosts[0][0])
        for p, _ in vhosts[1:]:
            deadline = time.monotonic() + 10
            while not port_open(p):
                if time.monotonic() > deadline:
                    raise StartError("%s: port %d not open" % (name, p))
                time.sleep(0.05)
        proc.error_log = os.path.join(d, "error.log")
        return proc

    def httpd_accepts(self, name, vhosts, mpm, global_lines):
        """apache2 -t on such a configuration: (ok, message)."""
        d, conf = self.httpd_conf(name, vhosts, mpm, global_lines)
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
