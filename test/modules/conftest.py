# pytest fixtures for the mod_llm_gateway integration suite: one temp dir, the
# emulated backends and one real apache2 per session, all torn down at the end.
import os
import uuid

import pytest

import llmgw_env as env


def _require(path, what, hint):
    if not os.path.exists(path):
        # CI must never turn a missing build into a green (all-skipped) run.
        pytest.exit(f"{what} not found at {path}: {hint}", returncode=1)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "no_asan: measures what ASan changes (a process's memory: its "
        "allocator keeps freed blocks in quarantine), skipped under LLMGW_ASAN=1")


def pytest_collection_modifyitems(config, items):
    if not env.ASAN:
        return
    skip = pytest.mark.skip(reason="LLMGW_ASAN=1: ASan's allocator changes what this measures")
    for item in items:
        if "no_asan" in item.keywords:
            item.add_marker(skip)


def pytest_sessionstart(session):
    if session.config.option.collectonly:
        return
    _require(env.module_path(), "mod_llm_gateway",
             "build the module first or set LLMGW_MODULE=/path/to/mod_llm_gateway.so")
    _require(env.mockllm_path(), "mockllm",
             "build test/mockllm first or set MOCKLLM=/path/to/mockllm")
    _require(env.APACHE2, "apache2", "set APACHE2=/path/to/apache2")


def pytest_terminal_summary(terminalreporter, config):
    kept = getattr(config, "_llmgw_kept", None)
    if kept:
        terminalreporter.write_line(f"llmgw: test dir kept for inspection: {kept}")


@pytest.fixture(scope="session")
def workdir(request):
    d = env.new_workdir()
    yield d
    if request.session.testsfailed or getattr(request.config, "_llmgw_keep", False):
        request.config._llmgw_kept = d
        print(f"\nllmgw: keeping {d}")
    else:
        env.remove_workdir(d)


LIVE_PORTS = ("be_a", "be_b", "slow", "disc", "disc2", "llama")
DEAD_PORTS = ("dead1", "dead2")


@pytest.fixture(scope="session")
def ports():
    """The backends' ports, all chosen together (no two alike). The dead
    ones stay bound without listening for the whole session: a connect
    there is refused, whatever else runs on the machine."""
    live = env.PORTS.take(len(LIVE_PORTS))
    dead = env.PORTS.dead(len(DEAD_PORTS))
    return dict(zip(LIVE_PORTS + DEAD_PORTS, live + dead))


@pytest.fixture(scope="session")
def mocks(workdir, ports):
    started = {}
    binary = env.mockllm_path()
    common = ["--models", "mock-small,mock-large", "--tps", "1000", "--ttft-ms", "5"]
    try:
        for name, key in (("a", "be_a"), ("b", "be_b"), ("slow", "slow")):
            started[name] = env.MockBackend(binary, workdir, name, ports[key], common).start()
        # A llama.cpp server (dialect=llamacpp), four slots.
        started["llama"] = env.MockBackend(
            binary, workdir, "llama", ports["llama"],
            common + ["--flavor", "llamacpp", "--slots", "4"]).start()
        # Backends whose models the gateway learns from them (LLMDiscover).
        for name, key, models in (("disc", "disc", "disc-alpha,disc-beta"),
                                  ("disc2", "disc2", "ollama-gamma")):
            started[name] = env.MockBackend(binary, workdir, name, ports[key],
                                            ["--models", models]).start()
        yield started
    finally:
        for m in started.values():
            m.stop()


@pytest.fixture(scope="session")
def gw(request, workdir, ports, mocks):
    """The gateway without a cache: every request reaches a backend."""
    yield from env.serve_gateway(request, workdir, ports, "gw", "LLMCache off\n")


CACHE_ROUTES = f"""\
SetEnvIf Authorization "^Bearer nocache-" {env.ENV_NO_CACHE}
<LLMRoute "cache-all">
    LLMBackend balancer://be
    LLMUpstreamModel mock-small
    LLMCachePolicy all
</LLMRoute>
<LLMRoute "cache-off">
    LLMBackend balancer://be
    LLMUpstreamModel mock-small
    LLMCachePolicy off
</LLMRoute>
"""


@pytest.fixture(scope="session")
def memcached(workdir):
    m = env.Memcached(workdir).start()
    try:
        yield m
    finally:
        m.stop()


@pytest.fixture(scope="session")
def gw_cache(request, workdir, ports, mocks, memcached):
    """A gateway with the memcached cache; short TTL and item limit so the
    tests can see entries expire and big answers skipped."""
    extra = (f"LLMCache memcache {env.HOST}:{memcached.port} ttl=3 "
             f"max-item=64k\nLLMCoalesce on timeout=1\n" + CACHE_ROUTES)
    yield from env.serve_gateway(request, workdir, ports, "gw-cache", extra)


@pytest.fixture(scope="session")
def gw_cache_b(request, workdir, ports, mocks, memcached):
    """A second node on the same memcached: one cache, one lease space."""
    extra = (f"LLMCache memcache {env.HOST}:{memcached.port} ttl=3 "
             f"max-item=64k\nLLMCoalesce on timeout=1\n"
             f"LLMCacheBilling free\n" + CACHE_ROUTES)
    yield from env.serve_gateway(request, workdir, ports, "gw-cache-b", extra)


@pytest.fixture(scope="session")
def gw_shm(request, workdir, ports, mocks):
    """A gateway with no LLMCache: the default shared-memory cache of a
    single node."""
    yield from env.serve_gateway(request, workdir, ports, "gw-shm", "")


@pytest.fixture(scope="session")
def gw_shm_small(request, workdir, ports, mocks):
    """A shared-memory cache far smaller than what goes through it: one
    shard whose ring is overwritten all the time."""
    extra = "LLMCache shm size=64k max-item=8k ttl=60\n"
    yield from env.serve_gateway(request, workdir, ports, "gw-shm-small", extra)


@pytest.fixture(scope="session")
def config_test(workdir, ports):
    """Run `apache2 -t` on the gateway config plus a snippet."""
    counter = iter(range(1000))

    def run(extra=""):
        return env.config_test(workdir, f"cfgtest-{next(counter)}", ports,
                               env.module_path(), extra)
    return run


@pytest.fixture
def uniq():
    """A fresh suffix, e.g. for model names the gpt-* glob accepts, so a test
    can find its own line in the shared access log."""
    return uuid.uuid4().hex[:10]

