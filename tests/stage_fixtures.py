"""A tiny quantize -> compile -> deploy workspace on disk, as plain functions.

Builds on tests/workspace.py (prepared dataset, checkpoint) and adds what the
stages after calib_dump read: a calibration dump at the model input and
validated Params with tiny durations.  Meant to be wrapped in fixtures by
tests/conftest.py; usable directly::

    ws = make_workspace(tmp_path)
    quantize_stage(ws.params, "ptq8", ws.model, ws.calib, ws.data, tmp_path / "quant")
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from greenpipe.calib import BoundaryWriter, write_index
from greenpipe.data.prepared import load_split
from greenpipe.params import Params, parse_params
from tests.workspace import TINY_MODEL_ARGS, make_checkpoint, make_prepared, tiny_params

ROOT = Path(__file__).resolve().parents[1]


def make_calib(root: Path, data: Path, count: int = 4, crop: int = 32, seed: int = 0) -> Path:
    """A calibration dump of ``count`` random noisy train crops at boundary ``input`` (1, 3, crop, crop)."""
    rng = np.random.default_rng(seed)
    pairs = load_split(data, "train")
    writer = BoundaryWriter(root, "input")
    for k in range(count):
        pair = pairs[k % len(pairs)]
        noisy = pair.load()[1]
        h, w = noisy.shape[:2]
        top, left = int(rng.integers(h - crop + 1)), int(rng.integers(w - crop + 1))
        x = np.ascontiguousarray(noisy[top : top + crop, left : left + crop].transpose(2, 0, 1)[None])
        writer.add(x.astype(np.float32), f"{pair.name}@{top},{left}+{crop}")
    writer.close()
    write_index(root, ["input"])
    return root


def stage_params(**sections: dict) -> Params:
    """The repository's params.yaml with the tiny overrides, plus ``sections`` merged in per key."""
    raw = tiny_params(yaml.safe_load((ROOT / "params.yaml").read_text()))
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return parse_params(raw, "tiny params")


def denoise_training(data: Path, **train: object):
    """What the quantize stage hands QAT (QuantContext.training): the denoise recipe's training task on ``data``.

    Built with the tiny params (train.crop 32, batch 2) and ``train`` merged in.
    """
    from functools import partial

    from greenpipe.recipes import get_recipe

    return partial(get_recipe("denoise").training, stage_params(train=train), data)


@dataclass(frozen=True)
class Workspace:
    root: Path
    data: Path  # prepared dataset
    model: Path  # directory holding checkpoint.pt
    calib: Path  # calibration dump
    params: Params


def make_workspace(
    root: Path, size: int = 48, calib_crop: int = 32, model_args: dict = TINY_MODEL_ARGS
) -> Workspace:
    """Prepared data (3 train / 2 val images of ``size`` px), an untrained tiny UNet, a calibration dump."""
    data = make_prepared(root / "prepared", size=size)
    model = root / "model"
    make_checkpoint(model, model_args)
    calib = make_calib(root / "calib", data, crop=calib_crop)
    return Workspace(root=root, data=data, model=model, calib=calib, params=stage_params())


def tiny_unet(seed: int = 0, model_args: dict = TINY_MODEL_ARGS):
    """An untrained tiny UNet (width 4, depth 2: inputs must be multiples of 4 px), eval mode."""
    import torch

    from greenpipe.models.unet import UNet, UNetConfig

    torch.manual_seed(seed)
    return UNet(UNetConfig(**model_args)).eval()


def calib_batches(count: int = 4, size: int = 32, seed: int = 0) -> list:
    """``count`` seeded (1, 3, size, size) tensors in [0, 1]: calibration data for unit tests."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(1, 3, size, size, generator=gen) for _ in range(count)]


def compiled_ptq8(root: Path):
    """A workspace whose ptq8 variant is quantized and compiled for cpu (``root/compiled/cpu``)."""
    from greenpipe.quant.stage import quantize_stage
    from tasks.compile import compile_stage

    ws = make_workspace(root)
    quantize_stage(ws.params, "ptq8", ws.model, ws.calib, ws.data, ws.root / "quant")
    compile_stage(ws.params, "ptq8", "cpu", ws.root / "quant", ws.data, ws.root / "compiled" / "cpu")
    return ws


def compiled_onnx(variant: str, out: Path, seed: int = 2) -> Path:
    """``tiny_unet(seed)`` quantized with ``variant`` (fp32 or ptq8, default keys), exported and built the way
    the ``onnx`` compile target builds it: ``out/model.onnx``."""
    import onnx

    from greenpipe.compile.onnx_cpu import build
    from greenpipe.quant import quantize_variant
    from greenpipe.quant.export import EXPORT_OPSET, export_onnx

    model = quantize_variant(variant, {variant: {}}, tiny_unet(seed=seed), calib_batches(seed=3)).model
    exported = onnx.load(export_onnx(model, calib_batches(1)[0], out))
    path = out / "model.onnx"
    onnx.save(build(exported, EXPORT_OPSET)[0], path)
    return path
