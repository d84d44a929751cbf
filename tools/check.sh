#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# `make check [TESTS="name ..."]`: runs the test suite in the guest and judges the run.
#
# The guest's suite (tools/tests) writes one PASS/FAIL line per test to build/logs/results.txt.
# This script adds the checks only the host can make (the guest ran to its end; nothing in the
# whole console shows a kernel warning, lockdep or kmemleak report, or oops), and prints the
# totals as its last line.
set -uo pipefail
. "$(dirname "$0")/lib.sh"

logs="$RVB2_TOP/build/logs"
rm -rf "$logs"
mkdir -p "$logs"
results="$logs/results.txt"
: >"$results"

start=$(date +%s)
RVB2_VM_CONSOLE="$logs/console.txt" "$RVB2_TOP/tools/vm" "$RVB2_TOP/tools/guest-check.sh" "$@"
status=$?
log "guest run took $(( $(date +%s) - start )) s, status $status"

record() { # PASS|FAIL name [reason]
	echo "$*" >>"$results"
	if [ "$1" = PASS ]; then echo "ok - $2"; else echo "not ok - $2: ${*:3}"; fi
}

# The test pattern generator's host unit tests (src/tpg.rs built as a normal crate).
if (cd "$RVB2_TOP/tools/tpg-test" && cargo test --release -q) >"$logs/tpg-test.txt" 2>&1; then
	record PASS tpg_host_unit_tests
else
	record FAIL tpg_host_unit_tests "see build/logs/tpg-test.txt"
fi

# The guest ran the suite to its end and shut down normally.
if [ "$status" -eq 125 ] || [ "$status" -eq 126 ]; then
	record FAIL guest_completed "the guest did not run the suite to its end (status $status)"
else
	record PASS guest_completed
fi

# Nothing in the kernel's console output, from boot to power-off, reports a bug (the same
# patterns as the guest's dmesg_clean test).
if bad=$("$RVB2_TOP/tools/tests/target/release/rvb2-tests" --scan-log "$logs/console.txt"); then
	record PASS console_clean
else
	record FAIL console_clean "$(echo "$bad" | head -3 | tr '\n' '|')"
fi

passed=$(grep -c '^PASS ' "$results")
failed=$(grep -c '^FAIL ' "$results")
if [ "$passed" -eq 0 ]; then
	failed=$((failed + 1))
	echo "not ok - no test ran"
fi
echo "logs: $logs"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
