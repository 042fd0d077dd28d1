"""``greenpipe vitis-bundle``: the folder a Vitis AI container quantizes and compiles, with nothing of greenpipe.

Layout (``BUNDLE``)::

    bundle.json                  # what is here: recipe, model_args, framework, shapes, DPU target, files, sha256
    model.py                     # the float model as plain PyTorch (greenpipe.vitis.torch_source) or its
                                 #   kernels as tf.keras (greenpipe.vitis.keras_source); load("weights.npz")
    weights.npz                  # the weights, numpy arrays (no pickle)
    calib/<boundary>/arrays.npz  # the calibration samples at each boundary (the model input; each kernel
    calib/<boundary>/manifest.json  #   input), as the dump holds them: greenpipe.calib's format
    reference.npz                # inputs at the deployed shapes and greenpipe's float outputs on them
    arch.json                    # the DPU's arch file (vai_c_xir / vai_c_tensorflow2 -a)
    vai_quantize.py              # the script run in the container (greenpipe/vitis/vai_quantize.py)

A PyTorch checkpoint (``checkpoint.pt``: denoise, segment) gives one graph
calibrated at its input; a video checkpoint (``checkpoint.npz``: TSM in
Keras) gives its kernels, cut at every shift, each calibrated at its own
inputs. The bundle is written whole or not at all (a failure leaves an
earlier one as it was).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from greenpipe import tooling
from greenpipe.calib import BoundaryWriter, boundaries, check_finite, iter_boundary, read_manifest
from greenpipe.compile.vitis_dpu import EXTERNAL_TOOLS as VAI_C_XIR
from greenpipe.errors import GreenpipeError
from greenpipe.io import files_sha256, read_json, replacing_dir, write_json
from greenpipe.quant.vitis import EXTERNAL_TOOLS as VAI_Q_PYTORCH

SCRIPT = Path(__file__).with_name("vai_quantize.py")
FILES = {"model_file": "model.py", "weights_file": "weights.npz", "reference_file": "reference.npz",
         "arch_file": "arch.json", "script_file": "vai_quantize.py"}
CALIB_DIR = "calib"
NET_NAME = "model"  # vai_c_xir -n: compiled/model.xmodel, as the xmodel compile target names it

# The tools the bundle's script runs in the container (greenpipe.doctor lists them; none is needed here).
EXTERNAL_TOOLS = (*VAI_Q_PYTORCH, *VAI_C_XIR, tooling.Tool(
    "vai_q_tensorflow2 + vai_c_tensorflow2", "never",
    "nothing: no Vitis AI container here. tests/vitis/test_bundle.py checks the Keras bundle (its tf.keras "
    "kernels give greenpipe's outputs, its calibration data is the dump, its script's check step runs and its "
    "quantize steps stop naming tensorflow_model_optimization)",
    "greenpipe vitis-bundle models/video/tsm/checkpoint.npz artifacts/video/calib --arch "
    "infra/arch/DPUCZDX8G/ZCU104/arch.json --out B && infra/vitis/run.sh B ptq && infra/vitis/run.sh B fastft && "
    "infra/vitis/run.sh B qat",
    tooling.module("tensorflow_model_optimization")),)


@dataclass
class Export:
    """What one framework's export puts in a bundle besides the shared files."""

    framework: str  # "torch" | "keras"
    source: str  # model.py
    weights: dict[str, np.ndarray]
    reference: dict[str, np.ndarray]
    boundaries: list[str]  # calibration boundaries to bundle, in pipeline order
    facts: dict[str, Any] = field(default_factory=dict)  # bundle.json keys of this framework


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


def _first(calib: Path, boundary: str) -> np.ndarray:
    first = next(iter_boundary(calib, boundary, 1), None)
    if first is None:
        raise GreenpipeError(f"{calib / boundary}: no calibration samples; rerun the calibration dump")
    return np.asarray(first, dtype=np.float32)


def _torch_export(checkpoint: Path, calib: Path, input_size: int) -> Export:
    """A single-graph PyTorch model calibrated at its input (one boundary)."""
    import torch

    from greenpipe.recipes.base import get_recipe, model_from_checkpoint
    from greenpipe.vitis.torch_source import model_source

    model, ckpt = model_from_checkpoint(checkpoint)
    recipe = get_recipe(ckpt["recipe"])
    names, cut = boundaries(calib), recipe.boundaries(model)
    if len(names) != 1 or list(cut) != names or cut[names[0]] is not None:
        raise GreenpipeError(
            f"{calib}: boundaries {names}, recipe {recipe.name} cuts at {list(cut)}: a PyTorch bundle takes a "
            "single-graph model calibrated at its input (one boundary); pass the model's own calibration dump")
    shape = tuple(recipe.bench_input(ckpt["model_args"], input_size))
    source = model_source(model, f"{type(model).__name__} of greenpipe recipe {recipe.name}, model_args "
                                 f"{ckpt['model_args']}, from {checkpoint}.")
    x = fit(_first(calib, names[0]), shape)
    with torch.no_grad():
        y = model(torch.from_numpy(x)).numpy()
    return Export("torch", source.source, source.weights, {"input": x, "output": y}, names,
                  {"recipe": recipe.name, "model_args": ckpt["model_args"], "model_class": source.class_name,
                   "input_shape": list(shape), "net_name": NET_NAME,
                   "exported_with": {"torch": torch.__version__}})


def _keras_export(checkpoint: Path, calib: Path) -> Export:
    """A video checkpoint's kernels (split at every shift), each calibrated at its own inputs."""
    import keras

    from greenpipe.models.tsm_tf import load_checkpoint, split_models
    from greenpipe.vitis.keras_source import kernels_source

    net, header = load_checkpoint(checkpoint)
    kernels, manifest = split_models(net)
    wanted = [i["name"] for k in manifest["kernels"] for i in k["inputs"]]
    names = boundaries(calib)
    if sorted(names) != sorted(wanted):
        raise GreenpipeError(f"{calib}: boundaries {names}, but the kernels of {checkpoint} take {wanted}; pass "
                             "the calibration dump of this checkpoint (dvc repro video_calib)")
    source = kernels_source(kernels, f"The {len(kernels)} kernels of greenpipe recipe {header['recipe']}, "
                                     f"model_args {header['model_args']}, from {checkpoint}.")
    reference = {}
    for model, entry in zip(kernels, manifest["kernels"]):
        xs = [_first(calib, i["name"]) for i in entry["inputs"]]
        reference.update({f"{entry['name']}/{i['name']}": x for i, x in zip(entry["inputs"], xs)})
        reference[f"{entry['name']}/output"] = np.asarray(model(xs if len(xs) > 1 else xs[0], training=False))
    return Export("keras", source.source, source.weights, reference, wanted,
                  {"recipe": header["recipe"], "model_args": header["model_args"], "kernels": manifest["kernels"],
                   "split": {k: v for k, v in manifest.items() if k != "kernels"},
                   "exported_with": {"keras": keras.__version__}})


def arch_target(arch: Path) -> str:
    """The DPU target an arch.json names (``{"target": "DPUCZDX8G_ISA1_B4096"}``)."""
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

    ``calib``: its calibration dump; ``arch``: the DPU's arch.json; ``input_size``: H = W of a
    PyTorch model's deployed input (the recipe's bench input; a Keras kernel's shape is its own);
    ``samples``: calibration samples to bundle per boundary (0 = all).
    """
    checkpoint, calib, arch, out = Path(checkpoint), Path(calib), Path(arch), Path(out)
    target = arch_target(arch)
    export = _keras_export(checkpoint, calib) if checkpoint.suffix == ".npz" else \
        _torch_export(checkpoint, calib, input_size)
    limit = samples or None
    for boundary in export.boundaries:
        check_finite(calib, boundary, limit)
    with replacing_dir(out) as tmp:
        (tmp / FILES["model_file"]).write_text(export.source)
        np.savez(tmp / FILES["weights_file"], **export.weights)
        np.savez(tmp / FILES["reference_file"], **export.reference)
        shutil.copyfile(arch, tmp / FILES["arch_file"])
        shutil.copyfile(SCRIPT, tmp / FILES["script_file"])
        counts = {}
        for boundary in export.boundaries:
            sources = read_manifest(calib, boundary).get("sources", [])
            writer = BoundaryWriter(tmp / CALIB_DIR, boundary)
            try:
                for k, array in enumerate(iter_boundary(calib, boundary, limit)):
                    writer.add(np.asarray(array, dtype=np.float32), sources[k] if k < len(sources) else f"sample {k}")
            finally:
                counts[boundary] = writer.close()["count"]
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        manifest = {
            "framework": export.framework,
            **export.facts,
            "checkpoint": str(checkpoint),
            "calibration": {"dump": str(calib), "dir": CALIB_DIR, "boundaries": export.boundaries,
                            "samples": counts},
            "dpu_target": target,
            "arch": str(arch),
            **FILES,
            "sha256": {str(p.relative_to(tmp)): files_sha256([p]) for p in files},
        }
        write_json(tmp / "bundle.json", manifest)
    return manifest
