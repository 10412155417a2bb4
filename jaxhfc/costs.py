"""What the compiled programs of a piece of work cost, from XLA's own analyses.

A :class:`Meter` is opt-in: inside ``with costs.metering() as meter:`` the two places every
program runs from report to it (:func:`jaxhfc.fit.fit`'s training loop, and
:func:`jaxhfc.parallel.sweep`, through which every evaluation, attack and analysis runs), and
outside it they report nothing and pay nothing. Each report is one :class:`Record`: the
program's FLOPs per call from XLA's cost analysis of the lowered program (times the device
count: a ``shard_map`` program is analysed per device), its memory from XLA's memory analysis of
the compiled program (per device; the executable is jax's cached one, so nothing compiles
twice), the number of calls and the rows (images or training steps) they covered, and the
labels active at the time (:meth:`Meter.label`: an artefact, "training").

XLA's cost analysis counts a ``while`` loop's body once, whatever its trip count: meter work
whose loops are unrolled (the CPU form of :func:`jaxhfc.parallel.accelerator_loops`), or scale
the count by hand. FLOPs are XLA's count of the operations in the program (a multiply-add is
2), not a measurement of time.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any

__all__ = ["Record", "Meter", "metering", "active", "report", "program_cost"]


@dataclasses.dataclass
class Record:
    """One program's runs while a meter was on.

    Attributes:
      kind: ``"train"`` (calls of the training loop; ``rows`` = optimizer steps) or ``"sweep"``
        (evaluation calls; ``rows`` = the rows, e.g. images, they covered, padding included).
      name: a short description of the program (its function's name).
      labels: the meter's labels when it ran, outermost first.
      flops_per_call: XLA's FLOPs of one call, all devices together.
      calls: calls made.
      rows: rows (steps or images) those calls covered.
      memory: XLA's memory analysis of the program per device, in bytes: ``argument``,
        ``output``, ``temp`` and ``peak`` (their sum less aliased bytes); None when unavailable.
      devices: devices the program ran on.
      detail: anything the caller adds (batch size, shapes).
    """

    kind: str
    name: str
    labels: tuple[str, ...]
    flops_per_call: float
    calls: int
    rows: int
    memory: dict[str, int] | None
    devices: int
    detail: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def flops(self) -> float:
        return self.flops_per_call * self.calls


class Meter:
    """Collects :class:`Record` s (see the module docstring); ``records`` in the order run."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self._labels: list[str] = []
        self._cache: dict[Any, tuple[float, dict[str, int] | None]] = {}

    @contextlib.contextmanager
    def label(self, name: str) -> Iterator[None]:
        """Tag every record made inside the block with ``name`` (nested labels stack)."""
        self._labels.append(str(name))
        try:
            yield
        finally:
            self._labels.pop()

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self._labels)

    def add(self, kind: str, program: Callable, args: Sequence[Any], *, calls: int, rows: int, devices: int,
            name: str | None = None, loop_trips: int = 1, **detail: Any) -> Record:
        """Record ``calls`` calls of the jitted ``program`` on ``args`` (only their shapes, dtypes
        and shardings are read: buffers a call will donate may be passed before the call). The
        program is analysed once per argument layout. ``loop_trips``: the trips of a ``while``
        loop wrapping the whole program (scanned training steps), which XLA counts once."""
        abstract = _abstract(args)
        cache_key = (program, _shapes(abstract))
        if cache_key not in self._cache:
            self._cache[cache_key] = program_cost(program, abstract)
        flops, memory = self._cache[cache_key]
        rec = Record(kind=kind, name=name or getattr(program, "__name__", type(program).__name__),
                     labels=self.labels, flops_per_call=flops * devices * loop_trips, calls=int(calls),
                     rows=int(rows), memory=memory, devices=int(devices), detail=detail)
        self.records.append(rec)
        return rec

    def total(self, *, kind: str | None = None, label: str | None = None) -> float:
        """FLOPs of the records of one kind and/or carrying one label."""
        return sum(r.flops for r in self.records
                   if (kind is None or r.kind == kind) and (label is None or label in r.labels))


_METERS: list[Meter] = []


@contextlib.contextmanager
def metering(meter: Meter | None = None) -> Iterator[Meter]:
    """Turn metering on for the block; yields the :class:`Meter` (a new one by default)."""
    meter = meter if meter is not None else Meter()
    _METERS.append(meter)
    try:
        yield meter
    finally:
        _METERS.remove(meter)


def active() -> Meter | None:
    """The innermost active meter, or None (then reporting costs nothing)."""
    return _METERS[-1] if _METERS else None


def report(kind: str, program: Callable, args: Sequence[Any], **kw: Any) -> None:
    """:meth:`Meter.add` on the active meter, if any (the hook the library's loops call)."""
    meter = active()
    if meter is not None:
        meter.add(kind, program, args, **kw)


def _abstract(tree: Any) -> Any:
    """Shape, dtype and sharding of every array leaf (to lower a program without its buffers)."""
    import jax

    def one(a: Any) -> Any:
        return jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding) if isinstance(a, jax.Array) else a

    return jax.tree_util.tree_map(one, tree)


def _shapes(args: Any) -> Any:
    """``(shape, dtype)`` of every leaf: a hashable key of a program's input layout."""
    import jax

    return tuple((getattr(a, "shape", None), str(getattr(a, "dtype", type(a).__name__)))
                 for a in jax.tree_util.tree_leaves(args))


def program_cost(program: Callable, args: Sequence[Any]) -> tuple[float, dict[str, int] | None]:
    """``(flops per device, memory per device)`` of the jitted ``program`` called on ``args``:
    XLA's cost analysis of the lowered program and memory analysis of the compiled one (None
    where the backend gives none)."""
    lowered = program.lower(*args)
    cost = lowered.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    flops = float((cost or {}).get("flops", 0.0))
    memory = None
    try:
        stats = lowered.compile().memory_analysis()
    except Exception:  # noqa: BLE001 - a backend without the analysis: flops only
        stats = None
    if stats is not None:
        memory = {"argument": int(stats.argument_size_in_bytes), "output": int(stats.output_size_in_bytes),
                  "temp": int(stats.temp_size_in_bytes), "alias": int(stats.alias_size_in_bytes)}
        memory["peak"] = memory["argument"] + memory["output"] + memory["temp"] - memory["alias"]
    return flops, memory
