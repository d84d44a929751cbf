#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# `make bench`, inside the guest: prints rvivid's figures (tools/tests/src/bench.rs).
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/tools/guest-lib.sh"
node=$(rvb2_node) || { echo "no rvivid video node" >&2; exit 1; }
exec "$top/tools/tests/target/release/rvb2-tests" --bench "$node"
