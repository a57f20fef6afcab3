# The benchmark harness itself (not a benchmark: no time is asserted):
# `build/bench --smoke` starts every subject (the backend alone, bare
# mod_proxy, nginx, Portkey, the gateway missing and hitting its cache) and
# the model server of the switch scenario, and each must answer one
# request and one stream.
import os
import re
import subprocess

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_bench_smoke_every_subject_answers():
    p = subprocess.run([os.path.join(TOP, "build", "bench"), "--smoke"],
                       cwd=TOP, capture_output=True, text=True, timeout=900)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-3000:]
    m = re.search(r"smoke: (\d+) passed, (\d+) failed", out)
    assert m, out[-3000:]
    assert (int(m.group(1)), int(m.group(2))) == (7, 0), out[-3000:]
    assert "SKIP" not in out, out[-3000:]
