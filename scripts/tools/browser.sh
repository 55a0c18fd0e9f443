#!/usr/bin/env bash
# Debian's Chromium, which the console test drives headless with Playwright (/usr/bin/chromium).
# Idempotent: installs only what is missing; without root, says what to install and fails.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing: /usr/bin/chromium (the console test needs it); install it with:" >&2
  echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends chromium" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends chromium
