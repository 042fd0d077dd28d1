"""The camera noise model (greenpipe.data.noise): determinism, noise statistics, round trips."""

from __future__ import annotations

import numpy as np
import pytest

from greenpipe.data import noise
from tests.data.fixtures import smooth_image

SHOT, READ = (0.0005, 0.004), (0.00005, 0.0008)


def _image(seed: int = 0, h: int = 64, w: int = 48) -> np.ndarray:
    return smooth_image(np.random.default_rng(seed), h, w).astype(np.float32) / 255.0


def _smooth_gradient(h: int = 64, w: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    return np.stack([0.2 + 0.5 * xx, 0.3 + 0.4 * yy, 0.5 + 0.2 * np.sin(3 * xx)], axis=-1).astype(np.float32)


def test_same_seed_same_pair_other_seed_other_pair():
    img = _image()
    a = noise.synthesize_pair(img, np.random.default_rng(7), SHOT, READ)
    b = noise.synthesize_pair(img, np.random.default_rng(7), SHOT, READ)
    c = noise.synthesize_pair(img, np.random.default_rng(8), SHOT, READ)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2] == b[2]
    assert not np.array_equal(a[1], c[1]) and a[2] != c[2]


def test_noise_variance_rises_with_signal_on_a_flat_field_ramp():
    # Linear raw flat fields at increasing levels: variance must follow shot * x + read.
    levels = np.array([0.02, 0.1, 0.3, 0.6, 0.9], dtype=np.float32)
    shot, read = 0.004, 0.0002
    flat = np.broadcast_to(levels[:, None, None, None], (5, 128, 128, 4)).astype(np.float32)
    noisy = noise.add_noise(flat, shot, read, np.random.default_rng(0))
    variance = (noisy - flat).reshape(5, -1).var(axis=1)
    assert np.all(np.diff(variance) > 0), variance
    np.testing.assert_allclose(variance, shot * levels + read, rtol=0.05)


def test_noise_levels_stay_in_range_and_read_follows_shot():
    rng = np.random.default_rng(0)
    draws = np.array([noise.random_noise_levels(rng, SHOT, READ) for _ in range(500)])
    shot, read = draws[:, 0], draws[:, 1]
    assert shot.min() >= SHOT[0] and shot.max() <= SHOT[1]
    assert read.min() >= READ[0] and read.max() <= READ[1]
    # Log-uniform shot: about as many draws below the geometric mean as above.
    assert 0.4 < np.mean(shot < np.sqrt(SHOT[0] * SHOT[1])) < 0.6
    assert np.corrcoef(np.log(shot), np.log(read))[0, 1] > 0.8


@pytest.mark.parametrize("kind", ["black", "white", "random"])
def test_output_is_float32_in_unit_range(kind):
    shape = (32, 32, 3)
    img = {
        "black": np.zeros(shape, np.float32),
        "white": np.ones(shape, np.float32),
        "random": np.random.default_rng(0).random(shape, dtype=np.float32),
    }[kind]
    clean, noisy, drawn = noise.synthesize_pair(
        img, np.random.default_rng(1), (0.004, 0.004), (0.0008, 0.0008)
    )
    for out in (clean, noisy):
        assert out.shape == shape and out.dtype == np.float32
        assert out.min() >= 0.0 and out.max() <= 1.0
    assert set(drawn) == {"shot", "read", "cam2rgb", "gains", "tone_curve"}


def test_mosaic_demosaic_round_trip_of_a_smooth_image_is_close():
    img = _smooth_gradient()
    bayer = noise.mosaic(img)
    assert bayer.shape == (32, 32, 4)
    back = noise.demosaic(bayer)
    assert back.shape == img.shape
    assert np.abs(back - img).max() < 0.02


def test_unprocess_then_process_without_noise_returns_the_image():
    img = _smooth_gradient()
    rng = np.random.default_rng(3)
    cam2rgb, gains = np.linalg.inv(noise.random_ccm(rng)), noise.random_gains(rng)
    back = noise.process(noise.unprocess(img, cam2rgb, gains), cam2rgb, gains)
    assert np.abs(back - img).max() < 0.02


def test_clean_target_and_noisy_differ_by_zero_mean_noise():
    clean, noisy, _ = noise.synthesize_pair(_image(h=128, w=128), np.random.default_rng(2), SHOT, READ)
    diff = noisy.astype(np.float64) - clean
    assert diff.std() > 0.01  # there is noise ...
    assert abs(diff.mean()) < 0.1 * diff.std()  # ... and it does not shift the image


def test_odd_sizes_are_refused():
    with pytest.raises(ValueError, match="even"):
        noise.mosaic(np.zeros((5, 4, 3), np.float32))
