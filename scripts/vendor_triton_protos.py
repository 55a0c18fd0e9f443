"""Vendor the gRPC modules generated from Triton's ``grpc_service.proto`` and
``model_config.proto`` into ``service/api/grpc/generated/``, from the ``tritonclient`` wheel
(a development dependency) that ships them.

The modules are copied with two changes: they import each other from the service's package,
and their descriptors go into a descriptor pool of the service's own
(``service/api/grpc/generated/pool.py``) instead of protobuf's default pool, so that a
process that imports the service and tritonclient (or any other copy of Triton's or KServe's
protos: same package ``inference``, same message names) holds both without a clash. The
server speaks the same wire format: the messages are the same, field for field.

    .venv/bin/python scripts/vendor_triton_protos.py          # write
    .venv/bin/python scripts/vendor_triton_protos.py --check  # exit 1 if the vendored copy differs

``tests/service/test_vendored_protos.py`` runs the check.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "service" / "api" / "grpc" / "generated"
MODULES = ("model_config_pb2", "service_pb2", "service_pb2_grpc")
PACKAGE = "service.api.grpc.generated"

HEADER = """# Vendored by scripts/vendor_triton_protos.py from tritonclient {version}: generated from
# Triton Inference Server's {proto} (Copyright NVIDIA CORPORATION, BSD-3-Clause; see
# LICENSE in this directory). Not edited by hand: run the script to update it.
"""
LICENSE = """Triton Inference Server's protobuf definitions (grpc_service.proto, model_config.proto)

Copyright (c) NVIDIA CORPORATION & AFFILIATES. All rights reserved.

Redistribution and use in source and binary forms, with or without modification, are
permitted provided that the following conditions are met:
 * Redistributions of source code must retain the above copyright notice, this list of
   conditions and the following disclaimer.
 * Redistributions in binary form must reproduce the above copyright notice, this list of
   conditions and the following disclaimer in the documentation and/or other materials
   provided with the distribution.
 * Neither the name of NVIDIA CORPORATION nor the names of its contributors may be used to
   endorse or promote products derived from this software without specific prior written
   permission.

THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS ``AS IS'' AND ANY EXPRESS OR IMPLIED
WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE IMPLIED WARRANTIES OF MERCHANTABILITY AND
FITNESS FOR A PARTICULAR PURPOSE ARE DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT OWNER OR
CONTRIBUTORS BE LIABLE FOR ANY DIRECT, INDIRECT, INCIDENTAL, SPECIAL, EXEMPLARY, OR
CONSEQUENTIAL DAMAGES (INCLUDING, BUT NOT LIMITED TO, PROCUREMENT OF SUBSTITUTE GOODS OR
SERVICES; LOSS OF USE, DATA, OR PROFITS; OR BUSINESS INTERRUPTION) HOWEVER CAUSED AND ON ANY
THEORY OF LIABILITY, WHETHER IN CONTRACT, STRICT LIABILITY, OR TORT (INCLUDING NEGLIGENCE OR
OTHERWISE) ARISING IN ANY WAY OUT OF THE USE OF THIS SOFTWARE, EVEN IF ADVISED OF THE
POSSIBILITY OF SUCH DAMAGE.
"""
POOL = '''"""The descriptor pool of the vendored Triton protos: the service's own, not protobuf's
default pool, so that another copy of the ``inference.*`` messages in the same process
(tritonclient's, KServe's) does not clash with these."""

from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()
'''
INIT = '''"""Triton's gRPC service and model configuration messages, vendored (see
``scripts/vendor_triton_protos.py``): ``model_config_pb2``, ``service_pb2``, ``service_pb2_grpc``."""
'''


def source_dir() -> Path:
    spec = importlib.util.find_spec("tritonclient")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("tritonclient is not installed: make setup installs it (a development dependency)")
    return Path(next(iter(spec.submodule_search_locations))) / "grpc"


def rewrite(name: str, text: str) -> str:
    """One generated module with the service's imports and pool."""
    for module in MODULES:
        text = text.replace(f"from tritonclient.grpc import {module} ", f"from {PACKAGE} import {module} ")
    if name.endswith("_pb2"):
        text = text.replace(
            "from google.protobuf.internal import builder as _builder\n",
            f"from google.protobuf.internal import builder as _builder\nfrom {PACKAGE}.pool import POOL\n",
        )
        text = text.replace("_descriptor_pool.Default().AddSerializedFile(", "POOL.AddSerializedFile(")
    if "tritonclient" in text or (name.endswith("_pb2") and "POOL.AddSerializedFile(" not in text):
        raise SystemExit(f"{name}: the generated code changed shape; update scripts/vendor_triton_protos.py")
    return text


def vendored() -> dict[str, str]:
    """Every file of the vendored package, by name."""
    src = source_dir()
    version = importlib.metadata.version("tritonclient")
    files = {"__init__.py": INIT, "pool.py": POOL, "LICENSE": LICENSE}
    for name in MODULES:
        proto = "model_config.proto" if name.startswith("model_config") else "grpc_service.proto"
        files[f"{name}.py"] = HEADER.format(version=version, proto=proto) + rewrite(
            name, (src / f"{name}.py").read_text()
        )
    return files


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="compare, write nothing")
    a = ap.parse_args()
    files = vendored()
    if a.check:
        stale = [n for n, text in files.items() if not (OUT / n).exists() or (OUT / n).read_text() != text]
        if stale:
            print(f"out of date in {OUT.relative_to(ROOT)}: {', '.join(stale)}; run {Path(__file__).name}")
            return 1
        print(f"{OUT.relative_to(ROOT)} matches tritonclient {importlib.metadata.version('tritonclient')}")
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (OUT / name).write_text(text)
    print(f"wrote {', '.join(files)} to {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
