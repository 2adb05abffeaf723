"""Flow fields between consecutive frames, computed once per pair and kept in memory.

Why in memory and not files: a scene's flows matter while someone labels that scene (a P
step, a track re-propagated after each correction), a miss costs only one DIS pair, and a
file per pair (several MB of float32 at 512 px) would need its own clean-up. The cache is
keyed by the two frames' sha256 (content, not ids: re-imported or duplicated frames share
it, and a changed frame can never hit a stale entry) and the flow grid's side, and bounded
by bytes (``MAX_BYTES``), dropping the least recently used pair first. It is per process:
each web or worker process warms its own.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Callable, Hashable

import numpy as np

MAX_BYTES = 768 * 2**20


class FlowCache:
    """A least-recently-used map bounded by the bytes of the numpy arrays its values hold."""

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key][0]
        # Computed outside the lock: two threads may compute one pair twice, never block on DIS.
        value = compute()
        size = _nbytes(value)
        with self._lock:
            self.misses += 1
            if key not in self._items and size <= self.max_bytes:
                self._items[key] = (value, size)
                self._bytes += size
                while self._bytes > self.max_bytes:
                    _, (_, dropped) = self._items.popitem(last=False)
                    self._bytes -= dropped
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0
            self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._items)


def _nbytes(value: Any) -> int:
    fields = vars(value).values() if hasattr(value, "__dict__") else [value]
    return sum(v.nbytes for v in fields if isinstance(v, np.ndarray))


FLOWS = FlowCache()
