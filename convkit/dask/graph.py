"""Building the task graphs: gathering ranges of chunks, tree sums, and the result array.

Each output block is one task that reads exactly the input range its windows
need. A range that covers part of a chunk is cut by a separate ``getitem``
task, which the scheduler runs where that chunk lives, so only halos travel
between workers, never whole neighbouring chunks.
"""

from __future__ import annotations

import operator

import numpy as np
from dask.array import Array
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from .plan import edges

__all__ = ["Graph", "concat_nested", "sum_parts"]

#: Partial results summed per task in a tree reduction (dask's own default for reductions is 4 to 32).
SPLIT_EVERY = 8


def concat_nested(parts, axis=0):
    """Concatenate a nested list of arrays, one nesting level per axis."""
    if isinstance(parts, np.ndarray):
        return parts
    if len(parts) == 1:
        return concat_nested(parts[0], axis + 1)
    return np.concatenate([concat_nested(p, axis + 1) for p in parts], axis=axis)


def sum_parts(parts):
    """Sum of a list of arrays (or of tuples of arrays, element-wise), in the first one's dtype."""
    if isinstance(parts[0], tuple):
        return tuple(sum_parts([p[i] for p in parts]) for i in range(len(parts[0])))
    total = parts[0].copy()
    for p in parts[1:]:
        total += p
    return total


class Graph:
    """A task graph under construction for one result; ``name`` is unique to the op and its arguments."""

    def __init__(self, op: str, *args):
        self.name = f"{op}-{tokenize(op, *args)}"
        self.dsk: dict = {}
        self.deps: list = []
        self._count = 0

    def depend(self, *arrays) -> None:
        self.deps.extend(a for a in arrays if a is not None)

    def add(self, task):
        """Add ``task`` under a fresh intermediate key and return the key."""
        key = (f"{self.name}-part", self._count)
        self._count += 1
        self.dsk[key] = task
        return key

    def gather(self, arr: Array, ranges):
        """Key or task yielding ``arr[ranges]`` (one ``(start, stop)`` per axis) as one ndarray."""
        picks = []
        for (start, stop), bounds in zip(ranges, map(edges, arr.chunks)):
            picks.append([(i, slice(max(start, bounds[i]) - bounds[i], min(stop, bounds[i + 1]) - bounds[i]),
                           bounds[i + 1] - bounds[i])
                          for i in range(len(bounds) - 1) if bounds[i] < stop and bounds[i + 1] > start])

        def nest(axis, index, cut):
            if axis == len(picks):
                key = (arr.name, *index)
                whole = all(sl == slice(0, size) for sl, size in cut)
                return key if whole else self.add((operator.getitem, key, tuple(sl for sl, _ in cut)))
            return [nest(axis + 1, index + (i,), cut + ((sl, size),)) for i, sl, size in picks[axis]]

        nested = nest(0, (), ())
        flat = nested
        while isinstance(flat, list) and len(flat) == 1:
            flat = flat[0]
        return flat if not isinstance(flat, list) else self.add((concat_nested, nested))

    def tree_sum(self, keys, combine=sum_parts):
        """Key of the sum (or other ``combine``) of the results at ``keys``, ``SPLIT_EVERY`` at a time."""
        keys = list(keys)
        while len(keys) > 1:
            keys = [self.add((combine, keys[i:i + SPLIT_EVERY])) if len(keys[i:i + SPLIT_EVERY]) > 1
                    else keys[i] for i in range(0, len(keys), SPLIT_EVERY)]
        return keys[0]

    def reduce(self, tasks, combine=sum_parts):
        """Key or task of the combined results of ``tasks`` (one task: itself)."""
        if len(tasks) == 1:
            return tasks[0]
        return self.tree_sum([self.add(t) for t in tasks], combine)

    def array(self, blocks: dict, chunks, dtype, suffix: str = "") -> Array:
        """A result: ``blocks`` maps each block index to the key or task computing it."""
        name = self.name + suffix
        for index, task in blocks.items():
            self.dsk[(name, *index)] = task
        graph = HighLevelGraph.from_collections(name, dict(self.dsk), dependencies=self.deps)
        chunks = tuple(tuple(int(c) for c in cs) for cs in chunks)
        return Array(graph, name, chunks=chunks, meta=np.empty((0,) * len(chunks), dtype=dtype))
