"""Atomic file writes: JSON, CSV, PNG and raw bytes.

Every file is written to a temporary sibling and moved into place with ``os.replace``, so an interrupted run
never leaves a truncated file and an existing file survives a failed rewrite.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator, Mapping, Optional, Sequence, Union

import numpy as np

PathLike = Union[str, Path]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary sibling of ``path``; on success it replaces ``path``, on error it is deleted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; give it the permissions open() would
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def to_jsonable(obj: Any) -> Any:
    """numpy arrays/scalars, Paths and dataclasses (or objects with ``to_dict``) -> plain JSON types; NaN/inf -> None."""
    if hasattr(obj, "to_dict") and callable(obj.to_dict):
        return to_jsonable(obj.to_dict())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json_atomic(path: PathLike, obj: Any, indent: int = 2) -> None:
    """Write ``obj`` as strict JSON (see ``to_jsonable``) atomically."""
    with atomic_open(path, "w", encoding="utf-8") as handle:
        json.dump(to_jsonable(obj), handle, indent=indent, allow_nan=False)
        handle.write("\n")


def csv_value(value: Any) -> Any:
    """A cell of a CSV row: JSON types, lists and dicts as JSON text, None as empty."""
    value = to_jsonable(value)
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return value


def write_csv_atomic(
    path: PathLike, rows: Sequence[Mapping[str, Any]], fieldnames: Optional[Sequence[str]] = None
) -> None:
    """Write dict rows as CSV atomically; columns are ``fieldnames`` or the keys in order of first appearance."""
    if fieldnames is None:
        fieldnames = list(dict.fromkeys(key for row in rows for key in row))
    with atomic_open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fieldnames), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: csv_value(row.get(key)) for key in fieldnames})


def write_png_atomic(path: PathLike, rgb: np.ndarray) -> None:
    """(H, W, 3) uint8 RGB as a PNG, atomically."""
    from PIL import Image

    with atomic_open(path, "wb") as handle:
        Image.fromarray(np.asarray(rgb, dtype=np.uint8), mode="RGB").save(handle, format="PNG")
