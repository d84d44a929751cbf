#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# tools/kernel/build.sh [test|bench]
#
# Builds rvb2's test kernel from Debian's linux-source-7.2 (sid) with LLVM 19 and Rust, and
# caches it under $RVB2_CACHE/kernel/<key>, the key hashing every input. Prints the build
# tree's path (the KDIR for the module) on stdout.
#
# The variant `bench` is the kernel `make bench` measures on: rvb2.config without the
# debugging symbols listed in bench.drop, plus bench.config (no lockdep, KASAN, kmemleak, UBSAN,
# object debugging, fault injection or KUnit; optimized for speed; tickless idle). It is cached
# under $RVB2_CACHE/kernel/bench-<key> and built with `nice`; nothing but `make bench` needs it.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"

here="$RVB2_TOP/tools/kernel"
variant=${1:-test}
case "$variant" in
test)
	fragment="$here/rvb2.config"
	prefix=
	nice=()
	;;
bench)
	mkdir -p "$RVB2_CACHE/kernel"
	fragment=$(mktemp "$RVB2_CACHE/kernel/bench-config.XXXXXX")
	trap 'rm -f "$fragment"' EXIT
	grep -v -E -f <(sed -n 's/^\(CONFIG_[A-Z0-9_]*\)$/^(# )?\1[= ]/p' "$here/bench.drop") \
		"$here/rvb2.config" >"$fragment" || true
	cat "$here/bench.config" >>"$fragment"
	prefix=bench-
	# At niceness 10 (not on top of a caller's own `nice`).
	nice=(nice -n $(( $(nice) < 10 ? 10 - $(nice) : 0 )))
	;;
*) die "unknown kernel variant '$variant' (test or bench)" ;;
esac
rvb2_sid_update
# shellcheck disable=SC2046
version=$(apt-cache $(rvb2_sid_apt_opts) show linux-source-7.2 2>/dev/null |
	awk '/^Version:/ { print $2; exit }')
[ -n "$version" ] || die "linux-source-7.2 not found in sid"

key=$( {
	echo "linux-source-7.2 $version"
	cat "$fragment"
	cat "$here"/patches/*.patch 2>/dev/null || true
	clang-19 --version | head -1
	rustc --version
	bindgen --version
} | sha256sum | cut -c1-16)
out="$RVB2_CACHE/kernel/$prefix$key"
if [ -f "$out/.rvb2-done" ]; then
	echo "$out"
	exit 0
fi

log "building the $variant kernel $version (key $key) in $out"
start=$(date +%s)
rm -rf "$out"
mkdir -p "$out"
deb="$RVB2_SID_APT/archives/linux-source-7.2_${version//:/%3a}_all.deb"
if [ ! -f "$deb" ]; then
	# shellcheck disable=SC2046
	(cd "$RVB2_SID_APT/archives" && apt-get $(rvb2_sid_apt_opts) -qq download "linux-source-7.2=$version")
fi
[ -f "$deb" ] || die "download of linux-source-7.2 $version failed"
tmp="$out.unpack"
rm -rf "$tmp"
mkdir -p "$tmp"
dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp" --wildcards './usr/src/linux-source-7.2.tar.*'
tar -x -C "$out" --strip-components=1 -f "$tmp"/usr/src/linux-source-7.2.tar.*
rm -rf "$tmp"

cd "$out"
for p in "$here"/patches/*.patch; do
	[ -e "$p" ] || continue
	log "applying $(basename "$p")"
	patch -p1 -s <"$p"
done

mk=("${nice[@]}" make -s LLVM="$RVB2_LLVM" -j"$(nproc)")
"${mk[@]}" rustavailable >/dev/null || die "Rust toolchain not usable for this kernel"
"${mk[@]}" tinyconfig >/dev/null
scripts/kconfig/merge_config.sh -m .config "$fragment" >/dev/null
"${mk[@]}" olddefconfig >/dev/null
bad=0
while IFS= read -r line; do
	case "$line" in
	CONFIG_*=*) sym=${line%%=*} ;;
	"# CONFIG_"*" is not set") sym=${line#\# }; sym=${sym%% *} ;;
	*) continue ;;
	esac
	grep -qx "$line" .config || { log "config: wanted $line, got: $(grep -E "^(# )?$sym[= ]" .config || echo unset)"; bad=1; }
done <"$fragment"
if [ "$variant" = bench ]; then
	for sym in LOCKDEP PROVE_LOCKING DEBUG_LOCK_ALLOC DEBUG_SPINLOCK DEBUG_MUTEXES \
		DEBUG_ATOMIC_SLEEP DEBUG_KMEMLEAK KASAN UBSAN DEBUG_OBJECTS DEBUG_LIST \
		FAULT_INJECTION KUNIT KPROBES; do
		! grep -q "^CONFIG_$sym=y" .config || { log "config: CONFIG_$sym still on"; bad=1; }
	done
fi
[ "$bad" = 0 ] || die "the config fragment did not apply"

"${mk[@]}" all
mkdir -p "$out/modroot"
"${mk[@]}" INSTALL_MOD_PATH="$out/modroot" modules_install >/dev/null
touch "$out/.rvb2-done"
log "kernel built in $(( $(date +%s) - start )) s"
echo "$out"
