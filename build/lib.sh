# build/lib.sh: shared by build/check, build/demo and build/bench: install
# what is missing (Debian), build in the source tree, find httpd modules.
# shellcheck shell=bash

LLMGW_TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# clang and its runtimes (libclang-rt-dev: libclang-rt-14-dev on Debian 12,
# the version of clang) build the sanitizer and libFuzzer builds of
# build/sanitize.mk. python3-prometheus-client's parser reads the console's
# metrics; chromium (and a font) runs its browser tests.
LLMGW_APT_PACKAGES="gcc make autoconf automake libtool pkg-config curl
    apache2 apache2-dev libapr1-dev libaprutil1-dev libjson-c-dev
    libxml2-dev libmicrohttpd-dev check valgrind python3 python3-pytest
    memcached clang libclang-rt-dev clang-format python3-prometheus-client
    chromium fonts-dejavu-core"
HTTPD_MODULES=/usr/lib/apache2/modules

llmgw_log() { printf '%s\n' "$*" >&2; }

# Installs the Debian packages that are not there yet. apt-get update runs
# only when something is missing, so a ready machine starts in a second.
llmgw_install_deps() {
    local missing=() pkg
    for pkg in $LLMGW_APT_PACKAGES; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null \
            | grep -q "install ok installed" || missing+=("$pkg")
    done
    # npm comes with NodeSource's nodejs, separately with Debian's.
    command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        llmgw_log "missing packages: ${missing[*]}"
        llmgw_log "install them as root: apt-get install ${missing[*]}"
        return 1
    fi
    llmgw_log "installing: ${missing[*]}"
    apt-get update -qq
    llmgw_apt_install "${missing[@]}"
}

# apt-get install, without starting the services the packages bring
# (apache2 on port 80, memcached, nginx): every process the scripts need
# they start themselves, on loopback. A policy-rc.d already there is kept.
llmgw_apt_install() {
    local policy=/usr/sbin/policy-rc.d made= rc=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" \
            && made=1
    fi
    DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@" >/dev/null || rc=$?
    [ -n "$made" ] && rm -f "$policy"
    return $rc
}

# Configures on first use (or when configure.ac/Makefile.am changed), then
# builds the module, the unit tests and the emulated backend.
llmgw_build() {
    (
        cd "$LLMGW_TOP"
        if [ ! -x configure ] || [ configure.ac -nt configure ] \
            || [ Makefile.am -nt Makefile.in ]; then
            autoreconf -fi >/dev/null 2>&1 || autoreconf -fi
        fi
        if [ ! -f Makefile ] || [ configure -nt Makefile ]; then
            ./configure -q >/dev/null
        fi
        make -s -j"$(nproc)" all >/dev/null
        make -s -j"$(nproc)" test/unit/test_core >/dev/null
    )
}

# The sanitizer builds beside the in-tree one (build/sanitize.mk, into
# build-san/): the given targets, default all of them.
llmgw_build_sanitizers() {
    make -s -C "$LLMGW_TOP" -f build/sanitize.mk -j"$(nproc)" "${@:-all}"
}

# True when clang can link a libFuzzer target here.
llmgw_have_libfuzzer() {
    local d rc
    d=$(mktemp -d)
    printf '%s\n' '#include <stddef.h>' '#include <stdint.h>' \
        'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)' \
        '{ return (int)(d && n) * 0; }' >"$d/t.c"
    clang -fsanitize=fuzzer,address,undefined -o "$d/t" "$d/t.c" \
        >/dev/null 2>&1
    rc=$?
    rm -rf "$d"
    return $rc
}

# The fuzz targets, by name (test/fuzz/fuzz_NAME.c).
llmgw_fuzz_targets() {
    local f
    for f in "$LLMGW_TOP"/test/fuzz/fuzz_*.c; do
        f=${f##*/fuzz_}
        echo "${f%.c}"
    done
}

# Runs fuzz target $1 for $2 seconds from its committed corpus with a
# random seed, printed. Findings are kept in $3 (made if missing), new
# inputs in $4 (default: a scratch dir under $3, removed after), never in
# the tree. Prints one line; the fuzzer's own output goes to $3/NAME.log.
llmgw_fuzz_run() {
    local name=$1 secs=$2 out=$3 seed rc execs f
    local bin="$LLMGW_TOP/build-san/fuzz/fuzz_$name"
    local corpus="$LLMGW_TOP/test/fuzz/corpus/$name"
    local dict="$LLMGW_TOP/test/fuzz/$name.dict" opts=()
    local work=${4:-$out/$name.new}
    mkdir -p "$out" "$work"
    [ -f "$dict" ] && opts+=("-dict=$dict")
    seed=$(( $(od -An -N4 -tu4 /dev/urandom) % 2147483646 + 1 ))
    set +e
    "$bin" -seed="$seed" -max_total_time="$secs" -timeout=20 \
        -rss_limit_mb=2048 -malloc_limit_mb=256 -print_final_stats=1 \
        -artifact_prefix="$out/$name-" "${opts[@]}" \
        "$work" "$corpus" >"$out/$name.log" 2>&1
    rc=$?
    set -e
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' \
        "$out/$name.log" | tail -n 1)
    [ -n "${4:-}" ] || rm -rf "$work"
    if [ "$rc" -eq 0 ]; then
        echo "fuzz_$name: seed $seed, ${execs:-0} execs in ${secs}s," \
            "no findings"
        return 0
    fi
    echo "fuzz_$name: seed $seed: FINDING (exit $rc), log $out/$name.log"
    grep -E -m 5 '^fuzz: |fuzz check failed|ERROR: |runtime error|SUMMARY' \
        "$out/$name.log" | cut -c1-300 || true
    for f in "$out/$name"-*; do
        [ -e "$f" ] && echo "  reproducer: $f"
    done
    return 1
}

# A free TCP port on 127.0.0.1.
llmgw_free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); \
s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Whether a server can listen on 127.0.0.1:$1, tried as httpd does it
# (SO_REUSEADDR: a port with connections in TIME_WAIT is usable); if not,
# prints why (e.g. "Address already in use") and fails.
llmgw_port_usable() {
    /usr/bin/python3 -c 'import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
    s.listen(1)
except OSError as e:
    print(e.strerror or e)
    sys.exit(1)' "$1"
}

# Waits until something accepts connections on 127.0.0.1:$1; gives up
# after $2 tenths of a second, or at once when process $3 has died.
llmgw_wait_port() {
    local port=$1 tries=${2:-100} pid=${3:-}
    while [ "$tries" -gt 0 ]; do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            return 1
        fi
        sleep 0.1
        tries=$((tries - 1))
    done
    return 1
}

# The LoadModule lines a gateway needs (mod_log_config is built in).
llmgw_load_modules() {
    local m
    for m in mpm_event authz_core authz_host proxy proxy_http slotmem_shm \
        proxy_balancer lbmethod_byrequests status; do
        echo "LoadModule ${m}_module $HTTPD_MODULES/mod_$m.so"
    done
    echo "LoadModule llm_gateway_module $LLMGW_TOP/.libs/mod_llm_gateway.so"
}
