#!/usr/bin/env bash
# Build and run the project's images with podman, on machines without a Docker engine and
# without access to a public registry. Every workaround lives here; `docker build` (see
# docs/deployment.md) needs none of them.
#
#   scripts/images.sh base               the Python base image: pulled if a registry answers, else
#                                        built with debootstrap (Debian bookworm, Python 3.11); cached
#   scripts/images.sh build [cpu|redis|cuda]
#                                        build an image on that base (--format docker: keeps HEALTHCHECK)
#   scripts/images.sh podman ARGS...     podman with the settings below
#   scripts/images.sh compose ARGS...    podman-compose with the same settings
#
# Settings: a containers.conf with no default ulimits (raising them fails inside some
# sandboxes), the runc runtime and the netavark network backend (containers on one network
# find each other by name). Environment: IMAGE, CUDA_IMAGE (the names built), BASE_IMAGE (use
# this base instead), LSTM_IMAGE_CACHE (where the containers.conf lives).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${LSTM_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lstm-serving}"
LOCAL_BASE=localhost/lstm-python-base:bookworm
PUBLIC_BASE=docker.io/library/python:3.11-slim
IMAGE="${IMAGE:-lstm-serving:0.1.0}"
REDIS_IMAGE="${REDIS_IMAGE:-localhost/lstm-redis:7}"
CUDA_IMAGE="${CUDA_IMAGE:-lstm-serving-cuda:0.1.0}"

command -v podman >/dev/null || { echo "images.sh: podman is missing (scripts/tools/containers.sh installs it)" >&2; exit 1; }
mkdir -p "$CACHE"
export CONTAINERS_CONF="$CACHE/containers.conf"
cat >"$CONTAINERS_CONF.new" <<'CONF'
[containers]
default_ulimits = []
[engine]
runtime = "runc"
[network]
network_backend = "netavark"
CONF
mv "$CONTAINERS_CONF.new" "$CONTAINERS_CONF"

say() { echo "images.sh: $*" >&2; }

# the CA bundle pip trusts here (a proxy may sign PyPI's certificate), and an http(s) index if set
pip_cert() {
  local c="${PIP_CERT:-}"
  [ -n "$c" ] || c="$(python3 -m pip config get global.cert 2>/dev/null || true)"
  [ -n "$c" ] && [ -f "$c" ] && echo "$c"
}
pip_index() {
  local i="${PIP_INDEX_URL:-}"
  [ -n "$i" ] || i="$(python3 -m pip config get global.index-url 2>/dev/null || true)"
  case "$i" in http://* | https://*) echo "$i" ;; esac
}

debootstrap_base() {
  local dir
  dir="$(mktemp -d)"
  say "no registry base: building $LOCAL_BASE with debootstrap (about a minute)"
  debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
    bookworm "$dir" http://deb.debian.org/debian >"$CACHE/debootstrap.log" 2>&1 ||
    { tail -20 "$CACHE/debootstrap.log" >&2; rm -rf "$dir"; return 1; }
  local cert index
  cert="$(pip_cert || true)"
  index="$(pip_index || true)"
  if [ -n "$cert" ]; then
    cp "$cert" "$dir/etc/ssl/certs/ca-certificates.crt"
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$dir/etc/pip.conf"
  fi
  if [ -n "$index" ]; then
    [ -f "$dir/etc/pip.conf" ] || printf '[global]\n' >"$dir/etc/pip.conf"
    printf 'index-url = %s\n' "$index" >>"$dir/etc/pip.conf"
  fi
  rm -rf "$dir"/var/cache/apt/* "$dir"/var/lib/apt/lists/* "$dir"/usr/share/doc/* "$dir"/usr/share/man/* \
    "$dir"/usr/share/locale/* "$dir"/var/log/*
  tar -C "$dir" -c . | podman import --change 'CMD ["python3"]' - "$LOCAL_BASE" >/dev/null
  rm -rf "$dir"
}

base() {
  if [ -n "${BASE_IMAGE:-}" ]; then
    echo "$BASE_IMAGE"
  elif podman image exists "$LOCAL_BASE"; then
    echo "$LOCAL_BASE"
  elif timeout 30 podman pull -q "$PUBLIC_BASE" >/dev/null 2>&1; then
    podman tag "$PUBLIC_BASE" "$LOCAL_BASE"
    echo "$LOCAL_BASE"
  else
    debootstrap_base
    echo "$LOCAL_BASE"
  fi
}

build() {
  local what="${1:-cpu}" b
  b="$(base)"
  cd "$ROOT"
  case "$what" in
    cpu) podman build --format docker --network host --build-arg "PYTHON_IMAGE=$b" -f deploy/Dockerfile -t "$IMAGE" . ;;
    redis) podman build --format docker --network host --build-arg "BASE_IMAGE=$b" -f deploy/redis/Dockerfile -t "$REDIS_IMAGE" deploy/redis ;;
    cuda)
      # no CUDA base image can be pulled here: the same Debian base stands in for it, so the
      # build proves the onnxruntime-gpu wheel, not the CUDA libraries (see docs/deployment.md)
      podman build --format docker --network host --build-arg "CUDA_IMAGE=$b" -f deploy/Dockerfile.cuda -t "$CUDA_IMAGE" . ;;
    *) say "unknown image $what (cpu, redis, cuda)"; exit 2 ;;
  esac
}

cmd="${1:-}"
shift || true
case "$cmd" in
  base) base ;;
  build) build "$@" ;;
  podman) exec podman "$@" ;;
  compose) exec "$ROOT/.venv/bin/podman-compose" "$@" ;;
  *) sed -n '2,18p' "$0" >&2; exit 2 ;;
esac
