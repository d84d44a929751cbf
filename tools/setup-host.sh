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
if ! rustup component list --installed 2>/dev/null | grep -q '^rust-src'; then
	log "adding rust-src"
	rustup component add rust-src
fi
if ! bindgen --version 2>/dev/null | grep -q '0\.72\.1'; then
	log "installing bindgen-cli 0.72.1"
	cargo install bindgen-cli --version 0.72.1 --locked -q
fi
