# SPDX-License-Identifier: GPL-2.0
# Common settings for rvb2's tools: cache location, toolchain and sid apt options.
# Sourced, not run.

RVB2_TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RVB2_CACHE=${RVB2_CACHE:-/var/cache/rvb2}
RVB2_LLVM=${RVB2_LLVM:--19}
export LIBCLANG_PATH=${LIBCLANG_PATH:-/usr/lib/llvm-19/lib}
export PATH="$HOME/.cargo/bin:$PATH"

# A private apt configuration for Debian sid: the machine's own sources stay untouched.
RVB2_SID_APT="$RVB2_CACHE/apt-sid"
rvb2_sid_apt_opts() {
	echo "-o Dir::Etc::SourceList=$RVB2_SID_APT/sources.list" \
	     "-o Dir::Etc::SourceParts=/dev/null" \
	     "-o Dir::State::Lists=$RVB2_SID_APT/lists" \
	     "-o Dir::Cache::Archives=$RVB2_SID_APT/archives" \
	     "-o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=" \
	     "-o Acquire::Check-Valid-Until=false -o APT::Sandbox::User=root"
}

# Refresh the sid package lists at most once a day.
rvb2_sid_update() {
	mkdir -p "$RVB2_SID_APT/lists/partial" "$RVB2_SID_APT/archives/partial"
	echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian sid main" \
		>"$RVB2_SID_APT/sources.list"
	local stamp="$RVB2_SID_APT/lists/.updated"
	if [ -z "$(find "$stamp" -mmin -1440 2>/dev/null)" ]; then
		# shellcheck disable=SC2046
		apt-get $(rvb2_sid_apt_opts) -qq update && touch "$stamp"
	fi
}

log() { printf '[rvb2] %s\n' "$*" >&2; }
die() { printf '[rvb2] error: %s\n' "$*" >&2; exit 1; }
