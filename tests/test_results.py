"""results.csv read back for a resume: complete rows only; a row cut by a crash, anywhere, is never reused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crossfire_ns.io.atomic import write_csv_atomic
from crossfire_ns.localize.outputs import RESULT_COLUMNS
from crossfire_ns.results import QueryResult, read_results_csv
from tests.helpers import pose, sample_covariance, sample_results


def _write(path: Path, results) -> bytes:
    write_csv_atomic(path, [r.to_dict() for r in results], fieldnames=RESULT_COLUMNS)
    return path.read_bytes()


def _header_and_rows(data: bytes) -> list:
    """The byte offsets where each record of a results.csv written by ``_write`` ends (header first)."""
    return [i + 2 for i in range(len(data) - 1) if data[i : i + 2] == b"\r\n"]


def test_complete_rows_read_back_exactly(tmp_path: Path):
    path = tmp_path / "results.csv"
    _write(path, sample_results())
    rows, broken = read_results_csv(path)
    assert broken == 0
    assert [r.to_dict() for r in rows] == [r.to_dict() for r in sample_results()]


@pytest.mark.parametrize(
    "cut",
    [
        lambda line: line[: line.index(",localized,") + len(",localized,")],  # after the status: no pose
        lambda line: line[: line.index(",0.02,") + len(",0.0")],  # inside t_err: 0.0 instead of 0.02
        lambda line: line[:-2],  # every cell there, but not the line break: the last cell may be cut
        lambda line: line[:-1],  # "\r" without "\n"
    ],
    ids=["after-status", "inside-t_err", "no-line-break", "half-line-break"],
)
def test_a_row_cut_by_a_crash_is_not_reused(tmp_path: Path, cut):
    path = tmp_path / "results.csv"
    data = _write(path, sample_results()[:1])
    header_end = _header_and_rows(data)[0]
    row = data[header_end:].decode()
    path.write_bytes(data[:header_end] + cut(row).encode())
    rows, broken = read_results_csv(path)
    assert rows == [] and broken == 1


def test_the_rows_before_a_cut_row_are_kept(tmp_path: Path):
    path = tmp_path / "results.csv"
    data = _write(path, sample_results())
    ends = _header_and_rows(data)
    path.write_bytes(data[: ends[2] + 10])  # two rows complete, the third cut after 10 bytes
    rows, broken = read_results_csv(path)
    assert [r.file_path for r in rows] == ["images/a.png", "images/b.png"] and broken == 1


@pytest.mark.parametrize(
    "column, text",
    [
        ("c2w", "[[1, 0], [0, 1]]"),  # not 4x4
        ("c2w", "[[1, 0, 0, NaN], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]"),
        ("c2w", ""),  # localized without a pose
        ("covariance", "[[1, 0], [0, 1]]"),  # not 6x6
        ("covariance", json.dumps(np.diag([1.0, 1, 1, 1, 1, float("nan")]).tolist())),
        ("covariance", json.dumps((np.eye(6) - 2 * np.eye(6)).tolist())),  # a negative variance
        ("covariance", json.dumps((np.eye(6) + np.triu(np.ones((6, 6)), 1)).tolist())),  # not symmetric
        ("covariance", "[[1, 2, 3"),  # cut
        ("t_err", "nan"),
        ("t_err", "0.0.2"),
        ("num_inliers", "12.5"),
        ("has_gt", "Tru"),
        ("seconds", ""),
        ("file_path", ""),
        ("status", "locali"),
    ],
)
def test_a_row_with_a_damaged_cell_is_not_reused(column, text):
    row = {k: v for k, v in _cells(sample_results()[0]).items()}
    assert QueryResult.from_csv_row(row).file_path == "images/a.png"  # the undamaged row parses
    row[column] = text
    with pytest.raises(ValueError):
        QueryResult.from_csv_row(row)


def test_a_row_with_a_missing_or_extra_cell_is_not_reused():
    row = _cells(sample_results()[1])
    with pytest.raises(ValueError, match="lacks confidence"):
        QueryResult.from_csv_row({k: v for k, v in row.items() if k != "confidence"})
    with pytest.raises(ValueError, match="more than its header"):
        QueryResult.from_csv_row({**row, None: ["0.5"]})  # what csv.DictReader makes of a row with an extra cell


def test_a_row_with_a_broken_multibyte_character_is_not_reused(tmp_path: Path):
    path = tmp_path / "results.csv"
    data = _write(path, [QueryResult("images/é.png", "failed", message="déjà vu", seconds=1.0)])
    cut = data.index("é".encode()) + 1  # one byte of two
    path.write_bytes(data[:cut] + data[cut + 1 :])
    rows, broken = read_results_csv(path)
    assert rows == [] and broken == 1


def _cells(result: QueryResult) -> dict:
    """The text cells of ``result``'s results.csv row, by column."""
    from crossfire_ns.io.atomic import csv_value

    return {k: str(csv_value(v)) for k, v in result.to_dict().items()}


finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
results = st.builds(
    QueryResult,
    file_path=st.text(min_size=1, max_size=30).filter(lambda s: "\x00" not in s),
    status=st.sampled_from(["localized", "failed", "unreadable"]),
    num_inliers=st.integers(0, 10**6),
    num_matches=st.integers(0, 10**6),
    reprojection_error_px=st.none() | finite,
    seconds=finite,
    message=st.text(max_size=40).filter(lambda s: "\x00" not in s),
    t_err=st.none() | finite,
    r_err=st.none() | finite,
    has_gt=st.booleans(),
    num_renders=st.integers(0, 1000),
    confidence=st.none() | st.floats(0, 1),
    covariance=st.none() | st.just(sample_covariance()),
).map(lambda r: QueryResult(**{**r.__dict__, "c2w": pose(1.5) if r.status == "localized" else None}))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(result=results, data=st.data())
def test_no_prefix_of_a_row_is_ever_reused(tmp_path: Path, result: QueryResult, data):
    """Whatever the row holds (commas, quotes, line breaks, any text), a crash that cuts it anywhere leaves a file
    from which the row is not read back, and the complete file reads it back exactly."""
    path = tmp_path / "results.csv"
    full = _write(path, [result])
    rows, broken = read_results_csv(path)
    assert broken == 0 and [r.to_dict() for r in rows] == [result.to_dict()]
    header_end = _header_and_rows(full)[0]
    cut = data.draw(st.integers(header_end + 1, len(full) - 1), label="cut")
    path.write_bytes(full[:cut])
    rows, broken = read_results_csv(path)
    assert rows == [] and broken == 1


def test_every_prefix_of_a_file_reuses_only_the_rows_it_holds_whole(tmp_path: Path):
    """Exhaustively, for a file of three rows: each cut keeps exactly the rows that ended before it."""
    path = tmp_path / "results.csv"
    many = sample_results()
    full = _write(path, many)
    ends = _header_and_rows(full)
    for cut in range(ends[0], len(full) + 1):
        path.write_bytes(full[:cut])
        rows, _ = read_results_csv(path)
        whole = sum(end <= cut for end in ends[1:])
        assert [r.to_dict() for r in rows] == [r.to_dict() for r in many[:whole]], cut


def test_a_localized_row_keeps_its_pose():
    row = _cells(sample_results()[0])
    np.testing.assert_allclose(QueryResult.from_csv_row(row).c2w, pose(1.0))


def test_a_localized_row_keeps_its_covariance_bit_for_bit():
    row = _cells(sample_results()[0])
    np.testing.assert_array_equal(QueryResult.from_csv_row(row).covariance, sample_covariance())
    assert QueryResult.from_csv_row(_cells(sample_results()[1])).covariance is None
