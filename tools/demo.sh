#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# `make run`: boots the guest, loads rvivid and shows what it reports.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
mkdir -p "$RVB2_TOP/build/logs"
RVB2_VM_CONSOLE="$RVB2_TOP/build/logs/demo-console.txt" "$RVB2_TOP/tools/vm" "$RVB2_TOP/tools/demo-guest.sh"
