#!/usr/bin/env bash
# Stand-ins for the images deploy/compose.yaml pulls, built here from Debian's packages, for
# machines that reach no image registry (CI's, among them). With a registry, pull the
# official images instead and never run this.
#
#   deploy/images/build.sh [--rebuild]
#
#   warren-base:bookworm        Debian bookworm (debootstrap) with Python 3.11 and pip: the
#                               BASE_IMAGE of deploy/Dockerfile, in place of python:3.11-slim
#   warren-rabbitmq:bookworm    Debian's rabbitmq-server (3.10), in place of rabbitmq:3.13
#   warren-prometheus:bookworm  Debian's prometheus (2.42), in place of prom/prometheus
#
# Grafana has no Debian package: there is no stand-in for it (its provisioning files are
# checked without it). The base, once made, is kept unless --rebuild (debootstrap takes a
# minute); the other two are built each time, from Docker's cache when nothing changed.
# Needs root (debootstrap), debootstrap and a Docker engine; the builds use the host's
# network (--network host), so the host's apt and pip reach what they reach, and the host's
# CA bundle goes into the base, for a TLS-intercepting proxy between the host and PyPI.
# Environment: DEBIAN_MIRROR (default http://deb.debian.org/debian), DOCKER (the client).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
docker=${DOCKER:-docker}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
rebuild=0
case ${1:-} in
  --rebuild) rebuild=1 ;;
  "") ;;
  *)
    echo "usage: $0 [--rebuild]" >&2
    exit 2
    ;;
esac

have() { ((!rebuild)) && "$docker" image inspect "$1" >/dev/null 2>&1; }

base=warren-base:bookworm
if have "$base"; then
  echo "$base: kept"
else
  [[ $(id -u) == 0 ]] || { echo "debootstrap needs root" >&2; exit 2; }
  command -v debootstrap >/dev/null || { echo "needs debootstrap (apt-get install debootstrap)" >&2; exit 2; }
  rootfs=$(mktemp -d)
  # on any exit, an interrupted debootstrap's too: its mounts first, then the tree, never
  # leaving the tree's file system (a mount still inside it is not followed)
  cleanup() {
    umount -R "$rootfs/proc" "$rootfs/sys" "$rootfs/dev/pts" 2>/dev/null || true
    rm -rf --one-file-system "$rootfs"
  }
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  echo "$base: debootstrap bookworm (about a minute)"
  debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates \
    bookworm "$rootfs" "$mirror" >/dev/null
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
    "$rootfs"/var/cache/apt/archives/*.deb
  if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
  fi
  ln -sf python3 "$rootfs/usr/bin/python"
  # as on the official python image, pip installs into the system's Python (PEP 668's marker
  # is Debian's, for hosts; an image is its own environment)
  rm -f "$rootfs"/usr/lib/python3.*/EXTERNALLY-MANAGED
  tar -C "$rootfs" -c . | "$docker" import --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' - "$base" >/dev/null
  cleanup
  trap - EXIT INT TERM
fi

# always built: Docker's layer cache makes an unchanged one instant, and a changed one new
for name in rabbitmq prometheus; do
  tag=warren-$name:bookworm
  echo "$tag: from Debian's package"
  "$docker" build -q --network host --build-arg "BASE_IMAGE=$base" \
    -t "$tag" "$here/$name" >/dev/null
done
