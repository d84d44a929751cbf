#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# `make bench-display`, inside the guest: samples/vkms-pipeline with fences and the classic CPU
# path on rvivid, and the classic path on vivid (mainline videobuf2, which has no fences) as
# the reference, side by side, at rvivid's default and fastest rates for 320x240 (30 and 120
# fps), no checking (-C and -w wait, they are for checking), 8 rounds of 150 frames per way and
# rate (the latency depends on the phase of the capture's clock against the vblanks, which
# each round draws anew). Prints one table, keeps it in
# build/bench/display.txt. Arguments: header lines.
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/tools/guest-lib.sh"
set -o pipefail
# vkms and vivid from the booted kernel's module tree (tools/vm puts the bench kernel's in
# $RVB2_MODROOT).
# shellcheck disable=SC2086
modprobe ${RVB2_MODROOT:+-d "$RVB2_MODROOT"} vkms || { echo "modprobe vkms failed" >&2; exit 1; }
# shellcheck disable=SC2086
modprobe ${RVB2_MODROOT:+-d "$RVB2_MODROOT"} vivid n_devs=1 node_types=0x1 ||
	{ echo "modprobe vivid failed" >&2; exit 1; }
node=$(rvb2_node rvivid) || { echo "no rvivid video node" >&2; exit 1; }
vnode=$(rvb2_node vivid-000-vid-cap) || { echo "no vivid video node" >&2; exit 1; }
# As in `make bench`: vivid draws only its frame counters, as rvivid does, and stamps buffers
# when their fill starts (as rvivid stamps its nominal frame time).
v4l2-ctl -d "$vnode" -c osd_text_mode=1 -c timestamp_source=1 ||
	{ echo "cannot set vivid's controls" >&2; exit 1; }
sample=$top/build/samples/vkms-pipeline
frames=${RVB2_BENCH_FRAMES:-150}
rounds=${RVB2_BENCH_ROUNDS:-8}
out=$top/build/bench/display.txt
mkdir -p "$top/build/bench"
{
	for line in "$@"; do echo "$line"; done
	echo "guest kernel: $(uname -r), $(nproc) CPUs; $frames frames per round, $rounds rounds," \
		"3 buffers, 320x240 RGB24, vkms at 60 Hz; median [min-max]"
	for rate in 30 120; do
		for way in fenced classic vivid; do
			dev=$node mode=$way
			[ "$way" = vivid ] && dev=$vnode mode=classic
			for r in $(seq "$rounds"); do
				line=$("$sample" -d "$dev" -m "$mode" -r "$rate" -n "$frames" -b 3 |
					tail -1) || exit 1
				echo "$way $rate $line"	# the rate asked for
			done
		done
	done | awk '
	# The median of the values in s (the mean of the middle two for an even count), and
	# "median [min-max]".
	function m1(s,   a, n, i, j, t) {
		n = split(s, a, " ")
		for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++)
			if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
		lo = a[1]; hi = a[n]
		return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
	}
	function med(s,   m) {
		m = m1(s)
		return sprintf("%.1f [%.1f-%.1f]", m, lo, hi)
	}
	function ratio(a, b) { return b + 0 ? sprintf("%.2f", a / b) : "-" }
	function row(name, v, r) {
		printf "%-38s %20s %20s %20s %6s %6s\n", name, med(v[r, "fenced"]), med(v[r, "classic"]), med(v[r, "vivid"]), ratio(m1(v[r, "fenced"]), m1(v[r, "classic"])), ratio(m1(v[r, "classic"]), m1(v[r, "vivid"]))
	}
	{
		way = $1; rate = $2
		for (i = 3; i <= NF; i++) {
			if ($(i + 1) == "fps" && $(i + 2) == "shown,") fps[rate, way] = fps[rate, way] " " $i
			if ($i == "mean") lat[rate, way] = lat[rate, way] " " $(i + 1) / 1000
			if ($i == "cpu") cpu[rate, way] = cpu[rate, way] " " $(i + 1) / 1000
			if ($(i + 1) == "gaps,") gaps[rate, way] = gaps[rate, way] " " $i
		}
		rates[rate] = 1
	}
	END {
		printf "%-38s %20s %20s %20s %6s %6s\n", "", "rvivid fenced", "rvivid classic", "vivid classic", "f/c", "c/v"
		n = split("30 120", rl, " ")
		for (k = 1; k <= n; k++) {
			r = rl[k]
			if (!(r in rates)) continue
			printf "at %s fps\n", r
			row("  frames shown per second", fps, r)
			row("  capture to flip, ms (mean per round)", lat, r)
			row("  CPU of the program per frame, ms", cpu, r)
			printf "%-38s %20s %20s %20s\n", "  frames dropped per round", med(gaps[r, "fenced"]), med(gaps[r, "classic"]), med(gaps[r, "vivid"])
		}
	}'
} | tee "$out.tmp" && mv "$out.tmp" "$out"
