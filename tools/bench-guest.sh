#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# `make bench`, inside the guest (tools/bench.sh boots it on the measuring kernel with rvivid
# loaded): loads vivid next to rvivid and runs `rvb2-tests --bench` on both (the arguments are
# header lines for its table), keeping the table in build/bench/table.txt.
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

out=$top/build/bench/table.txt
set -o pipefail
"$top/tools/tests/target/release/rvb2-tests" --bench "$rnode" "$vnode" "$@" | tee "$out.tmp" &&
	mv "$out.tmp" "$out"
