#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# The demo, inside the guest: shows what rvivid reports, then streams 640x480 RGB24 and keeps
# the 30th frame in build/demo/frame.rgb (tools/demo.sh turns it into a PNG).
set -e
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/tools/guest-lib.sh"
node=$(rvb2_node) || { echo "no rvivid video node" >&2; exit 1; }
echo "== rvivid is $node"
v4l2-ctl -d "$node" --all
mkdir -p "$top/build/demo"
echo "== streaming 640x480 RGB24, keeping frame 30"
v4l2-ctl -d "$node" --set-fmt-video=width=640,height=480,pixelformat=RGB3 \
	--stream-mmap --stream-count=1 --stream-skip=29 --stream-to="$top/build/demo/frame.rgb" --verbose 2>&1 |
	grep -E 'dqbuf|STREAM' | tail -4
