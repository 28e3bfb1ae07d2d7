#!/bin/sh
# Install berth as a service: the binary, the manifest and state directories, and
# the systemd unit. Run as root from a checkout, after `cargo build --release`.
#   DESTDIR=/tmp/root ./deploy/install.sh --no-start   # stage into a directory
set -eu

here=$(cd "$(dirname "$0")" && pwd)
binary=${BERTH_BINARY:-$here/../target/release/berth}
dest=${DESTDIR:-}
start=yes
for arg in "$@"; do
    case "$arg" in
        --no-start) start=no ;;
        *) echo "usage: $0 [--no-start]" >&2; exit 2 ;;
    esac
done

if [ ! -x "$binary" ]; then
    echo "install.sh: $binary not found; run 'cargo build --release' first (or set BERTH_BINARY)" >&2
    exit 1
fi
if [ -z "$dest" ] && [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root (berth runs containers as root)" >&2
    exit 1
fi

install -d -m 0755 "$dest/usr/local/bin" "$dest/etc/systemd/system"
install -m 0755 "$binary" "$dest/usr/local/bin/berth"
# Manifests are code that runs as root: root-owned, writable by root alone,
# or the daemon refuses them.
install -d -m 0755 "$dest/etc/berth" "$dest/etc/berth/manifests"
install -d -m 0700 "$dest/var/lib/berth"
install -m 0644 "$here/berth.service" "$dest/etc/systemd/system/berth.service"
if [ -z "$dest" ] && ! getent group berth >/dev/null 2>&1; then
    # Members of this group may use the daemon's socket (berth get, logs...).
    groupadd --system berth 2>/dev/null || true
fi

if [ "$start" = yes ] && [ -z "$dest" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable --now berth.service
    echo "berth is running: drop manifests into /etc/berth/manifests; see 'berth get'"
else
    echo "installed under ${dest:-/}; start with: systemctl enable --now berth.service"
    echo "(without systemd: /usr/local/bin/berth daemon --manifests /etc/berth/manifests)"
fi
