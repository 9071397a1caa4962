"""The per-query result record shared by the localization loop, the metrics and the output writers."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, Dict, Literal, Mapping, Optional, Union

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

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        if self.c2w is not None:
            self.c2w = np.asarray(self.c2w, dtype=np.float64).reshape(4, 4)

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready dict (matrix as nested lists, NaN as None)."""
        out = dataclasses.asdict(self)
        out["c2w"] = None if self.c2w is None else self.c2w.tolist()
        for key, value in out.items():
            if isinstance(value, float) and not math.isfinite(value):
                out[key] = None
        return out

    @classmethod
    def from_csv_row(cls, row: Mapping[str, str]) -> "QueryResult":
        """Parse a row of results.csv (``to_dict`` written by ``io.atomic.write_csv_atomic``) back."""
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        kwargs: Dict[str, Any] = {}
        for name, text in row.items():
            if name not in types or text is None:
                continue
            if name in ("file_path", "status", "message"):
                kwargs[name] = text
            elif text == "":
                continue
            elif name == "c2w":
                kwargs[name] = np.asarray(json.loads(text), dtype=np.float64)
            elif name == "has_gt":
                kwargs[name] = text == "True"
            elif name in ("num_inliers", "num_matches", "num_renders"):
                kwargs[name] = int(text)
            else:
                kwargs[name] = float(text)
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
