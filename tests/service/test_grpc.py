"""The gRPC service with the real tritonclient.grpc against a real server process: metadata,
config, readiness, stateless and sequence inference (unary and streamed), error mapping."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.service.conftest import Offline, Server, random_steps

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[grpcclient.InferenceServerClient]:
    c = grpcclient.InferenceServerClient(server.grpc)
    yield c
    c.close()


def x_input(x: np.ndarray, name: str = "x") -> grpcclient.InferInput:
    i = grpcclient.InferInput(name, list(x.shape), "FP32")
    i.set_data_from_numpy(np.ascontiguousarray(x, np.float32))
    return i


def chunks(rng: np.random.Generator, x: np.ndarray) -> list[np.ndarray]:
    """``x`` cut into random chunks of 1 to 5 steps."""
    cuts, t = [], 0
    while t < len(x):
        n = int(rng.integers(1, 6))
        cuts.append(x[t : t + n])
        t += n
    return cuts


def test_metadata_config_and_readiness(server, client):
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("demand")
    assert client.is_model_ready("demand", "1")
    meta = client.get_server_metadata(as_json=True)
    assert meta["name"] == "lstm-serving" and "sequence" in meta["extensions"]
    # the same model metadata as REST's /v2/models/demand (shapes as numbers)
    got = client.get_model_metadata("demand", as_json=True)
    rest = httpx.get(server.url + "/v2/models/demand").json()
    for t in got["inputs"] + got["outputs"]:
        t["shape"] = [int(d) for d in t["shape"]]
    assert {k: got[k] for k in ("name", "versions", "platform", "inputs", "outputs")} == rest
    cfg = client.get_model_config("demand", as_json=True)["config"]
    assert cfg["name"] == "demand" and cfg["platform"] == "onnxruntime_onnx"
    rest_cfg = httpx.get(server.url + "/v2/models/demand/config").json()
    assert cfg["name"] == rest_cfg["name"] and [i["name"] for i in cfg["input"]] == [
        i["name"] for i in rest_cfg["input"]
    ]
    assert [(s["input_name"], s["output_name"]) for s in cfg["sequence_batching"]["state"]] == [
        ("h0", "hn"),
        ("c0", "cn"),
    ]
    stats = client.get_inference_statistics("demand", as_json=True)["model_stats"]
    rest_stats = httpx.get(server.url + "/v2/models/demand/stats").json()["model_stats"]
    assert [(s["name"], s["version"]) for s in stats] == [(s["name"], s["version"]) for s in rest_stats]
    with pytest.raises(InferenceServerException) as e:
        client.get_model_metadata("nope")
    assert e.value.status() == "StatusCode.NOT_FOUND"
    assert e.value.message() == httpx.get(server.url + "/v2/models/nope").json()["error"]


def test_stateless_raw_contents_with_state_carried_by_the_client(client, offline: Offline):
    rng = np.random.default_rng(1)
    x = np.stack([random_steps(rng, 12) for _ in range(3)])
    res = client.infer("demand", [x_input(x)])  # tritonclient sends raw_input_contents
    assert res.get_response().raw_output_contents
    for b in range(3):
        y, state = offline.run(x[b])
        offline.assert_outputs_close(res.as_numpy("y")[b], y)
        np.testing.assert_allclose(res.as_numpy("hn")[:, b], state[0], atol=1e-5)
    # continue from the returned state
    x2 = np.stack([random_steps(rng, 4) for _ in range(3)])
    res2 = client.infer(
        "demand",
        [x_input(x2), x_input(res.as_numpy("hn"), "h0"), x_input(res.as_numpy("cn"), "c0")],
        outputs=[grpcclient.InferRequestedOutput("y")],
    )
    assert [o.name for o in res2.get_response().outputs] == ["y"]
    for b in range(3):
        y, _ = offline.run(np.concatenate([x[b], x2[b]]))
        offline.assert_outputs_close(res2.as_numpy("y")[b], y[12:])


def test_stateless_typed_contents_get_typed_outputs(server, offline: Offline):
    x = random_steps(np.random.default_rng(2), 9)
    req = service_pb2.ModelInferRequest(model_name="demand", id="typed-1")
    t = req.inputs.add(name="x", datatype="FP32", shape=[1, 9, 3])
    t.contents.fp32_contents.extend(x.reshape(-1).tolist())
    req.outputs.add(name="y")
    with grpc.insecure_channel(server.grpc) as ch:
        resp = service_pb2_grpc.GRPCInferenceServiceStub(ch).ModelInfer(req, timeout=10)
    assert resp.id == "typed-1" and resp.model_version == "1" and not resp.raw_output_contents
    (out,) = resp.outputs
    assert out.name == "y" and list(out.shape) == [1, 9, 1]
    offline.assert_outputs_close(np.array(out.contents.fp32_contents), offline.run(x)[0].reshape(-1))


def test_16_interleaved_sequences_over_unary_calls_from_threads(client, offline: Offline):
    rng = np.random.default_rng(3)
    ids: list[int | str] = [*range(1001, 1009), *(f"meter-{i}" for i in range(8))]
    data = {sid: random_steps(rng, int(rng.integers(10, 30))) for sid in ids}
    plans = {sid: chunks(rng, x) for sid, x in data.items()}
    got: dict[int | str, list[np.ndarray]] = {sid: [] for sid in ids}
    state: dict[int | str, tuple[np.ndarray, np.ndarray]] = {}

    def worker(mine: list[int | str]) -> None:
        # this thread's sequences, one chunk of each in turn: interleaved in time with the others
        for k in range(max(len(plans[s]) for s in mine)):
            for sid in mine:
                if k < len(plans[sid]):
                    last = k == len(plans[sid]) - 1
                    # a sequence returns y; the state only when asked for (Triton's implicit state)
                    outs = [grpcclient.InferRequestedOutput(n) for n in ("y", "hn", "cn")] if last else None
                    res = client.infer(
                        "demand", [x_input(plans[sid][k][None])], sequence_id=sid, sequence_start=k == 0, outputs=outs
                    )
                    got[sid].append(res.as_numpy("y")[0])
                    if last:
                        state[sid] = (res.as_numpy("hn")[:, 0], res.as_numpy("cn")[:, 0])

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(worker, [ids[i::4] for i in range(4)]))
    for sid in ids:
        y, final = offline.run(data[sid])
        offline.assert_outputs_close(np.concatenate(got[sid]), y)
        np.testing.assert_allclose(state[sid][0], final[0], atol=1e-5)
        np.testing.assert_allclose(state[sid][1], final[1], atol=1e-5)


class Stream:
    """tritonclient's stream with its callback feeding a queue."""

    def __init__(self, client: grpcclient.InferenceServerClient) -> None:
        self.client = client
        self.q: queue.Queue = queue.Queue()
        client.start_stream(callback=lambda result, error: self.q.put((result, error)))

    def get(self) -> tuple:
        return self.q.get(timeout=30)


def test_16_sequences_multiplexed_on_one_stream_with_random_chunking(server, offline: Offline):
    rng = np.random.default_rng(4)
    ids: list[int | str] = [*range(1, 9), *(f"s-{i}" for i in range(8))]
    data = {sid: random_steps(rng, int(rng.integers(10, 40))) for sid in ids}
    plans = {sid: chunks(rng, x) for sid, x in data.items()}
    order = [sid for sid in ids for _ in plans[sid]]
    rng.shuffle(order)  # a random interleaving; each sequence's chunks stay in order
    client = grpcclient.InferenceServerClient(server.grpc)
    stream = Stream(client)
    sent: dict[int | str, int] = dict.fromkeys(ids, 0)
    for sid in order:
        k = sent[sid]
        # the string-id half asks only for y: their queued requests may run merged into longer steps
        client.async_stream_infer(
            "demand",
            [x_input(plans[sid][k][None])],
            outputs=[grpcclient.InferRequestedOutput("y")] if isinstance(sid, str) else None,
            request_id=f"{sid}/{k}",
            sequence_id=sid,
            sequence_start=k == 0,
            sequence_end=k == len(plans[sid]) - 1,
        )
        sent[sid] += 1
    got: dict[str, list[tuple[int, np.ndarray]]] = {str(sid): [] for sid in ids}
    for _ in order:
        result, error = stream.get()
        assert error is None, error
        sid, k = result.get_response().id.split("/")
        got[sid].append((int(k), result.as_numpy("y")[0]))
    client.stop_stream()
    client.close()
    for sid in ids:
        answers = got[str(sid)]
        assert [k for k, _ in answers] == list(range(len(plans[sid]))), "responses out of request order"
        offline.assert_outputs_close(np.concatenate([y for _, y in answers]), offline.run(data[sid])[0])


def test_a_bad_request_mid_stream_gets_an_error_and_the_stream_and_state_go_on(server, offline: Offline):
    x = random_steps(np.random.default_rng(5), 6)
    client = grpcclient.InferenceServerClient(server.grpc)
    stream = Stream(client)
    client.async_stream_infer("demand", [x_input(x[None, :3])], request_id="a", sequence_id=77, sequence_start=True)
    client.async_stream_infer("demand", [x_input(x[None, 3:4, :2])], request_id="bad", sequence_id=77)
    client.async_stream_infer("demand", [x_input(x[None, 3:])], request_id="b", sequence_id=77, sequence_end=True)
    (r1, e1), (r2, e2), (r3, e3) = stream.get(), stream.get(), stream.get()
    assert e1 is None and e3 is None and r2 is None
    rest = "input x must be a list of time steps, each a list of 3 features"
    assert rest in e2.message()
    y = offline.run(x)[0]
    offline.assert_outputs_close(r1.as_numpy("y")[0], y[:3])
    offline.assert_outputs_close(r3.as_numpy("y")[0], y[3:])  # the bad request changed nothing
    client.stop_stream()
    client.close()


def test_queued_plain_steps_run_together_and_a_refused_one_fails_alone(server, offline: Offline):
    """One sequence's requests sent at once may queue up and run as longer steps (the rule
    WebSocket frames follow too, service/core/coalesce.py; how many do depends on how fast the
    client sends: tests/service/test_coalesce.py holds a batch so that they must); a request the
    model's card refuses (an hour off the half-hour grid) is answered alone with its error, and
    fails none of the requests it would have run with; each is counted once."""
    x = random_steps(np.random.default_rng(8), 40)
    bad = x[:1].copy()
    bad[0, 1] += 0.25  # hour of day off the model's half-hour grid
    client = grpcclient.InferenceServerClient(server.grpc)
    stream = Stream(client)
    before = httpx.get(server.url + "/metrics").text
    for t in range(40):
        client.async_stream_infer(
            "demand", [x_input(x[None, t : t + 1])], request_id=str(t), sequence_id=78, sequence_start=t == 0
        )
        if t == 20:
            client.async_stream_infer("demand", [x_input(bad[None])], request_id="bad", sequence_id=78)
    got = [stream.get() for _ in range(41)]
    after = httpx.get(server.url + "/metrics").text
    client.stop_stream()
    client.close()
    errors = [(r, e) for r, e in got if e is not None]
    assert len(errors) == 1 and "grid" in errors[0][1].message(), errors
    ys = [r.as_numpy("y")[0] for r, e in got if e is None]
    steps = [int(r.get_response().parameters["step"].int64_param) for r, e in got if e is None]
    assert steps == list(range(1, 41))
    offline.assert_outputs_close(np.concatenate(ys), offline.run(x)[0])  # the refused one changed nothing

    def counted(text: str, metric: str, *labels: str) -> float:
        """ModelStreamInfer's requests in ``metric``, on the lines with every one of ``labels``."""
        return sum(
            float(ln.rsplit(" ", 1)[1])
            for ln in text.splitlines()
            if ln.startswith(metric + "{") and "/ModelStreamInfer" in ln and all(x in ln for x in labels)
        )

    # every request is counted once, with its own status, though they ran together
    for status, n in (("OK", 40), ("INVALID_ARGUMENT", 1)):
        label = f'status="{status}"'
        assert counted(after, "lstm_requests_total", label) - counted(before, "lstm_requests_total", label) == n
    durations = "lstm_request_duration_seconds_count"
    assert counted(after, durations) - counted(before, durations) == 41


def test_an_ended_sequence_is_refused_without_start(server, client):
    x = random_steps(np.random.default_rng(6), 2)
    client.infer("demand", [x_input(x[None, :1])], sequence_id="ends", sequence_start=True, sequence_end=True)
    with pytest.raises(InferenceServerException) as e:
        client.infer("demand", [x_input(x[None, 1:])], sequence_id="ends")
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
    # the same message as REST's 400 for the same request
    body = {
        "inputs": [{"name": "x", "shape": [1, 1, 3], "datatype": "FP32", "data": x[1:].reshape(-1).tolist()}],
        "parameters": {"sequence_id": "ends"},
    }
    r = httpx.post(server.url + "/v2/models/demand/infer", json=body)
    assert r.status_code == 400 and e.value.message() == r.json()["error"]
    res = client.infer("demand", [x_input(x[None, 1:])], sequence_id="ends", sequence_start=True)
    assert res.as_numpy("y").shape == (1, 1, 1)


@pytest.mark.parametrize(
    "build,code",
    [
        (lambda r: r.inputs.add(name="x", datatype="FP32", shape=[1, 2, 3]), "INVALID_ARGUMENT"),  # no data
        (lambda r: r.inputs.add(name="x", datatype="BYTES", shape=[1]), "INVALID_ARGUMENT"),
        (lambda r: r.parameters["sequence_id"].double_param, "INVALID_ARGUMENT"),
    ],
)
def test_malformed_unary_requests_are_invalid_argument(server, build, code):
    req = service_pb2.ModelInferRequest(model_name="demand")
    build(req)
    if not req.inputs:
        req.parameters["sequence_id"].double_param = 1.5
        req.inputs.add(name="x", datatype="FP32", shape=[1, 1, 3]).contents.fp32_contents.extend([1.0, 2.0, 3.0])
    with grpc.insecure_channel(server.grpc) as ch, pytest.raises(grpc.RpcError) as e:
        service_pb2_grpc.GRPCInferenceServiceStub(ch).ModelInfer(req, timeout=10)
    assert e.value.code().name == code


def test_grpc_requests_are_counted_in_the_same_metrics(server, client):
    client.get_model_metadata("demand")
    text = httpx.get(server.url + "/metrics").text
    assert 'route="/inference.GRPCInferenceService/ModelMetadata",status="OK"' in text


def test_a_stream_stops_reading_while_its_client_does_not_read(server):
    """Flow control: a client that sends without reading replies gets its sends held back (the
    server reads at most its window of requests ahead, and HTTP/2 pushes back on the rest);
    everything is answered once it reads. Requests and replies are large (a 48 KiB padding
    parameter, which the server ignores; 64 KiB of returned state) so that the transports' own
    buffers (a few MiB) cannot hold the whole stream, while each request is cheap to run."""
    n = 300
    x = np.ascontiguousarray(np.broadcast_to(random_steps(np.random.default_rng(7), 1), (64, 1, 3)))
    pulled = 0
    done = threading.Event()

    def requests() -> Iterator[service_pb2.ModelInferRequest]:
        nonlocal pulled
        for i in range(n):
            r = service_pb2.ModelInferRequest(model_name="demand", id=str(i))
            r.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
            r.raw_input_contents.append(x.tobytes())
            r.parameters["padding"].string_param = "." * 48 * 1024
            pulled += 1
            yield r
        done.set()

    with grpc.insecure_channel(server.grpc) as ch:
        responses = service_pb2_grpc.GRPCInferenceServiceStub(ch).ModelStreamInfer(requests(), timeout=120)
        first = next(responses)
        # a negative can only be shown over some time: without flow control the whole stream
        # (14 MiB) is taken in well under a second
        assert not done.wait(2), "every request was taken although no reply was read"
        assert pulled < n, pulled
        ids = [int(first.infer_response.id)] + [int(r.infer_response.id) for r in responses if not r.error_message]
    assert sorted(ids) == list(range(n))


def test_a_message_over_the_body_limit_is_resource_exhausted(server):
    req = service_pb2.ModelInferRequest(model_name="demand")
    n = 8 * 1024 * 1024 // 12 + 1  # steps: just over LSTM_MAX_BODY_BYTES (8 MiB) of raw input
    req.inputs.add(name="x", datatype="FP32", shape=[1, n, 3])
    req.raw_input_contents.append(b"\0" * (12 * n))
    with grpc.insecure_channel(server.grpc) as ch, pytest.raises(grpc.RpcError) as e:
        service_pb2_grpc.GRPCInferenceServiceStub(ch).ModelInfer(req, timeout=10)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
