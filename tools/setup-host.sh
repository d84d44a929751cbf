#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Installs what rvb2 needs on a Debian bookworm host (run as root). Idempotent and quick when
# everything is already there.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

pkgs=(build-essential bc bison flex libelf-dev libssl-dev cpio kmod xz-utils zstd rsync
      clang-19 lld-19 llvm-19 libclang-19-dev qemu-system-x86 mmdebstrap
      debian-archive-keyring python3 file)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	log "installing: ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

command -v rustup >/dev/null || die "rustup not found: rvb2 uses the machine's rustup toolchain"
# The kernel wants the Rust standard library's source in the toolchain's sysroot.
src="$(rustc --print sysroot)/lib/rustlib/src/rust/library"
if [ ! -f "$src/core/src/lib.rs" ]; then
	log "adding rust-src"
	if ! rustup component add rust-src; then
		# Debian's rust-src of the same version has the same library source.
		version=$(rustc --version | awk '{ print $2 }')
		log "rustup failed: using Debian's rust-src $version from trixie-backports"
		dir="$RVB2_CACHE/apt-trixie-backports"
		rvb2_apt_update "$dir" trixie-backports
		# shellcheck disable=SC2046
		(cd "$dir/archives" && apt-get $(rvb2_apt_opts "$dir") -qq download "rust-src=$version+dfsg1-*") ||
			die "no rust-src $version in trixie-backports"
		tmp=$(mktemp -d)
		dpkg-deb -x "$dir"/archives/rust-src_"$version"+dfsg1-*_all.deb "$tmp"
		mkdir -p "$(dirname "$src")"
		cp -a "$tmp/usr/lib/rustlib/src/rust/library" "$src"
		rm -rf "$tmp"
	fi
fi
if ! bindgen --version 2>/dev/null | grep -q '0\.72\.1'; then
	log "installing bindgen-cli 0.72.1"
	cargo install bindgen-cli --version 0.72.1 --locked -q
fi
