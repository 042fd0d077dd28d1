"""Variants ``vitis_ptq``, ``vitis_fastft``, ``vitis_qat``: adapters over AMD's vai_q_pytorch.

They follow vai_q_pytorch's documented call sequence (Vitis AI 3.0 user
guide, UG1414, "vai_q_pytorch"), so the xmodel the Vitis compiler takes
comes from AMD's own quantizer rather than greenpipe's Brevitas emulation:

* ``vitis_ptq``: ``torch_quantizer("calib", model, (dummy,), output_dir, device)``,
  forward the calibration batches through ``quantizer.quant_model``,
  ``export_quant_config()``; then ``torch_quantizer("test", ...)``, one
  forward, ``export_xmodel(output_dir, deploy_check=False)`` (and
  ``export_onnx_model`` when this vai_q_pytorch has it);
* ``vitis_fastft``: as ``vitis_ptq`` plus ``quantizer.fast_finetune(evaluate,
  (quant_model, batches, loss))`` in calib mode and ``load_ft_param()`` in
  test mode (AdaQuant-style fast finetune);
* ``vitis_qat``: ``QatProcessor(model, (dummy,), bitwidth=8)``,
  ``trainable_model()``, train (the recipe's own batches and loss, as qat8),
  ``to_deployable(model, output_dir)``, ``export_xmodel(output_dir)``.

``pytorch_nndct`` is not on PyPI, and the Vitis AI container that ships it
(3.5: Python 3.8, torch 1.13) cannot run greenpipe (Python 3.11, torch 2.13),
so these in-process adapters run only where both are importable together,
which no Vitis AI release provides today. Elsewhere they raise
:class:`~greenpipe.errors.ToolchainMissing` naming the path that can work: a
bundle of plain files quantized and compiled in the container
(:mod:`greenpipe.vitis`, ``greenpipe vitis-bundle`` then
``infra/vitis/run.sh BUNDLE ptq|qat``). They are off by default; to enable
them, add to params.yaml::

    quantize:
      variants:
        vitis_ptq:
          calib_batches: 32        # 0 = all of the calibration dump
        vitis_fastft:
          calib_batches: 32
          ft_batches: 16           # calibration batches fast_finetune optimizes on
        vitis_qat:
          steps: {quick: 150, full: 4000}   # batches and loss: the recipe's training task
          lr: 0.0001

:func:`call_plan` is the pure description of what each variant calls (tested
without the library); :func:`discover_outputs` finds what vai_q_pytorch
wrote (``<Model>_int.xmodel``, ``quant_info.json``, ...).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from greenpipe.errors import GreenpipeError, ToolchainMissing
from greenpipe.quant import dpu
from greenpipe.quant.base import QuantResult
from greenpipe.quant.registry import VariantConfig, register_variant
from greenpipe.quant.context import require_context
from greenpipe import tooling

MODULE = "pytorch_nndct"
VITIS_VARIANTS = ("vitis_ptq", "vitis_fastft", "vitis_qat")
OUTPUT_DIR = "vai_q_output"  # inside the quantize stage's output directory


def missing_message(variant: str) -> str:
    """The exact ToolchainMissing text for ``variant`` (tests check it word for word)."""
    mode = variant.removeprefix("vitis_")  # the bundle script's mode: ptq, fastft, qat
    return (
        f"variant {variant} needs the Python module {MODULE!r} (vai_q_pytorch, AMD's Vitis AI quantizer), "
        "which is not importable here. It is not on PyPI, and the Vitis AI 3.5 container that ships it has "
        "Python 3.8 and torch 1.13, where greenpipe does not run. Quantize in the container from a bundle "
        "instead: `greenpipe vitis-bundle CHECKPOINT CALIB_DUMP --arch ARCH_JSON --out BUNDLE`, then "
        f"`infra/vitis/run.sh BUNDLE {mode}`, and take the xmodel back with `greenpipe vitis-import BUNDLE {mode} "
        f"--out DIR`. Check: `python -c \"import {MODULE}\"`."
    )


def load_toolchain(variant: str) -> Any:
    """Import pytorch_nndct or raise ToolchainMissing with :func:`missing_message`."""
    try:
        import pytorch_nndct  # noqa: F401
        from pytorch_nndct import apis
    except ImportError:
        raise ToolchainMissing(missing_message(variant)) from None
    return pytorch_nndct, apis


class VitisPtqConfig(VariantConfig):
    calib_batches: int = Field(0, ge=0)  # 0 = every sample of the calibration dump
    device: Literal["cpu", "cuda"] = "cpu"


class VitisFastftConfig(VitisPtqConfig):
    ft_batches: int = Field(16, ge=1)


class VitisQatConfig(VariantConfig):
    steps: int = Field(150, ge=1)
    lr: float = Field(1e-4, gt=0, le=1)
    bitwidth: Literal[8] = 8  # the DPU's; QatProcessor takes other widths, the DPU does not
    device: Literal["cpu", "cuda"] = "cpu"


@dataclass(frozen=True)
class Call:
    """One step of a plan: ``what`` names the API (``torch_quantizer``, ``quantizer.export_xmodel``, ...)."""

    what: str
    kwargs: dict[str, Any] = field(default_factory=dict)


def call_plan(variant: str, config: VariantConfig, output_dir: Path, input_shape: tuple[int, ...],
              calib_count: int) -> list[Call]:
    """The vai_q_pytorch calls ``variant`` makes, in order, with their arguments (pure; no import)."""
    out = str(output_dir)
    dummy = {"dummy_input_shape": tuple(input_shape)}
    if variant == "vitis_qat":
        assert isinstance(config, VitisQatConfig)
        return [
            Call("QatProcessor", {**dummy, "bitwidth": config.bitwidth}),
            Call("qat_processor.trainable_model", {}),
            Call("train", {"steps": config.steps, "lr": config.lr, "batches": "the recipe's training task",
                           "loss": "the recipe's training task"}),
            Call("qat_processor.to_deployable", {"output_dir": out}),
            Call("qat_processor.export_xmodel", {"output_dir": out}),
        ]
    if variant not in ("vitis_ptq", "vitis_fastft"):
        raise GreenpipeError(f"{variant}: not a Vitis variant (expected one of {', '.join(VITIS_VARIANTS)})")
    batches = calib_count if config.calib_batches == 0 else min(config.calib_batches, calib_count)
    quantizer = {**dummy, "output_dir": out, "device": config.device}
    plan = [Call("torch_quantizer", {"quant_mode": "calib", **quantizer}),
            Call("forward", {"model": "quantizer.quant_model", "batches": batches})]
    if variant == "vitis_fastft":
        plan.append(Call("quantizer.fast_finetune", {"evaluate": "forward + l1 vs float", "batches":
                                                      min(config.ft_batches, batches)}))
    plan += [Call("quantizer.export_quant_config", {}),
             Call("torch_quantizer", {"quant_mode": "test", **quantizer})]
    if variant == "vitis_fastft":
        plan.append(Call("quantizer.load_ft_param", {}))
    plan += [Call("forward", {"model": "quantizer.quant_model", "batches": 1}),
             Call("quantizer.export_xmodel", {"output_dir": out, "deploy_check": False}),
             Call("quantizer.export_onnx_model", {"output_dir": out, "optional": True})]
    return plan


@dataclass(frozen=True)
class VitisOutputs:
    xmodel: Path
    quant_config: Path | None
    onnx: Path | None
    files: tuple[str, ...]


def discover_outputs(output_dir: Path) -> VitisOutputs:
    """Find what vai_q_pytorch wrote in ``output_dir``: ``<Model>_int.xmodel``, ``quant_info.json``, ``*_int.onnx``."""
    output_dir = Path(output_dir)
    files = tuple(sorted(str(p.relative_to(output_dir)) for p in output_dir.rglob("*") if p.is_file())) \
        if output_dir.is_dir() else ()
    xmodels = sorted(output_dir.rglob("*_int.xmodel")) or sorted(output_dir.rglob("*.xmodel"))
    if not xmodels:
        raise GreenpipeError(
            f"{output_dir}: vai_q_pytorch wrote no .xmodel (files: {', '.join(files) or 'none'}); "
            "the export step failed: see the quantizer's log above"
        )
    if len(xmodels) > 1:
        raise GreenpipeError(
            f"{output_dir}: several xmodels ({', '.join(p.name for p in xmodels)}); empty the directory and rerun"
        )
    configs = sorted(output_dir.rglob("quant_info.json"))
    onnx = sorted(output_dir.rglob("*_int.onnx"))
    return VitisOutputs(xmodel=xmodels[0], quant_config=configs[0] if configs else None,
                        onnx=onnx[0] if onnx else None, files=files)


def _forward(model: nn.Module, batches: list[torch.Tensor], device: str) -> None:
    with torch.no_grad():
        for x in batches:
            model(x.to(device))


def _run_ptq(variant: str, model: nn.Module, batches: list[torch.Tensor], config: VitisPtqConfig,
             output_dir: Path) -> nn.Module:
    _, apis = load_toolchain(variant)
    device = torch.device(config.device)
    plan = call_plan(variant, config, output_dir, tuple(batches[0].shape), len(batches))
    calib = batches[: next(c.kwargs["batches"] for c in plan if c.what == "forward")]
    dummy = torch.randn(*batches[0].shape)
    model = model.to(device).eval()
    quantizer = apis.torch_quantizer("calib", model, (dummy,), output_dir=str(output_dir), device=device)
    _forward(quantizer.quant_model, calib, config.device)
    if variant == "vitis_fastft":
        reference = [model(x.to(device)).detach() for x in calib[: config.ft_batches]]

        def evaluate(quant_model, loader, loss_fn):
            with torch.no_grad():
                for x, y in loader:
                    loss_fn(quant_model(x), y)

        pairs = list(zip(calib[: config.ft_batches], reference))
        quantizer.fast_finetune(evaluate, (quantizer.quant_model, pairs, torch.nn.functional.l1_loss))
    quantizer.export_quant_config()
    quantizer = apis.torch_quantizer("test", model, (dummy,), output_dir=str(output_dir), device=device)
    if variant == "vitis_fastft":
        quantizer.load_ft_param()
    _forward(quantizer.quant_model, calib[:1], config.device)
    quantizer.export_xmodel(output_dir=str(output_dir), deploy_check=False)
    if hasattr(quantizer, "export_onnx_model"):
        quantizer.export_onnx_model(output_dir=str(output_dir))
    return quantizer.quant_model


def _run_qat(model: nn.Module, batches: list[torch.Tensor], config: VitisQatConfig, output_dir: Path) -> nn.Module:
    load_toolchain("vitis_qat")
    from pytorch_nndct import QatProcessor

    from greenpipe.quant.qat8 import training_task

    ctx = require_context("vitis_qat", "the recipe's training task")
    task = training_task("vitis_qat", ctx)
    dummy = torch.randn(*batches[0].shape)
    qat_processor = QatProcessor(model, (dummy,), bitwidth=config.bitwidth)
    trainable = qat_processor.trainable_model()
    rng = np.random.default_rng([ctx.seed, 7])
    opt = torch.optim.Adam(trainable.parameters(), lr=config.lr)
    trainable.train()
    for _ in range(config.steps):
        batch = task.batch(rng)
        loss = task.loss(trainable(batch[0]), batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    deployable = qat_processor.to_deployable(trainable, str(output_dir))
    qat_processor.export_xmodel(str(output_dir))
    return deployable


def _quantize(variant: str, model: nn.Module, calib: Iterable[torch.Tensor], config: VariantConfig) -> QuantResult:
    load_toolchain(variant)  # fail before any work, with the exact message
    ctx = require_context(variant, "an output directory for vai_q_pytorch's files")
    output_dir = (ctx.out or Path(".")) / OUTPUT_DIR
    output_dir.mkdir(parents=True, exist_ok=True)
    batches = list(calib)
    t0 = time.perf_counter()
    if variant == "vitis_qat":
        qm = _run_qat(model, batches, config, output_dir)  # type: ignore[arg-type]
    else:
        qm = _run_ptq(variant, model, batches, config, output_dir)  # type: ignore[arg-type]
    found = discover_outputs(output_dir)
    plan = call_plan(variant, config, output_dir, tuple(batches[0].shape), len(batches))
    return QuantResult(
        model=qm.eval(),
        dpu_numerics=True,  # vai_q_pytorch's fix_point: int8 per-tensor pow2, what the DPU computes
        deployable_to_dpu=True,
        bits=dict(dpu.DPU_BITS),
        report={
            "calibration": {"activations": "vai_q_pytorch (its own method)", "batches": len(batches)},
            "toolchain": "vai_q_pytorch (pytorch_nndct), Vitis AI 3.0",
            "calls": [{"what": c.what, **c.kwargs} for c in plan],
            "xmodel": str(found.xmodel),
            "quant_config": None if found.quant_config is None else str(found.quant_config),
            "vitis_onnx": None if found.onnx is None else str(found.onnx),
            "vitis_files": list(found.files),
            "vitis_wall_s": time.perf_counter() - t0,
        },
    )


# External tools this module's adapters need, and how far the tests got with them (greenpipe.tooling).
EXTERNAL_TOOLS = (tooling.Tool(
    "vai_q_pytorch (pytorch_nndct)", "never",
    "nothing: no Vitis AI container here. tests/quant/test_vitis_adapters.py checks the in-process adapters' "
    "call plan and missing-tool message; tests/vitis/test_bundle.py checks the container bundle (its model "
    "gives the float outputs on a bare torch, its calibration data is the dump, its script's torch-only check "
    "step runs and its ptq / fastft / qat steps stop naming pytorch_nndct); tests/vitis/test_import.py runs "
    "`greenpipe vitis-import`'s checks on runs the tests make with the script's own report and compile code, "
    "bytes standing in for vai_q_pytorch's and vai_c_xir's xmodels (the container never ran)",
    "greenpipe vitis-bundle models/denoise/checkpoint.pt artifacts/calib --arch "
    "infra/arch/DPUCZDX8G/ZCU104/arch.json --out B && infra/vitis/run.sh B ptq && infra/vitis/run.sh B fastft && "
    "infra/vitis/run.sh B qat && greenpipe vitis-import B fastft --out artifacts/compile/vitis_fastft/zcu104",
    tooling.module("pytorch_nndct")),)


@register_variant("vitis_ptq", VitisPtqConfig, takes="model")
def quantize_ptq(model: nn.Module, calib: Iterable[torch.Tensor], config: VitisPtqConfig) -> QuantResult:
    """vai_q_pytorch post-training quantization (calib, then test mode and xmodel export)."""
    return _quantize("vitis_ptq", model, calib, config)


@register_variant("vitis_fastft", VitisFastftConfig, takes="model")
def quantize_fastft(model: nn.Module, calib: Iterable[torch.Tensor], config: VitisFastftConfig) -> QuantResult:
    """vai_q_pytorch PTQ with its fast finetune (AdaQuant) before export."""
    return _quantize("vitis_fastft", model, calib, config)


@register_variant("vitis_qat", VitisQatConfig, takes="model")
def quantize_qat(model: nn.Module, calib: Iterable[torch.Tensor], config: VitisQatConfig) -> QuantResult:
    """vai_q_pytorch QatProcessor: trainable model, training on the recipe's batches and loss, deployable + xmodel."""
    return _quantize("vitis_qat", model, calib, config)
