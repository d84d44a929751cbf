#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# `make check [TESTS="name ..."]`: runs the test suite in the guest and judges the run as a
# whole.
#
# Before the guest boots, the host writes down every test that must report
# (build/logs/expected.txt): the userspace tests the filter selects (`rvb2-tests --list`), every
# KUnit case of the module (each `#[test]` of src/queue/kunit.rs), and every host unit test
# (`cargo test -- --list` of tools/tests and tools/tpg-test). The guest's suite writes one
# PASS/FAIL line per test to build/logs/results.txt; the host adds its own tests' lines and the
# checks only it can make: each expected test reported exactly once, the guest ran to its end
# with a status that its results explain, and nothing in the whole console is a kernel problem
# outside what a test window allows. It prints the totals as its last line.
set -uo pipefail
. "$(dirname "$0")/lib.sh"

logs="$RVB2_TOP/build/logs"
rm -rf "$logs"
mkdir -p "$logs"
results="$logs/results.txt"
expected="$logs/expected.txt"
: >"$results"
tests_bin="$RVB2_TOP/tools/tests/target/release/rvb2-tests"

record() { # PASS|FAIL name [reason]
	echo "$*" >>"$results"
	if [ "$1" = PASS ]; then echo "ok - $2"; else echo "not ok - $2: ${*:3}"; fi
}

# The KUnit cases of the module: "kunit.<suite>.<case>" for each #[test] fn under a
# #[kunit_tests(<suite>)] module.
kunit_cases() {
	local suite="" want=0 line
	while IFS= read -r line; do
		if [[ $line =~ \#\[kunit_tests\(([a-z0-9_]+)\)\] ]]; then
			suite=${BASH_REMATCH[1]}
		elif [[ $line =~ ^[[:space:]]*\#\[test\] ]]; then
			want=1
		elif [ "$want" = 1 ] && [[ $line =~ fn\ ([a-z0-9_]+) ]]; then
			echo "kunit.$suite.${BASH_REMATCH[1]}"
			want=0
		fi
	done <"$RVB2_TOP/src/queue/kunit.rs"
}

# Host unit tests of crate $1 (a directory), as "<prefix>.<test>" with prefix $2. A crate
# whose tests do not build, or that lists none, stands for a failing test of its own.
host_cases() {
	local list
	if list=$(cd "$1" && cargo test --release -q -- --list --format terse 2>"$logs/host-$2-list.txt") &&
		list=$(sed -n "s/^\(.*\): test$/$2.\1/p" <<<"$list") && [ -n "$list" ]; then
		echo "$list"
	else
		echo "$2.build"
	fi
}

# Runs the host unit tests of crate $1 and records each one as "<prefix>.<test>" ($2). One at a
# time: the harness's own tests fork.
host_tests() {
	local out="$logs/host-$2.txt"
	if ! grep -qxF "$2.build" "$expected"; then
		(cd "$1" && cargo test --release -- --test-threads=1) >"$out" 2>&1
	else
		record FAIL "$2.build" "its tests do not build or list none: see build/logs/host-$2-list.txt"
		return
	fi
	sed -nE 's/^test (.*) \.\.\. (ok|FAILED|ignored.*)$/\1\t\2/p' "$out" |
	while IFS=$'\t' read -r name outcome; do
		case "$outcome" in
		ok) record PASS "$2.$name" ;;
		FAILED) record FAIL "$2.$name" "see build/logs/host-$2.txt" ;;
		*) record FAIL "$2.$name" "$outcome (a skipped test is not a pass)" ;;
		esac
	done
}

guest_tests="$logs/expected-guest.txt"
"$tests_bin" --list "$@" >"$guest_tests"
{
	cat "$guest_tests"
	kunit_cases
	host_cases "$RVB2_TOP/tools/tests" host.tests
	host_cases "$RVB2_TOP/tools/tpg-test" host.tpg
} >"$expected"
if [ ! -s "$guest_tests" ]; then
	record FAIL test_selection "no userspace test matches: $*"
fi

start=$(date +%s)
RVB2_VM_CONSOLE="$logs/console.txt" "$RVB2_TOP/tools/vm" "$RVB2_TOP/tools/guest-check.sh" "$@"
status=$?
log "guest run took $(( $(date +%s) - start )) s, status $status"
# What the guest recorded as failed (before the host adds its own lines).
guest_failed=$(grep -c '^FAIL ' "$results")

host_tests "$RVB2_TOP/tools/tests" host.tests
host_tests "$RVB2_TOP/tools/tpg-test" host.tpg

# The test the guest was in when the run ended: the last "begin" marker with no "end".
last_begun() {
	sed -nE 's/.*rvb2-tests: (begin|end) ([^ ]+).*/\1 \2/p' "$logs/console.txt" |
		tail -n 1 | awk '$1 == "begin" { print $2 }'
}

# The guest ran the suite to its end, and its status is what its results say.
case "$status" in
0) record PASS guest_completed ;;
1)
	if [ "$guest_failed" -gt 0 ]; then
		record PASS guest_completed
	else
		record FAIL guest_completed "the suite exited with status 1 but no test failed"
	fi
	;;
124) record FAIL guest_completed "the guest did not finish in time (hung in: $(last_begun))" ;;
125) record FAIL guest_completed "the guest ended without a status (a kernel panic or a crash; in: $(last_begun); see console.txt)" ;;
126) record FAIL guest_completed "rvivid.ko did not load" ;;
*)
	if [ "$status" -gt 128 ]; then
		record FAIL guest_completed "the suite was killed by signal $((status - 128)) (in: $(last_begun))"
	else
		record FAIL guest_completed "the suite exited with status $status"
	fi
	;;
esac

# Every expected test reported exactly once.
while read -r name; do
	n=$(awk -v n="$name" '($1 == "PASS" || $1 == "FAIL") && $2 == n' "$results" | wc -l)
	if [ "$n" -eq 0 ]; then
		record FAIL "$name" "did not report (the run stopped or skipped it)"
	elif [ "$n" -gt 1 ]; then
		record FAIL "$name" "reported $n times"
	fi
done <"$expected"

# Nothing in the kernel's console output, from boot to power-off, reports a problem outside
# what a test window allows (the same judgement as the guest's dmesg_clean test). The console
# must be whole for that to mean anything: the kernel's banner, and a begin and an end marker
# for every userspace test that reported.
ran=$(awk 'NR == FNR { want[$0] = 1; next } ($1 == "PASS" || $1 == "FAIL") && ($2 in want)' "$guest_tests" "$results" | wc -l)
begins=$(grep -c 'rvb2-tests: begin ' "$logs/console.txt")
ends=$(grep -c 'rvb2-tests: end ' "$logs/console.txt")
if ! grep -q '\] Linux version ' "$logs/console.txt"; then
	record FAIL console_clean "the console has no kernel banner (empty or cut: see console.txt)"
elif [ "$begins" -ne "$ran" ] || [ "$ends" -ne "$ran" ]; then
	record FAIL console_clean "the console has $begins begin and $ends end markers for $ran tests: lines are missing"
elif bad=$("$tests_bin" --scan-log "$logs/console.txt"); then
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
