# build/sanitize.mk: the sanitizer builds beside the autotools one (GNU
# make; build/check and build/fuzz run it as `make -f build/sanitize.mk`):
#   asan-unit   the core and its Check tests, clang, ASan+UBSan
#   clang-glue  the httpd glue compiled by clang too (warnings only)
#   fuzzers     the libFuzzer targets of test/fuzz (clang)
#   replayers   the same targets with a plain main() that runs corpus
#               files (gcc, ASan+UBSan), for machines without libFuzzer
#   asan-module mod_llm_gateway.so built with gcc -fsanitize=address, for
#               the pytest run under LLMGW_ASAN=1 (gcc's libasan is what
#               LD_PRELOAD can give apache2)
# Everything goes to build-san/; the source lists come from Makefile.am.
TOP := $(abspath $(dir $(lastword $(MAKEFILE_LIST)))/..)
OUT ?= $(TOP)/build-san
CLANG ?= clang
GCC ?= gcc

# The .c files of an automake _SOURCES list, and the warnings configure
# sets: one place names them.
am_sources = $(shell awk '/^$(1) *=/{f=1} f{print; if (!/\\$$/) exit}' \
    $(TOP)/Makefile.am | grep -o '[^ ]*\.c')
CORE_SRC := $(call am_sources,libllmgw_core_la_SOURCES)
UNIT_SRC := $(call am_sources,test_unit_test_core_SOURCES)
GLUE_SRC := $(call am_sources,mod_llm_gateway_la_SOURCES)
WARN := $(shell sed -n 's/^WARN_CFLAGS="\(.*\)"/\1/p' $(TOP)/configure.ac)
FUZZ_SRC := $(sort $(wildcard $(TOP)/test/fuzz/fuzz_*.c))
FUZZ_NAMES := $(patsubst $(TOP)/test/fuzz/%.c,%,$(FUZZ_SRC))

DEPS_CFLAGS := $(shell pkg-config --cflags apr-1 apr-util-1 json-c libxml-2.0)
DEPS_LIBS := $(shell pkg-config --libs apr-1 apr-util-1 json-c libxml-2.0) -lm
CHECK_CFLAGS := $(shell pkg-config --cflags check 2>/dev/null)
CHECK_LIBS := $(shell pkg-config --libs check 2>/dev/null)
APXS ?= $(shell command -v apxs || command -v apxs2)
APACHE_CFLAGS = -I$(shell $(APXS) -q INCLUDEDIR) \
    $(shell $(APXS) -q EXTRA_CPPFLAGS)

# UBSan findings fail the run (-fno-sanitize-recover) instead of scrolling by.
SAN := -fsanitize=address,undefined -fno-sanitize-recover=all \
    -fno-omit-frame-pointer -g -O1
BASE = $(WARN) -I$(TOP)/src/core $(DEPS_CFLAGS) -MMD -MP -MF $(@:.o=.d) -MT $@
# The glue's own headers (and configure's mod_llmgw_version.h).
GLUE_INC = -I$(TOP)/src/httpd

# One object per source and flavour: $(OUT)/<flavour>/<path>.o
objs = $(patsubst %.c,$(OUT)/$(1)/%.o,$(2))

# Objects made by the pattern rules are kept (make would delete them as
# intermediate files, and rebuild everything next time).
.SECONDARY:

.PHONY: all asan-unit clang-glue fuzzers replayers asan-module
all: asan-unit clang-glue fuzzers replayers asan-module
asan-unit: $(OUT)/asan/test_core
clang-glue: $(OUT)/glue/stamp
fuzzers: $(addprefix $(OUT)/fuzz/,$(FUZZ_NAMES))
replayers: $(addprefix $(OUT)/replay/,$(FUZZ_NAMES))
asan-module: $(OUT)/module/mod_llm_gateway.so

# -- the Check tests under ASan+UBSan (clang) ----------------------------
$(OUT)/asan/%.o: $(TOP)/%.c
	@mkdir -p $(@D)
	$(CLANG) $(SAN) $(BASE) $(CHECK_CFLAGS) -c $< -o $@

$(OUT)/asan/test_core: $(call objs,asan,$(CORE_SRC) $(UNIT_SRC))
	$(CLANG) $(SAN) -o $@ $^ $(CHECK_LIBS) $(DEPS_LIBS)

# -- the glue through clang's warnings -----------------------------------
$(OUT)/glue/%.o: $(TOP)/%.c
	@mkdir -p $(@D)
	$(CLANG) $(BASE) $(GLUE_INC) $(APACHE_CFLAGS) -fsyntax-only $< && touch $@

$(OUT)/glue/stamp: $(call objs,glue,$(GLUE_SRC))
	@touch $@

# -- libFuzzer targets (clang) -------------------------------------------
# The core gets coverage instrumentation; libFuzzer's main comes at link.
$(OUT)/fuzz/%.o: $(TOP)/%.c
	@mkdir -p $(@D)
	$(CLANG) $(SAN) -fsanitize=fuzzer-no-link $(BASE) -c $< -o $@

$(OUT)/fuzz/fuzz_%: $(OUT)/fuzz/test/fuzz/fuzz_%.o \
        $(call objs,fuzz,$(CORE_SRC))
	$(CLANG) $(SAN) -fsanitize=fuzzer -o $@ $^ $(DEPS_LIBS) -lpthread

# -- corpus replayers (gcc, no libFuzzer) --------------------------------
# gcc's -Wmaybe-uninitialized follows its optimiser, which the sanitizers'
# instrumentation changes: it warns at -O1 with ASan where the -O2 build
# (still -Werror on it) sees the value set. A warning here, not an error.
GCC_SAN_WARN := -Wno-error=maybe-uninitialized
$(OUT)/replay/%.o: $(TOP)/%.c
	@mkdir -p $(@D)
	$(GCC) $(SAN) $(BASE) $(GCC_SAN_WARN) -c $< -o $@

$(OUT)/replay/fuzz_%: $(OUT)/replay/test/fuzz/fuzz_%.o \
        $(OUT)/replay/test/fuzz/replay.o $(call objs,replay,$(CORE_SRC))
	$(GCC) $(SAN) -o $@ $^ $(DEPS_LIBS) -lpthread

# -- the module with ASan, for httpd (gcc) -------------------------------
# Findings are logged and the child goes on (halt_on_error=0 needs
# -fsanitize-recover), so one finding does not hide the next.
MOD_SAN := -fsanitize=address,undefined -fsanitize-recover=address \
    -fno-omit-frame-pointer -g -O1 -fPIC
$(OUT)/module/%.o: $(TOP)/%.c
	@mkdir -p $(@D)
	$(GCC) $(MOD_SAN) $(BASE) $(GLUE_INC) $(GCC_SAN_WARN) $(APACHE_CFLAGS) \
	    -c $< -o $@

$(OUT)/module/mod_llm_gateway.so: $(call objs,module,$(CORE_SRC) $(GLUE_SRC))
	$(GCC) $(MOD_SAN) -shared -o $@ $^ $(DEPS_LIBS)

-include $(shell find $(OUT) -name '*.d' 2>/dev/null)
