# Conformance with the official clients: the node tests of test/conformance
# (the `openai` and `ollama` npm packages driving the gateway as user code
# would), one pytest test per node test file, against the session gateway.
import glob
import json
import os
import re
import shutil
import subprocess
import warnings

import pytest

import llmgw_env as env

CONFORMANCE = os.path.join(env.REPO, "test", "conformance")
NODE_TIMEOUT = 120      # seconds, per node test file
NPM_TIMEOUT = 300

TEST_FILES = sorted(os.path.basename(p)
                    for p in glob.glob(os.path.join(CONFORMANCE, "*.test.mjs")))


def _tool(name):
    path = shutil.which(name)
    if not path:
        pytest.fail(f"{name} not found on PATH: the conformance tests need Node.js "
                    f">= 20 and npm (Debian: apt-get install nodejs npm)", pytrace=False)
    return path


def _installed_matches_pins():
    """Whether node_modules holds exactly the versions package.json pins."""
    with open(os.path.join(CONFORMANCE, "package.json")) as f:
        deps = json.load(f).get("dependencies", {})
    for name, pinned in deps.items():
        try:
            with open(os.path.join(CONFORMANCE, "node_modules", name, "package.json")) as f:
                if json.load(f).get("version") != pinned:
                    return False
        except (OSError, ValueError):
            return False
    return True


def _failed_cases(out):
    """The failed cases of a spec report, each with its suite, one a line."""
    failed, suite = [], ""
    for line in out.splitlines():
        text = line.strip()
        if text.startswith("\u2716 failing tests"):
            break
        if text.startswith("\u25b6 "):
            suite = text[2:]
        elif text.startswith("\u2716 "):
            name = re.sub(r" \([\d.]+ms\)$", "", text[2:])
            if line.startswith(" ") and suite:
                failed.append(f"  {suite} > {name}")
            elif name != suite:
                failed.append(f"  {name}")
    return "\n".join(failed) or "  (see the output)"


@pytest.fixture(scope="module")
def node_clients():
    """The pinned npm clients in test/conformance/node_modules (npm ci when
    missing or not the pinned versions); returns the node binary."""
    node = _tool("node")
    if not _installed_matches_pins():
        npm = _tool("npm")
        try:
            p = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=CONFORMANCE,
                               capture_output=True, text=True, timeout=NPM_TIMEOUT)
        except subprocess.TimeoutExpired as e:
            pytest.fail(f"npm ci in {CONFORMANCE} did not finish in {NPM_TIMEOUT}s:\n"
                        f"{e.stdout or ''}{e.stderr or ''}", pytrace=False)
        if p.returncode != 0 or not _installed_matches_pins():
            pytest.fail(f"npm ci in {CONFORMANCE} failed (exit {p.returncode}):\n"
                        f"{p.stdout}{p.stderr}", pytrace=False)
    return node


def test_conformance_files_found():
    assert TEST_FILES, f"no *.test.mjs in {CONFORMANCE}"


@pytest.mark.parametrize("test_file", TEST_FILES)
def test_conformance(gw, node_clients, test_file):
    cmd = [node_clients, "--test", "--test-reporter=spec", "--test-timeout=60000",
           test_file]
    run_env = dict(os.environ, LLMGW_URL=gw.url("").rstrip("/"), NO_COLOR="1",
                   FORCE_COLOR="0")
    try:
        p = subprocess.run(cmd, cwd=CONFORMANCE, env=run_env, capture_output=True,
                           text=True, timeout=NODE_TIMEOUT)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"node --test {test_file} did not finish in {NODE_TIMEOUT}s:\n"
                    f"{e.stdout or ''}{e.stderr or ''}", pytrace=False)
    out = p.stdout + p.stderr
    if p.returncode != 0:
        pytest.fail(f"node --test {test_file} failed (exit {p.returncode}); failed:\n"
                    f"{_failed_cases(out)}\n\n--- node output:\n{out}", pytrace=False)
    skipped = re.search(r"^\S*\s*skipped (\d+)\s*$", out, re.M)
    if skipped and int(skipped.group(1)):
        cases = re.findall(r"^\s*\ufe63 (.*?) \([\d.]+ms\) # (.*)$", out, re.M)
        warnings.warn(f"{test_file}: {skipped.group(1)} node test(s) skipped: "
                      + "; ".join(f"{name}: {why}" for name, why in cases))
