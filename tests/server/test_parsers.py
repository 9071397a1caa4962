"""Property-based tests of the server's form parsers (intrinsics, prior): a value that holds its promise or a
400 naming the field, whatever the text. Bounded and derandomized."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from crossfire_ns.io.pose_formats import check_rigid
from crossfire_ns.server.app import BadRequest, form_intrinsics, form_prior
from tests.io.test_properties import BOUNDED, any_float, any_json, is_rigid


@BOUNDED
@given(fields=st.fixed_dictionaries({k: st.one_of(st.none(), st.text(max_size=20), any_float.map(repr)) for k in "ab"}))
def test_form_intrinsics_are_finite_and_positive_or_a_bad_request(fields):
    fx, fy = fields["a"], fields["b"]
    try:
        K = form_intrinsics(fx, fy, "40", "30")
    except BadRequest as err:
        assert err.status_code == 400 and str(err).startswith("intrinsics")
    else:
        assert K is not None and np.isfinite(K).all() and K[0, 0] > 0 and K[1, 1] > 0


@BOUNDED
@given(text=st.one_of(st.text(max_size=80), any_json.map(json.dumps), st.integers(0, 5000).map(lambda n: "[" * n)))
def test_a_prior_field_is_a_rigid_pose_or_a_bad_request(text):
    try:
        prior = form_prior(text)
    except BadRequest as err:
        assert err.status_code == 400 and str(err).startswith("prior must be")
    else:
        assert prior is None or is_rigid(prior)


@BOUNDED
@given(
    quaternion=st.lists(st.floats(-1, 1), min_size=4, max_size=4).filter(lambda q: np.linalg.norm(q) > 1e-3),
    translation=st.lists(st.floats(-1e3, 1e3), min_size=3, max_size=3),
)
def test_every_rotation_with_any_translation_is_a_rigid_prior(quaternion, translation):
    pose = np.eye(4)
    pose[:3, :3] = Rotation.from_quat(quaternion).as_matrix()
    pose[:3, 3] = translation
    np.testing.assert_allclose(form_prior(json.dumps(pose.tolist())), pose, atol=1e-12)
    np.testing.assert_array_equal(check_rigid(pose, "p"), pose)
