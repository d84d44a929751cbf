# SPDX-License-Identifier: GPL-2.0
# Helpers for scripts that run inside the guest. Sourced, not run.

# Prints the /dev node of the video device named $1 (default rvivid).
rvb2_node() {
	local want=${1:-rvivid} d
	for d in /sys/class/video4linux/*; do
		[ "$(cat "$d/name" 2>/dev/null)" = "$want" ] && { echo "/dev/${d##*/}"; return 0; }
	done
	return 1
}
