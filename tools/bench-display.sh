#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# `make bench-display`, on the host: the capture-to-display figures (fenced against classic,
# Documentation/display.rst) in a guest on the test kernel (the measuring kernel of `make
# bench` would take far longer to build; these are debug-kernel figures, read the ratios).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
host_load="host: $(nproc) CPUs,$(uptime | sed 's/.*\(load average\)/ \1/')"
cmdline="command: make bench-display (commit $(git -C "$RVB2_TOP" rev-parse --short HEAD 2>/dev/null ||
	echo unknown)$(git -C "$RVB2_TOP" diff --quiet HEAD 2>/dev/null || echo ", modified"))"
"$RVB2_TOP/tools/vm" "$RVB2_TOP/tools/bench-display-guest.sh" "$cmdline" \
	"test kernel (KASAN, lockdep, ...), QEMU TCG" "$host_load" >/dev/null
cat "$RVB2_TOP/build/bench/display.txt"
