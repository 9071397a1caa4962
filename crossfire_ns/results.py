"""The per-query result record shared by the localization loop, the metrics and the output writers."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Literal, Mapping, Optional, Tuple, Union

import numpy as np

Status = Literal["localized", "failed", "unreadable"]
STATUSES = ("localized", "failed", "unreadable")


@dataclass
class QueryResult:
    """What happened to one query; poses are camera-to-world, OpenGL, in the data's original frame."""

    file_path: str
    """As in the query set (transforms.json ``file_path`` or the path relative to the query folder)."""
    status: Status
    c2w: Optional[np.ndarray] = None
    """Estimated 4x4 camera-to-world (OpenGL, original frame); None unless localized."""
    num_inliers: int = 0
    num_matches: int = 0
    reprojection_error_px: Optional[float] = None
    """Mean reprojection error over the PnP inliers."""
    seconds: float = 0.0
    """Wall-clock time spent on this query."""
    message: str = ""
    t_err: Optional[float] = None
    """Camera-centre error in the original frame's units; None without ground truth or estimate."""
    r_err: Optional[float] = None
    """Rotation error in degrees; None without ground truth or estimate."""
    has_gt: bool = False
    """Whether the query had a ground-truth pose (a failed query with ground truth counts against recall)."""
    num_renders: int = 0
    """Renders of the map this query cost."""
    seconds_retrieval: float = 0.0
    """Of ``seconds``: choosing the training views to start from (retrieval)."""
    seconds_coarse: float = 0.0
    """Of ``seconds``: the coarse pose (index matching or coarse render rounds, PnP)."""
    seconds_refine: float = 0.0
    """Of ``seconds``: refinement and the final estimate; the rest of ``seconds`` is reading, resizing and set-up."""
    confidence: Optional[float] = None
    """The method's confidence that the pose is right (0..1), where it has one."""
    covariance: Optional[np.ndarray] = None
    """6x6 covariance of the pose (original frame: world rotation vector, then camera centre; see
    ``localize.api.Localization.covariance``); None unless localized by a method that gives one."""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        if self.c2w is not None:
            self.c2w = np.asarray(self.c2w, dtype=np.float64).reshape(4, 4)
        if self.covariance is not None:
            self.covariance = np.asarray(self.covariance, dtype=np.float64).reshape(6, 6)

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready dict (matrix as nested lists, NaN as None)."""
        out = dataclasses.asdict(self)
        out["c2w"] = None if self.c2w is None else self.c2w.tolist()
        out["covariance"] = None if self.covariance is None else self.covariance.tolist()
        for key, value in out.items():
            if isinstance(value, float) and not math.isfinite(value):
                out[key] = None
        return out

    @classmethod
    def from_csv_row(cls, row: Mapping[Optional[str], Any]) -> "QueryResult":
        """Parse a row of results.csv (``to_dict`` written by ``io.atomic.write_csv_atomic``) back.

        Only a complete row parses: every field present, no extra cell, every number finite and whole where it
        must be, a localized row with its 4x4 pose. Anything else (a row cut by a crash) raises ``ValueError``, so
        that a resumed run does that query again instead of trusting half of it."""
        fields = {f.name for f in dataclasses.fields(cls)}
        if None in row:
            raise ValueError(f"results.csv row has {len(row[None])} cells more than its header")
        missing = [name for name in fields if row.get(name) is None]
        if missing:
            raise ValueError(f"results.csv row lacks {', '.join(sorted(missing))}")
        kwargs: Dict[str, Any] = {}
        for name in fields:
            text = row[name]
            if not isinstance(text, str):
                raise ValueError(f"results.csv row: {name} is {text!r}, not text")
            if any("\udc80" <= char <= "\udcff" for char in text):
                raise ValueError(f"results.csv row: {name} is not valid UTF-8")
            if name in ("file_path", "status", "message"):
                kwargs[name] = text
            elif text == "":
                continue
            elif name == "c2w":
                kwargs[name] = _matrix(text)
            elif name == "covariance":
                kwargs[name] = _covariance(text)
            elif name == "has_gt":
                if text not in ("True", "False"):
                    raise ValueError(f"results.csv row: has_gt is {text!r}, not True or False")
                kwargs[name] = text == "True"
            elif name in ("num_inliers", "num_matches", "num_renders"):
                kwargs[name] = int(text)
            else:
                kwargs[name] = _finite(text, name)
        for name in ("file_path", "has_gt", "num_inliers", "num_matches", "num_renders", "seconds"):
            if name not in kwargs or kwargs[name] == "":
                raise ValueError(f"results.csv row: {name} is empty")
        if kwargs["status"] == "localized" and "c2w" not in kwargs:
            raise ValueError(f"results.csv row: {kwargs['file_path']} is localized without a pose")
        return cls(**kwargs)

    @classmethod
    def from_any(cls, item: Union["QueryResult", Mapping[str, Any]]) -> "QueryResult":
        """Accept a QueryResult or a dict with its field names (unknown keys are ignored)."""
        if isinstance(item, QueryResult):
            return item
        if dataclasses.is_dataclass(item) and not isinstance(item, type):
            item = dataclasses.asdict(item)
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in dict(item).items() if k in names}
        if "has_gt" not in kwargs:
            kwargs["has_gt"] = kwargs.get("t_err") is not None
        return cls(**kwargs)


def _finite(text: str, name: str) -> float:
    """A finite float of results.csv (non-finite values are written empty, so anything else is damage)."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"results.csv row: {name} is {text!r}, not a finite number")
    return value


def _matrix(text: str) -> np.ndarray:
    """The 4x4 ``c2w`` of a results.csv row: JSON of 16 finite numbers, 4 by 4."""
    matrix = np.asarray(json.loads(text), dtype=np.float64)
    if matrix.shape != (4, 4) or not np.isfinite(matrix).all():
        raise ValueError(f"results.csv row: c2w is not a finite 4x4 matrix ({text[:40]!r})")
    return matrix


def _covariance(text: str) -> np.ndarray:
    """The 6x6 ``covariance`` of a results.csv row: JSON of 36 finite numbers, symmetric, a non-negative diagonal."""
    matrix = np.asarray(json.loads(text), dtype=np.float64)
    if matrix.shape != (6, 6) or not np.isfinite(matrix).all():
        raise ValueError(f"results.csv row: covariance is not a finite 6x6 matrix ({text[:40]!r})")
    if np.any(np.diag(matrix) < 0) or not np.allclose(matrix, matrix.T, rtol=1e-9, atol=0.0):
        raise ValueError("results.csv row: covariance is not symmetric with a non-negative diagonal")
    return matrix


def read_results_csv(path: Union[str, Path]) -> Tuple[List[QueryResult], int]:
    """(the complete rows of a results.csv, how many rows were broken): a row counts only when it parses completely
    (``QueryResult.from_csv_row``) and ended with its line break (a row cut in its last cell would parse)."""
    data = Path(path).read_bytes().decode("utf-8", errors="surrogateescape")
    last_line = [""]

    def lines() -> Iterator[str]:
        for line in io.StringIO(data, newline=""):
            last_line[0] = line
            yield line

    results: List[QueryResult] = []
    broken = 0
    reader = csv.DictReader(lines())
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error:
            broken += 1  # a line the csv module refuses (a NUL byte left by a crash): skipped
            continue
        try:
            if not last_line[0].endswith("\n"):
                raise ValueError("results.csv row cut before its line break")
            results.append(QueryResult.from_csv_row(row))
        except (ValueError, TypeError, KeyError):
            broken += 1
    return results, broken
