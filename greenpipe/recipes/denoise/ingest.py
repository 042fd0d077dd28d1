"""The denoise recipe's ingest: raw dataset (any layout greenpipe reads) -> the prepared layout.

The ``ingest`` stage (``python -m tasks.ingest``) runs :func:`ingest`.  It reads
the raw folder with greenpipe.data.readers (``ingest.layout``, "auto" =
detect), splits it into train/val by whole group (a source image or a SIDD
scene never spans both), brings every image to at most ``ingest.max_side``
pixels with H and W multiples of 8, synthesises camera noise for clean-only
samples (greenpipe.data.noise), writes the layout of greenpipe.data.prepared
and measures the noisy PSNR of each split.  Params read: ``base.seed``,
``ingest``.

Size rule: clean-only images are down-scaled (anti-aliased Lanczos) *before*
noise is added, so the noise stays at full strength.  Real noisy/clean pairs
(sidd, paired) are centre-cropped instead: down-scaling would average the
real sensor noise away (an 8x reduction cuts its sigma ~8x).

Built-in data: every train image gets ``BUILTIN_TRAIN_REALISATIONS`` noisy
realisations (``<stem>_n0`` ... ``<stem>_n3``), each with its own camera and
noise draw, because the sample has only a handful of photographs; each val
image gets one (``<stem>_n0``) so that val scores weigh every image once.

The result is written to a temporary folder beside ``out`` and renamed into
place at the end: a failed run leaves the previous ``out`` intact.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from greenpipe.data.noise import synthesize_pair
from greenpipe.data.prepared import SPLITS, center_crop
from greenpipe.data.readers import Sample, detect_layout, load_rgb, read_samples
from greenpipe.errors import DataError
from greenpipe.io import dir_sha256, replacing_dir, write_image, write_json
from greenpipe.params import Params
from greenpipe.recipes.denoise.metrics import psnr

BUILTIN_TRAIN_REALISATIONS = 4
# H and W of every prepared image are multiples of this: the UNet downsamples
# 2**depth times and the Bayer mosaic needs even sides.
MULTIPLE = 8


def split_groups(
    groups: list[str], val_sources: tuple[str, ...], val_fraction: float, seed: int
) -> tuple[dict[str, str], str]:
    """Assign each group to "train" or "val"; return (group -> split, rule used).

    Rule "val_sources" when every named group is present and at least one
    group is left for train; otherwise "seeded": ``round(val_fraction * n)``
    groups (at least 1, at most n - 1), drawn with ``seed``.
    """
    groups = sorted(set(groups))
    if len(groups) < 2:
        raise DataError(
            f"only {len(groups)} source image/scene ({', '.join(groups) or 'none'}); train and val need "
            "different ones, so add at least one more image to the raw data"
        )
    held = set(val_sources)
    if held and held <= set(groups) and len(held) < len(groups):
        return {g: "val" if g in held else "train" for g in groups}, "val_sources"
    n_val = min(max(1, round(val_fraction * len(groups))), len(groups) - 1)
    val = set(np.random.default_rng(seed).permutation(groups)[:n_val].tolist())
    return {g: "val" if g in val else "train" for g in groups}, "seeded"


def resize_max_side(img: np.ndarray, max_side: int) -> np.ndarray:
    """Anti-aliased down-scale of (H, W, 3) so the longer side is ``max_side`` (0 or smaller = keep)."""
    from PIL import Image

    h, w = img.shape[:2]
    if max_side <= 0 or max(h, w) <= max_side:
        return img
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # PIL wants (W, H)
    # Lanczos in PIL widens its support by the scale factor: a proper low-pass,
    # no aliasing; float ("F") planes keep 16-bit sources exact.
    planes = [
        np.asarray(Image.fromarray(img[..., c], mode="F").resize(size, Image.Resampling.LANCZOS))
        for c in range(3)
    ]
    return np.clip(np.stack(planes, axis=-1), 0.0, 1.0).astype(np.float32)


def crop_to_multiple(img: np.ndarray, multiple: int, source: Path) -> np.ndarray:
    """Centre-crop (H, W, C) so H and W are multiples of ``multiple`` (a few pixels at most)."""
    h, w = img.shape[:2]
    th, tw = h - h % multiple, w - w % multiple
    if th == 0 or tw == 0:
        raise DataError(f"{source}: {h}x{w} px is too small; images need at least {multiple}x{multiple} px")
    top, left = (h - th) // 2, (w - tw) // 2
    return img[top : top + th, left : left + tw]


def _quantized(img: np.ndarray) -> np.ndarray:
    """What write_image stores, back as float: PSNRs are measured on the written files."""
    return np.round(np.clip(img, 0.0, 1.0) * 255.0) / 255.0


def _outputs(
    sample: Sample, split: str, layout: str, params: Params
) -> list[tuple[str, np.ndarray, np.ndarray, dict | None]]:
    """(name, clean, noisy, drawn noise or None) for every prepared image one raw sample yields."""
    max_side = params.ingest.max_side
    clean = load_rgb(sample.clean)
    if sample.noisy is not None:
        noisy = load_rgb(sample.noisy)
        if clean.shape != noisy.shape:
            raise DataError(
                f"{sample.noisy}: {noisy.shape[1]}x{noisy.shape[0]} px but its clean image {sample.clean} is "
                f"{clean.shape[1]}x{clean.shape[0]} px; a pair must be pixel-aligned"
            )
        clean, noisy = (
            crop_to_multiple(center_crop(a, max_side), MULTIPLE, sample.clean) for a in (clean, noisy)
        )
        return [(sample.name, clean, noisy, None)]

    clean = crop_to_multiple(resize_max_side(clean, max_side), MULTIPLE, sample.clean)
    noise = params.ingest.noise
    if layout == "builtin":
        names = [f"{sample.name}_n{k}" for k in range(BUILTIN_TRAIN_REALISATIONS if split == "train" else 1)]
    else:
        names = [sample.name]
    out = []
    for name in names:
        # Seeded by the output name, not a running index: adding an image to
        # the raw data leaves every other sample's noise unchanged.
        rng = np.random.default_rng([params.base.seed + noise.seed_offset, zlib.crc32(name.encode())])
        target, noisy, drawn = synthesize_pair(clean, rng, noise.shot, noise.read)
        out.append((name, target, noisy, drawn))
    return out


def ingest(params: Params, raw: Path, out: Path) -> dict:
    """Prepare ``raw`` into ``out``; return metrics (layout, split rule, per-split samples, groups, noisy PSNR in dB)."""
    from rich.console import Console
    from rich.progress import track

    raw, out = Path(raw), Path(out)
    layout = detect_layout(raw) if params.ingest.layout == "auto" else params.ingest.layout
    samples = read_samples(raw, layout)
    split_of, split_by = split_groups(
        [s.group for s in samples], params.ingest.val_sources, params.ingest.val_fraction, params.base.seed
    )

    rows: list[dict] = []
    psnrs: dict[str, list[float]] = {s: [] for s in SPLITS}
    with replacing_dir(out) as tmp:
        console = Console(stderr=True)
        # Only on a terminal: in a log the bar would be a stray line.
        for sample in track(samples, description="ingest", console=console, disable=not console.is_terminal):
            split = split_of[sample.group]
            for name, clean, noisy, drawn in _outputs(sample, split, layout, params):
                write_image(tmp / split / "clean" / f"{name}.png", clean)
                write_image(tmp / split / "noisy" / f"{name}.png", noisy)
                psnrs[split].append(psnr(_quantized(clean), _quantized(noisy)))
                rows.append(
                    {
                        "name": name,
                        "split": split,
                        "group": sample.group,
                        "source": sample.clean.relative_to(raw).as_posix(),
                        "height": clean.shape[0],
                        "width": clean.shape[1],
                        "noise": drawn,
                    }
                )
        names = [r["name"] for r in rows]
        if len(set(names)) != len(names):
            dupes = sorted({n for n in names if names.count(n) > 1})
            raise DataError(
                f"{raw}: several raw images map to the sample name(s) {', '.join(dupes)}; rename them"
            )
        counts = {s: sum(r["split"] == s for r in rows) for s in SPLITS}
        groups = {s: sorted(g for g, gs in split_of.items() if gs == s) for s in SPLITS}
        synthetic = any(r["noise"] is not None for r in rows)
        manifest = {
            "layout": layout,
            "split_by": split_by,
            "splits": counts,
            "groups": groups,
            "max_side": params.ingest.max_side,
            "seed": params.base.seed,
            "noise": (
                {
                    "model": "unprocess / add shot+read noise / process (Brooks et al. 2019), greenpipe.data.noise",
                    "shot": list(params.ingest.noise.shot),
                    "read": list(params.ingest.noise.read),
                    "seed_offset": params.ingest.noise.seed_offset,
                    "train_realisations": BUILTIN_TRAIN_REALISATIONS if layout == "builtin" else 1,
                }
                if synthetic
                else None
            ),
            "samples": rows,
        }
        # The later stages depend on manifest.json alone (dvc.yaml): its digest of every sample file
        # changes whenever one does, and DVC checks one file per stage instead of every image.
        sha, count = dir_sha256(tmp)
        manifest["digest"] = {"sha256": sha, "files": count}
        write_json(tmp / "manifest.json", manifest)

    def mean(values: list[float]) -> float | None:
        finite = [v for v in values if np.isfinite(v)]
        return round(float(np.mean(finite)), 3) if finite else None

    return {
        "layout": layout,
        "split_by": split_by,
        **{s: {"samples": counts[s], "groups": len(groups[s]), "noisy_psnr": mean(psnrs[s])} for s in SPLITS},
    }
