"""Results as data: run folders, JSON / JSON-lines files, and markdown tables.

Everything a driver reports is first written as data (``config.json``, ``metrics.jsonl``,
``table.json``) and the human-readable files (``table.md``) are made from that data. Writes
are atomic (temporary file + rename), so a killed run never leaves a half-written file.

These functions do file I/O when called; importing the module does nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import io
import json
import math
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

__all__ = [
    "cpu_model",
    "environment_info",
    "to_jsonable",
    "config_hash",
    "write_json",
    "read_json",
    "append_jsonl",
    "read_jsonl",
    "read_outcomes",
    "write_outcomes",
    "write_text",
    "markdown_table",
    "comparison_rows",
]

_PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "tensorflow-datasets", "numpy")


def _git_commit(path: str | os.PathLike | None = None) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=path or os.getcwd(),
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    commit = out.stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=path or os.getcwd(),
        capture_output=True,
        text=True,
        timeout=5,
    ).stdout.strip()
    return commit + ("-dirty" if dirty else "")


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment_info() -> dict:
    """Versions, devices, host and git commit: the provenance stored in every config.json."""
    from importlib import metadata

    import jax

    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    devices = jax.devices()
    return {
        "versions": versions,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "host": platform.node(),
        "processor": cpu_model(),
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind if devices else None,
        "device_count": jax.device_count(),
        "local_device_count": jax.local_device_count(),
        "process_count": jax.process_count(),
        "git_commit": _git_commit(Path(__file__).resolve().parent),
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, tuples, numpy/jax scalars and arrays -> plain JSON types (NaN -> None)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if hasattr(obj, "tolist"):  # numpy / jax arrays and scalars
        return to_jsonable(obj.tolist())
    if hasattr(obj, "item"):
        return to_jsonable(obj.item())
    return str(obj)


def config_hash(config: Any, length: int = 12) -> str:
    """A stable short hash of a config (dataclass or mapping), for skipping finished runs."""
    blob = json.dumps(to_jsonable(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def _atomic_write(path: Path, data: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if isinstance(data, bytes) else "w") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text(path: str | os.PathLike, text: str) -> Path:
    path = Path(path)
    _atomic_write(path, text)
    return path


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    return write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        with open(path) as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise FileNotFoundError(f"expected a JSON file at {path}, but it does not exist") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); the file may be truncated or corrupt") from None


def append_jsonl(path: str | os.PathLike, record: Mapping[str, Any]) -> None:
    """Append one JSON object as a line (flushed and fsynced, so a kill loses at most this line)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(to_jsonable(record), sort_keys=False)
    with open(path, "a") as fh:
        fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSON-lines file; a truncated last line (a killed writer) is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    lines = path.read_text().splitlines()
    for k, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if k == len(lines) - 1:
                break
            raise ValueError(f"{path}: line {k + 1} is not valid JSON") from None
    return records


def write_outcomes(path: str | os.PathLike, outcomes: Mapping[str, Any]) -> Path:
    """Write per-example outcomes (``{name: (N,) array}``, e.g. ``"seed 0|vanilla|test"`` ->
    whether each test image was classified right) as one compressed ``.npz``, atomically."""
    import numpy as np

    path = Path(path)
    arrays = {}
    for name, value in outcomes.items():
        a = np.asarray(value)
        if a.ndim != 1:
            raise ValueError(f"outcome {name!r} must be one value per example (1-D), got shape {a.shape}")
        arrays[str(name)] = a
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    _atomic_write(path, buffer.getvalue())
    return path


def read_outcomes(path: str | os.PathLike) -> dict:
    """Read a :func:`write_outcomes` file back as ``{name: array}``."""
    import zipfile

    import numpy as np

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"expected per-example outcomes (.npz) at {path}, but it does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise ValueError(f"{path} is not a readable .npz of per-example outcomes ({err}); "
                         "the file may be truncated or corrupt") from None


def _fmt(value: Any, digits: int) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "—"
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, *, digits: int = 3) -> str:
    """A GitHub markdown table from a list of dicts (missing cells shown as an em dash)."""
    if not rows:
        return "(no rows)\n"
    columns = list(columns or rows[0].keys())
    out = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        out.append("| " + " | ".join(_fmt(row.get(c), digits) for c in columns) + " |")
    return "\n".join(out) + "\n"


def comparison_rows(
    ours: Mapping[str, float | None],
    paper: Mapping[str, float | None],
    *,
    key_name: str = "setting",
    keys: Iterable[str] | None = None,
) -> list[dict]:
    """Rows of ``{setting, paper, ours, difference}`` (difference = ours - paper)."""
    keys = list(keys) if keys is not None else list(dict.fromkeys([*paper.keys(), *ours.keys()]))
    rows = []
    for k in keys:
        p, o = paper.get(k), ours.get(k)
        diff = (o - p) if (isinstance(p, (int, float)) and isinstance(o, (int, float))) else None
        rows.append({key_name: k, "paper": p, "ours": o, "difference": diff})
    return rows
