"""Tests for vaegan.metrics: closed forms, independent references, monotonicity, caching.

No Inception weights are needed: FID/KID/PR run through the production code path with a tiny
random-conv extractor registered in torch-fidelity's registry.
"""
import hashlib
import math
import os
import subprocess
import sys
import urllib.error

import numpy as np
import pytest
import scipy.linalg
import scipy.ndimage
import torch
import torch.nn.functional as F
from PIL import Image

import vaegan.metrics as M
import vaegan.metrics.features
import vaegan.metrics.fid
from vaegan.errors import InputError
from vaegan.images import save_image
from vaegan.metrics import swd as swd_mod


# ----------------------------------------------------------------------------------------------
# Synthetic images: smooth colour fields plus a sharp-edged disk and mild noise, uint8.


def make_images(n: int, res: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = F.interpolate(torch.rand(n, 3, res // 8, res // 8, generator=g), size=(res, res), mode="bicubic")
    yy, xx = torch.meshgrid(torch.arange(res), torch.arange(res), indexing="ij")
    cx, cy = torch.randint(0, res, (2, n, 1, 1), generator=g)
    radius = torch.randint(res // 8, res // 3, (n, 1, 1), generator=g)
    disk = (((xx - cx) ** 2 + (yy - cy) ** 2) < radius**2).float().unsqueeze(1)
    x = x * (1 - disk) + torch.rand(n, 3, 1, 1, generator=g) * disk
    x = x + 0.03 * torch.randn(x.shape, generator=g)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    k = int(2 * math.ceil(3 * sigma) + 1)
    r = torch.arange(k, dtype=torch.float32) - k // 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()
    x = F.pad(images.float(), (k // 2,) * 4, mode="reflect")
    x = F.conv2d(x, g.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
    x = F.conv2d(x, g.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)
    return x.round().clamp(0, 255).to(torch.uint8)


def add_noise(images: torch.Tensor, std: float, seed: int = 1) -> torch.Tensor:
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed)) * std
    return (images.float() + noise).round().clamp(0, 255).to(torch.uint8)


@pytest.fixture(scope="module")
def images():
    return make_images(160)


@pytest.fixture(scope="module")
def extractor():
    return M.make_extractor(M.register_random_extractor())


# ----------------------------------------------------------------------------------------------
# Frechet distance.


def random_spd(d: int, rng: np.random.Generator) -> np.ndarray:
    a = rng.standard_normal((d, d))
    return a @ a.T + 0.1 * np.eye(d)


def test_frechet_matches_scipy_sqrtm():
    rng = np.random.default_rng(0)
    d = 12
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = random_spd(d, rng), random_spd(d, rng)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    assert M.fid_from_features(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    # torch inputs (float32 even) go through the same float64 path
    as_t = [torch.from_numpy(a) for a in (mu1, s1, mu2, s2)]
    assert M.fid_from_features(*as_t) == pytest.approx(expected, rel=1e-9)
    assert M.fid_from_features(mu2, s2, mu1, s1) == pytest.approx(expected, rel=1e-9)  # symmetric
    assert abs(M.fid_from_features(mu1, s1, mu1, s1)) < 1e-9 * np.trace(s1)


def test_frechet_closed_form_for_diagonal_covariances():
    rng = np.random.default_rng(1)
    v1, v2 = rng.uniform(0.1, 3, 20), rng.uniform(0.1, 3, 20)
    mu1, mu2 = rng.standard_normal(20), rng.standard_normal(20)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()
    assert M.fid_from_features(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-10)


# ----------------------------------------------------------------------------------------------
# FID / KID / PR through the production path with the tiny extractor.


def test_fid_zero_for_same_set_and_grows_with_noise_and_blur(images, extractor, tmp_path):
    kw = dict(extractor=extractor, cache_dir=tmp_path)
    assert abs(M.compute_fid(images, images, **kw)) < 1e-6
    # an iterable of batches, or a Dataset of single images, is the same input as the tensor
    assert abs(M.compute_fid(list(images.split(50)), images, **kw)) < 1e-6
    dataset = torch.utils.data.TensorDataset(images, torch.zeros(len(images)))
    assert abs(M.compute_fid(images, dataset, **kw)) < 1e-6
    noisy = [M.compute_fid(add_noise(images, s), images, **kw) for s in (4, 12, 36)]
    assert 0 < noisy[0] < noisy[1] < noisy[2]
    blurred = [M.compute_fid(blur(images, s), images, **kw) for s in (0.6, 1.2, 2.4)]
    assert 0 < blurred[0] < blurred[1] < blurred[2]


def test_kid_and_precision_recall(images, extractor, tmp_path):
    kw = dict(extractor=extractor, cache_dir=tmp_path, kid_subsets=20, kid_subset_size=100)
    same = M.compute_feature_metrics(images, images, **kw)
    noisy = M.compute_feature_metrics(add_noise(images, 80), images, **kw)
    assert abs(same["kid_mean"]) < 0.2 * noisy["kid_mean"]
    assert same["precision"] == 1.0 and same["recall"] == 1.0
    assert noisy["precision"] < 0.5 and noisy["recall"] < 0.5  # heavy noise: features off the real manifold


def test_precision_recall_direction():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(400, 2, generator=g)
    collapsed = 0.1 * torch.randn(400, 2, generator=g)  # all plausible, little variety
    precision, recall = M.precision_recall_from_features(collapsed, real)
    assert precision > 0.95 and recall < 0.3
    precision, recall = M.precision_recall_from_features(real, collapsed)
    assert precision < 0.3 and recall > 0.95


def write_folder(folder, images):
    for i, im in enumerate(images):
        save_image(im, folder / f"{i:03d}.png")


def counting(extractor):
    calls = []

    def fn(x):
        calls.append(len(x))
        return extractor.fn(x)

    return M.FeatureExtractor(fn=fn, name=extractor.name, layer=extractor.layer), calls


def test_reference_cache_hit_and_invalidation(images, extractor, tmp_path):
    folder, cache = tmp_path / "ref", tmp_path / "cache"
    write_folder(folder, images[:40])
    ext, calls = counting(extractor)

    first = M.reference_stats(folder, ext, cache_dir=cache, batch_size=16)
    assert sum(calls) == 40 and len(list(cache.glob("*.safetensors"))) == 1

    calls.clear()
    hit = M.reference_stats(folder, ext, cache_dir=cache, batch_size=16)
    assert calls == []  # unchanged folder: served from disk, extractor never called
    torch.testing.assert_close(hit.sigma, first.sigma)
    torch.testing.assert_close(hit.features, first.features)

    save_image(255 - images[7], folder / "007.png")  # edit one reference image
    changed = M.reference_stats(folder, ext, cache_dir=cache, batch_size=16)
    assert sum(calls) == 40
    assert not torch.allclose(changed.mu, first.mu)

    # the end-to-end number follows the edit too
    fid_after = M.compute_fid(images[:40], folder, extractor=ext, cache_dir=cache)
    assert fid_after > 1e-3


def test_reference_cache_keyed_by_tensor_bytes_count_and_extractor(images, extractor, tmp_path):
    ext, calls = counting(extractor)
    ref = images[:40].clone()
    M.reference_stats(ref, ext, cache_dir=tmp_path)
    M.reference_stats(ref.clone(), ext, cache_dir=tmp_path)  # equal content, new object: hit
    assert sum(calls) == 40
    ref[3, 0, 5, 5] ^= 1  # one bit of one pixel
    M.reference_stats(ref, ext, cache_dir=tmp_path)
    assert sum(calls) == 80
    M.reference_stats(ref, ext, cache_dir=tmp_path, num_images=20)
    assert sum(calls) == 100
    other = M.FeatureExtractor(fn=ext.fn, name="other-net", layer=ext.layer)
    M.reference_stats(ref, other, cache_dir=tmp_path)
    assert sum(calls) == 140
    assert len(list(tmp_path.glob("*.safetensors"))) == 4


# ----------------------------------------------------------------------------------------------
# Missing Inception weights.


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # in case someone called torch.hub.set_dir
    return tmp_path / "torch_home"


def assert_helpful(err: M.MissingWeightsError, torch_home):
    message = str(err)
    assert M.INCEPTION_FILE in message and M.INCEPTION_FILE == "weights-inception-2015-12-05-6726825d.pth"
    assert M.INCEPTION_URL in message and M.INCEPTION_URL.startswith("https://")
    assert "--inception-weights" in message
    assert str(torch_home / "hub" / "checkpoints" / M.INCEPTION_FILE) in message
    # no chained traceback behind it: the CLI prints only the message
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)


def test_missing_weights_without_download(empty_torch_home):
    with pytest.raises(M.MissingWeightsError) as info:
        M.make_extractor("inception-v3-compat", download=False)
    assert_helpful(info.value, empty_torch_home)


def test_missing_weights_when_download_fails(empty_torch_home, monkeypatch):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(M.MissingWeightsError) as info:
        M.compute_fid(make_images(4), make_images(4), download=True)
    assert "download failed" in str(info.value)
    assert_helpful(info.value, empty_torch_home)


def test_bad_weights_path(empty_torch_home, tmp_path):
    with pytest.raises(M.MissingWeightsError, match="no file at"):
        M.make_extractor(inception_weights=tmp_path / "nope.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(vaegan.metrics.features.InceptionWeightsMismatch) as info:
        M.make_extractor(inception_weights=junk)
    message, features = str(info.value), vaegan.metrics.features
    assert "\n" not in message and str(junk) in message and M.INCEPTION_URL in message
    assert hashlib.sha256(b"not a checkpoint").hexdigest() in message
    assert features.INCEPTION_SHA256 in message and features.INCEPTION_SHA256.startswith("6726825d")
    assert "--inception-weights" in message and str(features.inception_cache_path()) in message
    assert info.value.__cause__ is None and (info.value.__context__ is None or info.value.__suppress_context__)


def test_torch_fidelity_extractors_that_load_unverified_weights_are_refused():
    for name in ("vgg16", "clip-vit-b-32", "dinov2-vit-s-14"):
        with pytest.raises(InputError, match=f"'{name}' is not allowed"):
            M.make_extractor(name)
    with pytest.raises(InputError, match="unknown feature extractor 'nope'"):
        M.make_extractor("nope")


# ----------------------------------------------------------------------------------------------
# SWD.


def test_pyramid_matches_scipy_mirror_convolution():
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    kernel = swd_mod.GAUSSIAN_5x5.double().numpy()[None, None]
    expected = scipy.ndimage.convolve(x.numpy(), kernel, mode="mirror")[:, :, ::2, ::2]
    np.testing.assert_allclose(swd_mod.pyr_down(x).numpy(), expected, atol=1e-12)
    zero_filled = np.zeros((2, 3, 64, 64))
    zero_filled[:, :, ::2, ::2] = x.numpy()
    expected = scipy.ndimage.convolve(zero_filled, 4 * kernel, mode="mirror")
    np.testing.assert_allclose(swd_mod.pyr_up(x).numpy(), expected, atol=1e-12)
    levels = swd_mod.laplacian_pyramid(x, 3)
    assert [lv.shape[-1] for lv in levels] == [32, 16, 8]
    collapsed = levels[0] + swd_mod.pyr_up(levels[1] + swd_mod.pyr_up(levels[2]))
    torch.testing.assert_close(collapsed, x)


def test_descriptors_normalised_per_channel_over_the_set():
    patches = torch.randn(500, 3, 7, 7) * torch.tensor([1.0, 5.0, 0.2]).view(1, 3, 1, 1) + 3
    desc = swd_mod.normalize_descriptors(patches).view(500, 3, 49)
    torch.testing.assert_close(desc.mean(dim=(0, 2)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(desc.std(dim=(0, 2), unbiased=False), torch.ones(3), atol=1e-5, rtol=0)
    assert desc[0].std() != pytest.approx(1.0, abs=1e-6)  # per set, not per patch


def test_swd_zero_for_identical_sets_and_deterministic(images):
    out = M.compute_swd(images[:64], images[:64].clone(), patches_per_image=64)
    assert list(out) == ["SWDx1e3_32", "SWDx1e3_16", "SWDx1e3_avg"]
    assert all(v == 0.0 for v in out.values())
    a = M.compute_swd(images[:64], images[64:128], patches_per_image=64, seed=3)
    b = M.compute_swd(images[:64], images[64:128], patches_per_image=64, seed=3)
    c = M.compute_swd(images[:64], images[64:128], patches_per_image=64, seed=4)
    assert a == b and a["SWDx1e3_avg"] > 0 and c != a


def test_swd_increases_with_blur_at_finest_level(images):
    ref = images[:64]
    values = [M.compute_swd(blur(ref, s), ref, patches_per_image=64)["SWDx1e3_32"] for s in (0.5, 1.0, 2.0)]
    assert 0 < values[0] < values[1] < values[2]


# ----------------------------------------------------------------------------------------------
# Sharpness.


def test_sharpness_ratio_one_for_real_and_falls_with_blur(images):
    assert M.compute_sharpness(images, images)["hf_ratio"] == pytest.approx(1.0, abs=1e-12)
    ratios = [M.compute_sharpness(blur(images, s), images)["hf_ratio"] for s in (0.5, 1.0, 2.0)]
    assert 1 > ratios[0] > ratios[1] > ratios[2] > 0
    assert M.compute_sharpness(add_noise(images, 20), images)["hf_ratio"] > 1
    per_image = M.high_frequency_fraction(images)
    assert per_image.shape == (len(images),) and bool(((per_image > 0) & (per_image < 1)).all())


# ----------------------------------------------------------------------------------------------
# PSNR / SSIM.


def test_psnr_constant_offset():
    x = torch.randint(20, 200, (3, 3, 16, 16), dtype=torch.uint8)
    y = x + 10  # no clipping in this range: MSE = 100 exactly
    expected = 10 * math.log10(255**2 / 100)
    torch.testing.assert_close(M.psnr_per_image(y, x), torch.full((3,), expected, dtype=torch.float64))
    assert M.psnr(y, x) == pytest.approx(expected)
    assert M.psnr(x, x) == math.inf


def scipy_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """Independent SSIM (the scikit-image recipe): gaussian_filter radius 5, crop 5-pixel border."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    values = []
    for a, b in zip(x.astype(np.float64), y.astype(np.float64)):  # channels
        f = lambda t: scipy.ndimage.gaussian_filter(t, sigma=1.5, truncate=3.5)  # noqa: E731
        ma, mb = f(a), f(b)
        va, vb, cov = f(a * a) - ma**2, f(b * b) - mb**2, f(a * b) - ma * mb
        s = ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
        values.append(s[5:-5, 5:-5].mean())
    return float(np.mean(values))


def test_ssim_identical_noisy_and_reference_values(images):
    x = images[:4]
    torch.testing.assert_close(M.ssim_per_image(x, x), torch.ones(4, dtype=torch.float64))
    noisy = [M.ssim(add_noise(x, s), x) for s in (5, 20, 60)]
    assert 1 > noisy[0] > noisy[1] > noisy[2]
    y = add_noise(x, 20)
    expected = [scipy_ssim(a.numpy(), b.numpy()) for a, b in zip(y, x)]
    np.testing.assert_allclose(M.ssim_per_image(y, x).numpy(), expected, rtol=1e-10)
    # constant images: SSIM = (2ab + C1) / (a^2 + b^2 + C1) (variances are 0)
    a, b = torch.full((1, 3, 16, 16), 100, dtype=torch.uint8), torch.full((1, 3, 16, 16), 140, dtype=torch.uint8)
    c1 = (0.01 * 255) ** 2
    assert M.ssim(a, b) == pytest.approx((2 * 100 * 140 + c1) / (100**2 + 140**2 + c1), rel=1e-12)
    recon = M.compute_recon_metrics(y, x)
    assert recon["ssim"] == pytest.approx(np.mean(expected), rel=1e-10) and 20 < recon["psnr"] < 30


def test_rejects_float_images(images):
    with pytest.raises(ValueError, match="uint8"):
        M.compute_swd(images.float(), images)
    with pytest.raises(ValueError, match="uint8"):
        M.ssim(images.float(), images)


def test_grid_peak_ratio_flags_checkerboards_not_noise_or_blur():
    from vaegan.metrics.artifacts import grid_peak_ratio

    gen = torch.Generator().manual_seed(0)
    # Smooth random fields (upsampled noise) stand in for natural images.
    base = torch.nn.functional.interpolate(torch.rand(64, 3, 8, 8, generator=gen), size=32, mode="bicubic")
    real = (base.clamp(0, 1) * 200 + 20).round().to(torch.uint8)
    other = (torch.nn.functional.interpolate(torch.rand(64, 3, 8, 8, generator=gen), size=32, mode="bicubic")
             .clamp(0, 1) * 200 + 20).round().to(torch.uint8)
    checker = real.float()
    checker[:, :, ::2, ::2] += 10
    checker[:, :, 1::2, 1::2] -= 10
    noisy = real.float() + 15 * torch.randn(real.shape, generator=gen)
    ratio = lambda x: grid_peak_ratio(x.clamp(0, 255).round().to(torch.uint8), other)["grid_peak_ratio"]
    assert 0.5 < ratio(real) < 2.0
    assert ratio(checker) > 3 * ratio(real)
    # Broadband speckle flattens the spectrum (ratio towards 1 over these smooth fields: measured
    # 1.5) but makes no peaks: a checkerboard of the same strength stands well above it.
    assert ratio(checker) > 2 * ratio(noisy)


def test_image_metrics_report_grid_peaks_of_samples_and_of_reconstructions_apart():
    """A checkerboard in the reconstructions shows in recon_grid_peak_ratio and not in the samples'
    ratio, and the other way round: what the quickstart summary and every evaluation print."""
    from vaegan.metrics.quick import image_metrics

    gen = torch.Generator().manual_seed(1)
    smooth = lambda: (torch.nn.functional.interpolate(torch.rand(48, 3, 8, 8, generator=gen), size=32, mode="bicubic")
                      .clamp(0, 1) * 200 + 20).round().to(torch.uint8)
    reference, clean = smooth(), smooth()
    checker = reference.float()
    checker[:, :, ::2, ::2] += 10
    checker[:, :, 1::2, 1::2] -= 10
    checker = checker.clamp(0, 255).round().to(torch.uint8)
    bad_recon = image_metrics(clean, checker, reference)
    bad_samples = image_metrics(checker, reference, reference)
    assert bad_recon["recon_grid_peak_ratio"] > 3 * bad_recon["grid_peak_ratio"]
    assert bad_samples["grid_peak_ratio"] > 3 * bad_samples["recon_grid_peak_ratio"]
    assert bad_samples["recon_grid_peak_ratio"] == pytest.approx(1.0)  # reconstructions = the reference
    assert image_metrics(reference, reference, reference)["pixel_fd"] == pytest.approx(0.0, abs=1e-6)
    one = image_metrics(reference[:1], reference[:1], reference[:1])  # train.eval_num_images=1 must not fail
    assert "pixel_fd" not in one and one["recon_grid_peak_ratio"] == pytest.approx(1.0)


def test_pixel_fd_is_zero_for_identical_sets_and_grows_with_a_colour_shift():
    from vaegan.metrics.artifacts import pixel_fd

    x = torch.randint(0, 256, (200, 3, 16, 16), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    assert pixel_fd(x, x) == pytest.approx(0.0, abs=1e-6)
    shifted = (x.int() + 40).clamp(0, 255).to(torch.uint8)
    assert pixel_fd(shifted, x) > 192 * (30 / 255) ** 2


# ----------------------------------------------------------------------------------------------
# Import weight and one image reader.


def test_download_free_metrics_do_not_import_torch_fidelity():
    code = ("import sys, vaegan.metrics.swd, vaegan.metrics.sharpness, vaegan.metrics.recon, "
            "vaegan.metrics.artifacts, vaegan.metrics.batching; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch_fidelity'))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    # ... while the torch-fidelity names stay reachable from the package, imported on first use.
    assert M.compute_fid is vaegan.metrics.fid.compute_fid
    assert M.MissingWeightsError is vaegan.metrics.features.MissingWeightsError
    for name in M.__all__:  # every public name resolves, the errors a caller catches included
        assert getattr(M, name) is not None, name
    assert M.InceptionWeightsMismatch is vaegan.metrics.features.InceptionWeightsMismatch


def test_evaluation_reads_a_folder_as_training_does(tmp_path):
    from vaegan.data.folder import ImageFolder
    from vaegan.metrics.quick import load_images
    from vaegan.images import read_image, resize_uint8
    from vaegan.metrics.batching import iter_batches, iter_images

    g = np.random.default_rng(0)
    smooth = lambda w, h, c: np.asarray(Image.fromarray(g.integers(0, 256, (h // 4 + 1, w // 4 + 1, c), np.uint8))
                                        .resize((w, h), Image.Resampling.BILINEAR))
    Image.fromarray(smooth(53, 37, 3)).save(tmp_path / "a_wide.png")
    Image.fromarray(smooth(40, 71, 3)).save(tmp_path / "b_tall.jpg", quality=90)
    Image.fromarray(smooth(24, 19, 4), "RGBA").save(tmp_path / "c_rgba_small.png")  # upscaled to R
    Image.fromarray(smooth(96, 64, 3)).convert("P").save(tmp_path / "d_palette.png")
    Image.fromarray(smooth(32, 32, 3)).save(tmp_path / "e_square.bmp")  # already R x R
    res = 32

    training = ImageFolder(tmp_path, res)
    expected = torch.stack([training[i] for i in range(len(training))])
    assert expected.shape == (5, 3, res, res) and expected.dtype == torch.uint8
    evaluation = torch.cat(list(iter_batches(tmp_path, batch_size=2, resolution=res)))
    assert torch.equal(evaluation, expected)
    assert torch.equal(load_images(tmp_path, None, res), expected)  # `vaegan eval --ref DIR`
    # Whole decoded images (non-square, of several sizes) resized in memory: the same pixels again.
    whole = list(iter_images(tmp_path))
    assert [tuple(x.shape[1:]) for x in whole] == [(37, 53), (71, 40), (19, 24), (64, 96), (32, 32)]
    assert torch.equal(torch.stack([resize_uint8(x, res) for x in whole]), expected)
    assert torch.equal(torch.stack([read_image(f, res) for f in training.files]), expected)


def _whitened(n: int, d: int, seed: int = 0) -> torch.Tensor:
    """(n, d) codes whose sample mean is exactly 0 and sample covariance exactly I."""
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x = x - x.mean(0)
    chol = torch.linalg.cholesky(x.T @ x / (n - 1))
    return torch.linalg.solve_triangular(chol, x.T, upper=False).T


def test_aggregate_kl_is_zero_when_the_codes_fill_the_prior_and_exact_otherwise():
    from vaegan.metrics.latent import aggregate_posterior_stats
    from vaegan.models.distributions import DiagonalGaussian
    n, d, var = 500, 6, 0.36
    codes = _whitened(n, d) * (1 - var) ** 0.5  # Cov(means) + E[var] = I, mean 0
    logvar = torch.full((n, d), math.log(var))
    filled = aggregate_posterior_stats(DiagonalGaussian(codes, logvar))
    assert filled["aggregate_kl"] == pytest.approx(0.0, abs=1e-5)  # float32 storage of the codes
    # shrunk by 0.5 and shifted by 1 in one dim: KL = d/2 (s - 1 - log s) + 1/2, s = 0.25 (1 - var) + var
    shift = torch.zeros(d)
    shift[0] = 1.0
    s = 0.25 * (1 - var) + var
    moved = aggregate_posterior_stats(DiagonalGaussian(codes * 0.5 + shift, logvar))
    assert moved["aggregate_kl"] == pytest.approx(d / 2 * (s - 1 - math.log(s)) + 0.5, rel=1e-5)


def test_active_units_count_the_dimensions_the_means_use():
    from vaegan.metrics.latent import aggregate_posterior_stats
    from vaegan.models.distributions import DiagonalGaussian
    codes = _whitened(200, 5).float()
    codes[:, 1] *= 0.05  # variance 0.0025: collapsed to the prior, below the 0.01 threshold
    codes[:, 3] = 2.0  # constant: no information
    stats = aggregate_posterior_stats(DiagonalGaussian(codes, torch.zeros(200, 5)))
    assert stats["active_units"] == 3
    with pytest.raises(ValueError, match="at least 2"):
        aggregate_posterior_stats(DiagonalGaussian(codes[:1], torch.zeros(1, 5)))
