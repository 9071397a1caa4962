"""The coarse stage: which views are tried, hypotheses from each, the early exit."""

from __future__ import annotations

import numpy as np

from crossfire_ns.localize.coarse import (
    CoarseConfig,
    CoarseResult,
    RetrievalConfig,
    best_hypotheses,
    coarse_hypotheses,
    retrieved_views,
)
from crossfire_ns.localize.pnp import PnPConfig, PoseSolver
from crossfire_ns.synthetic.cameras import look_at
from tests.localize.stub_index import K, query_features, scene, stub_index


def _ring_index(n: int = 6):
    points, descriptors, _, _ = scene()
    views = [look_at([0.2 * np.cos(a), 0, 0.2 * np.sin(a)], [0, 4, 0]) for a in np.linspace(0, 2 * np.pi, n, False)]
    return stub_index(points, descriptors, views), views


def test_retrieved_priors_split_into_a_first_pass_and_further_views_without_repeats():
    index, views = _ring_index()
    retrieved = retrieved_views(index, [views[3], views[1], views[3], views[5]], RetrievalConfig(top_k=2))
    assert retrieved.first == [3, 1] and retrieved.further == [5]
    lone = retrieved_views(index, [views[2]], RetrievalConfig(lone_prior_views=3))
    assert lone.first[0] == 2 and len(lone.first) == 3 and lone.further == []


def test_the_early_exit_stops_at_the_first_clearly_good_hypothesis():
    points, descriptors, views, truth = scene()
    index = stub_index(points, descriptors, views)
    query = query_features(points, descriptors, truth)
    quick = coarse_hypotheses(index, query, K, [0, 1], CoarseConfig(), PoseSolver(), 0.9)
    assert quick.tried == [0] and len(quick.hypotheses) == 1 and quick.inlier_counts[0] >= 80
    every = coarse_hypotheses(index, query, K, [0, 1], CoarseConfig(early_exit_inliers=10**9), PoseSolver(), 0.9)
    assert every.tried == [0, 1] and [h.view for h in every.hypotheses] == [0, 1]
    both = quick.extended(CoarseResult(every.hypotheses[1:], [1], every.inlier_counts[1:], "none"))
    assert both.tried == [0, 1] and best_hypotheses(both.hypotheses, 1)[0].pnp.num_inliers == max(both.inlier_counts)


def test_no_match_means_no_hypothesis_and_the_reason_is_kept():
    points, descriptors, views, truth = scene()
    index = stub_index(points, descriptors, views)
    query = query_features(points, -descriptors, truth)  # opposite descriptors: nothing passes the threshold
    result = coarse_hypotheses(index, query, K, [0, 1], CoarseConfig(), PoseSolver(PnPConfig()), 0.9)
    assert result.hypotheses == [] and result.tried == [0, 1] and result.reason
