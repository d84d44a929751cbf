#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# The demo, inside the guest: shows what the rvivid device reports.
set -e
. "$(dirname "$0")/guest-lib.sh"
node=$(rvb2_node) || { echo "no rvivid video node" >&2; exit 1; }
echo "== rvivid is $node"
v4l2-ctl -d "$node" --all
