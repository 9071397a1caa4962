"""The feature CNN: shapes, normalisation, sampling convention, augmentation."""

import torch
import torch.nn.functional as F

from crossfire_ns.encoder import FeatureEncoder, FeatureEncoderConfig, sample_features


def test_output_shape_and_unit_norm():
    for stride in (1, 2):
        encoder = FeatureEncoder(FeatureEncoderConfig(output_stride=stride), descriptor_dim=12)
        features = encoder(torch.rand(2, 3, 30, 44))
        assert features.shape == (2, 12, 30 // stride, 44 // stride)
        assert torch.allclose(features.norm(dim=1), torch.ones(1), atol=1e-5)


def test_sample_features_hits_pixel_centres_exactly():
    torch.manual_seed(0)
    feats = F.normalize(torch.randn(1, 5, 6, 7), dim=1)
    ys, xs = torch.tensor([0, 2, 5]), torch.tensor([0, 4, 6])
    pixels = torch.stack([xs + 0.5, ys + 0.5], dim=-1)[None].float()
    sampled = sample_features(feats, pixels, (6, 7))
    assert torch.allclose(sampled[0], feats[0, :, ys, xs].T, atol=1e-5)


def test_sample_features_is_stride_independent_for_smooth_maps():
    # A linear ramp in x at two resolutions covering the same image extent gives the same lookups.
    width = 16
    xs = (torch.arange(width) + 0.5) / width
    full = torch.stack([xs, torch.ones_like(xs)])[None, :, None, :].expand(1, 2, 4, width)
    half = F.avg_pool2d(full, 2)
    pixels = torch.tensor([[[4.0, 2.0], [9.0, 1.0], [12.0, 3.0]]])
    assert torch.allclose(
        sample_features(full, pixels, (4, width)), sample_features(half, pixels, (4, width)), atol=1e-4
    )


def test_augmentation_changes_images_but_keeps_range():
    torch.manual_seed(1)
    encoder = FeatureEncoder(FeatureEncoderConfig(), descriptor_dim=4)
    images = torch.rand(4, 3, 16, 16)
    augmented = encoder.augment(images)
    assert augmented.shape == images.shape
    assert augmented.min() >= 0 and augmented.max() <= 1
    assert (augmented - images).abs().mean() > 1e-3
    no_aug = FeatureEncoder(FeatureEncoderConfig(augment=False), descriptor_dim=4)
    assert torch.equal(no_aug.augment(images), images)


def test_plasma_gain_multiplies_regions_by_one_gain_per_channel():
    from crossfire_ns.encoder import RandomPlasmaGain

    torch.manual_seed(3)
    images = 0.2 + 0.3 * torch.rand(6, 3, 24, 32)  # no clamping at these values and gains
    shaded = RandomPlasmaGain(p=1.0, log_gain=(-0.6, 0.6))(images)
    assert shaded.shape == images.shape and shaded.min() >= 0 and shaded.max() <= 1
    changed = 0
    for image, out in zip(images, shaded):
        ratios = (out / image).flatten(1)  # (3, H*W): 1 outside the regions, one gain per channel inside
        gains = [torch.unique(torch.round(channel, decimals=4)) for channel in ratios]
        assert all(len(g) <= 2 for g in gains)
        assert all(torch.isclose(g, torch.tensor(1.0)).any() or len(g) == 1 for g in gains)
        changed += int(any(len(g) == 2 for g in gains))
    assert changed >= 1  # some image has a lit and an unlit part: a gain edge
    assert torch.equal(RandomPlasmaGain(p=0.0)(images), images)


def test_local_log_normalisation_removes_gain_colour_cast_and_gamma():
    from crossfire_ns.encoder import local_log_normalize

    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 48, 64, generator=gen) * 0.8 + 0.1
    relit = (image * torch.tensor([1.2, 0.9, 0.6]).view(1, 3, 1, 1)) ** 0.7  # warm, brighter, other gamma
    a, b = local_log_normalize(image, 4.0), local_log_normalize(relit, 4.0)
    assert (a - b).abs().mean() < 0.05 * a.abs().mean()
    other = local_log_normalize(torch.rand(1, 3, 48, 64, generator=gen) * 0.8 + 0.1, 4.0)
    assert (a - other).abs().mean() > 0.5 * a.abs().mean()  # it still tells images apart


def test_unit_channels_is_torchs_normalize():
    from crossfire_ns.encoder import unit_channels

    x = torch.randn(2, 5, 7, 9, requires_grad=True)
    x.data[0, :, 0, 0] = 0  # a zero vector stays zero, as with F.normalize
    weights = torch.randn(2, 5, 7, 9)
    ours, theirs = unit_channels(x), F.normalize(x, dim=1)
    assert torch.allclose(ours, theirs, atol=1e-6) and torch.equal(ours[0, :, 0, 0], torch.zeros(5))
    (grad_ours,) = torch.autograd.grad((ours * weights).sum(), x)
    (grad_theirs,) = torch.autograd.grad((theirs * weights).sum(), x)
    assert torch.isfinite(grad_ours).all()
    assert torch.allclose(grad_ours[1], grad_theirs[1], atol=1e-5)  # torch's own gradient at 0 is not usable
