"""Variant ``qat8``: quantization-aware training with int8 DPU numerics (Brevitas).

The float model is quantized and calibrated exactly as ``ptq8`` does (int8,
per-tensor, symmetric, power-of-two scales everywhere; :mod:`greenpipe.quant.dpu`),
then trained *through* its fake quantizers on the train split with the
recipe's own loss (L1 on random crops, flips and rotations, fresh camera-noise
draws: greenpipe/recipes/denoise/training.py).  Weights and biases learn; the
power-of-two scales stay powers of two (Brevitas learns the activation scales
in the log2 domain and rounds them; weight scales follow max |w|).  The result
deploys exactly like ``ptq8``.

Training is deterministic under ``base.seed`` and resumable: the state is
saved every ``save_every`` steps beside the stage output
(``artifacts/quant/.qat8.qat8-resume.pt``) and a rerun with the same
params, data and float model continues from it; it is removed when done.

params.yaml::

    quantize:
      variants:
        qat8:
          steps: {quick: 150, full: 4000}
          batch_size: 8
          crop: {quick: 64, full: 128}       # px, multiple of the model's 2**depth
          lr: 0.0001                          # Adam, cosine to lr_min
          lr_min: 0.000001
          fresh_noise: true                   # new camera-noise draw per crop (as train.fresh_noise)
          act_calibration: percentile         # initial scales, as ptq8
          percentile: 99.99

The stage must give it the train split (``--data``) and ``ingest.noise``
(see :mod:`greenpipe.quant.context`).  ``qat4`` (:mod:`greenpipe.quant.qat4`)
is the same training with 4-bit weights.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from pydantic import Field
from torch import nn

from greenpipe.errors import GreenpipeError
from greenpipe.quant import dpu
from greenpipe.resume import load_state, save_state
from greenpipe.train import cosine_schedule
from greenpipe.quant.base import QuantResult
from greenpipe.quant.registry import VariantConfig, register_variant
from greenpipe.quant.context import QuantContext, require_context
from greenpipe.quant.export import is_quantized


class Qat8Config(VariantConfig):
    steps: int = Field(150, ge=1)
    batch_size: int = Field(8, ge=1)
    crop: int = Field(64, ge=16)
    lr: float = Field(1e-4, gt=0, le=1)
    lr_min: float = Field(1e-6, ge=0, le=1)
    fresh_noise: bool = True
    save_every: int = Field(50, ge=1)  # steps between resume-state saves
    act_calibration: dpu.ActCalibration = "percentile"
    percentile: float = Field(99.99, gt=50, le=100)


def quantize_graph_bits(model: nn.Module, act_quant: Any, weight_bits: int = 8) -> nn.Module:
    """:func:`dpu.quantize_graph` with ``weight_bits``-bit weights (pow2, per-tensor, narrow range)."""
    if weight_bits == 8:
        return dpu.quantize_graph(model, act_quant)
    from brevitas.graph.quantize import preprocess_for_quantize, quantize

    weight_quant = dpu._quantizers()["weight"].let(bit_width=weight_bits)
    maps = dpu.dpu_maps(act_quant)
    for name, entry in maps["compute_layer_map"].items():
        if entry is not None and "weight_quant" in entry[1]:
            maps["compute_layer_map"][name] = (entry[0], {**entry[1], "weight_quant": weight_quant})
    gm = preprocess_for_quantize(copy.deepcopy(model).eval())
    qm = quantize(gm, **maps)
    if not dpu._output_is_quantized(qm):
        qm = dpu._OutputQuant(qm, act_quant)
    return qm.eval()


def _run_key(name: str, config: VariantConfig, seed: int, model: nn.Module, data: Path) -> str:
    """What a resume state must match: config, seed, float weights, train data manifest."""
    h = hashlib.sha256(json.dumps({"variant": name, "config": config.model_dump(), "seed": seed},
                                  sort_keys=True).encode())
    for key, value in model.state_dict().items():
        h.update(key.encode())
        h.update(value.detach().cpu().numpy().tobytes())
    manifest = data / "manifest.json"
    if manifest.exists():
        h.update(manifest.read_bytes())
    return h.hexdigest()


def _train_pairs(ctx: QuantContext, crop: int) -> list:
    from greenpipe.data.prepared import load_split
    from greenpipe.io import read_json

    manifest = read_json(ctx.data / "manifest.json")
    synthetic = {row["name"] for row in manifest["samples"] if row.get("noise")}
    split = load_split(ctx.data, "train")
    pairs = [(*p.load(), p.name in synthetic) for p in split]
    for p, (clean, *_) in zip(split, pairs):
        if min(clean.shape[:2]) < crop:
            raise GreenpipeError(f"{p.clean}: smaller than the QAT crop ({crop} px); lower the variant's `crop:`")
    return pairs


def train_qat(
    qm: nn.Module, name: str, config: Qat8Config, float_model: nn.Module, ctx: QuantContext,
    stop_after: int | None = None,
) -> dict:
    """Train the quantized ``qm`` in place on ctx.data's train split; return what was done.

    ``stop_after`` ends the run after that many steps with the resume state
    kept, as a killed run would (tests use it to check resuming).
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    # the train stage's crops / flips / fresh noise, shared on purpose
    from greenpipe.recipes.denoise.training import random_batch

    if config.crop % ctx.multiple:
        raise GreenpipeError(
            f"{config.key}.crop = {config.crop}: must be a multiple of {ctx.multiple} (the model's 2**depth)"
        )
    pairs = _train_pairs(ctx, config.crop)
    noise = ctx.noise if config.fresh_noise else None
    key = _run_key(name, config, ctx.seed, float_model, ctx.data)
    state_file = ctx.state_file(name)

    torch.manual_seed(ctx.seed)
    rng = np.random.default_rng([ctx.seed, 7])  # own stream: not the train stage's crops again
    params = [p for p in qm.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=config.lr)
    total = config.steps
    sched = cosine_schedule(opt, total, config.lr, config.lr_min)
    start, resumed_from, losses = 0, None, []
    state = load_state(state_file, key, qm, opt, sched, rng)
    if state is not None:
        start = resumed_from = state["step"]
        losses = state["losses"]

    t0 = time.perf_counter()
    qm.train()
    columns = [TextColumn(f"qat {name}"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
               TextColumn("L1 {task.fields[loss]:.4f}"), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(name, total=total, completed=start, loss=float("nan"))
        for step in range(start, total):
            noisy, clean = random_batch(pairs, rng, config.batch_size, config.crop, noise)
            out = qm(noisy)
            loss = torch.nn.functional.l1_loss(getattr(out, "value", out), clean)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.item()))
            bar.update(task, advance=1, loss=float(np.mean(losses[-20:])))
            done = step + 1
            if state_file is not None and (done % config.save_every == 0) and done < total:
                save_state(state_file, key, qm, opt, sched, rng, step=done, losses=losses)
            if stop_after is not None and done >= stop_after:
                break
    qm.eval()
    if state_file is not None and stop_after is None:
        state_file.unlink(missing_ok=True)
    return {
        "method": "quantization-aware training through Brevitas fake quantizers (STE), L1 on random crops",
        "steps": total,
        "batch_size": config.batch_size,
        "crop": config.crop,
        "lr": config.lr,
        "lr_min": config.lr_min,
        "fresh_noise": noise is not None,
        "train_images": len(pairs),
        "loss_first_20": float(np.mean(losses[:20])) if losses else None,
        "loss_last_20": float(np.mean(losses[-20:])) if losses else None,
        "resumed_from_step": resumed_from,
        "seed": ctx.seed,
        "wall_s": time.perf_counter() - t0,
    }


def run_qat(
    name: str, model: nn.Module, calib: Iterable[torch.Tensor], config: Qat8Config,
    weight_bits: int = 8, act_bits: int = 8, stop_after: int | None = None,
) -> tuple[nn.Module, dict]:
    """Quantize a float ``model`` (``weight_bits`` / ``act_bits``), calibrate on ``calib``, train; return (model, report)."""
    if is_quantized(model):
        raise GreenpipeError(
            f"{name} trains from the float model and calibrates itself as ptq8 does, but it was given an "
            "already-quantized one; remove its `start_from:`"
        )
    ctx = require_context(name, "the train split and ingest.noise")
    act_quant = dpu.act_quantizer(config.act_calibration, config.percentile)
    if act_bits != 8:
        act_quant = act_quant.let(bit_width=act_bits)
    qm = quantize_graph_bits(model, act_quant, weight_bits)
    batches = dpu.calibrate(qm, calib)
    training = train_qat(qm, name, config, model, ctx, stop_after)
    calibration = {"activations": config.act_calibration, "batches": batches,
                   "note": "initial scales only; QAT then trains weights, biases and activation scales"}
    if config.act_calibration == "percentile":
        calibration["percentile"] = config.percentile
    return qm, {"calibration": calibration, "qat": training, **dpu.layer_report(qm)}


# External tools this module's adapters need, and how far the tests got with them (greenpipe.tooling).
EXTERNAL_TOOLS = dpu.EXTERNAL_TOOLS


@register_variant("qat8", Qat8Config, takes="model")
def quantize(model: nn.Module, calib: Iterable[torch.Tensor], config: Qat8Config) -> QuantResult:
    """ptq8's int8 DPU quantization of a float ``model``, then QAT on the train split."""
    qm, report = run_qat("qat8", model, calib, config)
    return QuantResult(model=qm, dpu_numerics=True, deployable_to_dpu=True, bits=dict(dpu.DPU_BITS),
                       report=report)
