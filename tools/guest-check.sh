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

suites=0
for dir in /sys/kernel/debug/kunit/rvb2_*; do
	[ -f "$dir/results" ] || continue
	suites=$((suites + 1))
	suite=${dir##*/}
	cp "$dir/results" "$logs/kunit-$suite.txt"
	# Test case lines are indented once: "    ok 1 name" / "    not ok 2 name".
	grep -E '^    (not )?ok [0-9]+ ' "$dir/results" | while read -r status rest; do
		case "$status" in
		ok) record PASS "kunit.$suite.${rest#* }" ;;
		not) record FAIL "kunit.$suite.${rest#ok * }" "see build/logs/kunit-$suite.txt" ;;
		esac
	done
done
[ "$suites" -gt 0 ] || record FAIL kunit_suites_present "no rvb2 KUnit suite in /sys/kernel/debug/kunit"

exec "$top/tools/tests/target/release/rvb2-tests" --module "$top/rvivid.ko" --logs "$logs" "$@"
