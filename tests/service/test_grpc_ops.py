"""The gRPC service beyond inference: a non-Triton client, grpc.health.v1, API keys, drain."""

from __future__ import annotations

import json
import queue
import signal
import socket
import subprocess
import sys

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

from harness.procs import free_port
from tests.conftest import ROOT
from tests.service.conftest import Offline, random_steps, running_server

pytestmark = pytest.mark.integration
SERVING = health_pb2.HealthCheckResponse.SERVING


def test_open_inference_protocol_stub_core_rpcs(server, offline: Offline):
    x = random_steps(np.random.default_rng(11), 5)
    out = subprocess.run(
        [sys.executable, "-m", "tests.service.oip_client", server.grpc, json.dumps(x.tolist())],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    got = json.loads(out.stdout)
    assert got["live"] and got["ready"] and got["model_ready"]
    assert got["server"]["name"] == "lstm-serving" and "sequence" in got["server"]["extensions"]
    assert got["inputs"][0] == ["x", "FP32", [-1, -1, 3]]
    offline.assert_outputs_close(got["y"], offline.run(x)[0].reshape(-1))
    assert got["unknown_model"][0] == "NOT_FOUND" and "not served" in got["unknown_model"][1]


def test_grpc_health_service(server):
    with grpc.insecure_channel(server.grpc) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for name in ("", "inference.GRPCInferenceService"):
            assert health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10).status == SERVING
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert next(watch).status == SERVING
        watch.cancel()
        with pytest.raises(grpc.RpcError) as e:
            health.Check(health_pb2.HealthCheckRequest(service="unknown"), timeout=10)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_api_keys_from_the_authorization_metadata():
    with running_server({"LSTM_API_KEYS": "k-one,k-two"}) as s:
        x = grpcclient.InferInput("x", [1, 1, 3], "FP32")
        x.set_data_from_numpy(random_steps(np.random.default_rng(12), 1)[None])
        c = grpcclient.InferenceServerClient(s.grpc)
        assert c.is_server_live()  # open, like /v2/health/*
        with pytest.raises(InferenceServerException) as e:
            c.infer("demand", [x])
        assert e.value.status() == "StatusCode.UNAUTHENTICATED"
        with pytest.raises(InferenceServerException) as e:
            c.infer("demand", [x], headers={"authorization": "Bearer wrong"})
        assert e.value.status() == "StatusCode.UNAUTHENTICATED"
        one, two = {"authorization": "Bearer k-one"}, {"authorization": "Bearer k-two"}
        c.infer("demand", [x], headers=one, sequence_id=5, sequence_start=True)
        c.infer("demand", [x], headers=one, sequence_id=5)
        # sequence ids belong to the key: the other key's id 5 is another sequence, not started
        with pytest.raises(InferenceServerException) as e:
            c.infer("demand", [x], headers=two, sequence_id=5)
        assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
        with grpc.insecure_channel(s.grpc) as ch:
            assert health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10).status == SERVING
        c.close()


def test_drain_answers_what_was_read_then_sends_streams_elsewhere(offline: Offline):
    with running_server({"LSTM_DRAIN_TIMEOUT_S": "10"}) as s:
        rng = np.random.default_rng(13)
        data = {sid: random_steps(rng, 40) for sid in (1, 2, 3)}
        c = grpcclient.InferenceServerClient(s.grpc)
        q: queue.Queue = queue.Queue()
        c.start_stream(callback=lambda result, error: q.put((result, error)))

        def send(sid: int, t: int) -> None:
            x = grpcclient.InferInput("x", [1, 1, 3], "FP32")
            x.set_data_from_numpy(data[sid][None, t : t + 1])
            c.async_stream_infer("demand", [x], request_id=f"{sid}/{t}", sequence_id=sid, sequence_start=t == 0)

        for sid in data:
            send(sid, 0)
        for _ in data:  # the stream is up and every sequence started
            assert q.get(timeout=30)[1] is None
        for t in range(1, 40):
            for sid in data:
                send(sid, t)
        s.proc.send_signal(signal.SIGTERM)
        answered: dict[int, list[np.ndarray]] = {sid: [data[sid][:1]] for sid in data}
        ys: dict[int, list[float]] = {sid: [] for sid in data}
        while True:
            result, error = q.get(timeout=30)
            if error is not None and error.status() is None:
                # an error reply on the stream: read just as the drain began, refused by the data plane
                assert "shutting down" in error.message(), error
                continue
            if error is not None:
                break
            sid, t = map(int, result.get_response().id.split("/"))
            assert t == len(answered[sid]), "a sequence's replies came out of order (or after a refusal)"
            answered[sid].append(data[sid][t : t + 1])
            ys[sid].append(float(result.as_numpy("y")[0, 0, 0]))
        # the stream ends with UNAVAILABLE and says where to go; everything answered is exact
        assert error.status() == "StatusCode.UNAVAILABLE" and "another replica" in error.message(), error
        for sid in data:
            n = len(answered[sid])
            if n > 1:
                offline.assert_outputs_close(ys[sid], offline.run(data[sid][:n])[0][1:, 0])
        # new calls are refused while draining or once the port is closed
        with pytest.raises(InferenceServerException) as e:
            grpcclient.InferenceServerClient(s.grpc).get_model_metadata("demand", client_timeout=10)
        assert e.value.status() in ("StatusCode.UNAVAILABLE", None), e.value
        assert s.proc.wait(30) == 0
        c.stop_stream()


def test_grpc_can_be_turned_off_and_a_taken_port_stops_start_up():
    with running_server({"LSTM_GRPC_ENABLED": "false"}) as s:
        host, port = s.grpc.split(":")
        with pytest.raises(ConnectionRefusedError), socket.create_connection((host, int(port)), timeout=10):
            pass
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        out = subprocess.run(
            [sys.executable, "-m", "service", "--port", str(free_port()), "--grpc-port", str(taken.getsockname()[1])],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert out.returncode == 2 and "cannot listen for gRPC" in out.stderr, out.stderr[-2000:]
