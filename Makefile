# SPDX-License-Identifier: GPL-2.0
#
# rvb2 top-level Makefile.
#
#   make          build rvivid.ko against the cached test kernel (built on first use)
#   make run      the demo: boot the guest, load rvivid, show `v4l2-ctl --all`
#   make check    build everything, run the whole test suite in the guest
#   make shell    a shell in the guest with rvivid loaded
#   make bench    rvivid against vivid on a kernel built for measuring (Documentation/bench.rst)
#   make bench-display  capture to display, fenced against classic (Documentation/display.rst)
#   make bench-profile  perf profiles of both drivers' bench workloads on that kernel
#   make setup    install the host packages and tools (done by the targets above too)
#
# KDIR defaults to the kernel tree tools/kernel/build.sh keeps in its cache.

SHELL := /bin/bash
TOOLS := $(CURDIR)/tools
LLVM ?= -19
export LIBCLANG_PATH ?= /usr/lib/llvm-19/lib
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: all modules setup kernel run check shell bench bench-display bench-profile clean rustfmt rustfmtcheck clippy tests samples

all: modules

setup:
	@$(TOOLS)/setup-host.sh

kernel: setup
	@$(TOOLS)/kernel/build.sh >/dev/null

modules: setup
	@kdir=$${KDIR:-$$($(TOOLS)/kernel/build.sh)} && \
	$(MAKE) --no-print-directory -C "$$kdir" M=$(CURDIR) LLVM=$(LLVM) $(if $(CLIPPY),CLIPPY=1) W=1 modules

tests: setup samples
	@cd $(TOOLS)/tests && cargo build --release --quiet

samples: build/samples/fence-capture build/samples/vkms-pipeline

build/samples/fence-capture: samples/fence-capture.c include/uapi/linux/rvb2-fences.h
	@mkdir -p $(@D)
	$(CC) -O2 -Wall -Wextra -Werror -I include/uapi -o $@ $<

# The DRM UAPI headers (<drm/drm.h>, ...) come from the kernel tree, with the __user that
# headers_install would strip; the system's headers win for the rest.
build/samples/vkms-pipeline: samples/vkms-pipeline.c include/uapi/linux/rvb2-fences.h
	@mkdir -p $(@D)
	@kdir=$${KDIR:-$$($(TOOLS)/kernel/build.sh)} && \
	echo "$(CC) -O2 -Wall -Wextra -Werror -I include/uapi -idirafter $$kdir/include/uapi -D__user= -o $@ $<" && \
	$(CC) -O2 -Wall -Wextra -Werror -I include/uapi -idirafter "$$kdir/include/uapi" -D__user= -o $@ $<

run: modules
	@$(TOOLS)/demo.sh

check: modules tests
	@$(TOOLS)/check.sh $(TESTS)

shell: modules
	@$(TOOLS)/vm

bench: setup tests
	@$(TOOLS)/bench.sh

bench-display: setup samples
	@$(TOOLS)/bench-display.sh

bench-profile: setup tests
	@$(TOOLS)/bench.sh --profile

rustfmt:
	@rustfmt src/rvivid_main.rs

rustfmtcheck:
	@rustfmt --check src/rvivid_main.rs

clippy:
	@$(MAKE) modules CLIPPY=1

clean:
	@kdir=$${KDIR:-$$($(TOOLS)/kernel/build.sh 2>/dev/null)}; \
	[ -z "$$kdir" ] || $(MAKE) -C "$$kdir" M=$(CURDIR) LLVM=$(LLVM) clean
	rm -rf build src/bindings_generated.rs
