# Configuration errors caught by `apache2 -t`: each bad variant is refused and
# the message points at the directive, the file and the line to fix.
import re

import pytest

BAD = {
    "unknown_balancer": ("LLMBackend", """\
<LLMRoute "bad-unknown-balancer">
    LLMBackend balancer://nope
</LLMRoute>"""),
    "route_without_backend": ("LLMRoute", """\
<LLMRoute "bad-no-backend">
    LLMUpstreamModel mock-large
</LLMRoute>"""),
    "backend_not_balancer": ("LLMBackend", """\
<LLMRoute "bad-not-balancer">
    LLMBackend http://127.0.0.1:1
</LLMRoute>"""),
    "unknown_dialect": ("LLMBackend", """\
<LLMRoute "bad-dialect">
    LLMBackend balancer://be dialect=klingon
</LLMRoute>"""),
    "bad_llmapi": ("LLMApi", """\
<Location "/bad">
    LLMApi bogus
</Location>"""),
    "negative_body_limit": ("LLMMaxRequestBody", "LLMMaxRequestBody -5"),
    "duplicate_model": ("LLMRoute", """\
<LLMRoute "mock-large">
    LLMBackend balancer://be
</LLMRoute>"""),
    "route_without_name": ("LLMRoute", """\
<LLMRoute>
    LLMBackend balancer://be
</LLMRoute>"""),
    "unknown_cache_store": ("LLMCache", "LLMCache redis 127.0.0.1:6379"),
    "memcache_without_servers": ("LLMCache", "LLMCache memcache ttl=5"),
    "cache_bad_option": ("LLMCache", "LLMCache memcache 127.0.0.1:11211 ttl=soon"),
    "shm_item_too_big": ("LLMCache", "LLMCache shm size=1M max-item=512k"),
    "unknown_cache_policy": ("LLMCachePolicy", """\
<LLMRoute "bad-policy">
    LLMBackend balancer://be
    LLMCachePolicy sometimes
</LLMRoute>"""),
    "cache_policy_outside_route": ("LLMCachePolicy", "LLMCachePolicy all"),
    "coalesce_bad_timeout": ("LLMCoalesce", "LLMCoalesce on timeout=0"),
    "coalesce_unknown_option": ("LLMCoalesce", "LLMCoalesce on interval=3"),
    "discover_bad_interval": ("LLMDiscover", """\
<LLMRoute "bad-discover-*">
    LLMBackend balancer://be
    LLMDiscover on interval=soon
</LLMRoute>"""),
    "fallback_unknown_model": ("LLMFallback", """\
<LLMRoute "bad-fallback">
    LLMBackend balancer://be
    LLMFallback no-such-model
</LLMRoute>"""),
    "fallback_to_itself": ("LLMFallback", """\
<LLMRoute "bad-fallback-self">
    LLMBackend balancer://be
    LLMFallback bad-fallback-self
</LLMRoute>"""),
    "fallback_outside_route": ("LLMFallback", "LLMFallback mock-small"),
    "failover_zero_attempts": ("LLMFailover", """\
<LLMRoute "bad-failover">
    LLMBackend balancer://be
    LLMFailover attempts=0
</LLMRoute>"""),
    "failover_unknown_option": ("LLMFailover", """\
<LLMRoute "bad-failover-opt">
    LLMBackend balancer://be
    LLMFailover tries=2
</LLMRoute>"""),
    "first_token_timeout_zero": ("LLMFirstTokenTimeout", """\
<LLMRoute "bad-ttft">
    LLMBackend balancer://be
    LLMFirstTokenTimeout 0
</LLMRoute>"""),
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
