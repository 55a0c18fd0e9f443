"""The gRPC modules the server uses are vendored (``service/api/grpc/generated``): the same as
tritonclient's generated modules but for their descriptor pool, importable with no
tritonclient at all, and interchangeable with tritonclient's messages on the wire."""

from __future__ import annotations

import subprocess
import sys
import tomllib

from tritonclient.grpc import model_config_pb2 as triton_config
from tritonclient.grpc import service_pb2 as triton

from harness.paths import ROOT
from service.api.grpc.protos import model_config_pb2, service_pb2


def test_the_vendored_modules_are_what_the_script_makes_from_tritonclient() -> None:
    out = subprocess.run(
        [sys.executable, "scripts/vendor_triton_protos.py", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_server_runs_without_tritonclient() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not [d for d in deps if d.startswith("tritonclient")]
    code = (
        "import sys; sys.modules['tritonclient'] = None\n"  # any import of it fails
        "import service.api.grpc.server, service.app\n"
        "from service.api.grpc.protos import service_pb2\n"
        "print(service_pb2.ModelInferRequest(model_name='demand').model_name)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "demand", out.stderr


def test_messages_cross_between_the_two_copies_in_one_process() -> None:
    assert service_pb2.ModelInferRequest is not triton.ModelInferRequest  # two pools, no clash
    req = service_pb2.ModelInferRequest(model_name="demand", id="r1")
    x = req.inputs.add(name="x", datatype="FP32", shape=[1, 2, 3])
    x.contents.fp32_contents.extend([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    req.parameters["sequence_id"].int64_param = 7
    req.parameters["sequence_start"].bool_param = True
    req.raw_input_contents.append(b"\x00\x00\x80?")
    theirs = triton.ModelInferRequest.FromString(req.SerializeToString())
    assert (theirs.model_name, theirs.id, list(theirs.inputs[0].shape)) == ("demand", "r1", [1, 2, 3])
    assert list(theirs.inputs[0].contents.fp32_contents) == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert theirs.parameters["sequence_id"].int64_param == 7 and theirs.parameters["sequence_start"].bool_param
    assert service_pb2.ModelInferRequest.FromString(theirs.SerializeToString()) == req
    config = model_config_pb2.ModelConfig(name="demand", max_batch_size=64)
    config.sequence_batching.max_sequence_idle_microseconds = 5
    assert (
        triton_config.ModelConfig.FromString(
            config.SerializeToString()
        ).sequence_batching.max_sequence_idle_microseconds
        == 5
    )
