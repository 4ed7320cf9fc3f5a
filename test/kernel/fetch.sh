#!/usr/bin/env bash
# fetch.sh DIR: download the newest Debian cloud kernel package (without
# installing it) and unpack it into DIR. Tests find it through
#   export RIK_TEST_KERNEL_DIR=DIR
# DIR then holds boot/vmlinuz-<ver> and lib/modules/<ver>/.
set -euo pipefail

dir=${1:?usage: fetch.sh DIR}
mkdir -p "$dir"

if ls "$dir"/boot/vmlinuz-* >/dev/null 2>&1 && ls -d "$dir"/lib/modules/*/ >/dev/null 2>&1; then
	echo "kernel already in $dir" >&2
else
	pkg=$(apt-cache search --names-only '^linux-image-[0-9].*-cloud-amd64$' |
		awk '{print $1}' | sort -V | tail -n1)
	if [ -z "$pkg" ]; then
		apt-get update -qq >/dev/null
		pkg=$(apt-cache search --names-only '^linux-image-[0-9].*-cloud-amd64$' |
			awk '{print $1}' | sort -V | tail -n1)
	fi
	[ -n "$pkg" ] || { echo "no linux-image-*-cloud-amd64 package found" >&2; exit 1; }
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	(cd "$tmp" && apt-get download -qq "$pkg" >/dev/null)
	dpkg-deb -x "$tmp"/*.deb "$dir"
fi

echo "RIK_TEST_KERNEL_DIR=$dir"
ls "$dir"/boot/vmlinuz-*
ls -d "$dir"/lib/modules/*/
