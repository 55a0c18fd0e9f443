#!/usr/bin/env bash
# Build the Triton Inference Server peer used by `make bench-peers` in .tools/triton
# (outside the project's venv): a venv with nvidia-pytriton (whose wheel ships the
# `tritonserver` binary and the python backend), numpy and onnxruntime for the python
# backend's model, and a `backends/python` directory holding the backend with the
# Python 3.11 stub copied in. Idempotent: does nothing when the install is complete.
# `bench/triton_peer.py` starts it with the environment written to $home/env. Not part of
# `make test`: only `make bench-peers` needs it.
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTRITON_VERSION=0.7.0
home=${TRITON_HOME:-.tools/triton}
python=${PYTHON:-python3}
venv="$home/venv"

if [ -f "$home/VERSION" ] && [ "$(cat "$home/VERSION")" = "$PYTRITON_VERSION" ] && [ -x "$home/backends/python/triton_python_backend_stub" ]; then
  exit 0
fi

pyver=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
if [ "$pyver" != 3.11 ]; then
  echo "the Triton peer's python backend stub is for Python 3.11; $python is $pyver (set PYTHON=python3.11)" >&2
  exit 1
fi
mkdir -p "$home"
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
# the same onnxruntime as the service (constraints.txt); numpy as nvidia-pytriton allows (< 2)
ort=$(grep -E '^onnxruntime==' constraints.txt)
"$venv/bin/python" -m pip install -q --upgrade pip
PIP_CONSTRAINT= "$venv/bin/python" -m pip install -q "nvidia-pytriton==$PYTRITON_VERSION" "$ort" numpy

pkg=$("$venv/bin/python" -c 'import pathlib, pytriton; print(pathlib.Path(pytriton.__file__).parent)')
site=$(dirname "$pkg")
server="$pkg/tritonserver"
[ -x "$server/bin/tritonserver" ] || { echo "no tritonserver binary in $server" >&2; exit 1; }
rm -rf "$home/backends"
mkdir -p "$home/backends"
cp -r "$server/backends/python" "$home/backends/python"
cp "$server/python_backend_stubs/$pyver/triton_python_backend_stub" "$home/backends/python/"
cat >"$home/env" <<ENV
TRITON_BIN=$(realpath "$server/bin/tritonserver")
TRITON_BACKENDS=$(realpath "$home/backends")
TRITON_LIBS=$(realpath "$site/nvidia_pytriton.libs"):$(realpath "$server/lib" 2>/dev/null || true):$("$python" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')
TRITON_SITE=$(realpath "$site")
ENV
missing=$(set -a; . "$home/env"; LD_LIBRARY_PATH="$TRITON_LIBS" ldd "$TRITON_BIN" "$TRITON_BACKENDS/python/triton_python_backend_stub" | grep 'not found' || true)
if [ -n "$missing" ]; then
  echo "tritonserver still lacks libraries:" >&2
  echo "$missing" >&2
  exit 1
fi
echo "$PYTRITON_VERSION" >"$home/VERSION"
echo "Triton (nvidia-pytriton $PYTRITON_VERSION) installed in $home"
