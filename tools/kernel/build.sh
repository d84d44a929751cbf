#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Builds rvb2's test kernel from Debian's linux-source-7.2 (sid) with LLVM 19 and Rust, and
# caches it under $RVB2_CACHE/kernel/<key>, the key hashing every input. Prints the build
# tree's path (the KDIR for the module) on stdout.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"

here="$RVB2_TOP/tools/kernel"
rvb2_sid_update
# shellcheck disable=SC2046
version=$(apt-cache $(rvb2_sid_apt_opts) show linux-source-7.2 2>/dev/null |
	awk '/^Version:/ { print $2; exit }')
[ -n "$version" ] || die "linux-source-7.2 not found in sid"

key=$( {
	echo "linux-source-7.2 $version"
	cat "$here/rvb2.config"
	cat "$here"/patches/*.patch 2>/dev/null || true
	clang-19 --version | head -1
	rustc --version
	bindgen --version
} | sha256sum | cut -c1-16)
out="$RVB2_CACHE/kernel/$key"
if [ -f "$out/.rvb2-done" ]; then
	echo "$out"
	exit 0
fi

log "building kernel $version (key $key) in $out"
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

mk=(make -s LLVM="$RVB2_LLVM" -j"$(nproc)")
"${mk[@]}" rustavailable >/dev/null || die "Rust toolchain not usable for this kernel"
"${mk[@]}" tinyconfig >/dev/null
scripts/kconfig/merge_config.sh -m .config "$here/rvb2.config" >/dev/null
"${mk[@]}" olddefconfig >/dev/null
bad=0
while IFS= read -r line; do
	case "$line" in
	CONFIG_*=*) sym=${line%%=*} ;;
	"# CONFIG_"*" is not set") sym=${line#\# }; sym=${sym%% *} ;;
	*) continue ;;
	esac
	grep -qx "$line" .config || { log "config: wanted $line, got: $(grep -E "^(# )?$sym[= ]" .config || echo unset)"; bad=1; }
done <"$here/rvb2.config"
[ "$bad" = 0 ] || die "the config fragment did not apply"

"${mk[@]}" all
mkdir -p "$out/modroot"
"${mk[@]}" INSTALL_MOD_PATH="$out/modroot" modules_install >/dev/null
touch "$out/.rvb2-done"
log "kernel built in $(( $(date +%s) - start )) s"
echo "$out"
