"""One model version's session states in one array, for the memory store.

Every live session of a version has a row (a slot) of ``data [S, L, capacity, H]``; its
record's ``state`` is a view of that row. A batch reads its sessions' states with one
``take`` by slot (:meth:`Arena.gather`), and a commit writes a session's new state into its
row. Slots are reused last freed first, so the rows in use stay packed at the front; the
array doubles when full (zero-filled: its pages cost memory once written) and is dropped
with the version's last session. It never shrinks while the version has sessions.
"""

from __future__ import annotations

import numpy as np

FIRST_CAPACITY = 256


class Arena:
    __slots__ = ("_free", "_fresh", "data", "used")

    def __init__(self, shape: tuple[int, ...], capacity: int = FIRST_CAPACITY) -> None:
        if len(shape) != 3:
            raise ValueError(f"a session state is [states, layers, hidden], got shape {shape}")
        s, layers, hidden = shape
        self.data = np.zeros((s, layers, capacity, hidden), np.float32)
        self._free: list[int] = []  # rows released, reused last released first
        self._fresh = 0  # the first row never used: the rows from it on are free too
        self.used = 0

    @property
    def row_shape(self) -> tuple[int, int, int]:
        s, layers, _, hidden = self.data.shape
        return s, layers, hidden

    def add(self, state: np.ndarray) -> tuple[int, bool]:
        """A slot holding a copy of ``state [S, L, H]``, and whether the array grew (every
        view of the old array is then stale: the store makes its records' views again)."""
        if state.shape != self.row_shape:
            raise ValueError(f"a state of shape {state.shape} does not fit this arena's rows {self.row_shape}")
        grew = False
        if self._free:
            slot = self._free.pop()
        else:
            slot = self._fresh
            self._fresh += 1
            old = self.data
            cap = old.shape[2]
            if slot == cap:
                self.data = np.zeros((*old.shape[:2], 2 * cap, old.shape[3]), np.float32)
                self.data[:, :, :cap] = old
                grew = True
        self.data[:, :, slot] = state
        self.used += 1
        return slot, grew

    def release(self, slot: int) -> None:
        self._free.append(slot)
        self.used -= 1

    def view(self, slot: int) -> np.ndarray:
        """The row of ``slot``: a view, which reads the session's state as it is now."""
        return self.data[:, :, slot]

    def gather(self, slots: list[int]) -> np.ndarray:
        """The rows of ``slots`` as one new array ``[S, L, len(slots), H]``."""
        return self.data.take(slots, axis=2)
