"""One model version on onnxruntime: providers, IO checks against the card, warm-up, run.

``run`` is synchronous and thread-safe (onnxruntime sessions are); callers run it off the
event loop. The runtime holds no state between calls: the session store owns state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort

from service.config import PROVIDER_NAMES, Settings
from service.errors import ModelLoadError
from service.runtime.repository import ModelCard

log = logging.getLogger("service.runtime")

OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def choose_providers(requested: tuple[str, ...]) -> list[str]:
    """Map setting names to onnxruntime providers that exist here, refusing silent fallbacks."""
    available = set(ort.get_available_providers())
    chosen = []
    for name in requested:
        provider = PROVIDER_NAMES[name]
        if provider in available:
            chosen.append(provider)
        elif "cpu" in requested:
            log.warning("provider %s is not available in this onnxruntime build; falling back", provider)
        else:
            raise ModelLoadError(
                f"provider {name!r} ({provider}) was asked for but this onnxruntime has only "
                f"{sorted(available)}; install onnxruntime-gpu or add 'cpu' to LSTM_PROVIDERS"
            )
    return chosen


class OnnxModel:
    def __init__(self, card: ModelCard, settings: Settings) -> None:
        self.card = card
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = settings.intra_op_threads
        opts.inter_op_num_threads = settings.inter_op_threads
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = OPT_LEVELS[settings.graph_optimization]
        opts.log_severity_level = 3  # the optional `lengths` input is reported at warning level
        try:
            self.session = ort.InferenceSession(
                str(card.onnx_path), opts, providers=choose_providers(settings.providers)
            )
        except ModelLoadError:
            raise
        except Exception as e:
            raise ModelLoadError(f"{card.onnx_path}: onnxruntime cannot load it: {e}") from e
        self.provider = self.session.get_providers()[0]
        self.row_step_s = float("inf")  # measured by warm_up: the cost per row-step...
        self.step_s = 0.0  # ...per time step, whatever the rows (the recurrence's own loop)...
        self.call_s = float("inf")  # ...and per call
        self.hop_s = 0.0  # ...and what a worker thread adds to a call
        self.has_lengths = self._check_io()
        self._outputs = ["y", *card.state_outputs]  # read by name: a graph may list them in any order
        self._state_inputs = card.state_inputs

    def _check_io(self) -> bool:
        c = self.card
        L, H, F, N_OUT = c.num_layers, c.hidden_size, c.n_features, c.n_outputs
        want_in = {"x": (3, {2: F}), **{s: (3, {0: L, 2: H}) for s in c.state_inputs}}
        want_out = {"y": (3, {2: N_OUT}), **{s: (3, {0: L, 2: H}) for s in c.state_outputs}}
        got_in = {i.name: i for i in self.session.get_inputs()}
        got_out = {o.name: o for o in self.session.get_outputs()}
        for kind, want, got in (("input", want_in, got_in), ("output", want_out, got_out)):
            missing = sorted(set(want) - set(got))
            if missing:
                raise ModelLoadError(f"{c.onnx_path}: {kind}(s) {missing} missing; the graph has {sorted(got)}")
            for name, (rank, dims) in want.items():
                arg = got[name]
                if arg.type != "tensor(float)":
                    raise ModelLoadError(f"{c.onnx_path}: {kind} {name} is {arg.type}, expected tensor(float)")
                if len(arg.shape) != rank or any(arg.shape[i] != d for i, d in dims.items()):
                    raise ModelLoadError(
                        f"{c.onnx_path}: {kind} {name} has shape {arg.shape}; model.json implies "
                        f"rank {rank} with {dims} (layers={L}, hidden={H}, features={F}, outputs={N_OUT})"
                    )
        extra = sorted(set(got_in) - set(want_in))
        if extra:
            raise ModelLoadError(f"{c.onnx_path}: unexpected required input(s) {extra}")
        overridable = {i.name for i in self.session.get_overridable_initializers()}
        if c.lengths_input and c.lengths_input not in overridable:
            raise ModelLoadError(
                f"{c.onnx_path}: model.json names lengths input {c.lengths_input!r}; the graph has none"
            )
        return bool(c.lengths_input)

    def run(self, x: np.ndarray, state: np.ndarray, lengths: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``x [B, T, F]`` from ``state [S, L, B, H]`` (the card's state tensors stacked: h and C
        for an LSTM, h for a GRU) to ``y [B, T, O]`` and the final state ``[S, L, B, H]``."""
        feeds = {"x": x}
        for name, part in zip(self._state_inputs, state, strict=True):
            feeds[name] = part
        if lengths is not None:
            if not self.has_lengths:
                raise ValueError("this model takes no per-row lengths")
            feeds[self.card.lengths_input or "lengths"] = lengths
        y, *parts = self.session.run(self._outputs, feeds)
        return y, np.stack(parts)

    def warm_up(self, max_batch: int) -> None:
        """Run the shapes the batcher will use first, so the first request pays no set-up,
        and measure what a call costs (:meth:`estimate_s`) to choose where batches run."""
        c = self.card
        medians = {}
        for batch, seq in ((1, 1), (1, 8), (max_batch, 1), (max_batch, 8)):
            x = np.zeros((batch, seq, c.n_features), np.float32)
            s = np.zeros((len(c.states), c.num_layers, batch, c.hidden_size), np.float32)
            try:
                y, state = self.run(x, s)
            except Exception as e:  # a static shape, a sequence-first layout, a missing kernel
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise ModelLoadError(
                    f"{c.onnx_path}: cannot run a batch of {batch} sequence(s) of {seq} step(s) "
                    f"(x [batch, seq, {c.n_features}], batch first): export it with dynamic batch and sequence axes; "
                    f"onnxruntime says: {first}"
                ) from None
            want = (batch, seq, c.n_outputs), (c.num_layers, batch, c.hidden_size)
            for name, arr in (("y", y), *zip(c.state_outputs, state, strict=True)):
                shape = want[name != "y"]
                if arr.shape != shape:
                    raise ModelLoadError(
                        f"{c.onnx_path}: output {name} of a batch of {batch} x {seq} steps has shape {list(arr.shape)}, "
                        f"where model.json implies {list(shape)} (batch-first x, [layers, batch, hidden] states)"
                    )
            if not (np.isfinite(y).all() and np.isfinite(state).all()):
                raise ModelLoadError(f"{c.onnx_path}: warm-up produced non-finite outputs")
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                self.run(x, s)
                times.append(time.perf_counter() - t0)
            medians[batch, seq] = sorted(times)[2]
        # a call costs a fixed part, a part per time step (the recurrence runs its steps one
        # after the other, however few rows: one long sequence costs far more than a large
        # batch's per-row-step figure says), and a part per row-step; one row-step alone costs
        # the fixed part too (for a wide model most of it)
        one, one_8 = medians[1, 1], medians[1, 8]
        wide = medians[max_batch, 8] - one_8  # 8 steps of max_batch - 1 more rows (none when 1)
        self.row_step_s = max(0.0, wide / (8 * (max_batch - 1))) if max_batch > 1 else 0.0
        self.step_s = max(0.0, (one_8 - one) / 7 - self.row_step_s)
        self.call_s = max(0.0, one - self.step_s - self.row_step_s)
        self.hop_s = self._measure_hop()

    def _measure_hop(self, rounds: int = 31) -> float:
        """What running a one-row call on a worker thread costs beyond running it on the event
        loop, measured the way the batch handler makes it (``run_in_executor`` from a running
        loop): the wake-ups both ways, and the call's data and weights fetched into the other
        core's caches -- on a small virtual machine, more than the call itself."""
        c = self.card
        x = np.zeros((1, 1, c.n_features), np.float32)
        s = np.zeros((len(c.states), c.num_layers, 1, c.hidden_size), np.float32)

        async def measure(pool: ThreadPoolExecutor) -> float:
            loop = asyncio.get_running_loop()
            here, there = [], []
            for _ in range(rounds):
                t0 = time.perf_counter()
                self.run(x, s)
                t1 = time.perf_counter()
                await loop.run_in_executor(pool, self.run, x, s)
                there.append(time.perf_counter() - t1)
                here.append(t1 - t0)
            return max(0.0, sorted(there)[rounds // 2] - sorted(here)[rounds // 2])

        # on a thread of its own, with a loop of its own: warm-up may run before serving, in the
        # serving loop's lifespan, or in a thread while serving
        with ThreadPoolExecutor(1) as pool, ThreadPoolExecutor(1) as own:
            return own.submit(asyncio.run, measure(pool)).result()

    def estimate_s(self, rows: int, steps: int) -> float:
        """What one call on ``rows`` rows of ``steps`` time steps costs, from the warm-up."""
        return self.call_s + steps * (self.step_s + rows * self.row_step_s)
