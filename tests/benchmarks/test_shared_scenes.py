"""The real scenes of ../shared/data load the way the benchmarks use them (skipped where absent)."""

import json

import numpy as np
import pytest

from benchmarks.scenes import LLFF_HOLDOUT, llff_to_transforms
from crossfire_ns.io.queries import load_query_set, read_query_image
from tests.conftest import shared_scene

pytestmark = pytest.mark.shared_data


def test_llff_fern_converts_to_nerfstudio_and_loads(tmp_path):
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    train, query = llff_to_transforms(shared_scene("llff_fern"), tmp_path)
    assert len(json.loads(train.read_text())["frames"]) == 20 - len(LLFF_HOLDOUT)
    outputs = NerfstudioDataParserConfig(data=train.parent, eval_mode="all").setup().get_dataparser_outputs("train")
    assert len(outputs.image_filenames) == 17
    queries, warnings = load_query_set(query.parent)
    assert len(queries) == 3 and all(q.has_gt for q in queries) and not warnings
    image = read_query_image(queries[0])
    assert image.shape[:2] == (queries[0].height, queries[0].width)
    # Rotation columns are orthonormal after the LLFF -> OpenGL reordering.
    rot = queries[0].c2w_gt[:3, :3]
    assert np.allclose(rot.T @ rot, np.eye(3), atol=1e-5)


def test_ingp_fox_queries_carry_distortion(tmp_path):
    scene = shared_scene("ingp_fox")
    meta = json.loads((scene / "transforms.json").read_text())
    wanted = set((scene / "split_query.txt").read_text().split())
    meta["frames"] = [
        dict(f, file_path=str(scene / f["file_path"])) for f in meta["frames"] if f["file_path"] in wanted
    ]
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    queries, _ = load_query_set(tmp_path)
    assert len(queries) == 17
    assert queries[0].dist_coeffs is not None and abs(queries[0].dist_coeffs[0] - 0.0578421) < 1e-9
    assert queries[0].K[0, 0] == pytest.approx(1375.52)
