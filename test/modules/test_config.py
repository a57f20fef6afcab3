# Configuration errors caught by `apache2 -t`: each bad variant is refused and
# the message points at the directive, the file and the line to fix.
import re

import pytest


def section(tag, arg, *lines):
    """<TAG "ARG"> (no ARG: None) of these lines, each indented."""
    head = f'<{tag} "{arg}">' if arg is not None else f"<{tag}>"
    return "\n".join([head] + ["    " + l for l in lines] + [f"</{tag}>"])


def be_route(name, *lines):
    """<LLMRoute NAME> on balancer://be, then these lines."""
    return section("LLMRoute", name, "LLMBackend balancer://be", *lines)


BAD = {
    "unknown_balancer": ("LLMBackend", section("LLMRoute", "bad-unknown-balancer", "LLMBackend balancer://nope")),
    "route_without_backend": ("LLMRoute", section("LLMRoute", "bad-no-backend", "LLMUpstreamModel mock-large")),
    "backend_not_balancer": ("LLMBackend", section("LLMRoute", "bad-not-balancer", "LLMBackend http://127.0.0.1:1")),
    "unknown_dialect": ("LLMBackend", section("LLMRoute", "bad-dialect", "LLMBackend balancer://be dialect=klingon")),
    "bad_llmapi": ("LLMApi", section("Location", "/bad", "LLMApi bogus")),
    "negative_body_limit": ("LLMMaxRequestBody", "LLMMaxRequestBody -5"),
    "duplicate_model": ("LLMRoute", be_route("mock-large")),
    "route_without_name": ("LLMRoute", section("LLMRoute", None, "LLMBackend balancer://be")),
    "unknown_cache_store": ("LLMCache", "LLMCache redis 127.0.0.1:6379"),
    "memcache_without_servers": ("LLMCache", "LLMCache memcache ttl=5"),
    "cache_bad_option": ("LLMCache", "LLMCache memcache 127.0.0.1:11211 ttl=soon"),
    "shm_item_too_big": ("LLMCache", "LLMCache shm size=1M max-item=512k"),
    "unknown_cache_policy": ("LLMCachePolicy", be_route("bad-policy", "LLMCachePolicy sometimes")),
    "cache_policy_outside_route": ("LLMCachePolicy", "LLMCachePolicy all"),
    "coalesce_bad_timeout": ("LLMCoalesce", "LLMCoalesce on timeout=0"),
    "coalesce_unknown_option": ("LLMCoalesce", "LLMCoalesce on interval=3"),
    "discover_bad_interval": ("LLMDiscover", be_route("bad-discover-*", "LLMDiscover on interval=soon")),
    "fallback_unknown_model": ("LLMFallback", be_route("bad-fallback", "LLMFallback no-such-model")),
    "fallback_to_itself": ("LLMFallback", be_route("bad-fallback-self", "LLMFallback bad-fallback-self")),
    "fallback_outside_route": ("LLMFallback", "LLMFallback mock-small"),
    "failover_zero_attempts": ("LLMFailover", be_route("bad-failover", "LLMFailover attempts=0")),
    "failover_unknown_option": ("LLMFailover", be_route("bad-failover-opt", "LLMFailover tries=2")),
    "first_token_timeout_zero": ("LLMFirstTokenTimeout", be_route("bad-ttft", "LLMFirstTokenTimeout 0")),
}


def test_good_config_syntax_ok(config_test):
    rc, out, _, _, _ = config_test()
    assert rc == 0, out
    assert "Syntax OK" in out


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_config_rejected(config_test, case):
    directive, snippet = BAD[case]
    rc, out, conf, first, last = config_test(snippet)
    assert rc != 0, f"accepted:\n{snippet}\n{out}"
    assert "Syntax OK" not in out, out
    assert directive in out, f"{directive} not named:\n{out}"
    assert conf in out, f"config path not named:\n{out}"
    lines = set(range(first, last + 1))
    if case == "duplicate_model":
        # Either occurrence is a useful pointer.
        with open(conf) as f:
            lines |= {i for i, l in enumerate(f, 1) if l.startswith('<LLMRoute "mock-large"')}
    # httpd says "on line N of FILE"; a module may also say "FILE:N".
    mentioned = {int(n) for n in re.findall(r"\bline (\d+)\b", out)}
    mentioned |= {int(n) for n in re.findall(re.escape(conf) + r":(\d+)", out)}
    assert mentioned & lines, f"none of lines {sorted(lines)} of {conf} named:\n{out}"
