"""The metric-learning loss on hand-made embeddings."""

import math

import torch
import torch.nn.functional as F

from crossfire_ns.losses import dense_negative_info_nce, masked_info_nce, near_cells, near_point_mask


def _one_hot(n: int, d: int) -> torch.Tensor:
    return F.one_hot(torch.arange(n), d).float()[None]


def test_perfect_pairs_give_low_loss_and_full_accuracy():
    emb = _one_hot(4, 8)
    points = torch.arange(4).float()[None, :, None].expand(1, 4, 3) * 10
    loss, stats = masked_info_nce(emb, emb, points, radius=0.1, temperature=0.1)
    # Each row: exp(10) vs 3 * exp(0) -> loss = log(1 + 3 e^-10).
    assert math.isclose(loss.item(), math.log(1 + 3 * math.exp(-10)), abs_tol=1e-6)
    assert stats["match_accuracy"].item() == 1.0


def test_known_value_for_uniform_similarities():
    # All embeddings identical: every logit equal, loss = log(R).
    emb = torch.ones(1, 5, 4) / 2.0
    points = torch.arange(5).float()[None, :, None].expand(1, 5, 3) * 10
    loss, _ = masked_info_nce(emb, emb, points, radius=0.1, temperature=0.5)
    assert math.isclose(loss.item(), math.log(5), rel_tol=1e-5)


def test_near_points_are_not_negatives():
    # Rays 0 and 1 hit the same 3D point; their features are identical, so without the mask
    # they are hard negatives of each other. With the mask, the loss drops to that of 2 distinct rays.
    emb = F.normalize(torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]]), dim=-1)
    far = torch.tensor([[[0.0, 0, 0], [5.0, 0, 0], [10.0, 0, 0]]])
    near = torch.tensor([[[0.0, 0, 0], [0.01, 0, 0], [10.0, 0, 0]]])
    loss_far, _ = masked_info_nce(emb, emb, far, radius=0.1, temperature=0.1)
    loss_near, stats = masked_info_nce(emb, emb, near, radius=0.1, temperature=0.1)
    assert loss_near < loss_far - 0.3
    expected_row = math.log(1 + math.exp(-10))  # row 0 and 1 keep only ray 2 as negative
    expected = (2 * expected_row + math.log(1 + 2 * math.exp(-10))) / 3
    assert math.isclose(loss_near.item(), expected, abs_tol=1e-6)
    assert math.isclose(stats["excluded_fraction"].item(), 2 / 6, rel_tol=1e-6)


def test_near_point_mask_excludes_diagonal_and_only_close_pairs():
    points = torch.tensor([[[0.0, 0, 0], [0.05, 0, 0], [1.0, 0, 0]]])
    mask = near_point_mask(points, radius=0.1)
    assert mask.tolist() == [[[False, True, False], [True, False, False], [False, False, False]]]


def test_groups_do_not_see_each_other():
    # Two images; swapping the second image's features must not change the first image's loss terms.
    torch.manual_seed(0)
    a = F.normalize(torch.randn(2, 6, 8), dim=-1)
    b = F.normalize(torch.randn(2, 6, 8), dim=-1)
    points = torch.randn(2, 6, 3) * 10
    loss1, _ = masked_info_nce(a[:1], b[:1], points[:1], 0.1, 0.1)
    loss2, _ = masked_info_nce(a[1:], b[1:], points[1:], 0.1, 0.1)
    both, _ = masked_info_nce(a, b, points, 0.1, 0.1)
    assert math.isclose(both.item(), (loss1.item() + loss2.item()) / 2, rel_tol=1e-5)


def test_loss_has_gradients_for_both_sides():
    rendered = F.normalize(torch.randn(1, 4, 8), dim=-1).requires_grad_()
    encoded = F.normalize(torch.randn(1, 4, 8), dim=-1).requires_grad_()
    loss, _ = masked_info_nce(rendered, encoded, torch.randn(1, 4, 3) * 10, 0.1, 0.1)
    loss.backward()
    assert rendered.grad.abs().sum() > 0 and encoded.grad.abs().sum() > 0


def test_per_ray_radius_uses_the_larger_of_each_pair():
    points = torch.tensor([[[0.0, 0, 0], [0.05, 0, 0], [1.0, 0, 0]]])
    radius = torch.tensor([[0.01, 0.1, 0.01]])
    mask = near_point_mask(points, radius)
    assert mask[0, 0, 1] and mask[0, 1, 0]  # 0.05 < max(0.01, 0.1)
    assert not mask[0, 0, 2] and not mask[0, 1, 2]


def _cell_map(h: int, w: int) -> torch.Tensor:
    """(1, h*w, h, w): every feature cell has its own one-hot feature."""
    return F.one_hot(torch.arange(h * w), h * w).float().T.reshape(1, h * w, h, w)


def _centre(cell: int, w: int, stride: float) -> torch.Tensor:
    return torch.tensor([(cell % w + 0.5) * stride, (cell // w + 0.5) * stride])


def test_dense_negatives_known_value_and_accuracy():
    h, w, stride = 3, 4, 2.0
    fmap = _cell_map(h, w)
    cells = torch.tensor([0, 5, 11])
    rendered = fmap.reshape(h * w, h * w).T[cells][None]  # the feature of each ray's own cell
    pixels = torch.stack([_centre(int(c), w, stride) for c in cells])[None]
    loss, stats = dense_negative_info_nce(rendered, rendered, fmap, pixels, (h * 2, w * 2), 0.5, temperature=0.1)
    # Each row: the positive exp(10) against the own cell (also exp(10), within 0.5 px? no: 0 px, so excluded)
    # and the 11 other cells at exp(0).
    assert math.isclose(loss.item(), math.log(1 + 11 * math.exp(-10)), abs_tol=1e-6)
    assert stats["dense_match_accuracy"].item() == 1.0


def test_dense_negatives_far_cell_with_the_same_feature_is_a_hard_negative():
    h, w, stride = 3, 4, 2.0
    fmap = _cell_map(h, w)
    rendered = fmap.reshape(h * w, h * w).T[[0]][None]
    pixels = _centre(0, w, stride)[None, None]
    confusing = fmap.clone()
    confusing[0, :, 2, 3] = confusing[0, :, 0, 0]  # a far cell looks exactly like the ray's own
    base, _ = dense_negative_info_nce(rendered, rendered, fmap, pixels, (6, 8), 0.5, 0.1)
    hard, _ = dense_negative_info_nce(rendered, rendered, confusing, pixels, (6, 8), 0.5, 0.1)
    assert hard.item() > base.item() + 0.5
    # Within the exclusion radius the same duplicate is "the same place" and costs nothing.
    near = fmap.clone()
    near[0, :, 0, 1] = near[0, :, 0, 0]
    excused, _ = dense_negative_info_nce(rendered, rendered, near, pixels, (6, 8), 2.5, 0.1)
    assert excused.item() < base.item()


def test_dense_negatives_give_gradients_to_both_sides():
    fmap = torch.randn(2, 8, 5, 6, requires_grad=True)
    rendered = torch.randn(2, 7, 8, requires_grad=True)
    positive = torch.randn(2, 7, 8)
    pixels = torch.rand(2, 7, 2) * torch.tensor([12.0, 10.0])
    loss, _ = dense_negative_info_nce(
        F.normalize(rendered, dim=-1),
        F.normalize(positive, dim=-1),
        F.normalize(fmap, dim=1),
        pixels,
        (10, 12),
        3.0,
        0.1,
    )
    loss.backward()
    assert rendered.grad.abs().sum() > 0 and fmap.grad.abs().sum() > 0


def test_near_cells_matches_every_cell_distance():
    """The windowed exclusion mask equals the brute-force one: each cell centre's distance to each pixel."""
    torch.manual_seed(3)
    for (height, width), (h, w), radius in [
        ((120, 160), (60, 80), 0.5),
        ((120, 160), (60, 80), 3.0),
        ((100, 130), (25, 33), 7.0),
    ]:
        pixels = torch.rand(2, 40, 2) * torch.tensor([width, height])
        ys = (torch.arange(h) + 0.5) * (height / h)
        xs = (torch.arange(w) + 0.5) * (width / w)
        centres = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(1, 1, h * w, 2)
        brute = (pixels[:, :, None, :] - centres).square().sum(-1) < radius**2
        mask = near_cells(pixels, (h, w), (height, width), radius)
        assert torch.equal(mask, brute)
        assert mask.any()
