"""``greenpipe vitis-bundle``: the folder a Vitis AI container quantizes and compiles, with nothing of greenpipe.

Layout (``BUNDLE``)::

    bundle.json          # what is here: recipe, model_args, input shape, DPU target, file names, sha256 of each
    model.py             # the float model as plain PyTorch (greenpipe.vitis.torch_source): class + load(weights)
    weights.npz          # its state dict, flat names, numpy arrays (no pickle)
    calib/arrays.npz     # the calibration samples at the model input, as the calib dump holds them
    calib/manifest.json  #   (same entries, sources and statistics: greenpipe.calib's format)
    reference.npz        # input: one sample at the deployed shape; output: greenpipe's float model on it
    arch.json            # the DPU's arch file (vai_c_xir -a)
    vai_quantize.py      # the script run in the container (greenpipe/vitis/vai_quantize.py)

The bundle is written whole or not at all (a failure leaves an earlier one as it was).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from greenpipe.calib import BoundaryWriter, boundaries, check_finite, read_manifest, iter_boundary
from greenpipe.errors import GreenpipeError
from greenpipe.io import files_sha256, replacing_dir, write_json

SCRIPT = Path(__file__).with_name("vai_quantize.py")
FILES = {"model_file": "model.py", "weights_file": "weights.npz", "reference_file": "reference.npz",
         "arch_file": "arch.json", "script_file": "vai_quantize.py",
         "calib_archive": "calib/arrays.npz", "calib_manifest": "calib/manifest.json"}
NET_NAME = "model"  # vai_c_xir -n: the compiled file is compiled/model.xmodel, as the xmodel compile target names it


def fit(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``x`` (N, C, h, w) centre-cropped and reflect-padded to ``shape``'s H, W (N and C must agree)."""
    if x.shape[:2] != tuple(shape[:2]):
        raise GreenpipeError(f"a calibration sample of shape {tuple(x.shape)} does not fit the deployed input "
                             f"{tuple(shape)} (batch and channels differ)")
    for axis, size in ((2, shape[2]), (3, shape[3])):
        extra = x.shape[axis] - size
        if extra > 0:
            x = np.take(x, range(extra // 2, extra // 2 + size), axis=axis)
        elif extra < 0:
            pad = [(0, 0)] * 4
            pad[axis] = (0, -extra)
            x = np.pad(x, pad, mode="reflect" if x.shape[axis] > 1 else "edge")
    return np.ascontiguousarray(x, dtype=np.float32)


def _model_boundary(calib: Path, recipe, model) -> str:
    """The one boundary of the dump, which must be the model input (a single-graph recipe)."""
    names = boundaries(calib)
    cut = recipe.boundaries(model)
    if len(names) != 1 or list(cut) != names or cut[names[0]] is not None:
        raise GreenpipeError(
            f"{calib}: boundaries {names}, recipe {recipe.name} cuts at {list(cut)}: the Vitis bundle takes a "
            "single-graph PyTorch model calibrated at its input (one boundary); per-kernel models such as "
            "the video recipe's Keras TSM kernels are not bundled yet")
    return names[0]


def arch_target(arch: Path) -> str:
    """The DPU target an arch.json names (``{"target": "DPUCZDX8G_ISA1_B4096"}``)."""
    from greenpipe.io import read_json

    try:
        target = read_json(arch).get("target")
    except FileNotFoundError:
        raise GreenpipeError(f"{arch}: no such arch file; pass one of infra/arch/*/*/arch.json") from None
    except ValueError as exc:
        raise GreenpipeError(f"{arch}: not JSON ({exc}); pass one of infra/arch/*/*/arch.json") from None
    if not isinstance(target, str) or not target:
        raise GreenpipeError(f"{arch}: names no DPU target (expected {{\"target\": \"DPUCZDX8G_ISA1_B4096\"}}, "
                             "the form of infra/arch/*/*/arch.json)")
    return target


def write_bundle(checkpoint: Path, calib: Path, arch: Path, out: Path, input_size: int, samples: int = 0) -> dict:
    """Write the bundle for ``checkpoint``'s float model under ``out``; return ``bundle.json``'s content.

    ``calib``: its calibration dump (one boundary, the model input); ``arch``: the DPU's arch.json;
    ``input_size``: H = W of the deployed input (the recipe's bench input); ``samples``: how many
    calibration samples to bundle (0 = all).
    """
    import torch

    from greenpipe.recipes.base import get_recipe, model_from_checkpoint
    from greenpipe.vitis.torch_source import model_source

    checkpoint, calib, arch, out = Path(checkpoint), Path(calib), Path(arch), Path(out)
    target = arch_target(arch)
    model, ckpt = model_from_checkpoint(checkpoint)
    recipe = get_recipe(ckpt["recipe"])
    boundary = _model_boundary(calib, recipe, model)
    limit = samples or None
    check_finite(calib, boundary, limit)
    shape = tuple(recipe.bench_input(ckpt["model_args"], input_size))
    source = model_source(model, f"{type(model).__name__} of greenpipe recipe {recipe.name}, model_args "
                                 f"{ckpt['model_args']}, from {checkpoint}.")
    first = next(iter_boundary(calib, boundary, 1), None)
    if first is None:
        raise GreenpipeError(f"{calib / boundary}: no calibration samples; rerun the calibration dump")
    x = fit(first, shape)
    with torch.no_grad():
        y = model(torch.from_numpy(x)).numpy()
    sources = read_manifest(calib, boundary).get("sources", [])
    with replacing_dir(out) as tmp:
        (tmp / FILES["model_file"]).write_text(source.source)
        np.savez(tmp / FILES["weights_file"], **source.weights)
        np.savez(tmp / FILES["reference_file"], input=x, output=y)
        shutil.copyfile(arch, tmp / FILES["arch_file"])
        shutil.copyfile(SCRIPT, tmp / FILES["script_file"])
        writer = BoundaryWriter(tmp, "calib")
        try:
            for k, array in enumerate(iter_boundary(calib, boundary, limit)):
                writer.add(np.asarray(array, dtype=np.float32), sources[k] if k < len(sources) else f"sample {k}")
        finally:
            calib_manifest = writer.close()
        manifest = {
            "recipe": recipe.name,
            "model_args": ckpt["model_args"],
            "model_class": source.class_name,
            "checkpoint": str(checkpoint),
            "calibration": {"dump": str(calib), "boundary": boundary, "samples": calib_manifest["count"]},
            "input_shape": list(shape),
            "dpu_target": target,
            "arch": str(arch),
            "net_name": NET_NAME,
            "exported_with": {"torch": torch.__version__},
            **FILES,
            "sha256": {name: files_sha256([tmp / name]) for name in FILES.values()},
        }
        write_json(tmp / "bundle.json", manifest)
    return manifest
