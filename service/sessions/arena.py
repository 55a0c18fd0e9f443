"""One model version's session states in one array, for the memory store.

Every live session of a version has a row (a slot) of ``data [S, L, capacity, H]`` for its
life; its record's ``state`` is a view of that row. A batch reads its sessions' states with
one ``take`` by slot (:meth:`Arena.gather`), and a commit writes a session's new state into
its row.

The array is made zero-filled for as many rows as the store may hold (``LSTM_MAX_SESSIONS``):
the system gives such memory pages only once they are written, so a row costs memory once a
session has used it, and the array never has to grow under load. Rows are reused last freed
first, so the rows written stay as few as the most sessions live at once. Should more rows be
needed (sessions restored from a state file past a lowered limit, or an allocation the system
refused at that size) the array doubles, which copies it: a pause of the event loop. It is
dropped with the version's last session.
"""

from __future__ import annotations

import math
import mmap

import numpy as np

FIRST_CAPACITY = 256


def zeros(shape: tuple[int, ...]) -> np.ndarray:
    """A zero-filled float32 array in a private anonymous mapping of its own: the system gives
    its pages as they are first written, in small pages (numpy's own large arrays ask for huge
    pages, which would round each state plane's rows in use up to 2 MB). Freed with the last
    array that uses it. Raises OSError where the system will not map that much."""
    n = math.prod(shape)
    pages = mmap.mmap(-1, max(4 * n, 1), flags=mmap.MAP_PRIVATE)
    return np.frombuffer(pages, np.float32, count=n).reshape(shape)


class Arena:
    __slots__ = ("_free", "_fresh", "data", "used")

    def __init__(self, shape: tuple[int, ...], capacity: int = FIRST_CAPACITY) -> None:
        if len(shape) != 3:
            raise ValueError(f"a session state is [states, layers, hidden], got shape {shape}")
        s, layers, hidden = shape
        self.data = zeros((s, layers, capacity, hidden))
        self._free: list[int] = []  # rows released, reused last released first
        self._fresh = 0  # the first row never used: the rows from it on are free too
        self.used = 0

    @property
    def row_shape(self) -> tuple[int, int, int]:
        s, layers, _, hidden = self.data.shape
        return s, layers, hidden

    def add(self, state: np.ndarray) -> tuple[int, bool]:
        """A slot holding a copy of ``state [S, L, H]``, and whether the array grew (every
        view of the old array is then stale: the store makes its records' views again).
        ValueError, and nothing changed, for a state of another shape."""
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
                self.data = zeros((*old.shape[:2], 2 * cap, old.shape[3]))
                self.data[:, :, :cap] = old
                grew = True
        self.data[:, :, slot] = state
        self.used += 1
        return slot, grew

    def release(self, slot: int) -> None:
        self._free.append(slot)
        self.used -= 1

    def view(self, slot: int) -> np.ndarray:
        """The row of ``slot``: a view, which reads whatever the row holds when it is read."""
        return self.data[:, :, slot]

    def gather(self, slots: list[int]) -> np.ndarray:
        """The rows of ``slots`` as one new array ``[S, L, len(slots), H]``."""
        return self.data.take(slots, axis=2)
