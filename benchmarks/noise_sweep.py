"""Where does the trained UNet win or lose against non-local means? A sweep over the camera-noise level.

    python benchmarks/noise_sweep.py                       # the DVC outputs: trained UNet, val split, tuned NLM
    python benchmarks/noise_sweep.py --shots 5e-4 2e-3 --seed 3

For every val image (the clean targets under artifacts/prepared) and every
shot-noise level, one fresh camera-noise draw is made exactly as ingest makes
it (greenpipe.data.noise; read noise on the same shot -> read line as
``ingest.noise``) and three PSNRs are measured: the noisy input, the float UNet
(models/denoise/checkpoint.pt, PyTorch, whole image) and non-local means at the
strength the ``baseline`` stage tuned (metrics/baseline.json).  A last row per
image feeds the UNet the *clean* image: a denoiser that leaves signal alone
scores far above 40 dB there; a lower figure is detail the network removes as
if it were noise.  Luma / chroma PSNRs split the error the way the eye does.
Everything is measured on this machine's CPU; nothing is estimated.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from greenpipe.data.noise import log_read_on_line, synthesize_pair
from greenpipe.data.prepared import load_split
from greenpipe.io import read_json
from greenpipe.params import load_params
from greenpipe.recipes.base import model_from_checkpoint
from greenpipe.recipes.denoise import denoise_image
from greenpipe.recipes.denoise.baseline import METHODS
from greenpipe.recipes.denoise.metrics import psnr

LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def luma_chroma_psnr(clean: np.ndarray, out: np.ndarray) -> tuple[float, float]:
    """PSNR of the luma (BT.601 weights) and of the chroma (the rest) of ``out`` against ``clean``."""
    yc, yo = clean @ LUMA, out @ LUMA
    cc, co = clean - yc[..., None], out - yo[..., None]
    return (float(10 * np.log10(1 / max(np.mean((yc - yo) ** 2), 1e-12))),
            float(10 * np.log10(1 / max(np.mean((cc - co) ** 2), 1e-12))))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=Path("models/denoise/checkpoint.pt"))
    ap.add_argument("--data", type=Path, default=Path("artifacts/prepared"))
    ap.add_argument("--baseline", type=Path, default=Path("metrics/baseline.json"))
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--shots", type=float, nargs="+", default=[5e-4, 1e-3, 2e-3, 4e-3])
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    missing = [p for p in (args.checkpoint, args.data, args.baseline) if not p.exists()]
    if missing:
        sys.exit(f"noise_sweep: {', '.join(map(str, missing))} missing; run `dvc repro train baseline` first")

    params = load_params(args.params)
    noise = params.ingest.noise
    torch.set_num_threads(params.base.threads)
    net, _ = model_from_checkpoint(args.checkpoint)
    nlm = METHODS["nlm"][0](float(read_json(args.baseline)["nlm"]["strength"]))

    def unet(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return denoise_image(lambda a: net(torch.from_numpy(a)).numpy(), x, 8)

    print(f"{'image':<12} {'shot':>8} {'noisy':>7} {'UNet':>7} {'NLM':>7}   UNet Y / C      NLM Y / C")
    for sample in load_split(args.data, "val"):
        clean, _ = sample.load()
        for shot in args.shots:
            rng = np.random.default_rng(args.seed)
            read = float(np.exp(log_read_on_line(np.log(shot), noise.shot, noise.read)))
            ref, noisy, _ = synthesize_pair(clean, rng, (shot, shot), (read, read))
            noisy = np.clip(clean + (noisy - ref), 0.0, 1.0).astype(np.float32)  # same residual as training
            u, n = unet(noisy), nlm(noisy)
            (uy, uc), (ny, nc) = luma_chroma_psnr(clean, u), luma_chroma_psnr(clean, n)
            print(f"{sample.name:<12} {shot:>8.0e} {psnr(clean, noisy):7.2f} {psnr(clean, u):7.2f} "
                  f"{psnr(clean, n):7.2f}   {uy:5.2f} / {uc:5.2f}   {ny:5.2f} / {nc:5.2f}")
        u = unet(clean)
        uy, uc = luma_chroma_psnr(clean, u)
        print(f"{sample.name:<12} {'clean':>8} {'inf':>7} {psnr(clean, u):7.2f} {'':>7}   {uy:5.2f} / {uc:5.2f}")
    print(f"\nmeasured on this CPU: float UNet {args.checkpoint} (PyTorch), NLM scikit-image at the tuned strength; "
          f"one noise draw per level (seed {args.seed}), whole val images")


if __name__ == "__main__":
    main()
