#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# `make bench-display`, on the host: the capture-to-display figures (fenced against classic,
# Documentation/display.rst) in a guest booted on the measuring kernel of `make bench` (built
# and cached on first use, with rvivid built against it: rvb2_bench_module, tools/lib.sh).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

kdir=$(rvb2_bench_module)
mkdir -p "$RVB2_TOP/build/bench" "$RVB2_TOP/build/logs"
host_load="host: $(nproc) CPUs,$(uptime | sed 's/.*\(load average\)/ \1/')"
cmdline="command: make bench-display (commit $(git -C "$RVB2_TOP" rev-parse --short HEAD 2>/dev/null ||
	echo unknown)$(git -C "$RVB2_TOP" diff --quiet HEAD 2>/dev/null || echo ", modified"))"
build="kernel build: $(basename "$kdir") (tools/kernel/build.sh bench: rvb2.config without"
build+=" its debug options, bench.config), QEMU TCG"
RVB2_KERNEL=bench RVB2_MODULE="$RVB2_TOP/build/bench-src/rvivid.ko" \
	RVB2_VM_CONSOLE="$RVB2_TOP/build/logs/bench-display-console.txt" \
	"$RVB2_TOP/tools/vm" "$RVB2_TOP/tools/bench-display-guest.sh" "$cmdline" "$build" \
	"$host_load" >/dev/null
cat "$RVB2_TOP/build/bench/display.txt"
