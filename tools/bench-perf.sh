#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# tools/bench-perf.sh: puts `perf` (Debian sid's linux-perf, the kernel's own version) for the
# bench guest in build/bench/perf, and prints the path of the binary as the guest sees it.
#
# The guest root (tools/rootfs/build.sh) stays as `make check` needs it: perf and the shared
# libraries it needs that the guest root lacks are unpacked (dpkg-deb -x, no maintainer
# scripts) into build/bench/perf, which the guest sees through the repository mount, and the
# guest runs build/bench/perf/run-perf, which points the loader at them. Only
# `make bench-profile` needs it.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

# linux-perf and the libraries of its NEEDED list that the guest root does not have.
packages=(linux-perf libopencsd1 libelf1t64 libdw1t64 libdebuginfod1t64 libpython3.14
	libtraceevent1)
out=$RVB2_TOP/build/bench/perf
rootfs=$("$RVB2_TOP/tools/rootfs/build.sh")
rvb2_sid_update
# shellcheck disable=SC2046
version=$(apt-cache $(rvb2_sid_apt_opts) show linux-perf 2>/dev/null |
	awk '/^Version:/ { print $2; exit }')
[ -n "$version" ] || die "linux-perf not found in sid"
if [ "$(cat "$out/.version" 2>/dev/null)" != "$version ${packages[*]}" ]; then
	log "unpacking linux-perf $version and its libraries into $out"
	rm -rf "$out"
	mkdir -p "$out/root"
	(
		cd "$RVB2_SID_APT/archives"
		# shellcheck disable=SC2046
		apt-get $(rvb2_sid_apt_opts) -qq download "${packages[@]}"
		for p in "${packages[@]}"; do
			deb=$(ls -t "${p}"_*.deb | head -1)
			dpkg-deb -x "$deb" "$out/root"
		done
	)
	libs=$out/root/usr/lib/x86_64-linux-gnu
	cat >"$out/run-perf" <<-EOF
		#!/bin/sh
		# perf from linux-perf $version with its libraries (tools/bench-perf.sh).
		LD_LIBRARY_PATH=$libs\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH} \\
		exec $out/root/usr/bin/perf "\$@"
	EOF
	chmod +x "$out/run-perf"
	# It must start against the guest root's libraries (the guest's loader and libc).
	"$rootfs/lib64/ld-linux-x86-64.so.2" --library-path "$libs:$rootfs/usr/lib/x86_64-linux-gnu" \
		"$out/root/usr/bin/perf" --version >/dev/null ||
		die "perf does not start with the guest root's libraries"
	echo "$version ${packages[*]}" >"$out/.version"
fi
echo "$out/run-perf"
