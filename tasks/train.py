"""Stage ``train``: fit the recipe's float model on the prepared train split.

    python -m tasks.train --data data/prepared --validated metrics/validate.json \
        --out models/denoise --metrics metrics/train.json --curve metrics/train_curve.csv

Adam with a cosine learning-rate schedule, random crops / flips / 90-degree
rotations, L1 loss (``train.loss``: plain, or each crop's relative to its
noise level).  With ``train.precision`` bf16 (or auto on a CPU with
native bf16) the forward and backward pass run under bf16 autocast.  With
``train.fresh_noise`` every crop of an image whose noise ingest synthesised
gets a new camera-noise draw (as in Brooks et al.), so the model sees
thousands of cameras and noise levels rather than the few stored
realisations.  With ``train.dead_leaves`` > 0 that share of the crops is cut
from synthetic dead-leaves images (greenpipe.data.dead_leaves) with fresh
noise, so the model learns that sharp colour detail is signal.
Deterministic under ``base.seed`` (same params and data -> same weights).
The state is saved after every epoch to ``--resume-state``
so a killed run resumes where it stopped, with the same result as an
uninterrupted one; the file is removed when training completes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from greenpipe.data.dead_leaves import dead_leaves
from greenpipe.data.noise import synthesize_pair
from greenpipe.data.prepared import center_crop, load_split
from greenpipe.errors import DataError
from greenpipe.io import atomic_write_bytes, read_json
from greenpipe.metrics import psnr, ssim
from greenpipe.params import NoiseParams, Params
from greenpipe.recipes import get_recipe
from greenpipe.recipes.denoise import denoise_image
from greenpipe.resume import load_state, save_state, save_torch
from tasks._cli import run_stage


def data_fingerprint(data: Path) -> str:
    """sha256 over the prepared manifest and every image's bytes."""
    h = hashlib.sha256((data / "manifest.json").read_bytes())
    for path in sorted(data.glob("*/*/*.png")):
        h.update(str(path.relative_to(data)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def fresh_noise(clean: np.ndarray, rng: np.random.Generator, noise: NoiseParams) -> np.ndarray:
    """A new camera-noise realisation on a clean (H, W, 3) crop, H and W even.

    The noise is drawn exactly as ingest draws it (a random camera, shot and
    read level; greenpipe.data.noise) and added as the residual between the
    noisy and noise-free re-processing, so the target stays the stored clean
    image and train targets match val targets.
    """
    ref, noisy, _ = synthesize_pair(clean, rng, noise.shot, noise.read)
    return np.clip(clean + (noisy - ref), 0.0, 1.0)


def cpu_has_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU does bf16 arithmetic natively (AVX512-BF16 or AMX flags in ``cpuinfo``)."""
    try:
        lines = cpuinfo.read_text().splitlines()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), [])
    return bool({"avx512_bf16", "amx_bf16"} & set(flags))


def train_precision(requested: str) -> str:
    """The arithmetic a run uses for ``train.precision``: ``auto`` is bf16 where the CPU has it natively."""
    native = cpu_has_bf16()
    if requested == "auto":
        return "bf16" if native else "fp32"
    if requested == "bf16" and not native:
        print("train: train.precision = bf16 but this CPU has no native bf16 (no avx512_bf16 / amx_bf16 "
              "flag): it is emulated and slow; set train.precision: auto or fp32", file=sys.stderr)
    return requested


def ema_with_warmup(decay: float):
    """Per-step weight averaging whose decay ramps up as ``min(decay, (1 + n) / (10 + n))`` after n updates.

    A fixed decay of 0.999 from the first step keeps the random start and the
    high-learning-rate phase in the average for thousands of steps (after
    4480 steps 1 % of the average is still the first step's weights, and the
    per-epoch val PSNR climbs from 19 dB); with the ramp the average follows
    the model early on (0.998 at step 4480, ``decay`` from step 8991).
    """

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n: torch.Tensor) -> None:
        d = min(decay, (1.0 + float(n)) / (10.0 + float(n)))
        torch._foreach_lerp_(averaged, current, 1.0 - d)

    return update


def random_batch(
    pairs: list[tuple[np.ndarray, np.ndarray, bool]],
    rng: np.random.Generator,
    batch: int,
    crop: int,
    noise: NoiseParams | None = None,
    tint: bool = False,
    leaves: list[np.ndarray] | None = None,
    leaves_share: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random aligned crops with flips / rot90 -> (noisy, clean), each (B, 3, crop, crop), channels-last.

    ``pairs`` holds (clean, noisy, synthetic); with ``noise`` given, synthetic
    samples get their channels permuted (and with ``tint`` scaled by random
    per-channel gains) and a fresh noise draw per crop instead of their stored
    noise.  With ``leaves`` (clean dead-leaves images) and ``noise`` given, each
    crop comes from one of them with probability ``leaves_share``, as a
    synthetic sample.
    """
    noisy_b, clean_b = [], []
    for _ in range(batch):
        if leaves and noise is not None and rng.random() < leaves_share:
            leaf = leaves[rng.integers(len(leaves))]
            clean, noisy, synthetic = leaf, leaf, True
        else:
            clean, noisy, synthetic = pairs[rng.integers(len(pairs))]
        h, w = clean.shape[:2]
        top, left = rng.integers(h - crop + 1), rng.integers(w - crop + 1)
        c = clean[top : top + crop, left : left + crop]
        if noise is not None and synthetic:
            # Colour diversity a handful of photos lacks: permute the channels of the
            # target before the noise is drawn on it (noise follows the new colours).
            c = np.ascontiguousarray(c[..., rng.permutation(3)])
            if tint:  # grey sources (half the built-in set) would otherwise never show colour
                c = (c * rng.uniform(0.6, 1.0, 3)).astype(np.float32)
            n = fresh_noise(c, rng, noise)
        else:
            n = noisy[top : top + crop, left : left + crop]
        k, flip = int(rng.integers(4)), bool(rng.integers(2))
        c, n = np.rot90(c, k), np.rot90(n, k)
        if flip:
            c, n = c[:, ::-1], n[:, ::-1]
        clean_b.append(c.transpose(2, 0, 1))
        noisy_b.append(n.transpose(2, 0, 1))
    # channels-last is oneDNN's fast layout for these convolutions on CPU (~1.4x per step here).
    return tuple(
        torch.from_numpy(np.stack(b).copy()).contiguous(memory_format=torch.channels_last)
        for b in (noisy_b, clean_b)
    )


def pixel_loss(denoised: torch.Tensor, clean: torch.Tensor, noisy: torch.Tensor, kind: str) -> torch.Tensor:
    """The training loss ``train.loss`` over a batch of (B, 3, H, W) crops.

    ``l1`` is the mean absolute error.  ``l1_relative`` divides each crop's
    L1 by its input noise's mean magnitude, then rescales by the batch's mean
    magnitude (so the loss, and the learning rate, stay on the L1 scale):
    otherwise the heavy-noise crops, whose errors are several times larger,
    drive the gradients and light-noise inputs are over-smoothed, although
    the score (mean PSNR over images) weighs every image alike.
    """
    err = (denoised - clean).abs().mean((1, 2, 3))
    if kind == "l1":
        return err.mean()
    level = (noisy - clean).abs().mean((1, 2, 3)) + 1e-3  # 1e-3: a noise-free crop must not dominate
    return (err / level).mean() * level.mean()


def leaf_images(params: Params) -> list[np.ndarray]:
    """The run's ``train.dead_leaves_images`` dead-leaves images (side 2 * crop), the same for the same seed."""
    tp = params.train
    rng = np.random.default_rng([params.base.seed, 1])  # its own stream: the crops' stream is unchanged
    t0 = time.perf_counter()
    images = [dead_leaves(rng, 2 * tp.crop) for _ in range(tp.dead_leaves_images)]
    print(f"train: {len(images)} dead-leaves images of {2 * tp.crop} px drawn in {time.perf_counter() - t0:.1f} s",
          file=sys.stderr)
    return images


def _validate(model: torch.nn.Module, val: list, multiple: int, max_side: int) -> tuple[float, float]:
    model.eval()
    scores = []
    with torch.no_grad():
        run = lambda x: model(torch.from_numpy(x)).numpy()  # noqa: E731
        for clean, noisy in val:
            clean, noisy = center_crop(clean, max_side), center_crop(noisy, max_side)
            out = denoise_image(run, noisy, multiple)
            scores.append((psnr(clean, out), ssim(clean, out)))
    model.train()
    return float(np.mean([s[0] for s in scores])), float(np.mean([s[1] for s in scores]))


def _run_key(params: Params, fingerprint: str) -> str:
    blob = json.dumps({"train": params.train.model_dump(), "seed": params.base.seed, "data": fingerprint})
    return hashlib.sha256(blob.encode()).hexdigest()


def train(params: Params, data: Path, out: Path, curve: Path, resume_state: Path | None = None) -> dict:
    """Train the recipe's model; write ``out/checkpoint.pt`` and the curve CSV; return metrics."""
    tp = params.train
    torch.manual_seed(params.base.seed)
    torch.set_num_threads(params.base.threads)
    recipe = get_recipe(params.base.recipe)
    model_args = {"in_channels": 3, "width": tp.width, "depth": tp.depth}
    model = recipe.build_model(model_args).to(memory_format=torch.channels_last)
    multiple = recipe.multiple(model_args)
    synthetic = {row["name"] for row in read_json(data / "manifest.json")["samples"] if row.get("noise")}
    train_pairs = [(*p.load(), p.name in synthetic) for p in load_split(data, "train")]
    val_pairs = [p.load() for p in load_split(data, "val")]
    too_small = [p for p, (c, *_) in zip(load_split(data, "train"), train_pairs) if min(c.shape[:2]) < tp.crop]
    if too_small:
        raise DataError(
            f"{too_small[0].clean}: {too_small[0].clean.name} is smaller than train.crop={tp.crop}; "
            "lower train.crop or drop the image"
        )
    fingerprint = data_fingerprint(data)
    key = _run_key(params, fingerprint)

    opt = torch.optim.Adam(model.parameters(), lr=tp.lr)
    total = tp.epochs * tp.steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (tp.lr_min + 0.5 * (tp.lr - tp.lr_min) * (1 + math.cos(math.pi * s / total))) / tp.lr
    )
    rng = np.random.default_rng(params.base.seed)
    fresh = params.ingest.noise if tp.fresh_noise else None
    leaves = leaf_images(params) if tp.dead_leaves and fresh is not None else None
    rows: list[dict] = []
    start_epoch, resumed_from = 0, None
    # The weight average (when train.ema > 0) is what is validated and saved: a short cosine run's last
    # iterates are noisy, their average is a better denoiser.
    ema = torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=ema_with_warmup(tp.ema)) if tp.ema else None
    state = load_state(resume_state, key, model, opt, sched, rng)
    if state is not None:
        rows, start_epoch, resumed_from = state["rows"], state["epoch"], state["epoch"]
        if ema is not None:
            ema.load_state_dict(state["ema"])
    best = ema.module if ema is not None else model

    # bf16 autocast runs the convolutions on the CPU's bf16 units (AVX512-BF16 / AMX), ~1.7x per step
    # here; the weights, the optimizer, the weight average and the global residual add stay fp32.
    precision = train_precision(tp.precision)
    bf16 = precision == "bf16"
    t0 = time.perf_counter()
    model.train()
    val_psnr = rows[-1]["val_psnr"] if rows else float("nan")
    columns = [TextColumn("train"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
               TextColumn("loss {task.fields[loss]:.4f}  val {task.fields[val]:.2f} dB"),
               TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task("train", total=total, completed=start_epoch * tp.steps_per_epoch, loss=0.0, val=val_psnr)
        for epoch in range(start_epoch, tp.epochs):
            losses = []
            for _ in range(tp.steps_per_epoch):
                noisy, clean = random_batch(train_pairs, rng, tp.batch_size, tp.crop, fresh, tp.tint,
                                            leaves, tp.dead_leaves)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    denoised = model(noisy)
                loss = pixel_loss(denoised.float(), clean, noisy, tp.loss)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                if ema is not None:
                    ema.update_parameters(model)
                losses.append(loss.item())
                bar.update(task, advance=1, loss=float(np.mean(losses[-20:])))
            if (epoch + 1) % tp.val_every == 0 or epoch + 1 == tp.epochs:
                val_psnr, _ = _validate(best, val_pairs, multiple, tp.val_max_side)
                bar.update(task, val=val_psnr)
            rows.append({"step": (epoch + 1) * tp.steps_per_epoch, "epoch": epoch + 1,
                         "loss": float(np.mean(losses)), "val_psnr": val_psnr, "lr": sched.get_last_lr()[0]})
            if resume_state is not None:
                save_state(resume_state, key, model, opt, sched, rng, epoch=epoch + 1, rows=rows,
                           ema=ema.state_dict() if ema is not None else None)
    wall = time.perf_counter() - t0

    final_psnr, final_ssim = _validate(best, val_pairs, multiple, 0)
    noisy_psnr = float(np.mean([psnr(c, n) for c, n in val_pairs]))
    out.mkdir(parents=True, exist_ok=True)
    save_torch(out / "checkpoint.pt", {"recipe": recipe.name, "model_args": model_args,
                                  "state_dict": best.state_dict(), "data_fingerprint": fingerprint,
                                  "params": {"train": tp.model_dump(), "seed": params.base.seed},
                                  "precision": precision})
    curve.parent.mkdir(parents=True, exist_ok=True)
    lines = ["step,epoch,loss,val_psnr,lr"] + [
        f"{r['step']},{r['epoch']},{r['loss']:.6f},{r['val_psnr']:.4f},{r['lr']:.6g}" for r in rows
    ]
    atomic_write_bytes(curve, ("\n".join(lines) + "\n").encode())
    if resume_state is not None:
        resume_state.unlink(missing_ok=True)
    return {
        "val_psnr": final_psnr,
        "val_ssim": final_ssim,
        "val_noisy_psnr": noisy_psnr,
        "final_loss": rows[-1]["loss"],
        "steps": total,
        "wall_s": wall,
        "resumed_from_epoch": resumed_from,
        "params_m": sum(p.numel() for p in best.parameters()) / 1e6,
        "precision": precision,  # what training computed in; the saved weights are fp32 either way
        "source": "float PyTorch model on the whole val images (measured)",
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--validated", type=Path, required=True, help="metrics of the validate stage")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--metrics", type=Path, required=True)
    ap.add_argument("--curve", type=Path, required=True)
    ap.add_argument("--resume-state", type=Path, default=Path(".greenpipe/train-resume.pt"))
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)

    def stage(params: Params) -> dict:
        if not read_json(args.validated).get("success", False):
            raise DataError(f"{args.validated}: the data did not pass validation; see reports/validate")
        return train(params, args.data, args.out, args.curve, args.resume_state)

    run_stage(stage, args.params, args.metrics)


if __name__ == "__main__":
    main()
