#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# `make bench`, inside the guest (tools/bench.sh boots it on the measuring kernel with rvivid
# loaded): loads vivid next to rvivid and runs `rvb2-tests --bench` on both (the arguments are
# header lines for its table), keeping the table in build/bench/table.txt. With --profile PERF
# [SECS] it samples the drivers' workloads with perf instead (`make bench-profile`).
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/tools/guest-lib.sh"

# One vivid instance with only a video capture node; its modules come from the bench kernel's
# module tree (tools/vm puts it in $RVB2_MODROOT, outside the shared guest root).
# shellcheck disable=SC2086
modprobe ${RVB2_MODROOT:+-d "$RVB2_MODROOT"} vivid n_devs=1 node_types=0x1 ||
	{ echo "modprobe vivid failed" >&2; exit 1; }
rnode=$(rvb2_node rvivid) || { echo "no rvivid video node" >&2; exit 1; }
vnode=$(rvb2_node vivid-000-vid-cap) || { echo "no vivid video node" >&2; exit 1; }
# vivid draws only its frame counters, as rvivid does (its default also prints the standard,
# the time and the controls on every frame), and stamps buffers when their fill starts
# (its default, end of frame, is 0.9 frame after that: later than the buffer's completion).
v4l2-ctl -d "$vnode" -c osd_text_mode=1 -c timestamp_source=1 ||
	{ echo "cannot set vivid's controls" >&2; exit 1; }

if [ "${1:-}" = --profile ]; then
	# `make bench-profile`: each driver's frames and calls workloads (`rvb2-tests
	# --bench-load`) under `perf record` (software cpu-clock sampling of every CPU: TCG has no
	# PMU), reported per symbol and per command into build/bench/profile.
	perf=$2
	secs=${3:-8}
	dir=$top/build/bench/profile
	rm -rf "$dir"
	mkdir -p "$dir"
	# The string-copy features the kernel's memcpy()/memmove() choose their code by.
	echo "string features: $(grep -owE 'erms|fsrm|fsrs|fzrm' /proc/cpuinfo | sort -u | xargs)" \
		>"$dir/cpu.txt"
	echo 0 >/proc/sys/kernel/kptr_restrict
	echo -1 >/proc/sys/kernel/perf_event_paranoid
	for drv in rvivid vivid; do
		node=$rnode
		[ "$drv" = vivid ] && node=$vnode
		for what in frames frames-mapped calls; do
			# perf record cannot write its data to the 9p repository mount: /tmp (tmpfs).
			data=/tmp/perf-$drv-$what.data
			"$perf" record -q -e cpu-clock -F 2000 -a -g -o "$data" -- \
				"$top/tools/tests/target/release/rvb2-tests" --bench-load "$node" "$drv" \
				"$what" "$secs" || { echo "perf record $drv $what failed" >&2; exit 1; }
			# Samples are 0.5 ms of CPU each (-F 2000).
			"$perf" report -i "$data" --stdio --no-children -g none \
				-F overhead,sample,comm,dso 2>/dev/null | sed 's/ *$//' >"$dir/$drv-$what-comm.txt"
			"$perf" report -i "$data" --stdio --no-children -g none \
				-F overhead,sample,comm,dso,sym --percent-limit 0.05 2>/dev/null |
				sed 's/ *$//' >"$dir/$drv-$what-sym.txt"
			"$perf" report -i "$data" --stdio --no-children -G --sort dso,sym \
				--percent-limit 2 2>/dev/null | sed 's/ *$//' >"$dir/$drv-$what-callers.txt"
			rm -f "$data"
		done
	done
	exit 0
fi

out=$top/build/bench/table.txt
set -o pipefail
"$top/tools/tests/target/release/rvb2-tests" --bench "$rnode" "$vnode" "$@" | tee "$out.tmp" &&
	mv "$out.tmp" "$out"
