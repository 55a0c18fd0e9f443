"""One way to run a stream's queued steps together: WebSocket frames and ``ModelStreamInfer``
messages of one session or sequence, waiting behind each other, run as one longer step.

Exact: a recurrent model's outputs do not depend on how a stream is cut into requests, so
one step over the concatenated readings gives each request the outputs (and the step
count) it would have had alone; each still gets its own reply, in order.

The one rule, for every transport (each says which of its requests are plain steps):

- a request joins only as a **plain step**: readings that pass the model card's checks on
  their own (:func:`plain`) -- so that a request that would be refused is answered alone and
  never fails the requests it would have run with -- and nothing that needs a reply of its
  own (an ``expected_step``, a state output, a step that is not the stream's next);
- a run starts a sequence only at its first request (``sequence_start`` after the first
  starts a new run), and ends at a request that ends it (``sequence_end``);
- a run holds at most ``max_steps`` readings (the per-request limit): a request that does not
  fit starts the next run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from service.core.inputs import check_steps
from service.errors import InvalidInput
from service.runtime.repository import ModelCard


def plain(card: ModelCard, x: np.ndarray, max_steps: int) -> bool:
    """Whether readings ``x [T, F]`` pass the model's checks on their own."""
    try:
        check_steps(card, x, "inputs", max_steps)
    except InvalidInput:
        return False
    return True


@dataclass(slots=True)
class Part:
    """One request's share of a run: its readings ``[T, F]``, and whether it starts or ends
    its sequence."""

    x: np.ndarray
    start: bool = False
    end: bool = False


@dataclass
class Run:
    """Plain steps of one stream, in order, that run as one step."""

    max_steps: int
    parts: list[Part] = field(default_factory=list)
    steps: int = 0

    @classmethod
    def of(cls, first: Part | None, max_steps: int) -> Run | None:
        """The run that ``first`` opens (a first part always fits: alone, the data plane's
        checks answer it); None for no part."""
        if first is None:
            return None
        run = cls(max_steps)
        run.add(first)
        return run

    def add(self, part: Part) -> bool:
        """Take ``part`` if it may run with the parts before it; False leaves it to the next run."""
        if self.parts:
            last = self.parts[-1]
            if (
                last.end
                or part.start
                or part.x.shape[1] != last.x.shape[1]
                or self.steps + len(part.x) > self.max_steps
            ):
                return False
        self.parts.append(part)
        self.steps += len(part.x)
        return True

    @property
    def x(self) -> np.ndarray:
        """The readings of every part, as one step's ``[T, F]``."""
        return self.parts[0].x if len(self.parts) == 1 else np.concatenate([p.x for p in self.parts])

    def split(self, outputs: np.ndarray, step: int) -> list[tuple[np.ndarray, int]]:
        """Each part's outputs (``outputs [T, O]`` of the run) and the session's step after it
        (``step``: after the run)."""
        before = step - len(outputs)
        out, t = [], 0
        for p in self.parts:
            n = len(p.x)
            out.append((outputs[t : t + n], before + t + n))
            t += n
        return out
