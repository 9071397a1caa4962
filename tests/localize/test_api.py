"""MapLocalizer: a map loaded once, one image at a time (arrays, paths, priors, sequences), bad input as answers."""

import numpy as np
import pytest
from PIL import Image

from crossfire_ns.io.queries import QueryImageError, load_query_set
from crossfire_ns.localize.api import MapLocalizer, as_rgb
from crossfire_ns.localize.matchers import PoseEstimate, PriorMatcherConfig
from crossfire_ns.localize.pnp import CALIBRATED, CHI2_6_MEDIAN, FIRST_ORDER
from crossfire_ns.map import load_map
from tests.helpers import tiny_map_matcher


def test_arrays_become_rgb_as_files_do():
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[..., 3] = 0
    assert (as_rgb(rgba) == 255).all()  # transparent: composited on white
    assert as_rgb(np.full((4, 6), 7, np.uint8)).shape == (4, 6, 3)
    assert as_rgb(np.full((4, 6, 3), 65535, np.uint16)).max() == 255
    with pytest.raises(QueryImageError, match="uint8 or uint16"):
        as_rgb(np.zeros((4, 6, 3), np.float32))
    with pytest.raises(QueryImageError, match="shape"):
        as_rgb(np.zeros((4, 6, 2), np.uint8))


@pytest.fixture(scope="module")
def loaded(trained_map):
    return load_map(trained_map[0])


@pytest.mark.slow
def test_one_image_at_a_time_from_paths_arrays_and_priors(loaded, bundled_scene):
    query = load_query_set(bundled_scene / "queries")[0][0]
    localizer = MapLocalizer(loaded, PriorMatcherConfig())
    given = localizer.localize(query.path, K=query.K, prior=query.c2w_gt)
    assert given.localized and given.prior_source == "given"
    np.testing.assert_allclose(given.c2w, query.c2w_gt, atol=1e-5)
    assert given.qvec.shape == (4,) and given.to_dict()["colmap"]["tvec"] == pytest.approx(given.tvec.tolist())
    retrieved = localizer.localize(np.asarray(Image.open(query.path)), K=query.K)
    assert retrieved.localized and retrieved.prior_source == "retrieval" and not retrieved.warnings
    default = localizer.localize(query.path)
    assert default.localized and "training camera" in default.warnings[0]
    wide = localizer.localize(np.zeros((10, 80, 3), np.uint8))
    assert wide.status == "unreadable" and "aspect" in wide.message
    bad = localizer.localize(query.path, K=np.eye(2))
    assert bad.status == "unreadable" and "3x3" in bad.message
    big_K = np.diag([25.0, 25.0, 1.0]) @ query.K  # the same camera at 25x the resolution (a phone photo)
    assert localizer.max_side_for(query.width * 25, query.height * 25, big_K) == max(query.width, query.height)
    assert localizer.max_side_for(query.width, query.height, query.K) == localizer.max_image_side
    missing = localizer.localize(bundled_scene / "nope.png", K=query.K)
    assert missing.status == "unreadable" and "nope.png" in missing.message


@pytest.mark.slow
def test_a_sequence_falls_back_to_retrieval_after_a_lost_frame(loaded, bundled_scene):
    query = load_query_set(bundled_scene / "queries")[0][0]
    localizer = MapLocalizer(loaded, tiny_map_matcher())
    first = localizer.localize(query.path, K=query.K, sequence="s")
    assert first.prior_source == "retrieval"
    blank = np.full((query.height, query.width, 3), 128, np.uint8)
    if first.localized:
        lost = localizer.localize(blank, K=query.K, sequence="s")
        assert not lost.localized and lost.prior_source == "sequence, then retrieval"
    assert localizer.localize(query.path, K=query.K, sequence="s").prior_source == "retrieval"
    localizer.end_sequence("s")


class _Frame:
    """A map whose original frame is its normalised one."""

    model = None

    def to_original(self, c2w):
        return c2w

    def to_normalized(self, c2w):
        return c2w

    def covariance_to_original(self, covariance):
        return covariance


class _Measured:
    """A localizer that returns one estimate, on a map whose own views were localized with these leave-one-out
    records."""

    def __init__(self, estimate, records):
        self.estimate_given, self.records, self.calls = estimate, records, 0
        self.matcher = self

    def estimate(self, rgb, K, priors):
        return self.estimate_given

    def leave_one_out(self, max_side):
        self.calls += 1
        return self.records


def _answering(estimate, records, widening) -> MapLocalizer:
    localizer = MapLocalizer(_Frame(), PriorMatcherConfig(), match_training_scale=False, covariance_widening=widening)
    localizer.localizer = _Measured(estimate, records)
    return localizer


def test_an_answers_covariance_is_widened_for_its_error_and_its_maps_leave_one_out_ratio():
    first_order = np.diag([1e-6] * 3 + [1e-4] * 3)
    estimate = PoseEstimate(True, c2w=np.eye(4), num_inliers=300, reprojection_error_px=0.3, covariance=first_order)
    records = [(CHI2_6_MEDIAN * 4.0 * CALIBRATED.query_share(e), e) for e in (0.1, 0.2, 0.3)]  # a map ratio of 4
    image, K = np.zeros((48, 64, 3), np.uint8), np.array([[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]])
    answer = _answering(estimate, records, CALIBRATED).localize(image, K=K, prior=np.eye(4))
    assert answer.localized and answer.diagnostics["covariance_map_ratio"] == pytest.approx(4.0)
    np.testing.assert_allclose(answer.covariance, first_order * CALIBRATED.factor(0.3, 4.0))
    assert CALIBRATED.factor(0.3, 4.0) > 2.0 * CALIBRATED.factor(0.3)  # a map with poor depth states its poses wider
    unwidened = _answering(estimate, records, FIRST_ORDER)
    np.testing.assert_allclose(unwidened.localize(image, K=K, prior=np.eye(4)).covariance, first_order)
    assert unwidened.localizer.calls == 0  # the raw figure does not pay for the self-check
