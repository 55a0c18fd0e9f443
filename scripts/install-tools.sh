#!/usr/bin/env bash
# Install the system tools the test suite needs, when they are missing.
#
# `make test` and CI both run this script, so a fresh machine needs nothing else.
# As root it installs Debian packages with apt-get; otherwise it says what to install
# and exits 1. Topic scripts in scripts/tools/*.sh (containers, browser, ...) run after
# the core tools, each idempotent in the same way.
set -euo pipefail
cd "$(dirname "$0")/.."

# command -> Debian package that provides it
declare -A PACKAGES=(
  [redis-server]=redis-server
  [redis-cli]=redis-tools
  [promtool]=prometheus
)

missing=()
for cmd in "${!PACKAGES[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${PACKAGES[$cmd]}")
done

if [ ${#missing[@]} -gt 0 ]; then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: the tests need these Debian packages: ${missing[*]}" >&2
    echo "       install them with: sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
  echo "installing ${missing[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts redis-server as a service on install; the tests run their own on free ports
  if command -v service >/dev/null 2>&1; then service redis-server stop >/dev/null 2>&1 || true; fi
fi

for script in scripts/tools/*.sh; do
  [ -e "$script" ] || continue
  bash "$script"
done
