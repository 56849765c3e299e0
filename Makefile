# SPDX-License-Identifier: MIT
# libqed build.  `make` builds the library, the CLI and the tests into
# $(BUILD); `make check` and `make demo` first install missing Debian packages.
CC      ?= cc
BUILD   ?= build
OPT     ?= -O2
SANITIZE ?=
WERROR  ?= -Werror

# What the build needs lives in QED_*FLAGS; CPPFLAGS, CFLAGS, LDFLAGS and
# LDLIBS are the packager's (Debian's build passes them on the command
# line) and come last, so they add to the build's flags and may override
# the optimisation, but never drop -std, -fPIC, -MMD or the warnings.
CFLAGS  ?= $(OPT) -g
QED_CPPFLAGS := -D_GNU_SOURCE -Iinclude $(shell pkg-config --cflags libnbd libcurl)
QED_CFLAGS   := -std=c17 -Wall -Wextra $(WERROR) -Wshadow -Wstrict-prototypes \
                -Wno-missing-field-initializers -MMD -MP -fPIC
QED_LDFLAGS  :=
QED_LDLIBS   := -luring -lpthread $(shell pkg-config --libs libnbd libcurl)
# GnuTLS: the NBD server's TLS (nbd/tls.c); libqed itself does not need it.
QED_CPPFLAGS += $(shell pkg-config --cflags gnutls)
NBD_LDLIBS := $(shell pkg-config --libs gnutls)
# libfuse3: `qed mount` (fuse/); libqed itself does not need it.
FUSE_CFLAGS := $(shell pkg-config --cflags fuse3)
FUSE_LDLIBS := $(shell pkg-config --libs fuse3)

QED_CFLAGS += $(EXTRA_CFLAGS)

ifneq ($(SANITIZE),)
QED_CFLAGS  += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
QED_LDFLAGS += -fsanitize=$(SANITIZE)
endif

# Each layer sees its own folder and the faces of the layers below it
# (docs/architecture.md); tests/install/layers.sh checks what the sources
# include and what the objects call.
INC_base    := -Ilib/base
INC_storage := $(INC_base) -Ilib/storage
INC_driver  := $(INC_storage) -Ilib/driver
INC_qed     := $(INC_driver) -Ilib/qed
INC_raw     := $(INC_driver) -Ilib/raw
INC_core    := $(INC_driver) -Ilib/core
INC_ops     := $(INC_core) -Ilib/ops
INC_nbd     := -Inbd
INC_fuse    := -Ifuse $(FUSE_CFLAGS)
INC_tools   := -Inbd -Ifuse -Itools
# Tests and fuzzers reach into every layer.
INC_tests   := $(INC_ops) -Ilib/qed -Ilib/raw -Inbd -Itests/unit
$(foreach l,base storage driver qed raw core ops,\
    $(eval $$(BUILD)/lib/$(l)/%.o: LAYER_INC = $$(INC_$(l))))
$(BUILD)/nbd/%.o: LAYER_INC = $(INC_nbd)
$(BUILD)/fuse/%.o: LAYER_INC = $(INC_fuse)
$(BUILD)/tools/%.o: LAYER_INC = $(INC_tools)
$(BUILD)/tests/%.o: LAYER_INC = $(INC_tests)
$(BUILD)/examples/%.o: LAYER_INC =

COMPILE = $(CC) $(QED_CPPFLAGS) $(LAYER_INC) $(CPPFLAGS) $(QED_CFLAGS) $(CFLAGS)
LINK    = $(CC) $(QED_LDFLAGS) $(LDFLAGS)

LIB_SRCS   := $(sort $(wildcard lib/*/*.c))
NBD_SRCS   := $(sort $(wildcard nbd/*.c))
FUSE_SRCS  := $(sort $(wildcard fuse/*.c))
TOOL_SRCS  := $(sort $(wildcard tools/*.c))
UNIT_SRCS  := $(sort $(wildcard tests/unit/test-*.c))
# Test support, built into the test programs only: the simulated file
# system (a storage driver, io-sim.c) stays out of the shipped libraries.
SIM_SRCS   := tests/unit/io-sim.c
TESTLIB_SRCS := $(sort $(wildcard tests/unit/support-*.c)) $(SIM_SRCS)

LIB_OBJS   := $(LIB_SRCS:%.c=$(BUILD)/%.o)
NBD_OBJS   := $(NBD_SRCS:%.c=$(BUILD)/%.o)
FUSE_OBJS  := $(FUSE_SRCS:%.c=$(BUILD)/%.o)
TOOL_OBJS  := $(TOOL_SRCS:%.c=$(BUILD)/%.o)
TESTLIB_OBJS := $(TESTLIB_SRCS:%.c=$(BUILD)/%.o)
UNIT_BINS  := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%)

LIBQED := $(BUILD)/libqed.a
# The shared library: soname libqed.so.2; the version script (lib/libqed.map)
# exports the public API (qed_*) under the node LIBQED_2.0 and nothing else.
LIBQED_SONAME  := libqed.so.2
LIBQED_SO_FILE := libqed.so.2.0.0
LIBQED_SO      := $(BUILD)/$(LIBQED_SO_FILE)
LIBNBD := $(BUILD)/libqednbd.a
LIBFUSE := $(BUILD)/libqedfuse.a
QED    := $(BUILD)/qed

.PHONY: all deps check check-asan demo clean unit-tests fuzz fuzz-build fuzz-smoke \
        shared install uninstall
# Test support objects are shared by every test program: keep them.
.SECONDARY:

all: $(QED) $(UNIT_BINS) $(LIBQED_SO)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(COMPILE) -c $< -o $@

$(LIBQED): $(LIB_OBJS)
	@mkdir -p $(dir $@)
	rm -f $@
	ar rcs $@ $^

# The same objects (QED_CFLAGS has -fPIC) as a shared library.  -z defs catches
# undefined symbols at link time (not with sanitizers: clang leaves their
# runtime out of shared libraries).
$(LIBQED_SO): $(LIB_OBJS) lib/libqed.map
	@mkdir -p $(dir $@)
	$(LINK) -shared -Wl,-soname,$(LIBQED_SONAME) \
	    -Wl,--version-script=lib/libqed.map $(if $(SANITIZE),,-Wl,-z,defs) \
	    -o $@ $(LIB_OBJS) $(QED_LDLIBS) $(LDLIBS)

shared: $(LIBQED_SO)

# The NBD server is its own library on top of libqed.
$(LIBNBD): $(NBD_OBJS)
	@mkdir -p $(dir $@)
	rm -f $@
	ar rcs $@ $^

# The FUSE export, also on top of libqed.
$(LIBFUSE): $(FUSE_OBJS)
	@mkdir -p $(dir $@)
	rm -f $@
	ar rcs $@ $^

# The tool links libqed.a; TOOL_LINK=shared links it against libqed.so.2
# instead (the Debian package: qed-utils then uses libqed2).
TOOL_LINK ?= static
ifeq ($(TOOL_LINK),shared)
TOOL_LIBQED := $(LIBQED_SO)
TOOL_LIBQED_LINK := -L$(BUILD) -l:$(LIBQED_SO_FILE)
else
TOOL_LIBQED := $(LIBQED)
TOOL_LIBQED_LINK := $(LIBQED)
endif

$(QED): $(TOOL_OBJS) $(LIBNBD) $(LIBFUSE) $(TOOL_LIBQED)
	$(LINK) -o $@ $(TOOL_OBJS) $(LIBNBD) $(LIBFUSE) $(TOOL_LIBQED_LINK) $(QED_LDLIBS) $(NBD_LDLIBS) $(FUSE_LDLIBS) $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(TESTLIB_OBJS) $(LIBNBD) $(LIBQED)
	@mkdir -p $(dir $@)
	$(LINK) -o $@ $< $(TESTLIB_OBJS) $(LIBNBD) $(LIBQED) $(QED_LDLIBS) $(NBD_LDLIBS) $(LDLIBS)

deps:
	@scripts/install-deps.sh

# Unit tests first (fast), then the interop tests that drive qemu-img/qemu-io.
check: deps
	$(MAKE) all fuzz-build
	QED=$(abspath $(QED)) BUILD=$(abspath $(BUILD)) TESTS_DIR=$(abspath tests) \
	    FUZZ_BUILD=$(abspath $(FUZZ_BUILD)) \
	    perl tests/run-tests.pl $(UNIT_BINS) $(sort $(wildcard tests/interop/*.sh)) \
	        $(sort $(wildcard tests/python/*.sh)) \
	        $(sort $(wildcard tests/fuzz/*.sh)) $(sort $(wildcard tests/install/*.sh))

# The whole suite again under AddressSanitizer + UndefinedBehaviorSanitizer
# (the stress test with fewer operations: ASan is several times slower).
ASAN_BUILD ?= build-asan
check-asan: deps
	$(MAKE) BUILD=$(ASAN_BUILD) SANITIZE=address,undefined all
	QED=$(abspath $(ASAN_BUILD))/qed BUILD=$(abspath $(ASAN_BUILD)) \
	    TESTS_DIR=$(abspath tests) QED_STRESS_OPS=20000 \
	    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	    perl tests/run-tests.pl $(patsubst $(BUILD)/%,$(ASAN_BUILD)/%,$(UNIT_BINS)) \
	        $(sort $(wildcard tests/interop/*.sh))

demo: deps
	$(MAKE) $(QED)
	QED=$(abspath $(QED)) scripts/demo.sh

# ---- fuzzing (clang + libFuzzer) ------------------------------------------
FUZZ_BUILD ?= build-fuzz
FUZZ_TIME  ?= 60
FUZZ_NAMES := $(patsubst fuzz/%.c,%,$(sort $(wildcard fuzz/fuzz-*.c)))

fuzz-build:
	$(MAKE) BUILD=$(FUZZ_BUILD) CC=clang SANITIZE=address,undefined \
	    EXTRA_CFLAGS=-fsanitize=fuzzer-no-link \
	    $(FUZZ_BUILD)/libqed.a $(FUZZ_BUILD)/libqednbd.a
	@for t in $(FUZZ_NAMES); do \
	    echo "  LINK $(FUZZ_BUILD)/$$t"; \
	    clang $(QED_CPPFLAGS) $(INC_tests) $(CPPFLAGS) -std=c17 -g -O1 -fsanitize=fuzzer,address,undefined \
	        fuzz/$$t.c $(SIM_SRCS) $(FUZZ_BUILD)/libqednbd.a $(FUZZ_BUILD)/libqed.a \
	        $(QED_LDLIBS) $(NBD_LDLIBS) $(LDLIBS) -o $(FUZZ_BUILD)/$$t || exit 1; \
	done

# Each target runs FUZZ_TIME seconds; new inputs go to $(FUZZ_BUILD)/corpus,
# crashes to $(FUZZ_BUILD)/artifacts (keep them under fuzz/regressions/).
fuzz: deps fuzz-build
	@for t in $(FUZZ_NAMES); do \
	    mkdir -p $(FUZZ_BUILD)/corpus/$$t $(FUZZ_BUILD)/artifacts; \
	    $(FUZZ_BUILD)/$$t -max_total_time=$(FUZZ_TIME) -print_final_stats=1 \
	        -artifact_prefix=$(FUZZ_BUILD)/artifacts/$$t- \
	        $(FUZZ_BUILD)/corpus/$$t fuzz/corpus/$$t || exit 1; \
	done

# ---- installation ----------------------------------------------------------
# make install [PREFIX=/usr/local] [DESTDIR=/staging]: the CLI, the shared and
# static libraries, the header, the pkg-config file and the man pages.
# libqed.pc is written at install time, so it always names the PREFIX (and
# LIBDIR, INCLUDEDIR) of this install; DESTDIR stays out of it.
PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
LIBDIR     ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
MANDIR     ?= $(PREFIX)/share/man
INSTALL    ?= install
LDCONFIG   ?= ldconfig
LIBQED_VERSION := $(shell sed -n 's/.*define QED_VERSION_STRING "\(.*\)".*/\1/p' include/qed.h)

# Paths under the prefix are written relative to it (${prefix}/...), so
# `pkg-config --define-prefix` can relocate a staged copy.
PC_LIBDIR     = $(patsubst $(PREFIX)/%,$${exec_prefix}/%,$(LIBDIR))
PC_INCLUDEDIR = $(patsubst $(PREFIX)/%,$${prefix}/%,$(INCLUDEDIR))

# Refreshes the dynamic linker's cache after a real (not staged) install as
# root; LDCONFIG= skips it.
define run-ldconfig
$(if $(LDCONFIG),@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" -eq 0 ]; then \
    echo "$(LDCONFIG)"; $(LDCONFIG) || true; fi)
endef

install: $(QED) $(LIBQED) $(LIBQED_SO) include/qed.h libqed.pc.in man/qed.1 man/libqed.3
	$(INSTALL) -d "$(DESTDIR)$(BINDIR)" "$(DESTDIR)$(LIBDIR)" \
	    "$(DESTDIR)$(PKGCONFIGDIR)" "$(DESTDIR)$(INCLUDEDIR)" \
	    "$(DESTDIR)$(MANDIR)/man1" "$(DESTDIR)$(MANDIR)/man3"
	$(INSTALL) -m 755 $(QED) "$(DESTDIR)$(BINDIR)/qed"
	$(INSTALL) -m 755 $(LIBQED_SO) "$(DESTDIR)$(LIBDIR)/$(LIBQED_SO_FILE)"
	ln -sf $(LIBQED_SO_FILE) "$(DESTDIR)$(LIBDIR)/$(LIBQED_SONAME)"
	ln -sf $(LIBQED_SO_FILE) "$(DESTDIR)$(LIBDIR)/libqed.so"
	$(INSTALL) -m 644 $(LIBQED) "$(DESTDIR)$(LIBDIR)/libqed.a"
	$(INSTALL) -m 644 include/qed.h "$(DESTDIR)$(INCLUDEDIR)/qed.h"
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(PC_LIBDIR)|' \
	    -e 's|@INCLUDEDIR@|$(PC_INCLUDEDIR)|' -e 's|@VERSION@|$(LIBQED_VERSION)|' \
	    libqed.pc.in >"$(DESTDIR)$(PKGCONFIGDIR)/libqed.pc"
	chmod 644 "$(DESTDIR)$(PKGCONFIGDIR)/libqed.pc"
	$(INSTALL) -m 644 man/qed.1 "$(DESTDIR)$(MANDIR)/man1/qed.1"
	$(INSTALL) -m 644 man/libqed.3 "$(DESTDIR)$(MANDIR)/man3/libqed.3"
	$(run-ldconfig)

uninstall:
	rm -f "$(DESTDIR)$(BINDIR)/qed" \
	    "$(DESTDIR)$(LIBDIR)/$(LIBQED_SO_FILE)" "$(DESTDIR)$(LIBDIR)/$(LIBQED_SONAME)" \
	    "$(DESTDIR)$(LIBDIR)/libqed.so" "$(DESTDIR)$(LIBDIR)/libqed.a" \
	    "$(DESTDIR)$(INCLUDEDIR)/qed.h" "$(DESTDIR)$(PKGCONFIGDIR)/libqed.pc" \
	    "$(DESTDIR)$(MANDIR)/man1/qed.1" "$(DESTDIR)$(MANDIR)/man3/libqed.3"
	$(run-ldconfig)

clean:
	rm -rf $(BUILD) $(FUZZ_BUILD)

-include $(LIB_OBJS:.o=.d) $(NBD_OBJS:.o=.d) $(TOOL_OBJS:.o=.d) $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/unit/%.d) $(TESTLIB_OBJS:.o=.d)
