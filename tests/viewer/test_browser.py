"""The crossfire viewer in a real browser: the viewer on a small trained map, the page in headless Chromium.

Everything goes through the page as a user does it: the output is chosen with the mouse in the "Output type"
dropdown, the similarity reference is picked by clicking the 3D view, the localized cameras are loaded with the
panel's button. Screenshots are saved in the test's tmp dir (their paths are printed; ``pytest -s`` shows them).
Skipped, with the reason printed, where Chromium is not installed (``apt-get install chromium``; ``.ci/run`` tries).
"""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
import torch

from crossfire_ns.viewer.browser import find_chromium
from crossfire_ns.viewer.similarity import similarity_heatmap

CHROMIUM = find_chromium()
pytestmark = [
    pytest.mark.slow,
    # checked at collection, so a machine without Chromium does not train the map for nothing; -ra prints it
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="chromium not found (apt-get install chromium, or set CROSSFIRE_CHROMIUM): viewer browser test skipped",
    ),
]


def synthetic_poses(scene, out_dir):
    """A poses.json for the scene's queries as ns-localize writes it: localized (one off by 0.3), failed,
    unreadable."""
    from crossfire_ns.io.queries import load_query_set
    from crossfire_ns.io.transforms import write_poses_json
    from crossfire_ns.results import QueryResult

    queries, _ = load_query_set(scene / "queries")
    assert len(queries) == 4 and all(q.has_gt for q in queries)
    off = queries[0].c2w_gt.copy()
    off[:3, 3] += [0.3, 0.0, 0.0]
    results = [
        QueryResult(queries[0].file_path, "localized", off, 40, 90, 1.2, 1.0, "localized", 0.3, 0.0, True),
        QueryResult(queries[1].file_path, "failed", None, 2, 30, None, 1.0, "too few inliers", None, None, True),
        QueryResult(queries[2].file_path, "localized", queries[2].c2w_gt, 60, 90, 0.8, 1.0, "localized", 0, 0, True),
        QueryResult(queries[3].file_path, "unreadable", message="corrupt", has_gt=True),
    ]
    path = out_dir / "poses.json"
    write_poses_json(path, results, queries)
    return path


def test_viewer_page_shows_crossfire_controls_and_renders(trained_map, bundled_scene, tmp_path, no_network):
    check_viewer_in_browser(trained_map[0], bundled_scene, CHROMIUM, tmp_path)


def check_viewer_in_browser(config_path, scene, chromium, tmp_path):
    from crossfire_ns.map import load_map
    from crossfire_ns.viewer.screenshot import CONTROL_LABELS, ViewerSession, displayed_difference, is_blank

    start = time.perf_counter()
    poses = synthetic_poses(scene, tmp_path)
    pipeline = load_map(config_path).pipeline
    print(f"map loaded: {time.perf_counter() - start:.1f} s")
    with ViewerSession(pipeline, chromium, width=1000, height=700, max_res=96, timeout=90) as session:
        print(f"page shows the controls: {time.perf_counter() - start:.1f} s")
        page = session.browser.text()
        for label in CONTROL_LABELS + ("Similarity floor", "poses.json", "Query folder", "crossfire_viewer"):
            assert label in page

        # descriptor PCA, chosen in the dropdown; the page shows the frame the viewer rendered
        session.look_through_training_camera(0)
        session.tools.request_pca_refit()
        since = time.time()
        session.select_output("descriptor_pca")
        frame = session.wait_for_frame("descriptor_pca", since)
        png, canvas = session.screenshot()
        shot = tmp_path / "viewer_descriptor_pca.png"
        shot.write_bytes(png)
        print(f"screenshot: {shot}")
        assert not is_blank(canvas), f"the 3D view is blank: {shot}"
        assert not is_blank(frame)
        difference = displayed_difference(canvas, frame)
        print(f"page vs rendered frame: mean difference {difference:.1f} / 255")
        assert difference < 12, f"the page does not show the rendered frame: {shot}"
        shown = re.search(r"Resolution: (\d+)[x×](\d+)px", session.browser.text())
        assert shown and (int(shown[1]), int(shown[2])) == (frame.shape[1], frame.shape[0])
        projection = session.tools.projection
        print(f"descriptor_pca shown: {time.perf_counter() - start:.1f} s")

        # similarity: click the middle of the 3D view; the clicked spot is the hottest colour of the map
        session.pick_reference(0.5, 0.5)
        reference = session.tools.reference
        assert reference is not None and abs(float(reference.norm()) - 1.0) < 1e-4
        session.browser.wait_for(lambda: "Reference picked at" in session.browser.text(), 30, "the reference note")
        since = time.time()
        session.select_output("descriptor_similarity")
        similarity = session.wait_for_frame("descriptor_similarity", since)
        png, similarity_canvas = session.screenshot()
        shot = tmp_path / "viewer_descriptor_similarity.png"
        shot.write_bytes(png)
        print(f"screenshot: {shot}")
        assert not is_blank(similarity_canvas)
        difference = displayed_difference(similarity_canvas, similarity)
        previous = displayed_difference(similarity_canvas, frame)
        print(f"page vs rendered frame: mean difference {difference:.1f} / 255 (vs the PCA frame {previous:.1f})")
        # the similarity map of the 100-step test map is speckled, which the viewer's JPEG stream blurs (12-17 /
        # 255 across training runs): the page must show this frame, and clearly not the previous one
        assert difference < 25 and difference < previous - 5, f"the page does not show the rendered frame: {shot}"
        assert np.abs(similarity_canvas.astype(float) - canvas.astype(float)).mean() > 10  # another picture
        h, w = similarity.shape[:2]
        centre = similarity[h // 2 - 1 : h // 2 + 2, w // 2 - 1 : w // 2 + 2].reshape(-1, 3).astype(float)
        # where the centre's colours sit on the viewer's colour map (0: the floor, 1: similarity 1). The clicked cell
        # itself is 1, but the frame is rendered at another resolution than the click and this map's descriptors are
        # speckled (0.93 on one CI run): the centre must be among the hottest colours, not exactly the hottest
        colours = similarity_heatmap(torch.linspace(0.0, 1.0, 256)[:, None], floor=0.0).numpy() * 255.0
        positions = np.linalg.norm(centre[:, None, :] - colours[None], axis=-1).argmin(axis=1) / 255.0
        assert positions.max() >= 0.85, (positions, centre)
        assert session.tools.projection is projection  # the PCA stayed fitted across frames and outputs
        print(f"descriptor_similarity shown: {time.perf_counter() - start:.1f} s")

        # localized cameras from a poses.json, with thumbnails and ground truth from the query folder
        session.view_from_behind_training_camera(0)
        since = time.time()
        session.select_output("rgb")
        session.wait_for_frame("rgb", since, min_size=1)
        _, before = session.screenshot()
        summary = session.load_cameras(poses, scene / "queries")
        assert "2 estimates, 4 ground truths from poses.json (1 failed, 2 localized, 1 unreadable)" in summary
        kinds = [(m.kind, m.status, m.image_path is not None) for m in session.tools.markers]
        assert kinds.count(("estimate", "localized", True)) == 2
        assert ("ground_truth", "failed", False) in kinds
        time.sleep(2.0)
        png, after = session.screenshot()
        shot = tmp_path / "viewer_localized_cameras.png"
        shot.write_bytes(png)
        print(f"screenshot: {shot}")

        def saturation(image):
            return image.max(axis=-1).astype(int) - image.min(axis=-1).astype(int)

        # the tiny map renders grey: frustums (coloured lines, thumbnails) are the saturated pixels that appeared
        drawn = int(((saturation(after) > 60) & (saturation(before) < 30)).sum())
        print(f"frustum pixels: {drawn}")
        assert drawn > 20, f"no frustum colours appeared in the 3D view: {shot}"
    print(f"viewer in the browser: {time.perf_counter() - start:.1f} s (after training)")
