#!/usr/bin/env bash
# Install Triton's perf_analyzer into .tools/perf_analyzer (outside the project's venv).
#
# perf_analyzer has no wheel of its own: the tritonclient 2.41.0 manylinux wheel ships it
# under bin/. That tritonclient conflicts with the project's pins, so only the binary is
# unpacked here. It links libb64.so.0d (Debian libb64-0d) and libcudart.so.12 (taken from
# the nvidia-cuda-runtime-cu12 wheel; no GPU is needed). Idempotent: does nothing when the
# install is complete. Run it as `scripts/perf_analyzer ...` (sets LD_LIBRARY_PATH).
set -euo pipefail
cd "$(dirname "$0")/../.."

TRITONCLIENT_VERSION=2.41.0
CUDART_VERSION=12.4.127
home=${PERF_ANALYZER_HOME:-.tools/perf_analyzer}
python=${PYTHON:-}
if [ -z "$python" ]; then
  if [ -x .venv/bin/python ]; then python=.venv/bin/python; else python=python3; fi
fi

have_libb64() { ldconfig -p | grep -q 'libb64\.so\.0d'; }

if ! have_libb64; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -o DPkg::Lock::Timeout=300 -y -q --no-install-recommends libb64-0d >/dev/null 2>&1 ||
      { apt-get update -q -o DPkg::Lock::Timeout=300 && apt-get install -o DPkg::Lock::Timeout=300 -y -q --no-install-recommends libb64-0d; }
  else
    echo "perf_analyzer needs libb64.so.0d: install the Debian package libb64-0d (apt-get install libb64-0d), then rerun $0" >&2
    exit 1
  fi
fi

binary="$home/bin/perf_analyzer"
cudart="$home/lib/libcudart.so.12"
if [ -x "$binary" ] && [ -f "$cudart" ] && [ "$(cat "$home/VERSION" 2>/dev/null)" = "$TRITONCLIENT_VERSION" ]; then
  exit 0
fi

if ! "$python" -m pip --version >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null && [ "$python" = python3 ]; then
    apt-get install -o DPkg::Lock::Timeout=300 -y -q --no-install-recommends python3-pip >/dev/null 2>&1 ||
      { apt-get update -q -o DPkg::Lock::Timeout=300 && apt-get install -o DPkg::Lock::Timeout=300 -y -q --no-install-recommends python3-pip; }
  else
    echo "perf_analyzer's install needs pip (for $python) to fetch the tritonclient and nvidia-cuda-runtime-cu12 wheels" >&2
    exit 1
  fi
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$home/bin" "$home/lib"
# --no-deps, one platform wheel each: nothing is installed into any environment
PIP_CONSTRAINT= "$python" -m pip download -q --no-deps --only-binary=:all: --platform manylinux1_x86_64 \
  -d "$work" "tritonclient==$TRITONCLIENT_VERSION"
PIP_CONSTRAINT= "$python" -m pip download -q --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
  -d "$work" "nvidia-cuda-runtime-cu12==$CUDART_VERSION"

"$python" - "$work" "$home" "$TRITONCLIENT_VERSION" <<'PY'
import glob, os, sys, zipfile

work, home, version = sys.argv[1:]
members = {
    f"tritonclient-{version}.data/data/bin/perf_analyzer": os.path.join(home, "bin", "perf_analyzer"),
    "nvidia/cuda_runtime/lib/libcudart.so.12": os.path.join(home, "lib", "libcudart.so.12"),
}
for wheel in glob.glob(os.path.join(work, "*.whl")):
    with zipfile.ZipFile(wheel) as z:
        for name in set(z.namelist()) & set(members):
            dest = members.pop(name)
            with z.open(name) as src, open(dest + ".part", "wb") as out:
                out.write(src.read())
            os.chmod(dest + ".part", 0o755)
            os.replace(dest + ".part", dest)
if members:
    sys.exit(f"not found in the downloaded wheels: {sorted(members)}")
PY

missing=$(LD_LIBRARY_PATH="$home/lib" ldd "$binary" | grep 'not found' || true)
if [ -n "$missing" ]; then
  echo "perf_analyzer still lacks libraries:" >&2
  echo "$missing" >&2
  exit 1
fi
echo "$TRITONCLIENT_VERSION" >"$home/VERSION"
echo "perf_analyzer $TRITONCLIENT_VERSION installed in $home; run it as scripts/perf_analyzer"
