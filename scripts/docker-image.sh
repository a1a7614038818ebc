#!/usr/bin/env bash
# Builds Synod's container image (default tag synod:latest) from this checkout without pulling
# anything: the release binary, stripped, and the shared libraries `ldd` says it needs, copied
# into rootfs/ of a fresh build context next to the Dockerfile, which starts FROM scratch.
#
#   scripts/docker-image.sh [TAG]
#
# SYNOD_BINARY=path uses that binary instead of building one (the compose test does).
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-synod:latest}"

binary="${SYNOD_BINARY:-}"
if [ -z "$binary" ]; then
    echo "== building synod (release)"
    cargo build --release -q -p synod
    binary=target/release/synod
fi
[ -x "$binary" ] || { echo "docker-image.sh: no executable at $binary" >&2; exit 2; }

context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
mkdir -p "$context/rootfs/usr/local/bin" "$context/rootfs/var/lib/synod" "$context/rootfs/tmp"
if command -v strip >/dev/null; then
    strip -o "$context/rootfs/usr/local/bin/synod" "$binary"
else
    cp "$binary" "$context/rootfs/usr/local/bin/synod"
fi
# Every library the binary loads, and the loader itself, at the paths it looks for them.
for library in $(ldd "$binary" | grep -o '/[^ ]*'); do
    mkdir -p "$context/rootfs$(dirname "$library")"
    cp -L "$library" "$context/rootfs$library"
done
cp Dockerfile "$context/"
docker build -q -t "$tag" "$context" >/dev/null
echo "built $tag ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"
