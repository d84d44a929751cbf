#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# `make bench-display`, inside the guest: samples/vkms-pipeline with fences and the classic CPU
# path, side by side, at rvivid's default and fastest rates for 320x240 (30 and 120 fps),
# no checking (-C and -w wait, they are for checking). Prints one table, keeps it in
# build/bench/display.txt. Arguments: header lines.
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/tools/guest-lib.sh"
set -o pipefail
# vkms from the booted kernel's module tree (tools/vm puts the bench kernel's in $RVB2_MODROOT).
modprobe ${RVB2_MODROOT:+-d "$RVB2_MODROOT"} vkms || { echo "modprobe vkms failed" >&2; exit 1; }
node=$(rvb2_node rvivid) || { echo "no rvivid video node" >&2; exit 1; }
sample=$top/build/samples/vkms-pipeline
frames=${RVB2_BENCH_FRAMES:-150}
rounds=${RVB2_BENCH_ROUNDS:-3}
out=$top/build/bench/display.txt
mkdir -p "$top/build/bench"
{
	for line in "$@"; do echo "$line"; done
	echo "guest kernel: $(uname -r), $(nproc) CPUs; $frames frames per round, $rounds rounds," \
		"3 buffers, 320x240 RGB24, vkms at 60 Hz; median [min-max]"
	for rate in 30 120; do
		for mode in fenced classic; do
			for r in $(seq "$rounds"); do
				"$sample" -d "$node" -m "$mode" -r "$rate" -n "$frames" -b 3 |
					tail -1 || exit 1
			done
		done
	done | awk '
	function med(s,   a, n, i, j, t) {
		n = split(s, a, " ")
		for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++)
			if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
		return sprintf("%.1f [%.1f-%.1f]", a[int((n + 1) / 2)], a[1], a[n])
	}
	function m1(s,   a, n, i, j, t) {
		n = split(s, a, " ")
		for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++)
			if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
		return a[int((n + 1) / 2)]
	}
	{
		mode = $1; rate = $4
		for (i = 1; i <= NF; i++) {
			if ($(i + 1) == "fps" && $(i + 2) == "shown,") fps[rate, mode] = fps[rate, mode] " " $i
			if ($i == "mean") lat[rate, mode] = lat[rate, mode] " " $(i + 1) / 1000
			if ($i == "cpu") cpu[rate, mode] = cpu[rate, mode] " " $(i + 1) / 1000
			if ($(i + 1) == "gaps,") gaps[rate, mode] = gaps[rate, mode] " " $i
		}
		rates[rate] = 1
	}
	END {
		printf "%-40s %24s %24s %8s\n", "", "fenced", "classic", "f/c"
		n = split("30 120", rl, " ")
		for (k = 1; k <= n; k++) {
			r = rl[k]
			if (!(r in rates)) continue
			printf "rvivid at %s fps\n", r
			printf "%-40s %24s %24s %8.2f\n", "  frames shown per second", med(fps[r, "fenced"]), med(fps[r, "classic"]), m1(fps[r, "fenced"]) / m1(fps[r, "classic"])
			printf "%-40s %24s %24s %8.2f\n", "  capture to flip, ms (mean per round)", med(lat[r, "fenced"]), med(lat[r, "classic"]), m1(lat[r, "fenced"]) / m1(lat[r, "classic"])
			printf "%-40s %24s %24s %8.2f\n", "  CPU of the program per frame, ms", med(cpu[r, "fenced"]), med(cpu[r, "classic"]), m1(cpu[r, "fenced"]) / m1(cpu[r, "classic"])
			printf "%-40s %24s %24s %8s\n", "  frames rvivid dropped per round", med(gaps[r, "fenced"]), med(gaps[r, "classic"]), ""
		}
	}'
} | tee "$out.tmp" && mv "$out.tmp" "$out"
