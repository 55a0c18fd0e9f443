"""A client that is not Triton's: the stub generated from the Open Inference Protocol's gRPC
proto (KServe's ``grpc_predict_v2.proto``, as published by the open-inference working group in
``open-inference-grpc``). Run in its own process (``python -m tests.service.oip_client ADDR``):
its ``inference.*`` messages would clash with tritonclient's in one descriptor pool. Prints
what it got as JSON for the test to check."""

from __future__ import annotations

import json
import sys

import grpc
import numpy as np
from open_inference.grpc import protocol as pb
from open_inference.grpc.service import GRPCInferenceServiceStub


def main(address: str, x: list[list[float]]) -> dict:
    out: dict = {}
    with grpc.insecure_channel(address) as ch:
        stub = GRPCInferenceServiceStub(ch)
        out["live"] = stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live
        out["ready"] = stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready
        out["model_ready"] = stub.ModelReady(pb.ModelReadyRequest(name="demand"), timeout=10).ready
        meta = stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=10)
        out["server"] = {"name": meta.name, "extensions": list(meta.extensions)}
        m = stub.ModelMetadata(pb.ModelMetadataRequest(name="demand", version="1"), timeout=10)
        out["inputs"] = [(t.name, t.datatype, list(t.shape)) for t in m.inputs]
        # a sequence of one step per request, typed contents, sequence id as uint64
        ys = []
        for t, row in enumerate(x):
            req = pb.ModelInferRequest(model_name="demand", id=f"step-{t}")
            req.parameters["sequence_id"].uint64_param = 2**63 + 5
            req.parameters["sequence_start"].bool_param = t == 0
            req.parameters["sequence_end"].bool_param = t == len(x) - 1
            req.inputs.add(name="x", datatype="FP32", shape=[1, 1, 3]).contents.fp32_contents.extend(row)
            req.outputs.add(name="y")
            resp = stub.ModelInfer(req, timeout=10)
            assert resp.id == f"step-{t}", resp.id
            ys.append(list(resp.outputs[0].contents.fp32_contents))
        out["y"] = np.asarray(ys).reshape(-1).tolist()
        try:
            stub.ModelMetadata(pb.ModelMetadataRequest(name="nope"), timeout=10)
        except grpc.RpcError as e:
            out["unknown_model"] = [e.code().name, e.details()]
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], json.loads(sys.argv[2]))))
