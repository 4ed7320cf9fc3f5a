#!/usr/bin/env bash
# What `make dev` and `make test` need, installed only when missing, and
# quiet when everything is there:
#   hack/ensure.sh deps PKG...         Debian packages (apt-get, as root)
#   hack/ensure.sh kernel DIR [DIR...] a guest kernel in one of the DIRs, else
#                                      fetched into the first (test/kernel/fetch.sh)
#   hack/ensure.sh rootfs FILE         the example function's root filesystem
#                                      (examples/function-rootfs.sh)
# Not root, it says what is missing and how to get it, and goes on: rik runs
# without pods and functions, and the tests that need them skip outside CI.
set -euo pipefail
cd "$(dirname "$0")/.."

root() { [ "$(id -u)" = 0 ]; }
say() { echo "make: $*" >&2; }

case "${1:-}" in
deps)
	shift
	command -v dpkg-query >/dev/null || { say "not a Debian system: install $* yourself"; exit 0; }
	missing=()
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && exit 0
	if ! root; then
		say "missing Debian packages: ${missing[*]} (as root: make deps)"
		exit 0
	fi
	say "installing ${missing[*]}"
	apt-get update -qq >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	;;
kernel)
	shift
	for d in "$@"; do
		ls "$d"/boot/vmlinuz-* >/dev/null 2>&1 && exit 0
	done
	if ! root; then
		say "no guest kernel in $*: functions are off (as root: test/kernel/fetch.sh $1)"
		exit 0
	fi
	say "fetching a guest kernel (Debian's cloud kernel, unpacked, not installed) into $1"
	bash test/kernel/fetch.sh "$1" >/dev/null
	;;
rootfs)
	[ -f "$2" ] && exit 0
	if ! root; then
		say "no $2 for the example function (as root: examples/function-rootfs.sh)"
		exit 0
	fi
	say "building the example function's root filesystem $2"
	bash examples/function-rootfs.sh "$2" >/dev/null
	;;
*)
	echo "usage: hack/ensure.sh deps PKG... | kernel DIR... | rootfs FILE" >&2
	exit 2
	;;
esac
