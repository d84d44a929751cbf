#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
# The test suite, inside the guest (tools/check.sh runs it through tools/vm): the KUnit
# results of the module's suites (they ran when tools/vm loaded it), then the userspace suite.
top=$(cd "$(dirname "$0")/.." && pwd)
logs="$top/build/logs"
mkdir -p "$logs"

record() { # PASS|FAIL name [reason]
	echo "$*" >>"$logs/results.txt"
	if [ "$1" = PASS ]; then echo "ok - $2"; else echo "not ok - $2: ${*:3}"; fi
}

# What the logs should say of this run: the guest's clock and kernel.
cs=/sys/devices/system/clocksource/clocksource0
echo "current: $(cat $cs/current_clocksource), available: $(cat $cs/available_clocksource)" \
	>"$logs/clocksource.txt"
echo "rvb2 guest: $(uname -r), clocksource $(cat "$logs/clocksource.txt")"
# A task blocked this long is reported (and fails the test it happens in) well before the
# harness's per-test timeout (120 s unless a test says otherwise) kills it.
echo 60 >/proc/sys/kernel/hung_task_timeout_secs

suites=0
for dir in /sys/kernel/debug/kunit/rvb2_*; do
	[ -f "$dir/results" ] || continue
	suites=$((suites + 1))
	suite=${dir##*/}
	cp "$dir/results" "$logs/kunit-$suite.txt"
	# Test case lines are indented once: "    ok 1 name", "    not ok 2 name",
	# "    ok 3 name # SKIP reason". A skipped case is not a pass.
	sed -nE 's/^    (not ok|ok) [0-9]+ (.*)$/\1\t\2/p' "$dir/results" |
	while IFS=$'\t' read -r status rest; do
		name=${rest%% *}
		if [ "$status" = ok ] && [ "$rest" = "$name" ]; then
			record PASS "kunit.$suite.$name"
		elif [ "$status" = ok ]; then
			record FAIL "kunit.$suite.$name" "skipped: ${rest#"$name"}"
		else
			record FAIL "kunit.$suite.$name" "see build/logs/kunit-$suite.txt"
		fi
	done
done
[ "$suites" -gt 0 ] || record FAIL kunit_suites_present "no rvb2 KUnit suite in /sys/kernel/debug/kunit"

exec "$top/tools/tests/target/release/rvb2-tests" --module "$top/rvivid.ko" --logs "$logs" "$@"
