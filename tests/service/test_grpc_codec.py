"""The gRPC codec and status mapping, without a server: pure functions."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from service.api.grpc.codec import decode, encode
from service.api.grpc.protos import service_pb2 as pb
from service.api.grpc.status import to_status
from service.api.protocol.v2_codec import InferReply
from service.errors import (
    CapacityExceeded,
    DeadlineExceeded,
    InvalidInput,
    ModelNotFound,
    NotReady,
    StepConflict,
)


def request(raw: bool, x: np.ndarray) -> pb.ModelInferRequest:
    r = pb.ModelInferRequest(model_name="demand", id="r1")
    t = r.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
    if raw:
        r.raw_input_contents.append(x.astype("<f4").tobytes())
    else:
        t.contents.fp32_contents.extend(x.reshape(-1).tolist())
    return r


@pytest.mark.parametrize("raw", [True, False])
def test_round_trip_answers_in_kind(raw):
    x = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
    msg = request(raw, x)
    msg.parameters["sequence_id"].uint64_param = 2**64 - 1
    msg.parameters["sequence_start"].bool_param = True
    msg.outputs.add(name="y")
    req = decode(msg)
    np.testing.assert_array_equal(req.inputs["x"], x)
    assert req.parameters == {"sequence_id": 2**64 - 1, "sequence_start": True} and req.id == "r1"
    y = np.array([[[1.5], [2.5]]], np.float32)
    resp = encode(InferReply("demand", "1", {"y": y, "hn": np.zeros((2, 1, 4), np.float32)}, id="r1"), req)
    assert [o.name for o in resp.outputs] == ["y"] and list(resp.outputs[0].shape) == [1, 2, 1]
    if raw:
        assert np.frombuffer(resp.raw_output_contents[0], "<f4").tolist() == [1.5, 2.5]
    else:
        assert not resp.raw_output_contents and list(resp.outputs[0].contents.fp32_contents) == [1.5, 2.5]


@pytest.mark.parametrize(
    "breakage,message",
    [
        (lambda r: r.raw_input_contents.append(b"\0" * 4), "raw_input_contents has 2 entries for 1 inputs"),
        (lambda r: r.raw_input_contents.__setitem__(0, b"\0" * 5), "5 bytes of raw_input_contents do not match"),
        (lambda r: r.inputs[0].contents.fp32_contents.append(1.0), "both typed contents and raw_input_contents"),
        (lambda r: r.inputs[0].shape.__setitem__(0, -1), "non-negative"),
        (lambda r: setattr(r.inputs[0], "datatype", "BYTES"), "not supported"),
        (lambda r: (r.inputs.add(name="x", datatype="FP32", shape=[0]), r.raw_input_contents.append(b"")), "twice"),
    ],
)
def test_malformed_requests_say_what_is_wrong(breakage, message):
    msg = request(True, np.zeros((1, 1, 3), np.float32))
    breakage(msg)
    with pytest.raises(InvalidInput, match=message):
        decode(msg)


def test_typed_contents_must_fill_the_shape():
    msg = request(False, np.zeros((1, 1, 3), np.float32))
    msg.inputs[0].shape[1] = 2
    with pytest.raises(InvalidInput, match="3 values do not fill shape"):
        decode(msg)


def test_status_codes_and_retry_metadata():
    assert to_status(InvalidInput("m")) == (grpc.StatusCode.INVALID_ARGUMENT, "m", ())
    assert to_status(ModelNotFound("m"))[0] == grpc.StatusCode.NOT_FOUND
    assert to_status(DeadlineExceeded("m"))[0] == grpc.StatusCode.DEADLINE_EXCEEDED
    code, _, md = to_status(NotReady("draining"))
    assert code == grpc.StatusCode.UNAVAILABLE and dict(md) == {"retry-after": "1", "grpc-retry-pushback-ms": "1000"}
    assert to_status(CapacityExceeded("full"))[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    code, _, md = to_status(StepConflict("m", current_step=7))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and ("current-step", "7") in md
