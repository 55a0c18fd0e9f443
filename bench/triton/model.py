"""The Triton peer's python-backend model: the same ``model.onnx`` behind Triton's sequence
batcher, each sequence's (h, C) kept in this process between requests.

Triton hands ``execute`` a list of requests from different sequences (the sequence batcher
routes every request of a sequence to the same model instance, so a dict per instance is
the whole state). Each request carries ``x`` ``[1, T, 3]`` and the control inputs START,
END, READY and CORRID; the batch runs as one onnxruntime call with per-row ``lengths`` (rows
of different T are padded), then each row's final state is stored under its correlation id
and dropped on END. Should two requests of one sequence share a batch, the later one runs in
a second call after the first, so a sequence's steps never see a stale state. The reply is
``y`` only, as the service answers a sequence step that names no outputs.

Loaded by Triton, not by the project: ``triton_python_backend_utils`` exists only inside
the python backend's stub process. The stub does not pass ``PYTHONPATH`` on, so the peer's
site-packages (onnxruntime) are named in ``site-packages.txt`` next to this file.
"""

from __future__ import annotations

import json
import os
import sys

with open(os.path.join(os.path.dirname(__file__), "site-packages.txt")) as f:
    sys.path[:0] = f.read().split()

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        h0 = next(i for i in self.sess.get_inputs() if i.name == "h0")
        self.layers, self.hidden = int(h0.shape[0]), int(h0.shape[2])
        names = {i.name for i in self.sess.get_inputs()}
        self.has_lengths = "lengths" in names
        self.state: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        config = json.loads(args["model_config"])
        self.y_dtype = pb_utils.triton_string_to_numpy(pb_utils.get_output_config_by_name(config, "y")["data_type"])

    def _zeros(self) -> tuple[np.ndarray, np.ndarray]:
        z = np.zeros((self.layers, 1, self.hidden), np.float32)
        return z, z

    def _run(self, rows: list[tuple[int, np.ndarray, bool, bool]]) -> list[np.ndarray]:
        """One onnxruntime call over rows of (corrid, x [T, F], start, end); returns y per row."""
        states = [self._zeros() if start else self.state.get(cid, self._zeros()) for cid, _, start, _ in rows]
        lens = np.array([x.shape[0] for _, x, _, _ in rows], np.int32)
        t = int(lens.max())
        x = np.zeros((len(rows), t, rows[0][1].shape[1]), np.float32)
        for i, (_, xi, _, _) in enumerate(rows):
            x[i, : xi.shape[0]] = xi
        feeds = {
            "x": x,
            "h0": np.concatenate([h for h, _ in states], axis=1),
            "c0": np.concatenate([c for _, c in states], axis=1),
        }
        if self.has_lengths:
            feeds["lengths"] = lens
        elif int(lens.min()) != t:
            raise pb_utils.TritonModelException("rows of different lengths need a model with a lengths input")
        y, hn, cn = self.sess.run(["y", "hn", "cn"], feeds)
        for i, (cid, _, _, end) in enumerate(rows):
            if end:
                self.state.pop(cid, None)
            else:
                self.state[cid] = (hn[:, i : i + 1].copy(), cn[:, i : i + 1].copy())
        return [y[i : i + 1, : lens[i]].astype(self.y_dtype, copy=False) for i in range(len(rows))]

    def execute(self, requests: list) -> list:
        parsed = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "x").as_numpy()
            start = bool(pb_utils.get_input_tensor_by_name(r, "START").as_numpy().reshape(-1)[0])
            end = bool(pb_utils.get_input_tensor_by_name(r, "END").as_numpy().reshape(-1)[0])
            cid = int(pb_utils.get_input_tensor_by_name(r, "CORRID").as_numpy().reshape(-1)[0])
            parsed.append((cid, x[0], start, end))
        ys: list[np.ndarray | None] = [None] * len(parsed)
        pending = list(range(len(parsed)))
        while pending:  # rounds: at most one request per sequence in each onnxruntime call
            seen: set[int] = set()
            now, later = [], []
            for i in pending:
                (now if parsed[i][0] not in seen else later).append(i)
                seen.add(parsed[i][0])
            for i, y in zip(now, self._run([parsed[i] for i in now]), strict=True):
                ys[i] = y
            pending = later
        return [pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("y", y)]) for y in ys]
