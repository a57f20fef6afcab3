# `make install` as a packager runs it (into DESTDIR): the module lands where
# apxs says modules go, and a2enmod finds its .load (with its dependencies)
# and .conf in mods-available, and the console's assets are under $(datadir).
import glob
import os
import subprocess

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def apxs(var):
    return subprocess.run(["apxs", "-q", var], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_make_install_into_destdir(tmp_path):
    dest = str(tmp_path)
    p = subprocess.run(["make", "-s", "install", f"DESTDIR={dest}"], cwd=TOP,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    libexec, sysconf = apxs("LIBEXECDIR"), apxs("SYSCONFDIR")
    so = dest + os.path.join(libexec, "mod_llm_gateway.so")
    assert os.path.isfile(so)
    load = open(dest + os.path.join(sysconf, "mods-available", "llm_gateway.load")).read()
    assert "# Depends: proxy proxy_http proxy_balancer lbmethod_byrequests\n" in load
    assert f"LoadModule llm_gateway_module {libexec}/mod_llm_gateway.so" in load
    conf = dest + os.path.join(sysconf, "mods-available", "llm_gateway.conf")
    assert "<IfModule llm_gateway_module>" in open(conf).read()
    # The console's assets, under $(datadir) wherever the prefix put it.
    for asset in ("console.js", "console.css", "favicon.svg"):
        found = glob.glob(f"{dest}/**/mod_llm_gateway/htdocs/{asset}", recursive=True)
        assert len(found) == 1, asset
        with open(found[0], "rb") as a, open(os.path.join(TOP, "htdocs", asset), "rb") as b:
            assert a.read() == b.read()
