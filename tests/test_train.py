"""The shared trainer and the denoise training task on tiny prepared data: runs, is deterministic, resumes."""

import numpy as np
import pytest
import torch
import yaml

from greenpipe.data.dead_leaves import dead_leaves
from greenpipe.params import parse_params
from greenpipe.recipes.base import model_from_checkpoint
from greenpipe.recipes.denoise.training import pixel_loss, random_batch
from greenpipe.train import cosine_lr, ema_with_warmup, train
from tests.workspace import make_prepared, tiny_params


@pytest.fixture
def params():
    with open("params.yaml") as f:
        return parse_params(tiny_params(yaml.safe_load(f)))


@pytest.fixture
def data(tmp_path_factory):
    return make_prepared(tmp_path_factory.mktemp("prepared"))


def _weights(path):
    model, _ = model_from_checkpoint(path)
    return torch.cat([p.flatten() for p in model.state_dict().values()])


def test_train_writes_self_describing_checkpoint_and_curve(params, data, tmp_path):
    metrics = train(params, data, tmp_path / "model", tmp_path / "curve.csv", tmp_path / "resume.pt")
    ckpt = torch.load(tmp_path / "model" / "checkpoint.pt", weights_only=True)
    assert ckpt["recipe"] == "denoise" and ckpt["model_args"]["width"] == params.train.width
    assert len(ckpt["data_fingerprint"]) == 64
    lines = (tmp_path / "curve.csv").read_text().splitlines()
    assert lines[0] == "step,epoch,loss,val_psnr,lr" and len(lines) == 1 + params.train.epochs
    assert np.isfinite(metrics["val_psnr"]) and metrics["steps"] == params.train.epochs * params.train.steps_per_epoch
    # every metric of the recipe's Quality as val_<name>, and the record itself
    quality = metrics["quality"]
    assert quality["primary"] == "psnr" and set(quality["values"]) == {"psnr", "ssim", "noisy_psnr"}
    assert all(metrics[f"val_{name}"] == value for name, value in quality["values"].items())
    assert not (tmp_path / "resume.pt").exists(), "resume state is removed after a completed run"


def test_train_is_deterministic_and_resume_matches_uninterrupted(params, data, tmp_path):
    train(params, data, tmp_path / "a", tmp_path / "a.csv", tmp_path / "ra.pt")
    train(params, data, tmp_path / "b", tmp_path / "b.csv", tmp_path / "rb.pt")
    assert torch.equal(_weights(tmp_path / "a" / "checkpoint.pt"), _weights(tmp_path / "b" / "checkpoint.pt"))

    # Kill the run inside its second epoch, then start it again: it resumes from
    # the end of epoch 1 and ends with exactly the uninterrupted weights.
    resume = tmp_path / "resume.pt"
    calls = {"n": 0}
    original = torch.optim.Adam.step

    def dying_step(self, *a, **k):
        calls["n"] += 1
        if calls["n"] > params.train.steps_per_epoch + 1:
            raise KeyboardInterrupt
        return original(self, *a, **k)

    torch.optim.Adam.step = dying_step
    try:
        with pytest.raises(KeyboardInterrupt):
            train(params, data, tmp_path / "d", tmp_path / "d.csv", resume)
    finally:
        torch.optim.Adam.step = original
    assert resume.exists()
    metrics = train(params, data, tmp_path / "d", tmp_path / "d.csv", resume)
    assert metrics["resumed_from_epoch"] == 1
    assert torch.equal(_weights(tmp_path / "a" / "checkpoint.pt"), _weights(tmp_path / "d" / "checkpoint.pt"))


def test_random_batch_aligns_clean_and_noisy():
    rng = np.random.default_rng(0)
    clean = np.random.default_rng(1).random((40, 50, 3)).astype(np.float32)
    noisy, target = random_batch([(clean, clean + 1, False)], rng, 4, 16)
    assert noisy.shape == (4, 3, 16, 16)
    assert torch.allclose(noisy, target + 1)


def test_relative_l1_weighs_light_and_heavy_noise_crops_alike():
    gen = torch.Generator().manual_seed(0)
    clean = torch.rand(2, 3, 8, 8, generator=gen)
    sign = torch.randn(2, 3, 8, 8, generator=gen).sign()
    levels = torch.tensor([0.01, 0.1]).view(2, 1, 1, 1)
    noisy = clean + levels * sign
    half = clean + 0.5 * levels * sign  # each crop keeps half its noise
    assert torch.isclose(pixel_loss(half, clean, noisy, "l1"), torch.nn.functional.l1_loss(half, clean))
    # Plain L1: the heavy-noise crop's error is 10x the light one's; relative: both count alike,
    # so halving the light crop's error lowers the loss as much as halving the heavy one's.
    better_light = half.clone()
    better_light[0] = clean[0] + 0.25 * levels[0] * sign[0]
    better_heavy = half.clone()
    better_heavy[1] = clean[1] + 0.25 * levels[1] * sign[1]
    def gains(kind):
        base = pixel_loss(half, clean, noisy, kind)
        return [float(base - pixel_loss(x, clean, noisy, kind)) for x in (better_light, better_heavy)]

    light, heavy = gains("l1")
    assert heavy == pytest.approx(10 * light, rel=1e-3)
    light, heavy = gains("l1_relative")
    assert light == pytest.approx(heavy, rel=0.15)  # not exact: the 1e-3 floor on the level


def test_fresh_noise_draws_new_camera_noise_per_crop(params):
    rng = np.random.default_rng(0)
    clean = np.full((64, 64, 3), 0.5, np.float32)
    noisy, target = random_batch([(clean, clean, True)], rng, 2, 32, params.ingest.noise)
    assert torch.equal(target[0], target[1])  # the target is the stored clean image
    residual = noisy - target
    assert residual.abs().mean() > 0.005  # noise was added ...
    assert not torch.allclose(residual[0], residual[1])  # ... and differs per crop


def test_tint_gives_grey_sources_colour_and_keeps_them_aligned(params):
    rng = np.random.default_rng(0)
    grey = np.repeat(np.random.default_rng(1).random((64, 64, 1)), 3, axis=2).astype(np.float32)
    _, plain = random_batch([(grey, grey, True)], rng, 2, 32, params.ingest.noise)
    assert torch.equal(plain[:, 0], plain[:, 1])  # a permuted grey crop stays grey
    noisy, tinted = random_batch([(grey, grey, True)], rng, 2, 32, params.ingest.noise, tint=True)
    assert not torch.equal(tinted[:, 0], tinted[:, 1])  # per-channel gains: now coloured
    assert tinted.max() <= 1.0 and (noisy - tinted).abs().mean() < 0.1  # still a noisy copy of the target


def test_dead_leaves_image_is_covered_deterministic_and_colourful():
    a = dead_leaves(np.random.default_rng(3), 64)
    assert a.shape == (64, 64, 3) and a.dtype == np.float32
    np.testing.assert_array_equal(a, dead_leaves(np.random.default_rng(3), 64))
    assert 0.0 < a.min() and a.max() < 1.0  # every pixel covered by some disc (colours lie in (0, 1))
    # sharp, saturated colour detail: many distinct colours, channels far apart, strong edges
    assert len(np.unique(a.reshape(-1, 3), axis=0)) > 50
    assert np.abs(a[..., 0] - a[..., 1]).mean() > 0.1
    assert np.abs(np.diff(a, axis=1)).max() > 0.3


def _dead_leaves_disc_by_disc(rng, size, alpha=3.0, r_min=1.0, supersample=2):
    """The definition, one disc at a time front to back: each pixel keeps the first disc that covers it."""
    from greenpipe.data.dead_leaves import MAX_DISCS

    n = size * supersample
    img, free = np.zeros((n, n, 3), np.float32), np.ones((n, n), bool)
    a, b = r_min ** (1 - alpha), (n / 2) ** (1 - alpha)
    radii = (a - rng.uniform(size=MAX_DISCS) * (a - b)) ** (1 / (1 - alpha))
    centres = rng.uniform(0, n, (MAX_DISCS, 2))
    colours = (rng.uniform(0.02, 0.98, (MAX_DISCS, 3)) ** 1.5).astype(np.float32)
    for r, (cy, cx), colour in zip(radii, centres, colours):
        y0, y1, x0, x1 = int(max(cy - r, 0)), int(min(cy + r + 1, n)), int(max(cx - r, 0)), int(min(cx + r + 1, n))
        yy, xx = np.ogrid[y0:y1, x0:x1]
        disc = free[y0:y1, x0:x1] & ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r)
        img[y0:y1, x0:x1][disc] = colour
        free[y0:y1, x0:x1] &= ~disc
    img[free] = colours[-1]
    return img.reshape(size, supersample, size, supersample, 3).mean(axis=(1, 3))


@pytest.mark.parametrize("seed, size, alpha, r_min", [(0, 48, 3.0, 1.0), (1, 96, 3.0, 1.0), (2, 40, 2.2, 3.0)])
def test_dead_leaves_batched_drawing_equals_disc_by_disc(seed, size, alpha, r_min):
    fast = dead_leaves(np.random.default_rng(seed), size, alpha, r_min)
    np.testing.assert_array_equal(fast, _dead_leaves_disc_by_disc(np.random.default_rng(seed), size, alpha, r_min))


def test_leaves_share_draws_noisy_crops_of_the_leaves(params):
    rng = np.random.default_rng(0)
    flat = np.full((64, 64, 3), 0.5, np.float32)
    leaf = dead_leaves(np.random.default_rng(1), 64)
    noisy, target = random_batch([(flat, flat, True)], rng, 8, 32, params.ingest.noise, leaves=[leaf], leaves_share=1.0)
    assert all(t.std() > 0.05 for t in target)  # every target is a leaf crop, none the flat photo
    assert (noisy - target).abs().mean() > 0.005  # with fresh camera noise
    _, photos = random_batch([(flat, flat, True)], rng, 4, 32, params.ingest.noise, leaves=[leaf], leaves_share=0.0)
    assert torch.equal(photos, torch.full_like(photos, 0.5))


def test_dead_leaves_train_run_is_deterministic(params, data, tmp_path):
    def run(share, out):
        tp = params.train.model_copy(update={"dead_leaves": share, "dead_leaves_images": 2})
        train(params.model_copy(update={"train": tp}), data, out, tmp_path / f"{out.name}.csv")

    run(0.5, tmp_path / "a")
    run(0.5, tmp_path / "b")
    run(0.0, tmp_path / "c")
    assert torch.equal(_weights(tmp_path / "a" / "checkpoint.pt"), _weights(tmp_path / "b" / "checkpoint.pt"))
    assert not torch.equal(_weights(tmp_path / "a" / "checkpoint.pt"), _weights(tmp_path / "c" / "checkpoint.pt"))


def test_ema_weights_are_what_is_saved(params, data, tmp_path):
    last = params.model_copy(update={"train": params.train.model_copy(update={"ema": 0.0})})
    averaged = params.model_copy(update={"train": params.train.model_copy(update={"ema": 0.5})})
    train(last, data, tmp_path / "a", tmp_path / "a.csv")
    train(averaged, data, tmp_path / "b", tmp_path / "b.csv")
    a, b = _weights(tmp_path / "a" / "checkpoint.pt"), _weights(tmp_path / "b" / "checkpoint.pt")
    assert a.shape == b.shape and not torch.equal(a, b)  # same run, but the average is saved


def test_weight_average_ramps_its_decay_up_from_the_first_steps():
    net = torch.nn.Linear(1, 1, bias=False)
    avg = torch.optim.swa_utils.AveragedModel(net, multi_avg_fn=ema_with_warmup(0.999))
    values = [1.0, 2.0, 3.0]
    for v in values:
        net.weight.data.fill_(v)
        avg.update_parameters(net)
    # update 1 copies; update 2 keeps 2/11 of the average; update 3 keeps 3/12.
    after2 = 2 / 11 * 1.0 + 9 / 11 * 2.0
    assert avg.module.weight.item() == pytest.approx(3 / 12 * after2 + 9 / 12 * 3.0)
    for _ in range(9000):  # (1 + n) / (10 + n) passes 0.999 at n = 8991
        avg.update_parameters(net)
    net.weight.data.fill_(4.0)
    before = avg.module.weight.item()
    avg.update_parameters(net)
    assert avg.module.weight.item() == pytest.approx(0.999 * before + 0.001 * 4.0)  # the full decay, late on


def test_bf16_training_saves_fp32_weights_and_is_deterministic(params, data, tmp_path):
    fp32, bf16 = (params.model_copy(update={"train": params.train.model_copy(update={"precision": p})})
                  for p in ("fp32", "bf16"))
    train(fp32, data, tmp_path / "f", tmp_path / "f.csv")
    metrics = train(bf16, data, tmp_path / "a", tmp_path / "a.csv")
    train(bf16, data, tmp_path / "b", tmp_path / "b.csv")
    a, b, f = (_weights(tmp_path / d / "checkpoint.pt") for d in "abf")
    assert a.dtype == torch.float32 and torch.equal(a, b)
    assert not torch.equal(a, f)  # the arithmetic changed, so the weights did
    assert np.isfinite(metrics["val_psnr"])


def test_cosine_lr_falls_from_lr_to_lr_min():
    assert cosine_lr(0, 10, 0.002, 0.0001) == 0.002
    assert cosine_lr(5, 10, 0.002, 0.0001) == pytest.approx(0.00105)
    assert cosine_lr(10, 10, 0.002, 0.0001) == pytest.approx(0.0001)


def test_auto_precision_follows_the_cpu_flags(tmp_path, monkeypatch):
    import greenpipe.train as stage

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n")
    assert not stage.cpu_has_bf16(info)
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\n")
    assert stage.cpu_has_bf16(info)
    assert not stage.cpu_has_bf16(tmp_path / "missing")
    monkeypatch.setattr(stage, "cpu_has_bf16", lambda: False)
    assert stage.train_precision("auto") == "fp32" and stage.train_precision("fp32") == "fp32"
    monkeypatch.setattr(stage, "cpu_has_bf16", lambda: True)
    assert stage.train_precision("auto") == "bf16"


def test_a_recipe_without_a_training_task_fails_naming_it(params, data, tmp_path, monkeypatch):
    from greenpipe.errors import GreenpipeError
    from greenpipe.recipes import RECIPES

    monkeypatch.setattr("greenpipe.train.get_recipe", lambda name: RECIPES.get("video"))
    with pytest.raises(GreenpipeError, match="recipe video has no training task"):
        train(params, data, tmp_path / "m", tmp_path / "c.csv")
