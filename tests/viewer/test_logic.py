"""Viewer-side logic without a viewer: stable PCA, similarity maps, poses.json -> frustums, the per-frame outputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from nerfstudio.utils.colormaps import apply_pca_colormap
from PIL import Image
from torch import nn

from crossfire_ns.geometry import original_to_normalized
from crossfire_ns.io.queries import QueryImage, load_query_set
from crossfire_ns.io.transforms import write_poses_json
from crossfire_ns.results import QueryResult
from crossfire_ns.viewer.cameras import (
    GROUND_TRUTH_COLOR,
    STATUS_COLORS,
    error_segments,
    load_thumbnail,
    localized_cameras,
    viser_pose,
)
from crossfire_ns.viewer.pca import apply_pca, fit_pca
from crossfire_ns.viewer.similarity import cosine_similarity_map, similarity_heatmap
from crossfire_ns.viewer.tools import CrossfireViewerTools, metadata_query_dir

# ---------------------------------------------------------------------------------------------- PCA


def anisotropic(n: int, dim: int = 8, seed: int = 0) -> torch.Tensor:
    """Gaussian descriptors with standard deviations 5, 3, 2 along axes 2, 5, 0 and 0.1 elsewhere."""
    g = torch.Generator().manual_seed(seed)
    x = 0.1 * torch.randn(n, dim, generator=g)
    for axis, std in ((2, 5.0), (5, 3.0), (0, 2.0)):
        x[:, axis] = std * torch.randn(n, generator=g)
    return x


def test_pca_finds_the_principal_axes_with_fixed_signs():
    projection = fit_pca(anisotropic(4000))
    for column, axis in enumerate((2, 5, 0)):
        assert projection.components[axis, column] > 0.99  # the right axis, with a positive sign
    rgb = apply_pca(anisotropic(500, seed=1), projection)
    assert rgb.shape == (500, 3) and rgb.min() >= 0 and rgb.max() <= 1
    assert (rgb.std(dim=0) > 0.15).all()  # every channel uses its range


def test_pca_colour_of_a_descriptor_does_not_depend_on_the_rest_of_the_frame():
    frame_a, frame_b = anisotropic(1000, seed=1), anisotropic(1000, seed=2) * 0.3 + 1.0
    frame_b[:10] = frame_a[:10]  # the same surface seen in both frames
    projection = fit_pca(frame_a)
    assert torch.allclose(apply_pca(frame_a, projection)[:10], apply_pca(frame_b, projection)[:10])
    # nerfstudio's per-frame PCA gives the same descriptors other colours in the other frame: the bug fixed here
    jumping = (apply_pca_colormap(frame_a)[:10] - apply_pca_colormap(frame_b)[:10]).abs().max()
    assert jumping > 0.1


def test_pca_fit_is_deterministic_and_order_independent():
    x = anisotropic(3000)
    first, second = fit_pca(x), fit_pca(x[torch.randperm(3000)])
    assert torch.allclose(first.components, second.components, atol=1e-5)
    assert torch.allclose(first.low, second.low, atol=1e-4) and torch.allclose(first.high, second.high, atol=1e-4)
    subsampled_a, subsampled_b = fit_pca(x, max_samples=500), fit_pca(x, max_samples=500)
    assert torch.equal(subsampled_a.components, subsampled_b.components)


def test_pca_mask_ignores_empty_space():
    surface = anisotropic(2000)
    empty = torch.zeros(2000, 8)
    empty[:, 7] = 50.0 * torch.randn(2000)  # huge variance along an axis only empty-space pixels have
    x = torch.cat([surface, empty])
    mask = torch.cat([torch.ones(2000, dtype=torch.bool), torch.zeros(2000, dtype=torch.bool)])
    assert fit_pca(x).components[7, 0].abs() > 0.99  # unmasked: empty space dominates
    assert fit_pca(x, mask=mask).components[2, 0] > 0.99
    assert fit_pca(x, mask=torch.zeros(4000, dtype=torch.bool)).components[7, 0].abs() > 0.99  # empty mask: all


def test_pca_degenerate_inputs_give_finite_colours():
    constant = torch.ones(50, 16)
    rgb = apply_pca(constant, fit_pca(constant))
    assert torch.isfinite(rgb).all() and rgb.shape == (50, 3)
    two_dim = torch.randn(100, 2)
    assert apply_pca(two_dim, fit_pca(two_dim)).shape == (100, 3)
    image = torch.randn(6, 5, 4)
    assert apply_pca(image, fit_pca(image)).shape == (6, 5, 3)
    with pytest.raises(ValueError):
        fit_pca(torch.zeros(0, 4))


# ---------------------------------------------------------------------------------------------- similarity


def test_cosine_similarity_map_values():
    reference = torch.tensor([1.0, 0.0, 0.0])
    descriptors = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 3.0, 0.0]], [[-1.0, 0.0, 0.0], [1.0, 1.0, 0.0]]])
    similarity = cosine_similarity_map(descriptors, reference * 7)
    assert similarity.shape == (2, 2, 1)
    expected = torch.tensor([[1.0, 0.0], [-1.0, math.sqrt(0.5)]])
    assert torch.allclose(similarity[..., 0], expected, atol=1e-6)
    assert cosine_similarity_map(torch.zeros(1, 3), reference)[0, 0] == 0
    with pytest.raises(ValueError):
        cosine_similarity_map(descriptors, torch.ones(4))


def test_similarity_heatmap_is_a_fixed_mapping_over_the_dimmed_scene():
    similarity = torch.tensor([[-0.5], [0.49], [0.5], [0.75], [1.0]])
    background = torch.full((5, 3), 0.5)
    heat = similarity_heatmap(similarity, floor=0.5, background=background, dim=0.4)
    assert torch.allclose(heat[:2], torch.full((2, 3), 0.2))  # below the floor: dimmed grey scene
    import matplotlib

    turbo = matplotlib.colormaps["turbo"]
    assert torch.allclose(heat[4], torch.tensor(turbo(1.0)[:3], dtype=torch.float32), atol=1e-6)
    assert torch.allclose(heat[2], torch.tensor(turbo(0.0)[:3], dtype=torch.float32), atol=1e-6)
    # the same similarity gets the same colour whatever else is in the frame
    alone = similarity_heatmap(torch.tensor([[0.75]]), floor=0.5)
    assert torch.allclose(alone[0], heat[3])
    assert torch.equal(similarity_heatmap(torch.tensor([[0.0]]), floor=0.5), torch.zeros(1, 3))  # no background
    with pytest.raises(ValueError):
        similarity_heatmap(similarity, floor=1.0)


# ---------------------------------------------------------------------------------------------- per-frame outputs


def frame(descriptors: torch.Tensor) -> dict:
    h, w, _ = descriptors.shape
    return {"descriptor": descriptors, "accumulation": torch.ones(h, w, 1), "rgb": torch.full((h, w, 3), 0.5)}


def test_frame_outputs_keep_the_projection_until_refresh():
    tools = CrossfireViewerTools(nn.Linear(1, 1))
    first = anisotropic(600).view(20, 30, 8)
    second = anisotropic(600, seed=5).view(20, 30, 8) * 0.2
    out_first = tools.image_outputs(frame(first))
    assert set(out_first) == {"descriptor_pca", "descriptor_similarity"}
    assert out_first["descriptor_pca"].shape == (20, 30, 3)
    projection = tools.projection
    out_second = tools.image_outputs(frame(second))
    assert tools.projection is projection  # not refitted on another view
    assert torch.allclose(out_second["descriptor_pca"], apply_pca(second, projection))
    tools.request_pca_refit()
    tools.image_outputs(frame(second))
    assert tools.projection is not projection
    assert not torch.allclose(tools.projection.high, projection.high)


def test_frame_similarity_lights_up_the_reference_descriptor():
    tools = CrossfireViewerTools(nn.Linear(1, 1))
    descriptors = torch.nn.functional.normalize(anisotropic(600).view(20, 30, 8), dim=-1)
    before = tools.image_outputs(frame(descriptors))["descriptor_similarity"]
    assert torch.allclose(before, torch.full_like(before, 0.2))  # no reference yet: the dimmed scene only
    tools.set_reference(descriptors[3, 4] * 2.0)  # no viewer: no marker, no error
    after = tools.image_outputs(frame(descriptors))["descriptor_similarity"]
    import matplotlib

    assert torch.allclose(after[3, 4], torch.tensor(matplotlib.colormaps["turbo"](1.0)[:3], dtype=torch.float32))
    assert (after != before).any(dim=-1).float().mean() < 0.9  # distinct descriptors stay below the floor


def test_tools_add_no_parameters_or_state():
    model = nn.Linear(2, 2)
    model.crossfire_viewer = CrossfireViewerTools(model)
    assert set(model.state_dict()) == {"weight", "bias"}
    assert len(list(model.parameters())) == 2
    assert model.crossfire_viewer.get_model() is model


# ---------------------------------------------------------------------------------------------- localized cameras


def c2w(x: float, yaw_deg: float = 0.0) -> np.ndarray:
    a = math.radians(yaw_deg)
    pose = np.eye(4)
    pose[:3, :3] = [[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]]
    pose[:3, 3] = [x, 0.5, 2.0]
    return pose


TRANSFORM = np.array([[0.0, 1.0, 0.0, 0.3], [-1.0, 0.0, 0.0, -0.2], [0.0, 0.0, 1.0, 0.1]])
SCALE = 0.25


@pytest.fixture
def localization(tmp_path) -> tuple:
    """A query folder (4 images, 3 with ground truth) and the poses.json of a run: 2 localized, 1 failed, 1 unreadable."""
    queries_dir = tmp_path / "queries"
    (queries_dir / "images").mkdir(parents=True)
    frames = []
    for i in range(4):
        Image.fromarray(np.full((30, 40, 3), 60 * i, dtype=np.uint8)).save(queries_dir / "images" / f"q{i}.png")
        entry = {"file_path": f"images/q{i}.png"}
        if i < 3:
            entry["transform_matrix"] = c2w(float(i), 10.0 * i).tolist()
        frames.append(entry)
    meta = {"fl_x": 30.0, "fl_y": 30.0, "cx": 20.0, "cy": 15.0, "w": 40, "h": 30, "frames": frames}
    (queries_dir / "transforms.json").write_text(json.dumps(meta))
    queries, _ = load_query_set(queries_dir)
    results = [
        QueryResult("images/q0.png", "localized", c2w(0.1, 2.0), 80, 200, 1.0, 2.0, "ok", 0.1, 2.0, True),
        QueryResult("images/q1.png", "failed", None, 3, 40, None, 2.0, "too few inliers", None, None, True),
        QueryResult("images/q2.png", "localized", c2w(2.5, 25.0), 50, 90, 1.5, 2.0, "ok", 0.5, 5.0, True),
        QueryResult("images/q3.png", "unreadable", message="corrupt"),
    ]
    poses = tmp_path / "out" / "poses.json"
    write_poses_json(poses, results, queries)
    return poses, queries_dir, {q.file_path: q for q in queries}


def test_poses_json_to_markers_with_ground_truth(localization):
    poses, _, queries = localization
    markers = localized_cameras(poses, TRANSFORM, SCALE, queries)
    kinds = [(m.file_path, m.kind, m.status) for m in markers]
    assert kinds == [
        ("images/q0.png", "estimate", "localized"),
        ("images/q0.png", "ground_truth", "localized"),
        ("images/q1.png", "ground_truth", "failed"),
        ("images/q2.png", "estimate", "localized"),
        ("images/q2.png", "ground_truth", "localized"),
    ]
    estimate, truth, failed_truth = markers[0], markers[1], markers[2]
    assert np.allclose(estimate.c2w, original_to_normalized(c2w(0.1, 2.0), TRANSFORM, SCALE))
    assert np.allclose(truth.c2w, original_to_normalized(c2w(0.0), TRANSFORM, SCALE))
    assert estimate.color == STATUS_COLORS["localized"] and truth.color == GROUND_TRUTH_COLOR
    assert failed_truth.color == STATUS_COLORS["failed"]  # a failed query shows where it should have been
    assert estimate.image_path == queries["images/q0.png"].path and truth.image_path is None
    assert estimate.fov_y == pytest.approx(2 * math.atan(15 / 30)) and estimate.aspect == pytest.approx(4 / 3)
    assert "80 inliers" in estimate.description and "error 0.1 / 2 deg" in estimate.description
    segments = error_segments(markers)
    assert [s[0] for s in segments] == ["images/q0.png", "images/q2.png"]
    assert np.allclose(segments[0][1], estimate.c2w[:3, 3]) and np.allclose(segments[0][2], truth.c2w[:3, 3])


def test_poses_json_without_queries_or_intrinsics(localization, tmp_path):
    poses, _, _ = localization
    markers = localized_cameras(poses, TRANSFORM, SCALE)
    assert [(m.file_path, m.kind) for m in markers] == [("images/q0.png", "estimate"), ("images/q2.png", "estimate")]
    assert all(m.image_path is None for m in markers)
    bare = tmp_path / "bare.json"  # e.g. a priors file: matrices only, no status, no intrinsics
    bare.write_text(json.dumps({"frames": [{"file_path": "a.png", "transform_matrix": np.eye(4)[:3].tolist()}]}))
    (marker,) = localized_cameras(bare, TRANSFORM, SCALE, default_camera=(1.0, 2.0))
    assert marker.status == "localized" and (marker.fov_y, marker.aspect) == (1.0, 2.0)
    query = QueryImage(path=Path("a.png"), file_path="a.png", K=np.diag([50.0, 50.0, 1.0]), width=20, height=10)
    (marker,) = localized_cameras(bare, TRANSFORM, SCALE, {"a.png": query})
    assert marker.fov_y == pytest.approx(2 * math.atan(5 / 50)) and marker.aspect == 2.0


def test_malformed_poses_files_raise(tmp_path):
    with pytest.raises(OSError):
        localized_cameras(tmp_path / "missing.json", TRANSFORM, SCALE)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"frames": [{"file_path": "a.png", "transform_matrix": [[1, 2], [3, 4]]}]}))
    with pytest.raises(ValueError, match="shape"):
        localized_cameras(bad, TRANSFORM, SCALE)
    bad.write_text("{not json")
    with pytest.raises(ValueError):
        localized_cameras(bad, TRANSFORM, SCALE)
    bad.write_text(json.dumps({"frames": [{"transform_matrix": None}]}))
    with pytest.raises(ValueError, match="file_path"):
        localized_cameras(bad, TRANSFORM, SCALE)


def test_viser_pose_is_what_the_viewer_camera_inverts():
    import viser.transforms as vtf

    pose = original_to_normalized(c2w(1.0, 30.0), TRANSFORM, SCALE)
    wxyz, position = viser_pose(pose, 10.0)
    # nerfstudio's Viewer.get_camera_state: R = SO3(wxyz) @ rot_x(pi), t = position / 10
    rotation = (vtf.SO3(wxyz=wxyz) @ vtf.SO3.from_x_radians(np.pi)).as_matrix()
    assert np.allclose(rotation, pose[:3, :3], atol=1e-9) and np.allclose(position / 10.0, pose[:3, 3])
    # viser looks along +z (OpenCV), nerfstudio along -z (OpenGL)
    assert np.allclose(vtf.SO3(wxyz=wxyz).as_matrix()[:, 2], -pose[:3, 2], atol=1e-9)


def test_thumbnails_and_metadata_query_dir(localization, tmp_path):
    poses, queries_dir, queries = localization
    thumbnail = load_thumbnail(queries["images/q2.png"].path, height=60)
    assert thumbnail.shape == (60, 80, 3) and thumbnail.dtype == np.uint8 and thumbnail.mean() == pytest.approx(120)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    assert load_thumbnail(broken) is None and load_thumbnail(tmp_path / "nope.png") is None
    assert metadata_query_dir(poses) is None
    data = json.loads(poses.read_text())
    data["metadata"] = {"query_dir": str(queries_dir)}
    poses.write_text(json.dumps(data))
    assert metadata_query_dir(poses) == queries_dir


def test_frustum_size_follows_the_camera_spread():
    from crossfire_ns.viewer.tools import frustum_scale

    ring = np.array([[math.cos(a), math.sin(a), 0.0] for a in np.linspace(0, 2 * math.pi, 12, endpoint=False)])
    assert frustum_scale(ring) == pytest.approx(0.08 * 1.0 * 10.0)
    assert frustum_scale(3.0 * ring) == pytest.approx(3.0 * frustum_scale(ring))
    assert frustum_scale(np.zeros((1, 3))) == 0.1  # a single camera: the minimum


# ---------------------------------------------------------------------------------------------- virtual views


def _stored_index(path: Path, training: int, virtual: int) -> None:
    """A map index file with ``training`` training views then ``virtual`` virtual views (empty cells)."""
    from crossfire_ns.localize.map_index import MapIndex, ViewCells

    n = training + virtual
    c2ws = np.stack([c2w(float(i), 5.0 * i) for i in range(n)])
    Ks = np.tile(np.array([[30.0, 0, 20.0], [0, 30.0, 15.0], [0, 0, 1]]), (n, 1, 1))
    empty = ViewCells(torch.zeros((0, 4)), torch.zeros((0, 3)), torch.zeros((0, 2)))
    MapIndex(
        c2ws, Ks, np.tile([40, 30], (n, 1)), np.full(n, 2), [empty] * n, num_training=training,
        virtual_rgb=[torch.zeros((30, 40, 3), dtype=torch.uint8)] * virtual, virtual_sources=list(range(virtual)),
    ).save(path)  # fmt: skip


def test_virtual_views_of_a_stored_index_become_markers_of_their_own_colour(tmp_path):
    from crossfire_ns.viewer.cameras import VIRTUAL_VIEW_COLOR, virtual_view_markers

    _stored_index(tmp_path / "index.pt", training=3, virtual=2)
    markers = virtual_view_markers(tmp_path / "index.pt")
    assert [m.kind for m in markers] == ["virtual", "virtual"] and {m.color for m in markers} == {VIRTUAL_VIEW_COLOR}
    np.testing.assert_allclose(markers[1].c2w, c2w(4.0, 20.0))  # views 3 and 4 are the virtual ones
    assert markers[0].fov_y == pytest.approx(2 * math.atan(15.0 / 30.0)) and markers[0].aspect == pytest.approx(4 / 3)
    _stored_index(tmp_path / "plain.pt", training=3, virtual=0)
    assert virtual_view_markers(tmp_path / "plain.pt") == []
    (tmp_path / "bad.pt").write_bytes(b"no index")
    with pytest.raises(ValueError, match="bad.pt"):
        virtual_view_markers(tmp_path / "bad.pt")


def test_show_virtual_views_draws_them_once_and_hides_them(tmp_path):
    class Handle:
        def __init__(self, **kwargs):
            self.visible, self.kwargs = True, kwargs

    class Scene:
        def __init__(self):
            self.added = []

        def add_camera_frustum(self, name, **kwargs):
            self.added.append(name)
            return Handle(**kwargs)

    class Viewer:
        log_filename = tmp_path / "viewer_log_filename.txt"
        viser_server = type("Server", (), {})()

    viewer = Viewer()
    viewer.viser_server.scene = Scene()
    tools = CrossfireViewerTools(nn.Linear(2, 2))
    tools.control.viewer = viewer
    assert tools.set_virtual_views_visible(True) == 0  # no index beside the map yet: nothing drawn, nothing raised
    _stored_index(tmp_path / "crossfire_index.pt", training=2, virtual=3)
    assert tools.set_virtual_views_visible(True) == 3 and len(viewer.viser_server.scene.added) == 3
    assert tools.set_virtual_views_visible(False) == 3
    assert tools.set_virtual_views_visible(True) == 3 and len(viewer.viser_server.scene.added) == 3  # drawn once
    tools.clear_cameras()  # the localized cameras go, the virtual views stay
    assert tools.set_virtual_views_visible(False) == 3
