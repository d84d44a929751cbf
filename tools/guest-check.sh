#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# The test suite, inside the guest (tools/check.sh runs it through tools/vm).
top=$(cd "$(dirname "$0")/.." && pwd)
exec "$top/tools/tests/target/release/rvb2-tests" --module "$top/rvivid.ko" --logs "$top/build/logs" "$@"
