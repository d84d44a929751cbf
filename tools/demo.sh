#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# `make run`: boots the guest, loads rvivid, shows what it reports, captures a frame and
# writes it as a PNG.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
mkdir -p "$RVB2_TOP/build/logs"
rm -f "$RVB2_TOP/build/demo/frame.rgb"
RVB2_VM_CONSOLE="$RVB2_TOP/build/logs/demo-console.txt" "$RVB2_TOP/tools/vm" "$RVB2_TOP/tools/demo-guest.sh"
python3 "$RVB2_TOP/tools/raw2png.py" 640 480 "$RVB2_TOP/build/demo/frame.rgb" "$RVB2_TOP/build/demo/frame.png"
echo "== captured frame: $RVB2_TOP/build/demo/frame.png"
