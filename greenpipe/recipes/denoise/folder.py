"""Denoise a folder of the user's images with a compiled artifact, losing nothing (``greenpipe denoise``).

What it guarantees (the README repeats this for users):

- one output per input: inputs whose names differ only in suffix or case
  (``a.jpg``, ``a.png``, ``A.PNG``) would write one ``a.png``, so they are
  refused before any work, all named;
- inputs are never overwritten: an output folder that is the input folder
  (also through a symlink or another spelling of the path) is refused unless
  ``in_place``, which moves each original into ``IN_DIR/originals/`` before
  its output takes its place, and skips inputs already done there on a rerun;
- samples keep their depth and channels: 8-bit in, 8-bit PNG out; 16-bit PNG
  or TIFF in (full range), 16-bit PNG out; alpha is copied through untouched;
  gray stays gray (gray with alpha comes back RGBA: OpenCV reads it so);
- bounded memory: the decoded image in its own sample type (OpenCV holds a
  second copy while it decodes), one band of output rows and one tile in
  float32; the PNG is encoded band by band as the tiles finish (never a float
  copy of the whole image, nor a whole output);
- the output folder is checked (created, writable, roughly enough free space)
  before any image is decoded; each output is written to a hidden temporary
  file and renamed when whole, so a write that fails (disk full) stops the
  run with one message, leaves no partial output, and a rerun completes.

Images are read with OpenCV (Pillow reads 16-bit RGB as 8 bits), kept in its BGR(A)
order; the model sees RGB through a reversed-channel view.  Outputs are written by
:func:`greenpipe.io.write_png_bands`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from greenpipe.errors import GreenpipeError
from greenpipe.io import atomic_file, read_json, write_png_bands
from greenpipe.recipes.denoise import denoise_bands, from_unit

ORIGINALS = "originals"  # in-place runs move each original here, inside IN_DIR


@dataclass(frozen=True)
class Job:
    """One input and where its output goes."""

    src: Path
    dst: Path


@dataclass(frozen=True)
class Geometry:
    """How a model's input must be cut: sides a multiple of ``multiple``, ``context`` px around each tile."""

    multiple: int
    context: int


def model_geometry(model: Path) -> Geometry:
    """The tiling geometry of ``model`` (an ONNX UNet) from the ``compile_report.json`` the compile stage
    wrote beside it: inputs padded to ``2**depth``, tiles carrying the UNet's reach rounded up to that."""
    from greenpipe.models.unet import UNetConfig

    report = model.parent / "compile_report.json"
    if not report.exists():
        raise GreenpipeError(f"{report}: missing, so the model's depth (hence its receptive field and the tile "
                             "context it needs) is unknown; pass a model.onnx from a compile stage output "
                             "(it writes compile_report.json beside it)")
    try:
        config = UNetConfig(**read_json(report)["model_args"])
    except (KeyError, TypeError, ValueError) as exc:
        raise GreenpipeError(f"{report}: no valid 'model_args' ({exc}); rerun the compile stage") from None
    m = config.multiple
    return Geometry(multiple=m, context=-(-config.reach // m) * m)


def _same_folder(a: Path, b: Path) -> bool:
    if b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def plan(in_dir: Path, out_dir: Path, in_place: bool, suffixes: frozenset[str]) -> tuple[list[Job], list[Path]]:
    """The jobs for the images in ``in_dir`` (hidden files left out) and the inputs skipped as already done.

    Refuses colliding names, and an ``out_dir`` that is ``in_dir`` unless ``in_place``.
    """
    if not in_dir.is_dir():
        raise GreenpipeError(f"{in_dir}: not a folder of images")
    images = sorted(p for p in in_dir.iterdir()
                    if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in suffixes)
    if not images:
        raise GreenpipeError(f"{in_dir}: no images ({', '.join(sorted(suffixes))})")
    by_stem: dict[str, list[Path]] = {}
    for p in images:
        by_stem.setdefault(p.stem.casefold(), []).append(p)
    clashes = [group for group in by_stem.values() if len(group) > 1]
    if clashes:
        lines = "\n  ".join(f"{' and '.join(p.name for p in g)} -> {g[0].stem}.png" for g in clashes)
        raise GreenpipeError(f"{in_dir}: these inputs would write the same output (names differ only in suffix "
                             f"or case):\n  {lines}\nrename one of each, or denoise them from separate folders")
    same = _same_folder(in_dir, out_dir)
    if same and not in_place:
        raise GreenpipeError(f"{out_dir}: is the input folder {in_dir}; its images would be overwritten. Pass "
                             f"another OUT_DIR, or --in-place to replace them and keep each original in "
                             f"{in_dir / ORIGINALS}/")
    if in_place and not same:
        raise GreenpipeError(f"--in-place: OUT_DIR {out_dir} is not IN_DIR {in_dir}; pass the same folder twice")
    done: set[str] = set()
    if in_place and (in_dir / ORIGINALS).is_dir():
        done = {p.stem.casefold() for p in (in_dir / ORIGINALS).iterdir()}
    skipped = [p for p in images if p.stem.casefold() in done]
    jobs = [Job(p, out_dir / f"{p.stem}.png") for p in images if p.stem.casefold() not in done]
    return jobs, skipped


def _output_bytes(path: Path) -> int:
    """Uncompressed size of ``path``'s output, from its header (no decoding); its file size when unreadable."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # a header is read, nothing decoded
            im = Image.open(path)
        with im:
            depth = 2 if "16" in str(im.tile[0][3] if im.tile else "") or im.mode.startswith("I;16") else 1
            return im.width * im.height * len(im.getbands()) * depth
    except Exception:  # cv2 may still decode it; the size on disk is the best guess left
        return path.stat().st_size


def check_output(out_dir: Path, jobs: list[Job]) -> None:
    """Create ``out_dir`` and prove it takes a file and has room for the outputs, before any work."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir, prefix=".greenpipe-probe-") as f:
            f.write(b"0")
            f.flush()
    except OSError as exc:
        raise GreenpipeError(f"{out_dir}: cannot write there ({exc.strerror or exc}); pass a folder you can "
                             "write to, or fix its permissions") from None
    need = sum(_output_bytes(j.src) for j in jobs)
    free = shutil.disk_usage(out_dir).free
    if free < need:
        raise GreenpipeError(
            f"{out_dir}: {free / 1e6:.1f} MB free, but the {len(jobs)} output(s) take up to {need / 1e6:.1f} MB "
            "(their uncompressed size, from the image headers; PNG is often smaller); free some space or "
            "denoise fewer images at a time")


def read_native(path: Path) -> np.ndarray:
    """Decode ``path`` as (H, W) or (H, W, 3|4) BGR(A), uint8 or uint16, as stored (no conversion)."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise GreenpipeError(f"{path}: cannot decode (not an image OpenCV reads, or truncated)")
    if img.dtype not in (np.uint8, np.uint16):
        raise GreenpipeError(f"{path}: {img.dtype} samples; 8- and 16-bit integer images are supported")
    if img.ndim == 3 and img.shape[2] not in (3, 4):
        raise GreenpipeError(f"{path}: {img.shape[2]} channels; gray, RGB and RGBA are supported")
    return img


def denoised_bands(run: Callable[[np.ndarray], np.ndarray], img: np.ndarray, tile: int,
                   geometry: Geometry) -> Iterator[np.ndarray]:
    """The denoised :func:`read_native` image, band by band top to bottom, in its sample type and PNG's
    channel order (gray, RGB, RGBA); alpha copied through untouched."""
    gray = img.ndim == 2
    rgb = np.broadcast_to(img[..., None], (*img.shape, 3)) if gray else img[..., 2::-1]  # views, no copy
    top = 0
    for band in denoise_bands(run, rgb, tile, geometry.context, geometry.multiple):
        rows = slice(top, top + len(band))
        top += len(band)
        if gray:  # the model saw three equal channels; the output keeps their mean
            yield from_unit(band.mean(axis=-1), img.dtype)
        elif img.shape[2] == 4:
            yield np.concatenate([from_unit(band, img.dtype), img[rows, :, 3:]], axis=-1)
        else:
            yield from_unit(band, img.dtype)


def denoise_to_png(run: Callable[[np.ndarray], np.ndarray], img: np.ndarray, tile: int, geometry: Geometry,
                   path: Path, before_replace: Callable[[], None] | None = None) -> None:
    """Denoise ``img`` into the PNG ``path``, streamed band by band into a temporary file renamed when whole."""
    channels = 1 if img.ndim == 2 else img.shape[2]
    with atomic_file(path, before_replace) as f:
        write_png_bands(f, img.shape[0], img.shape[1], channels, img.dtype,
                        denoised_bands(run, img, tile, geometry))


def denoise_folder(run: Callable[[np.ndarray], np.ndarray], jobs: list[Job], tile: int, geometry: Geometry,
                   in_place: bool = False, progress: Callable = iter) -> list[str]:
    """Denoise every job; return the inputs that could not be decoded (one line each).

    A write that fails (disk full, quota) stops the run with a GreenpipeError:
    the outputs written before it are whole, the failed one is absent.
    """
    failed = []
    for job in progress(jobs):
        try:
            img = read_native(job.src)
        except GreenpipeError as exc:  # one unreadable file must not stop the rest
            failed.append(str(exc))
            continue
        backup = job.src.parent / ORIGINALS / job.src.name
        try:
            if in_place:
                backup.parent.mkdir(exist_ok=True)
            denoise_to_png(run, img, tile, geometry, job.dst,
                           (lambda: os.replace(job.src, backup)) if in_place else None)
            del img  # before the next image is decoded
        except OSError as exc:
            raise GreenpipeError(
                f"{job.dst}: cannot write ({exc.strerror or exc}); nothing partial was left and the outputs "
                "written before it are whole. Free some space (or fix the folder) and run the same command "
                "again" + (": inputs already done are skipped" if in_place else "")) from None
    return failed
