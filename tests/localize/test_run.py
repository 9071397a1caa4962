"""Localization as a library call: a loaded map and queries in, results in memory out, nothing written."""

from dataclasses import replace

import numpy as np
import pytest

from crossfire_ns.io.queries import load_query_set, read_query_image
from crossfire_ns.localize.api import MapLocalizer
from crossfire_ns.localize.localizer import Localizer
from crossfire_ns.localize.matchers import CrossfireRenderMatcherConfig, PriorMatcherConfig
from crossfire_ns.localize.matchers.base import PoseEstimate
from crossfire_ns.localize.matchers.crossfire import IndexLocalization
from crossfire_ns.localize.priors import retrieval_index
from crossfire_ns.localize.run import localize_queries
from crossfire_ns.map import load_map
from tests.helpers import tiny_map_matcher

pytestmark = pytest.mark.slow
FAST = tiny_map_matcher()


@pytest.fixture(scope="module")
def loaded(trained_map):
    return load_map(trained_map[0])


def test_results_in_memory_on_a_loaded_map(loaded, bundled_scene, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    queries, _ = load_query_set(bundled_scene / "queries")
    results = localize_queries(loaded, queries, FAST)
    assert [r.file_path for r in results] == [q.file_path for q in queries]
    assert all(r.status in ("localized", "failed") and r.has_gt for r in results)
    assert all(r.num_renders == 0 for r in results)  # the index path renders nothing per query
    assert all(r.seconds_coarse > 0 and r.seconds_retrieval > 0 for r in results)
    assert all(r.seconds >= r.seconds_retrieval + r.seconds_coarse + r.seconds_refine for r in results)
    for r in results:
        if r.status == "localized":
            assert r.c2w.shape == (4, 4) and r.t_err is not None  # original frame, scored against ground truth
    assert list(tmp_path.iterdir()) == []  # writing is a separate step


def test_the_novel_view_check_renders_at_the_estimate_on_a_loaded_map(loaded, bundled_scene):
    """Plumbing on the rough test map (its poses mean nothing): the check renders at the estimate, at most
    ``novel_view_width`` pixels wide and at most ``novel_view_max_renders`` times, and answers with the estimate, a
    followed render's pose or a failure naming the renders."""
    query = load_query_set(bundled_scene / "queries")[0][0]
    image = read_query_image(query)
    settings = replace(FAST.render, novel_view_width=48)  # narrower than the test queries: the render is scaled
    localizer = Localizer(loaded.model, replace(FAST, render=settings), loaded)
    widths = []
    render = localizer.renderer.render
    localizer.renderer.render = lambda c2w, K, w, h: widths.append(w) or render(c2w, K, w, h)
    estimate = PoseEstimate(True, loaded.to_normalized(query.c2w_gt))
    found = IndexLocalization(coarse=None, estimate=estimate)
    answer = localizer.matcher.novel_view_check(localizer.matcher.encode(image), query.K, found)
    assert 1 <= len(widths) <= settings.novel_view_max_renders and len(found.renders) == len(widths)
    assert set(widths) == {48} and image.shape[1] > 48
    if answer.success:
        assert answer is estimate or len(widths) >= 2
    else:
        assert answer.message.startswith(("renders at the estimate do not settle", "a render at the estimate does not"))


def test_the_render_path_counts_its_renders(loaded, bundled_scene):
    queries, _ = load_query_set(bundled_scene / "queries")
    render_path = CrossfireRenderMatcherConfig(top_k=1, iterations=1, refine_iterations=0)
    results = localize_queries(loaded, queries[:2], render_path)
    assert all(r.num_renders >= 1 and r.seconds_coarse > 0 for r in results)


def test_the_retrieval_index_is_built_once_per_map(loaded, bundled_scene):
    index = retrieval_index(loaded, "matches")
    queries, _ = load_query_set(bundled_scene / "queries")
    localize_queries(loaded, queries[:1], PriorMatcherConfig())
    assert retrieval_index(loaded, "matches") is index
    assert retrieval_index(loaded, "gem") is not index


def test_prior_poses_are_taken_in_the_original_frame(loaded, bundled_scene):
    queries, _ = load_query_set(bundled_scene / "queries")
    truth = {q.file_path: q.c2w_gt for q in queries}
    localizer = MapLocalizer(loaded, PriorMatcherConfig())
    results = localize_queries(loaded, queries, prior="poses", prior_poses=truth, map_localizer=localizer)
    for result in results:
        assert result.status == "localized" and result.num_renders == 0
        np.testing.assert_allclose(result.c2w, truth[result.file_path], atol=1e-5)
        assert result.t_err < 1e-5 and result.r_err < 1e-3
    far = {q.file_path: np.diag([1.0, 1.0, 1.0, 1.0]) for q in queries}
    retrieved = localize_queries(loaded, queries[:1], PriorMatcherConfig(), prior_poses=far)  # prior="retrieval"
    assert not np.allclose(retrieved[0].c2w, far[queries[0].file_path])  # poses are priors only with prior="poses"
    missing = localize_queries(loaded, queries[:1], PriorMatcherConfig(), prior="poses", prior_poses={})
    assert missing[0].status == "failed" and "poses file" in missing[0].message
