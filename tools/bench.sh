#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# `make bench`, on the host: builds the measuring kernel (tools/kernel/build.sh bench, cached
# like the test kernel) and rvivid against it (rvb2_bench_module, tools/lib.sh), then runs
# tools/bench-guest.sh in a guest booted on that kernel, which prints rvivid's figures next to
# vivid's (Documentation/bench.rst).
#
# The table is also kept in build/bench/table.txt. `tools/bench.sh --profile` (`make
# bench-profile`) samples each driver's workloads with perf in that guest instead
# (tools/bench-perf.sh provides perf), reports in build/bench/profile.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

kdir=$(rvb2_bench_module)
src=$RVB2_TOP/build/bench-src

mkdir -p "$RVB2_TOP/build/bench" "$RVB2_TOP/build/logs"
if [ "${1:-}" = --profile ]; then
	perf=$("$RVB2_TOP/tools/bench-perf.sh")
	RVB2_KERNEL=bench RVB2_MODULE="$src/rvivid.ko" \
		RVB2_VM_CONSOLE="$RVB2_TOP/build/logs/bench-profile-console.txt" \
		"$RVB2_TOP/tools/vm" "$RVB2_TOP/tools/bench-guest.sh" --profile "$perf" >/dev/null
	cat "$RVB2_TOP/build/bench/profile/cpu.txt"
	for f in "$RVB2_TOP"/build/bench/profile/*-sym.txt; do
		echo "== $(basename "$f" -sym.txt)"
		grep -v '^#' "$f" | grep -v '^$' | grep -v ' swapper ' | head -25
	done
	log "reports (per symbol, per command, callers) in build/bench/profile"
	exit 0
fi
rm -f "$RVB2_TOP/build/bench/table.txt"
host_load="host: $(nproc) CPUs,$(uptime | sed 's/.*\(load average\)/ \1/')"
cmdline="command: make bench (commit $(git -C "$RVB2_TOP" rev-parse --short HEAD 2>/dev/null ||
	echo unknown)$(git -C "$RVB2_TOP" diff --quiet HEAD 2>/dev/null || echo ", modified"))"
build="kernel build: $(basename "$kdir") (tools/kernel/build.sh bench: rvb2.config without"
build+=" its debug options, bench.config), QEMU TCG"
RVB2_KERNEL=bench RVB2_MODULE="$src/rvivid.ko" \
	RVB2_VM_CONSOLE="$RVB2_TOP/build/logs/bench-console.txt" \
	"$RVB2_TOP/tools/vm" "$RVB2_TOP/tools/bench-guest.sh" "$cmdline" "$build" "$host_load" \
	>/dev/null
cat "$RVB2_TOP/build/bench/table.txt"
