#!/usr/bin/env bash
# Serve a busybox image from a registry on 127.0.0.1:5001, with no internet:
# the registry is go-containerregistry's (crane), the image is one layer made
# of Debian's static busybox. Pods can then use 127.0.0.1:5001/busybox:latest
# (riklets reach loopback registries over plain HTTP).
#   examples/local-registry.sh          start the registry and push the image
#   examples/local-registry.sh stop     stop the registry
set -euo pipefail
cd "$(dirname "$0")/.."
addr=${REGISTRY_ADDR:-127.0.0.1:5001}
pidfile=${TMPDIR:-/tmp}/rik-registry.pid
if [ "${1:-}" = stop ]; then
	[ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
	rm -f "$pidfile"
	exit 0
fi
[ -x /bin/busybox ] || { echo "needs /bin/busybox: apt-get install busybox-static" >&2; exit 1; }
mkdir -p bin
go build -o bin/crane github.com/google/go-containerregistry/cmd/crane
if ! { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }; then
	bin/crane registry serve --address "$addr" >"${TMPDIR:-/tmp}/rik-registry.log" 2>&1 &
	echo $! >"$pidfile"
	sleep 1
fi
root=$(mktemp -d)
trap 'rm -rf "$root" "$root.tar" "$root.log"' EXIT
mkdir -p "$root/bin" "$root/tmp" "$root/www"
cp /bin/busybox "$root/bin/busybox"
for a in sh httpd mkdir echo cat ls sleep env; do ln -s busybox "$root/bin/$a"; done
tar -C "$root" -cf "$root.tar" .
bin/crane append --insecure -f "$root.tar" -t "$addr/busybox:latest" >/dev/null 2>"$root.log" || { cat "$root.log" >&2; exit 1; }
echo "registry on $addr (pid $(cat "$pidfile")); image: $addr/busybox:latest"
