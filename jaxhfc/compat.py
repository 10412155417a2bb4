"""What the installed jax stack must offer jaxhfc, checked without running a program.

jaxhfc is developed on jax 0.10.2 (with flax 0.12, optax 0.2, orbax-checkpoint 0.12). A machine
with its own preinstalled stack (the lent GPU machines run jax 0.11.2 with the CUDA 13 plugin,
without tensorflow-datasets) is used as it is, through ``PYTHONPATH=.``. :func:`problems` reads
the versions and looks up every jax entry point jaxhfc relies on, so that a missing one is
reported as one line before any training starts, rather than as a stack trace minutes into a
run. Nothing here prints or writes; the drivers do (``benchmarks/device_check.py``,
``experiments/reproduce_all.py``).

The jax changes between 0.10.2 and 0.11 that were read for this module (docs/gpu.md has the
list) touch none of these entry points; :data:`TESTED` says which versions were run here.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from importlib import metadata

#: Distribution -> the newest (major, minor) that jaxhfc's tests have run on. A newer version is
#: reported as untested (a note), never refused.
TESTED = {"jax": (0, 10), "flax": (0, 12), "optax": (0, 2), "orbax-checkpoint": (0, 12)}
#: Distribution -> the oldest version jaxhfc is known to run on (its tests ran on these series).
MINIMUM = {"jax": (0, 10, 0), "flax": (0, 12, 0), "optax": (0, 2, 0), "orbax-checkpoint": (0, 11, 0)}
MIN_PYTHON = (3, 11)

#: ``module:attribute`` paths jaxhfc calls; each must resolve.
REQUIRED = (
    "jax:shard_map", "jax:jit", "jax:vmap", "jax:make_array_from_callback",
    "jax:make_array_from_process_local_data", "jax.sharding:Mesh", "jax.sharding:NamedSharding",
    "jax.sharding:PartitionSpec", "jax.random:key", "jax.random:key_data", "jax.random:wrap_key_data",
    "jax.tree_util:Partial", "jax.tree_util:tree_map_with_path", "jax.tree_util:keystr", "jax.core:Tracer",
    "jax.monitoring:register_event_duration_secs_listener", "jax.lax:scan", "jax.lax:fori_loop",
    "jax.experimental.multihost_utils:process_allgather", "flax.linen:Module", "flax.struct:PyTreeNode",
    "optax:adam", "optax:adamw", "optax:sgd",
)


def version_tuple(text: str) -> tuple[int, ...]:
    """The leading numbers of a version string: ``"0.11.2rc1"`` -> ``(0, 11, 2)``."""
    found = re.match(r"\d+(\.\d+)*", text.strip())
    if not found:
        raise ValueError(f"not a version string: {text!r}")
    return tuple(int(p) for p in found.group(0).split("."))


def versions() -> dict[str, str | None]:
    """Installed versions of Python and the packages jaxhfc uses (None: not installed)."""
    out: dict[str, str | None] = {"python": ".".join(map(str, sys.version_info[:3]))}
    for dist in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "tensorflow-datasets"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    plugins = [d.metadata["Name"] for d in metadata.distributions()
               if (d.metadata["Name"] or "").startswith(("jax-cuda", "jax_cuda", "jax-rocm", "libtpu"))]
    out["plugins"] = ", ".join(sorted(set(plugins))) or None
    return out


def _resolve(path: str) -> str | None:
    """None when ``module:attribute`` resolves, else why not."""
    module, _, attr = path.partition(":")
    try:
        obj = importlib.import_module(module)
    except Exception as err:  # noqa: BLE001 - any import failure is the finding
        return f"cannot import {module} ({type(err).__name__}: {err})"
    for part in attr.split("."):
        if not hasattr(obj, part):
            return f"{module}.{attr} is missing"
        obj = getattr(obj, part)
    return None


def problems(installed: dict[str, str | None] | None = None) -> tuple[list[str], list[str]]:
    """``(errors, notes)`` about the installed stack.

    Errors are what stops jaxhfc (too old a Python or package, a missing package, an entry
    point jaxhfc calls that this jax lacks); notes are what it runs without (a version newer
    than :data:`TESTED`, tensorflow-datasets absent: only ``tfds:`` datasets need it).
    ``installed`` (default :func:`versions`) is read for the versions; the entry points are
    looked up in the modules that import here.
    """
    v = versions() if installed is None else installed
    errors, notes = [], []
    if version_tuple(v["python"]) < MIN_PYTHON:
        errors.append(f"Python {v['python']} is older than {'.'.join(map(str, MIN_PYTHON))}")
    for dist, low in MINIMUM.items():
        have = v.get(dist)
        if have is None:
            errors.append(f"{dist} is not installed")
            continue
        if version_tuple(have) < low:
            errors.append(f"{dist} {have} is older than {'.'.join(map(str, low))}")
        elif version_tuple(have)[:2] > TESTED[dist]:
            notes.append(f"{dist} {have} is newer than the {'.'.join(map(str, TESTED[dist]))}.x tested")
    if not errors:
        errors += [why for why in map(_resolve, REQUIRED) if why]
    if v.get("tensorflow-datasets") is None or importlib.util.find_spec("tensorflow_datasets") is None:
        notes.append("tensorflow-datasets absent: tfds: datasets unavailable, every other source works")
    return errors, notes


def summary(errors: list[str], notes: list[str]) -> str:
    """One line: ``ok`` or ``INCOMPATIBLE``, the errors, then the notes."""
    head = "jaxhfc environment: " + ("INCOMPATIBLE: " + "; ".join(errors) if errors else "ok")
    return head + (f" (notes: {'; '.join(notes)})" if notes else "")
