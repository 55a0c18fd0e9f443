#!/usr/bin/env bash
# System tools for the image and compose tests (make image, make image-test, make compose-test)
# and the Redis durability tests: podman with the runc runtime, netavark + aardvark-dns (containers
# on a podman network find each other by name), debootstrap (a local base image when no registry
# can be reached) and redis-server. Idempotent: installs only what is missing. Not root: prints
# what to install and exits 1.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have podman || need+=(podman)
have runc || need+=(runc)
have debootstrap || need+=(debootstrap)
have redis-server || need+=(redis-server)
have redis-cli || need+=(redis-tools)
have iptables || need+=(iptables)
[ -x /usr/lib/podman/netavark ] || have netavark || need+=(netavark)
[ -x /usr/lib/podman/aardvark-dns ] || have aardvark-dns || need+=(aardvark-dns)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing tools; install them with:" >&2
  echo "  sudo apt-get install -y --no-install-recommends ${need[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# another apt run may hold the lock (CI images, parallel installs): wait for it
apt-get -o DPkg::Lock::Timeout=600 update -q
apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${need[@]}"
