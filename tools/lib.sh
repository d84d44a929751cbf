# SPDX-License-Identifier: GPL-2.0
# Common settings for rvb2's tools: cache location, toolchain and sid apt options.
# Sourced, not run.

RVB2_TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RVB2_CACHE=${RVB2_CACHE:-/var/cache/rvb2}
RVB2_LLVM=${RVB2_LLVM:--19}
export LIBCLANG_PATH=${LIBCLANG_PATH:-/usr/lib/llvm-19/lib}
export PATH="$HOME/.cargo/bin:$PATH"

# Private apt configurations (for sid, and trixie-backports as a fallback for rust-src): the
# machine's own apt sources stay untouched.
RVB2_SID_APT="$RVB2_CACHE/apt-sid"

# Prints the apt options of the private configuration in directory $1.
rvb2_apt_opts() {
	echo "-o Dir::Etc::SourceList=$1/sources.list" \
	     "-o Dir::Etc::SourceParts=/dev/null" \
	     "-o Dir::State::Lists=$1/lists" \
	     "-o Dir::Cache::Archives=$1/archives" \
	     "-o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=" \
	     "-o Acquire::Check-Valid-Until=false -o APT::Sandbox::User=root"
}

# Sets up the private configuration in directory $1 for suite $2 and refreshes its lists at
# most once a day.
rvb2_apt_update() {
	mkdir -p "$1/lists/partial" "$1/archives/partial"
	echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $2 main" \
		>"$1/sources.list"
	if [ -z "$(find "$1/lists/.updated" -mmin -1440 2>/dev/null)" ]; then
		# shellcheck disable=SC2046
		apt-get $(rvb2_apt_opts "$1") -qq update && touch "$1/lists/.updated"
	fi
}

rvb2_sid_apt_opts() { rvb2_apt_opts "$RVB2_SID_APT"; }
rvb2_sid_update() { rvb2_apt_update "$RVB2_SID_APT" sid; }

log() { printf '[rvb2] %s\n' "$*" >&2; }
die() { printf '[rvb2] error: %s\n' "$*" >&2; exit 1; }

# Builds (or takes from the cache) the measuring kernel, `tools/kernel/build.sh bench`, and
# rvivid against it, from a copy of the module's sources in build/bench-src (so that the test
# build's objects in the source tree, made against the debug kernel, stay as they are; the
# copy keeps its own objects between runs). Prints the kernel tree; the module is
# build/bench-src/rvivid.ko. Used by `make bench` and `make bench-display`.
rvb2_bench_module() {
	local kstart kend kdir src
	kstart=$(date +%s)
	kdir=$("$RVB2_TOP/tools/kernel/build.sh" bench) || return 1
	kend=$(date +%s)
	[ $((kend - kstart)) -lt 5 ] || log "bench kernel ready in $((kend - kstart)) s"
	src=$RVB2_TOP/build/bench-src
	mkdir -p "$src" || return 1
	# The module's sources without its build products (.gitignore's patterns; excluded
	# files are not deleted).
	rsync -a --delete --exclude-from="$RVB2_TOP/.gitignore" \
		--include=/Kbuild --include='/src/***' --include='/include/***' --exclude='*' \
		"$RVB2_TOP/" "$src/" || return 1
	log "building rvivid.ko against $(basename "$kdir") in $src"
	nice -n 10 make --no-print-directory -s -C "$kdir" M="$src" LLVM="$RVB2_LLVM" W=1 \
		modules >&2 || return 1
	echo "$kdir"
}
