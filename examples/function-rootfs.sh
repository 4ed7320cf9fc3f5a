#!/usr/bin/env bash
# Build the root filesystem examples/function-httpd.json boots: Debian's
# static busybox, an /sbin/init that serves a page with httpd on port 80.
#   examples/function-rootfs.sh [OUT]   (default /var/lib/rik/rootfs/busybox-httpd.ext4)
set -euo pipefail
out=${1:-/var/lib/rik/rootfs/busybox-httpd.ext4}
[ -x /bin/busybox ] || { echo "needs /bin/busybox: apt-get install busybox-static" >&2; exit 1; }
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/bin "$root"/sbin "$root"/proc "$root"/sys "$root"/dev "$root"/tmp "$root"/www
cp /bin/busybox "$root"/bin/busybox
for a in sh mount httpd ip hostname echo; do ln -s busybox "$root/bin/$a"; done
cat >"$root"/sbin/init <<'INIT'
#!/bin/sh
echo "hello from a rik function" > /www/index.html
exec httpd -f -v -p 80 -h /www
INIT
chmod 755 "$root"/sbin/init
mkdir -p "$(dirname "$out")"
mke2fs -q -F -t ext4 -d "$root" "$out" 32M
echo "$out"
