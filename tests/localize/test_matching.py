"""Mutual nearest neighbours, GeM global descriptors and retrieval."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from crossfire_ns.localize.matching import (
    global_descriptor,
    guided_matches,
    mutual_nearest_neighbours,
    top_k_retrieval,
)


def basis(i: int, dim: int = 6) -> torch.Tensor:
    e = torch.zeros(dim)
    e[i] = 1.0
    return e


def hand_made():
    """a0<->b1 and a1<->b0 exact, a2<->b2 weak (0.6), a3's nearest is b1 (0.9) but b1 prefers a0."""
    desc_a = torch.stack(
        [basis(0), basis(1), 0.6 * basis(2) + 0.8 * basis(3), 0.9 * basis(0) + math.sqrt(1 - 0.81) * basis(4)]
    )
    desc_b = torch.stack([basis(1), basis(0), basis(2)])
    return desc_a, desc_b


def as_pairs(idx_a, idx_b, sim):
    return {(int(a), int(b)): float(s) for a, b, s in zip(idx_a, idx_b, sim)}


def test_known_matches_and_threshold():
    desc_a, desc_b = hand_made()
    pairs = as_pairs(*mutual_nearest_neighbours(desc_a, desc_b, min_similarity=0.5))
    assert set(pairs) == {(0, 1), (1, 0), (2, 2)}
    assert pairs[(2, 2)] == pytest.approx(0.6, abs=1e-6)
    assert pairs[(0, 1)] == pytest.approx(1.0, abs=1e-6)
    strict = as_pairs(*mutual_nearest_neighbours(desc_a, desc_b, min_similarity=0.7))
    assert set(strict) == {(0, 1), (1, 0)}


def test_non_mutual_excluded_in_both_directions():
    desc_a, desc_b = hand_made()
    forward = as_pairs(*mutual_nearest_neighbours(desc_a, desc_b, 0.0))
    assert 3 not in {a for a, _ in forward}  # a3 -> b1, but b1 -> a0
    idx_b, idx_a, _ = mutual_nearest_neighbours(desc_b, desc_a, 0.0)  # swapped roles, same pairs
    assert {(int(a), int(b)) for a, b in zip(idx_a, idx_b)} == set(forward)


def test_matches_brute_force_on_random_descriptors():
    generator = torch.Generator().manual_seed(0)
    desc_a = F.normalize(torch.randn(200, 16, generator=generator), dim=-1)
    desc_b = F.normalize(
        torch.cat(
            [desc_a[:80] + 0.1 * torch.randn(80, 16, generator=generator), torch.randn(50, 16, generator=generator)]
        ),
        dim=-1,
    )
    sim = desc_a @ desc_b.T
    best_b, best_a = sim.argmax(1), sim.argmax(0)
    expected = {(i, int(best_b[i])) for i in range(200) if int(best_a[best_b[i]]) == i and sim[i, best_b[i]] >= 0.3}
    idx_a, idx_b, got_sim = mutual_nearest_neighbours(desc_a, desc_b, 0.3)
    assert {(int(a), int(b)) for a, b in zip(idx_a, idx_b)} == expected
    torch.testing.assert_close(got_sim, sim[idx_a, idx_b])
    assert len(expected) >= 70  # the perturbed copies are found


@pytest.mark.parametrize("shape_a,shape_b", [((0, 8), (5, 8)), ((5, 8), (0, 8)), ((0, 8), (0, 8))])
def test_empty_inputs(shape_a, shape_b):
    idx_a, idx_b, sim = mutual_nearest_neighbours(torch.zeros(shape_a), torch.zeros(shape_b), 0.5)
    assert len(idx_a) == len(idx_b) == len(sim) == 0
    assert idx_a.dtype == idx_b.dtype == torch.long


def test_nothing_above_threshold():
    desc_a, desc_b = hand_made()
    idx_a, _, _ = mutual_nearest_neighbours(desc_a, desc_b, min_similarity=1.01)
    assert len(idx_a) == 0


def test_gem_pooling_value():
    """GeM with p=3 of a channel with one 8 among eight pixels is (8^3 / 8)^(1/3) = 4, between mean and max."""
    features = torch.zeros(1, 2, 2, 4)
    features[0, 0] = 1.0
    features[0, 1, 0, 0] = 8.0
    descriptor = global_descriptor(features)
    torch.testing.assert_close(descriptor, torch.tensor([[1.0, 4.0]]) / math.sqrt(17.0), atol=1e-5, rtol=0)


def test_gem_shape_and_norm():
    descriptor = global_descriptor(torch.randn(3, 32, 5, 7))
    assert descriptor.shape == (3, 32)
    torch.testing.assert_close(descriptor.norm(dim=-1), torch.ones(3))


def test_top_k_retrieval_order_and_clamping():
    database = torch.stack([basis(0), basis(1), F.normalize(basis(0) + basis(1), dim=0), -basis(0)])
    query = 2.0 * basis(0) + 0.5 * basis(1)  # not normalised on purpose
    indices, scores = top_k_retrieval(query, database, k=2)
    assert indices.tolist() == [0, 2]
    assert scores[0] > scores[1]
    indices, _ = top_k_retrieval(query, database, k=10)
    assert indices.tolist() == [0, 2, 1, 3]
    assert len(top_k_retrieval(query, database[:0], k=3)[0]) == 0


def _smooth_random_map(dim=8, h=40, w=50, seed=0):
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, dim, h // 2, w // 2, generator=gen)
    fine = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)[0]
    return torch.nn.functional.normalize(fine, dim=0)


def test_guided_matches_find_sub_cell_positions_near_the_expectation():
    fmap = _smooth_random_map()
    gen = torch.Generator().manual_seed(1)
    truth = torch.rand(60, 2, generator=gen) * torch.tensor([30.0, 20.0]) + torch.tensor([10.0, 10.0])
    grid = (truth / torch.tensor([50.0, 40.0]) * 2 - 1)[None, None]  # centres at +0.5, align_corners=False
    desc = torch.nn.functional.grid_sample(fmap[None], grid, mode="bilinear", align_corners=False)[0, :, 0].T
    desc = torch.nn.functional.normalize(desc, dim=-1)
    expected = truth + (torch.rand(60, 2, generator=gen) - 0.5) * 6  # up to 3 cells off
    index, xy, sim = guided_matches(desc, expected, fmap, radius=5, min_similarity=0.9, max_ratio=1.0)
    assert len(index) >= 50
    errors = (xy - truth[index]).norm(dim=-1)
    assert errors.median() < 0.4 and (errors < 1.0).float().mean() > 0.95
    assert (sim > 0.9).all()


def test_guided_matches_reject_descriptors_absent_from_the_window():
    fmap = _smooth_random_map()
    desc = torch.nn.functional.normalize(torch.randn(40, 8, generator=torch.Generator().manual_seed(2)), dim=-1)
    expected = torch.full((40, 2), 20.0)
    index, _, _ = guided_matches(desc, expected, fmap, radius=4, min_similarity=0.95)
    assert len(index) == 0


def test_two_level_search_finds_a_far_match_as_precisely_as_the_full_window():
    from crossfire_ns.localize.matching import guided_matches, two_level_guided_matches

    torch.manual_seed(0)
    smooth = torch.nn.functional.avg_pool2d(torch.randn(1, 16, 68, 88), 5, 1, 2)[0]  # texture a few pixels wide
    feature_map = torch.nn.functional.normalize(smooth, dim=0)
    ys, xs = torch.meshgrid(torch.arange(20, 48), torch.arange(20, 68), indexing="ij")
    truth = torch.stack([xs.reshape(-1), ys.reshape(-1)], 1).float() + 0.5
    descriptors = feature_map[:, ys.reshape(-1), xs.reshape(-1)].T
    expected = truth + torch.tensor([9.0, -7.0])  # a pose some degrees off: 11 pixels
    full, full_xy, _ = guided_matches(descriptors, expected, feature_map, 12, 0.6)
    two, two_xy, _ = two_level_guided_matches(descriptors, expected, feature_map, 12, 0.6)
    assert len(two) > 0.95 * len(full) > 0.9 * len(truth)
    assert (two_xy - truth[two]).norm(dim=1).max() < 0.5  # every match found at its pixel, 11 pixels from expected
    found = set(full.tolist())
    both = [i for i in range(len(two)) if int(two[i]) in found]
    at = {int(j): k for k, j in enumerate(full)}
    same = torch.stack([full_xy[at[int(two[i])]] for i in both])
    assert torch.allclose(two_xy[both], same, atol=1e-5)  # the same sub-pixel peak as the full window's
