"""The CNN's warp self-supervision: homographies map pixels where the warped image puts them; the loss trains."""

import math

import torch

from crossfire_ns.encoder import FeatureEncoder, FeatureEncoderConfig
from crossfire_ns.losses import dense_negative_info_nce
from crossfire_ns.warp_supervision import RandomWarp, apply_homography


def test_apply_homography_identity_and_translation():
    pixels = torch.tensor([[[0.5, 0.5], [10.25, 3.75]]])
    assert torch.allclose(apply_homography(torch.eye(3)[None], pixels), pixels)
    shift = torch.tensor([[[1.0, 0.0, 2.0], [0.0, 1.0, -1.5], [0.0, 0.0, 1.0]]])
    assert torch.allclose(apply_homography(shift, pixels), pixels + torch.tensor([2.0, -1.5]))


def test_rotation_about_the_image_centre_keeps_the_centre():
    """kornia rotates about ((W-1)/2, (H-1)/2) in its integer-centre convention: (W/2, H/2) in ours."""
    a = math.radians(30)
    c = torch.tensor([31.5, 23.5])  # kornia's centre of a 64x48 image
    rot = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    matrix = torch.eye(3)
    matrix[:2, :2] = rot
    matrix[:2, 2] = c - rot @ c
    centre = torch.tensor([[[32.0, 24.0]]])
    assert torch.allclose(apply_homography(matrix[None], centre), centre, atol=1e-5)


def _blob_image(x: float, y: float, height: int = 48, width: int = 64, sigma: float = 1.5) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    blob = torch.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2))
    return blob.expand(3, height, width)[None].clone()


def _centroid(image: torch.Tensor) -> torch.Tensor:
    weights = image[0, 0].clamp(min=0)
    height, width = weights.shape
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    return torch.stack([(weights * xs).sum(), (weights * ys).sum()]) / weights.sum()


def test_warped_blob_lands_where_the_homography_says():
    torch.manual_seed(0)
    warp = RandomWarp(max_blur_sigma=0.0)
    for _ in range(5):
        image = _blob_image(30.0, 22.0)
        pairs = warp(image, num_points=4)
        homography = warp.geometric.transform_matrix
        expected = apply_homography(homography, torch.tensor([[[30.0, 22.0]]]))[0, 0]
        if not ((expected > 6) & (expected < torch.tensor([58.0, 42.0]))).all():
            continue  # the blob left the image
        assert torch.linalg.norm(_centroid(pairs.warped) - expected) < 0.25
        # the returned correspondences use the same map
        assert torch.allclose(pairs.warped_pixels, apply_homography(homography, pairs.pixels), atol=1e-5)


def test_valid_marks_points_inside_the_warped_image():
    torch.manual_seed(1)
    pairs = RandomWarp()(torch.rand(4, 3, 48, 64), num_points=200)
    inside = ((pairs.warped_pixels > 1) & (pairs.warped_pixels < torch.tensor([63.0, 47.0]))).all(-1)
    assert torch.equal(pairs.valid, inside)
    assert pairs.valid.float().mean() > 0.5


def test_masked_rows_do_not_count():
    torch.manual_seed(2)
    feats = torch.nn.functional.normalize(torch.randn(1, 8, 6, 8), dim=1)
    rendered = torch.nn.functional.normalize(torch.randn(1, 5, 8), dim=-1)
    pixels = torch.rand(1, 5, 2) * torch.tensor([8.0, 6.0])
    valid = torch.tensor([[True, True, False, True, False]])
    masked, _ = dense_negative_info_nce(rendered, rendered, feats, pixels, (6, 8), 0.5, 0.1, valid=valid)
    keep = valid[0]
    subset, _ = dense_negative_info_nce(rendered[:, keep], rendered[:, keep], feats, pixels[:, keep], (6, 8), 0.5, 0.1)
    assert torch.allclose(masked, subset)


def test_warp_loss_teaches_the_cnn_to_find_pixels_again():
    """A few dozen steps on one textured image: the warped copy's pixels are found far more often."""
    torch.manual_seed(3)
    encoder = FeatureEncoder(FeatureEncoderConfig(channels=(8, 16), augment=False), descriptor_dim=8)
    warp = RandomWarp(degrees=10.0, scale=(0.9, 1.1), shear=2.0, perspective=0.1, max_blur_sigma=0.0)
    image = torch.rand(1, 3, 3, 4)
    image = torch.nn.functional.interpolate(image, size=(24, 32), mode="nearest") * 0.5 + torch.rand(1, 3, 24, 32) * 0.5
    optimizer = torch.optim.Adam(encoder.parameters(), lr=3e-3)
    from crossfire_ns.encoder import sample_features

    def step(train: bool) -> float:
        pairs = warp(image.expand(2, -1, -1, -1), num_points=64)
        fa, fb = encoder(image.expand(2, -1, -1, -1)), encoder(pairs.warped)
        loss, stats = dense_negative_info_nce(
            sample_features(fa, pairs.pixels, (24, 32)),
            sample_features(fb, pairs.warped_pixels, (24, 32)),
            fb,
            pairs.warped_pixels,
            (24, 32),
            0.5,
            0.1,
            valid=pairs.valid,
        )
        if train:
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return float(stats["dense_match_accuracy"])

    with torch.no_grad():
        before = sum(step(False) for _ in range(5)) / 5
    for _ in range(60):
        step(True)
    with torch.no_grad():
        after = sum(step(False) for _ in range(5)) / 5
    assert after > before + 0.2, (before, after)
