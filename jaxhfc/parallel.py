"""Device mesh, shardings and multi-host helpers for data-parallel training.

There is one mesh axis, :data:`DATA_AXIS` (``"data"``), laid over every device of every
process (``jax.devices()``, global). Training and evaluation functions are written per
device and mapped with ``jax.jit(jax.shard_map(..., mesh=mesh, ...))`` over that axis;
parameters are replicated (``P()``), batches are sharded (``P("data")``).

Multi-host: every process runs the same program. :func:`initialize_distributed` calls
``jax.distributed.initialize`` when a launch has several processes (flags, environment
or SLURM), and is a no-op for a single process. Host data enters the global arrays
through :func:`global_from_local` (each process gives the rows of its own devices) or
:func:`global_from_full` (every process holds the same full array, each materialises only
its own shards); :func:`to_host` brings any global array back to numpy on every process.
"""
from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

__all__ = [
    "request_cpu_devices",
    "DATA_AXIS",
    "make_mesh",
    "data_sharding",
    "replicated",
    "initialize_distributed",
    "distributed_settings",
    "global_from_local",
    "global_from_full",
    "to_host",
    "local_batch_size",
    "split_callable",
    "join_callable",
    "sweep",
    "accelerator_loops",
    "LOOPS_ENV",
]

logger = logging.getLogger(__name__)

#: The only mesh axis: the data-parallel axis.
DATA_AXIS = "data"


CPU_DEVICE_FLAG = "--xla_force_host_platform_device_count"

#: Environment variable choosing the form of the loops (:func:`accelerator_loops`).
LOOPS_ENV = "JAXHFC_LOOPS"
LOOP_FORMS = ("auto", "accelerator", "cpu")


def accelerator_loops() -> bool:
    """Whether the loops take the form an accelerator runs: training steps scanned on the device
    (up to 100 per call), a population's models ``vmap``-ed over a model axis, and the PGD loops
    of adversarial training and attacks rolled (``lax.fori_loop``) rather than unrolled.

    ``JAXHFC_LOOPS=auto`` (or unset) follows the backend: the accelerator form on GPU/TPU, the
    CPU form on a CPU, where XLA runs convolutions inside loops several times slower.
    ``JAXHFC_LOOPS=accelerator`` forces the accelerator form on a CPU, so the code a GPU runs is
    run and tested here (``reproduce_all --loops accelerator``); ``cpu`` forces the CPU form. Read
    at each call (programs built under one form are cached apart from the other's).

    Raises:
      ValueError: ``JAXHFC_LOOPS`` is set to something else.
    """
    form = (os.environ.get(LOOPS_ENV) or "auto").strip().lower()
    if form not in LOOP_FORMS:
        raise ValueError(f"{LOOPS_ENV} must be one of {LOOP_FORMS}, got {form!r}")
    if form == "auto":
        return jax.default_backend() != "cpu"
    return form == "accelerator"


def request_cpu_devices(value: str | int = "auto", *, environ: Any = None, cores: int | None = None) -> int | None:
    """Ask XLA for ``value`` CPU devices (``'auto'``: one per core, at most 8) through ``XLA_FLAGS``.

    XLA:CPU runs small convolutions on about one core; data parallelism over one device per
    core uses the others, and tests use fake devices to exercise the multi-device path. Call
    it before jax initialises its backends (drivers, benchmarks and the test set-up do, first
    thing); it only edits the environment mapping (``os.environ`` by default). A count already
    in ``XLA_FLAGS`` wins. Returns the count set, or None when nothing was set (1: nothing to set).
    """
    env = os.environ if environ is None else environ
    flags = env.get("XLA_FLAGS", "")
    if CPU_DEVICE_FLAG in flags:
        return None
    if value == "auto":
        n = max(1, min(int(cores if cores is not None else (os.cpu_count() or 1)), 8))
    else:
        try:
            n = int(value)
        except (TypeError, ValueError):
            raise ValueError(f"--cpu-devices must be 'auto' or a positive int; got {value!r}") from None
        if n < 1:
            raise ValueError(f"--cpu-devices must be 'auto' or a positive int; got {value!r}")
    if n == 1:
        return None
    env["XLA_FLAGS"] = f"{flags} {CPU_DEVICE_FLAG}={n}".strip()
    return n


def make_mesh(num_devices: int | None = None, *, devices: Sequence[Any] | None = None) -> Mesh:
    """A 1-D mesh with axis ``"data"``.

    Args:
        num_devices: Use the first ``num_devices`` of ``jax.devices()`` (all by default).
            In a multi-process run every device must be used (each process drives its own).
        devices: Explicit device list (overrides ``num_devices``).

    Returns:
        ``jax.sharding.Mesh`` of shape ``(num_devices,)`` with axis name ``"data"``.
    """
    if devices is None:
        all_devices = jax.devices()
        if num_devices is None:
            num_devices = len(all_devices)
        if not 1 <= num_devices <= len(all_devices):
            raise ValueError(
                f"num_devices must be in [1, {len(all_devices)}] (jax.devices() has "
                f"{len(all_devices)}); got {num_devices}"
            )
        if jax.process_count() > 1 and num_devices != len(all_devices):
            raise ValueError(
                f"in a multi-process run the mesh must span all {len(all_devices)} devices; "
                f"got num_devices={num_devices}"
            )
        devices = all_devices[:num_devices]
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def data_sharding(mesh: Mesh, *, batch_axis: int = 0) -> NamedSharding:
    """Sharding that splits axis ``batch_axis`` over ``"data"`` (other axes whole)."""
    spec = (None,) * batch_axis + (DATA_AXIS,)
    return NamedSharding(mesh, P(*spec))


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding that keeps a full copy on every device of the mesh."""
    return NamedSharding(mesh, P())


def local_batch_size(global_batch: int, mesh: Mesh) -> int:
    """Per-device batch; raises ValueError unless ``global_batch`` divides evenly."""
    n = mesh.devices.size
    if global_batch % n:
        raise ValueError(f"global batch {global_batch} must be divisible by the number of devices {n}")
    return global_batch // n


def _env_first(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value not in (None, ""):
            return value
    return None


def distributed_settings(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> dict[str, Any]:
    """Resolve the multi-host settings from arguments, then the environment.

    Order: explicit arguments; ``JAXHFC_COORDINATOR_ADDRESS`` / ``JAX_COORDINATOR_ADDRESS``,
    ``JAXHFC_NUM_PROCESSES`` / ``JAX_NUM_PROCESSES``, ``JAXHFC_PROCESS_ID`` / ``JAX_PROCESS_ID``;
    then SLURM (``SLURM_NTASKS``, ``SLURM_PROCID``; the coordinator address is left to
    JAX's SLURM cluster detection when not given).

    Returns:
        dict with ``coordinator_address`` (str or None), ``num_processes`` (int),
        ``process_id`` (int or None) and ``source`` ("args", "env", "slurm" or "single").
    """
    source = "args" if any(v is not None for v in (coordinator_address, num_processes, process_id)) else None
    if coordinator_address is None:
        coordinator_address = _env_first("JAXHFC_COORDINATOR_ADDRESS", "JAX_COORDINATOR_ADDRESS")
        source = source or ("env" if coordinator_address else None)
    if num_processes is None:
        value = _env_first("JAXHFC_NUM_PROCESSES", "JAX_NUM_PROCESSES")
        if value is not None:
            num_processes, source = int(value), source or "env"
    if process_id is None:
        value = _env_first("JAXHFC_PROCESS_ID", "JAX_PROCESS_ID")
        if value is not None:
            process_id, source = int(value), source or "env"
    if num_processes is None and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        num_processes = int(os.environ["SLURM_NTASKS"])
        if process_id is None and "SLURM_PROCID" in os.environ:
            process_id = int(os.environ["SLURM_PROCID"])
        source = source or "slurm"
    if num_processes is None:
        num_processes = 1
    if num_processes < 1:
        raise ValueError(f"num_processes must be >= 1; got {num_processes}")
    if process_id is not None and not 0 <= process_id < num_processes:
        raise ValueError(f"process_id must be in [0, {num_processes}); got {process_id}")
    return {
        "coordinator_address": coordinator_address,
        "num_processes": num_processes,
        "process_id": process_id,
        "source": source or "single",
    }


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    local_device_ids: Sequence[int] | None = None,
    initialization_timeout: int = 300,
) -> bool:
    """Call ``jax.distributed.initialize`` for a multi-process launch; no-op for one process.

    Must run before any other JAX call that touches devices. Settings come from the
    arguments or the environment (see :func:`distributed_settings`).

    Returns:
        True when the distributed runtime was initialised, False for a single process.
    """
    settings = distributed_settings(coordinator_address, num_processes, process_id)
    if settings["num_processes"] == 1:
        return False
    if settings["source"] != "slurm" and (settings["coordinator_address"] is None or settings["process_id"] is None):
        raise ValueError(
            "a multi-process run needs coordinator_address ('host:port') and process_id "
            "(flags, or JAXHFC_COORDINATOR_ADDRESS / JAXHFC_PROCESS_ID); got "
            f"{settings}"
        )
    kwargs: dict[str, Any] = {"initialization_timeout": initialization_timeout}
    if settings["coordinator_address"] is not None:
        kwargs["coordinator_address"] = settings["coordinator_address"]
    kwargs["num_processes"] = settings["num_processes"]
    if settings["process_id"] is not None:
        kwargs["process_id"] = settings["process_id"]
    if local_device_ids is not None:
        kwargs["local_device_ids"] = list(local_device_ids)
    logger.info("jax.distributed.initialize(%s)", kwargs)
    jax.distributed.initialize(**kwargs)
    return True


def global_from_local(mesh: Mesh, local: Any, *, batch_axis: int = 0) -> jax.Array:
    """Assemble a global array sharded over ``"data"`` from each process's rows.

    Args:
        mesh: The data mesh.
        local: This process's contiguous slice of the global array along ``batch_axis``
            (the rows for its own devices, in device order; the whole array with one process).

    Returns:
        A global ``jax.Array`` with ``batch_axis`` sharded over ``"data"``.
    """
    return jax.make_array_from_process_local_data(data_sharding(mesh, batch_axis=batch_axis), np.asarray(local))


def global_from_full(mesh: Mesh, full: Any, *, sharded: bool = False, batch_axis: int = 0) -> jax.Array:
    """Place an array that every process holds in full onto the mesh.

    Each process materialises only the shards of its own devices, so this works the same
    with one or many processes.

    Args:
        mesh: The data mesh.
        full: The whole (global) array, identical on every process.
        sharded: Shard ``batch_axis`` over ``"data"`` (default: replicate).

    Returns:
        A global ``jax.Array`` with the requested sharding.
    """
    sharding = data_sharding(mesh, batch_axis=batch_axis) if sharded else replicated(mesh)

    def put(a: Any) -> jax.Array:
        if isinstance(a, jax.Array) and a.sharding == sharding:
            return a
        if isinstance(a, jax.Array) and jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            impl = jax.random.key_impl(a)
            return jax.random.wrap_key_data(put(jax.random.key_data(a)), impl=impl)
        if jax.process_count() == 1:
            return jax.device_put(a, sharding)
        host = np.asarray(a)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree_util.tree_map(put, full)


def to_host(x: Any) -> Any:
    """Fetch a (pytree of) global array(s) to numpy on every process."""

    def fetch(a: Any) -> Any:
        if not isinstance(a, jax.Array):
            return np.asarray(a)
        if a.is_fully_addressable:
            return np.asarray(a)
        if a.is_fully_replicated:
            return np.asarray(a.addressable_data(0))
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(a, tiled=True))

    return jax.tree_util.tree_map(fetch, x)


def split_callable(fn: Callable) -> tuple[list, tuple]:
    """Split a callable into its array leaves and a hashable static spec.

    A compiled function that closes over ``fn`` bakes ``fn``'s arrays (e.g. a model's
    parameters) into the program as constants and must be cached per ``fn`` object.
    Instead, cache the compiled function on ``spec`` and pass ``arrays`` as (replicated)
    arguments, rebuilding ``fn`` inside with :func:`join_callable`: callables that differ
    only in their arrays (e.g. ``jax.tree_util.Partial(apply, params_a)`` and
    ``Partial(apply, params_b)``) then share one compiled program.

    ``fn`` is flattened as a pytree (``jax.tree_util.tree_flatten``): a plain function is
    a single non-array leaf (no arrays), a ``Partial`` contributes its bound arguments.
    Leaves that are ``jax.Array`` or ``np.ndarray`` are arrays; every other leaf (Python
    numbers, functions, ...) stays in the spec and is a compile-time constant.

    Args:
        fn: A callable, possibly a pytree such as ``jax.tree_util.Partial``.

    Returns:
        ``(arrays, spec)``: the array leaves in flattening order (a list, possibly empty)
        and ``spec = (treedef, static_leaves, is_array)``. ``spec`` is hashable when every
        non-array leaf is (functions hash by identity), and two callables with the same
        structure, the same non-array leaves and any array values have equal specs.
    """
    leaves, treedef = jax.tree_util.tree_flatten(fn)
    is_array = tuple(isinstance(leaf, (jax.Array, np.ndarray)) for leaf in leaves)
    arrays = [leaf for leaf, a in zip(leaves, is_array) if a]
    static = tuple(None if a else leaf for leaf, a in zip(leaves, is_array))
    return arrays, (treedef, static, is_array)


def join_callable(spec: tuple, arrays: Sequence[Any]) -> Callable:
    """Rebuild the callable split by :func:`split_callable` from its spec and arrays.

    Args:
        spec: The spec returned by :func:`split_callable`.
        arrays: One array (or tracer) per array leaf, in the order of ``split_callable``.

    Returns:
        The callable with ``arrays`` in place of the original array leaves.

    Raises:
        ValueError: ``arrays`` does not have one entry per array leaf of ``spec``.
    """
    treedef, static, is_array = spec
    arrays = list(arrays)
    if len(arrays) != sum(is_array):
        raise ValueError(f"spec has {sum(is_array)} array leaves, got {len(arrays)} arrays")
    it = iter(arrays)
    return treedef.unflatten([next(it) if a else s for a, s in zip(is_array, static)])


# ----------------------------------------------------------------------------- sweeps


def _leading(tree: Any, what: str) -> int | None:
    sizes = {int(np.shape(a)[0]) for a in jax.tree_util.tree_leaves(tree) if np.ndim(a) >= 1}
    scalars = [a for a in jax.tree_util.tree_leaves(tree) if np.ndim(a) == 0]
    if scalars:
        raise ValueError(f"{what} leaves must have a leading example axis (N, ...); got a scalar")
    if len(sizes) > 1:
        raise ValueError(f"{what} leaves must share their leading axis N; got sizes {sorted(sizes)}")
    return sizes.pop() if sizes else None


@functools.lru_cache(maxsize=64)
def _sweep_program(fn: Callable, mesh: Mesh | None, treedef: Any, on_device: tuple[bool, ...],
                   n_broadcast: int, with_index: bool) -> Callable:
    """The jitted program of :func:`sweep` for one function, mesh and input layout."""

    def body(broadcast: tuple, leaves: list, src: jax.Array, index: jax.Array) -> Any:
        # Leaves held on the device in full are gathered here; host leaves arrive as rows.
        rows = [jnp.take(a, src, axis=0) if dev else a for a, dev in zip(leaves, on_device)]
        args = list(jax.tree_util.tree_unflatten(treedef, rows))
        if with_index:
            args.append(index)
        return fn(*broadcast, *args)

    if mesh is None:
        return jax.jit(body)
    specs = [P() if dev else P(DATA_AXIS) for dev in on_device]
    return jax.jit(jax.shard_map(body, mesh=mesh, in_specs=(P(), specs, P(DATA_AXIS), P(DATA_AXIS)),
                                 out_specs=P(DATA_AXIS)))


def sweep(
    fn: Callable[..., Any],
    batched: Sequence[Any],
    broadcast: Sequence[Any] = (),
    *,
    batch_size: int,
    mesh: Mesh | None = None,
    with_index: bool = False,
    bucket: bool = False,
) -> Any:
    """Map a per-batch function over the rows of whole arrays: pad, shard, run, fetch, unpad.

    The rows ``0..N-1`` of ``batched`` are cut into calls of ``b`` rows (``batch_size``
    rounded up to a multiple of the device count, at most what ``N`` needs); the last call
    is padded with copies of row ``N - 1`` and the padding is dropped from the results. In
    each call the ``b`` rows are split over the ``"data"`` axis of ``mesh``
    (``jax.shard_map``), so ``fn`` sees ``b / n_devices`` rows per device; without a mesh
    it runs on the default device (plain ``jax.jit``) on all ``b`` rows. Rows must be
    independent: ``fn`` gets no collectives and its results for a row may not depend on
    the other rows of the call (eval-mode models, per-example attacks).

    Compilation: one program per ``(fn, mesh, input layout)`` and shapes (``fn`` is a cache
    key: pass the same function object to reuse the program; keep arrays such as model
    parameters in ``broadcast``, never closed over, so new values do not recompile). At
    most two calls are in flight (the host cuts and sends call ``i + 1`` while the devices
    run call ``i``); every result is fetched before the next-but-one call is sent, which
    also bounds the in-flight steps of fake CPU devices.

    Multi-host: every process passes the *same full* inputs and gets the *same full*
    results. A numpy (or other host) leaf is sliced per call on the host and each process
    places only its own devices' rows (:func:`global_from_full`); a ``jax.Array`` leaf is
    placed whole, replicated over the mesh (kept as is when already so, e.g. a split put
    on the devices once with :func:`global_from_full`; a global array of any sharding is
    accepted, never read back to the host) and its rows are gathered on the device.

    Args:
        fn: ``fn(*broadcast, *rows) -> out`` (``fn(*broadcast, *rows, index)`` with
            ``with_index``), jittable. ``rows`` mirror ``batched`` with leading axis ``b``
            (per device: ``b / n_devices``); ``index: (rows,) int32`` are the global row
            numbers (``>= N`` for padding), e.g. for per-example keys
            ``fold_in(key, index)``. ``out`` is a pytree of arrays with that leading axis.
        batched: Sequence of pytrees whose leaves are ``(N, ...)`` arrays (numpy or
            ``jax.Array``), one per positional row argument of ``fn``.
        broadcast: Sequence of pytrees passed whole to every call (replicated), e.g. the
            model variables, a PRNG key, constants.
        batch_size: Rows per compiled call (>= 1).
        mesh: 1-D mesh with axis ``"data"`` (:func:`make_mesh`), or None.
        with_index: Also pass the global row numbers.
        bucket: Round a call smaller than ``batch_size`` (``N < batch_size``) up to a power of
            two (at most ``batch_size``) before the device count: at most ``log2(batch_size) + 1``
            call shapes, so one program per shape serves sets of every size (attacks run on
            changing subsets: the survivors of a cascade, the unbroken images of a minimal-eps
            search), for at most twice the rows of such a call. Without it a set of ``N <
            batch_size`` rows runs in one call of ``N`` rows (rounded up to the device count),
            a new program for every new ``N``.

    Returns:
        ``out`` with every leaf a numpy array ``(N, ...)`` in input order, on every process.

    Raises:
        ValueError: no rows, leaves of different lengths, a bad ``batch_size`` or mesh.
    """
    batched = tuple(batched)
    broadcast = tuple(broadcast)
    n = _leading(batched, "batched")
    if not n:
        raise ValueError("sweep needs at least one batched array with N >= 1 rows")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
    if mesh is not None and tuple(mesh.axis_names) != (DATA_AXIS,):
        raise ValueError(f"mesh must be 1-D with axis {DATA_AXIS!r}; got axes {mesh.axis_names}")
    n_dev = 1 if mesh is None else int(mesh.devices.size)
    rows = min(int(batch_size), n)
    if bucket and rows < batch_size:
        rows = min(int(batch_size), 1 << (rows - 1).bit_length())
    b = -(-rows // n_dev) * n_dev
    leaves, treedef = jax.tree_util.tree_flatten(batched)
    on_device = tuple(isinstance(a, jax.Array) for a in leaves)
    program = _sweep_program(fn, mesh, treedef, on_device, len(broadcast), bool(with_index))

    def put(a: Any, *, sharded: bool) -> Any:
        if mesh is None:
            return jax.tree_util.tree_map(lambda v: v if isinstance(v, jax.Array) else jnp.asarray(v), a)
        return global_from_full(mesh, a, sharded=sharded)

    broadcast_dev = put(broadcast, sharded=False)
    full_dev = [put(a, sharded=False) if dev else None for a, dev in zip(leaves, on_device)]
    host = [None if dev else np.asarray(a) for a, dev in zip(leaves, on_device)]
    pending: list[tuple[int, Any]] = []
    parts: list[Any] = []

    def fetch_one() -> None:
        rows, out = pending.pop(0)
        parts.append(jax.tree_util.tree_map(lambda a: np.asarray(a)[:rows], to_host(out)))

    for start in range(0, n, b):
        index = np.arange(start, start + b, dtype=np.int32)
        src = np.minimum(index, n - 1)
        args = [f if dev else put(h[src], sharded=True) for f, h, dev in zip(full_dev, host, on_device)]
        out = program(broadcast_dev, args, put(src, sharded=True), put(index, sharded=True))
        pending.append((min(b, n - start), out))
        if len(pending) > 1:
            fetch_one()
    while pending:
        fetch_one()
    from jaxhfc import costs

    if costs.active() is not None:  # metering (opt-in): XLA's cost of this program, once per shape
        calls = -(-n // b)
        costs.report("sweep", program, (broadcast_dev, args, put(src, sharded=True), put(index, sharded=True)),
                     calls=calls, rows=calls * b, devices=n_dev, name=getattr(fn, "__name__", "sweep"),
                     batch=b, images=n)
    return jax.tree_util.tree_map(lambda *a: np.concatenate(a, axis=0), *parts)
