#!/usr/bin/env bash
# Build Toxiproxy 2.12.0's server (the vendored src/, unchanged) with Debian's Go toolchain
# and Debian's packaged Go libraries: no module downloads, so it builds where only Debian's
# mirror is reachable. Usage: build.sh OUTPUT
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(realpath -m "${1:?usage: build.sh OUTPUT}")
pkgs="golang-go golang-github-gorilla-mux-dev golang-github-rs-zerolog-dev
  golang-github-prometheus-client-golang-dev golang-gopkg-tomb.v1-dev golang-github-rs-xid-dev"
missing=""
for pkg in $pkgs; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing Debian packages to build Toxiproxy:$missing"
    # shellcheck disable=SC2086  # one word per package
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing
  else
    echo "building Toxiproxy needs Debian packages; run: sudo apt-get install -y$missing" >&2
    exit 2
  fi
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pkg="$work/src/github.com/Shopify/toxiproxy/v2"
mkdir -p "$(dirname "$pkg")"
cp -r "$here/src" "$pkg"
# Debian's zerolog (1.26) calls CallerMarshalFunc without the pc argument newer ones pass:
# the one line changed, in the server's log setup (no proxy or toxic code is touched).
sed -i 's/CallerMarshalFunc = func(pc uintptr, file string, line int)/CallerMarshalFunc = func(file string, line int)/' \
  "$pkg/cmd/server/server.go"
mkdir -p "$(dirname "$out")"
cd "$pkg"
GO111MODULE=off GOPATH="$work:/usr/share/gocode" GOCACHE="$work/cache" GOFLAGS='' \
  go build -ldflags "-X github.com/Shopify/toxiproxy/v2.Version=2.12.0" -o "$out" ./cmd/server
echo "built $out"
