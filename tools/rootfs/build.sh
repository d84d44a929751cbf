#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Makes the guest's root: a Debian sid tree (so that v4l-utils matches the 7.2 kernel) made by
# mmdebstrap and cached under $RVB2_CACHE/rootfs/<key>. Prints its path on stdout.
# Besides v4l-utils the real clients the tests drive: GStreamer (v4l2src is in plugins-good,
# videoconvert in plugins-base) and ffmpeg/ffprobe. No Recommends.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"

packages=(v4l-utils kmod procps util-linux mount
	gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good ffmpeg)
key=$( { cat "$0"; echo "${packages[*]}"; } | sha256sum | cut -c1-16)
out="$RVB2_CACHE/rootfs/$key"
if [ -f "$out/.rvb2-done" ]; then
	echo "$out"
	exit 0
fi

log "making the sid guest root in $out"
start=$(date +%s)
rm -rf "$out"
mkdir -p "$(dirname "$out")"
IFS=,
mmdebstrap --quiet --mode=root --variant=essential \
	--include="${packages[*]}" \
	--aptopt='APT::Install-Recommends "false"' \
	--aptopt='Acquire::Check-Valid-Until "false"' \
	--dpkgopt='path-exclude=/usr/share/doc/*' \
	--dpkgopt='path-exclude=/usr/share/man/*' \
	--dpkgopt='path-exclude=/usr/share/locale/*' \
	sid "$out" \
	"deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian sid main" >&2
unset IFS
echo rvb2 >"$out/etc/hostname"
touch "$out/.rvb2-done"
log "guest root made in $(( $(date +%s) - start )) s"
echo "$out"
