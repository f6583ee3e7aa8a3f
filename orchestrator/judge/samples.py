"""Growable typed buffers for the latency sample and fixed-step counters for the time series.

The latency sample is exact (every terminal latency is kept, 16 bytes a task): the SLI-2
figures equal `numpy.percentile` over all of them. `array.array` grows in amortised O(1) and is
viewed by numpy without a copy, so appending costs a C call, not a numpy scalar store.
"""

from __future__ import annotations

from array import array

import numpy as np


class Samples:
    """(latency, terminal time) pairs; a slot can be withdrawn (a FAILED task retried later)."""

    def __init__(self) -> None:
        self._lat = array("d")
        self._end = array("d")
        self.withdrawn = 0

    def __len__(self) -> int:
        return len(self._lat) - self.withdrawn

    def add(self, latency: float, t_end: float) -> int:
        self._lat.append(latency)
        self._end.append(t_end)
        return len(self._lat) - 1

    def withdraw(self, slot: int) -> None:
        if slot >= 0 and self._lat[slot] == self._lat[slot]:  # not NaN yet
            self._lat[slot] = float("nan")
            self.withdrawn += 1

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(latencies, terminal times) of the slots still standing, as float64 arrays."""
        lat = np.frombuffer(self._lat, dtype=np.float64) if len(self._lat) else np.empty(0)
        end = np.frombuffer(self._end, dtype=np.float64) if len(self._end) else np.empty(0)
        if self.withdrawn:
            keep = ~np.isnan(lat)
            return lat[keep].copy(), end[keep].copy()
        return lat.copy(), end.copy()

    def nbytes(self) -> int:
        return self._lat.buffer_info()[1] * 8 * 2


class Minutes:
    """Per-soak-minute integer counters, grown on demand (bounded by the run's length)."""

    def __init__(self, minutes: int) -> None:
        self.values = [0] * max(minutes, 1)

    def grow(self, index: int) -> None:
        if index >= len(self.values):
            self.values.extend([0] * (index + 1 - len(self.values) + 60))

    def window_sum(self, start: int, end: int) -> int:
        return sum(self.values[max(start, 0):max(end, 0)])
