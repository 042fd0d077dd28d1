"""Variant ``qat8``: quantization-aware training with int8 DPU numerics (Brevitas).

The float model is quantized, calibrated and bias-corrected exactly as
``ptq8`` does (int8, per-tensor, symmetric, power-of-two scales everywhere;
:mod:`greenpipe.quant.dpu`), then trained *through* its fake quantizers with
the recipe's own training task: the batches and the loss its float model was
trained with (:class:`greenpipe.recipes.base.TrainingTask`; for denoise,
``train``'s crops, dead leaves, fresh camera noise and ``train.loss``).
Weights and biases learn; the power-of-two scales stay powers of two
(Brevitas learns the activation scales in the log2 domain and rounds them;
weight scales follow max |w|).  With ``ema`` > 0 the moving average of the
trained parameters is kept (as ``train.ema``): a short run's last iterates
are noisy, their average is steadier from seed to seed.  The result deploys
exactly like ``ptq8``.

Training is deterministic under ``base.seed`` and resumable: the state is
saved every ``save_every`` steps beside the stage output
(``artifacts/quant/.qat8.qat8-resume.pt``) and a rerun with the same
params, data and float model continues from it; it is removed when done.

params.yaml::

    quantize:
      variants:
        qat8:
          steps: {quick: 150, full: 4000}
          lr: 0.00002                         # Adam, cosine to lr_min
          lr_min: 0.000001
          ema: 0.99                           # weight average (0: the last weights)
          bias_correction: true               # as ptq8, before training
          act_calibration: percentile         # initial scales, as ptq8
          percentile: 99.99

The stage gives it the recipe's training task (see :mod:`greenpipe.quant.context`).
``qat4`` (:mod:`greenpipe.quant.qat4`) is the same training with 4-bit weights.
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
from greenpipe.recipes.base import TrainingTask
from greenpipe.train import cosine_schedule, ema_with_warmup
from greenpipe.quant.base import QuantResult
from greenpipe.quant.registry import VariantConfig, register_variant
from greenpipe.quant.context import QuantContext, require_context
from greenpipe.quant.export import is_quantized


class Qat8Config(VariantConfig):
    steps: int = Field(150, ge=1)
    lr: float = Field(1e-4, gt=0, le=1)
    lr_min: float = Field(1e-6, ge=0, le=1)
    ema: float = Field(0.0, ge=0, lt=1)  # per-step decay of the weight average (0: the last weights)
    bias_correction: bool = True  # as ptq8, after calibration and before training
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


def _run_key(name: str, config: VariantConfig, seed: int, model: nn.Module, data_fingerprint: str) -> str:
    """What a resume state must match: config, seed, float weights, training data."""
    h = hashlib.sha256(json.dumps({"variant": name, "config": config.model_dump(), "seed": seed,
                                   "data": data_fingerprint}, sort_keys=True).encode())
    for key, value in model.state_dict().items():
        h.update(key.encode())
        h.update(value.detach().cpu().numpy().tobytes())
    return h.hexdigest()


def training_task(name: str, ctx: QuantContext) -> TrainingTask:
    """The recipe's training task from the stage's context, or a GreenpipeError naming what is missing."""
    if ctx.training is None:
        raise GreenpipeError(
            f"variant {name} trains with the recipe's training task, and this context gives none; the quantize "
            "stage passes it (QuantContext.training = partial(recipe.training, params, data))"
        )
    return ctx.training()


def train_qat(
    qm: nn.Module, name: str, config: Qat8Config, float_model: nn.Module, ctx: QuantContext,
    stop_after: int | None = None,
) -> dict:
    """Train the quantized ``qm`` in place with the recipe's batches and loss; return what was done.

    With ``config.ema`` the weight average is copied into ``qm`` at the end.
    ``stop_after`` ends the run after that many steps with the resume state
    kept, as a killed run would (tests use it to check resuming).
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    task = training_task(name, ctx)
    key = _run_key(name, config, ctx.seed, float_model, task.data_fingerprint)
    state_file = ctx.state_file(name)

    torch.manual_seed(ctx.seed)
    rng = np.random.default_rng([ctx.seed, 7])  # own stream: not the train stage's batches again
    params = [p for p in qm.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=config.lr)
    total = config.steps
    sched = cosine_schedule(opt, total, config.lr, config.lr_min)
    average = [p.detach().clone() for p in params] if config.ema else None
    start, resumed_from, losses = 0, None, []
    state = load_state(state_file, key, qm, opt, sched, rng)
    if state is not None:
        start = resumed_from = state["step"]
        losses = state["losses"]
        if average is not None:
            average = state["average"]
    update = ema_with_warmup(config.ema) if average is not None else None

    t0 = time.perf_counter()
    qm.train()
    columns = [TextColumn(f"qat {name}"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
               TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, transient=False) as bar:
        progress = bar.add_task(name, total=total, completed=start, loss=float("nan"))
        for step in range(start, total):
            batch = task.batch(rng)
            out = qm(batch[0])
            loss = task.loss(getattr(out, "value", out), batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if update is not None:
                update(average, [p.detach() for p in params], torch.tensor(step))
            losses.append(float(loss.item()))
            bar.update(progress, advance=1, loss=float(np.mean(losses[-20:])))
            done = step + 1
            if state_file is not None and (done % config.save_every == 0) and done < total:
                save_state(state_file, key, qm, opt, sched, rng, step=done, losses=losses, average=average)
            if stop_after is not None and done >= stop_after:
                break
    if average is not None and stop_after is None:
        with torch.no_grad():
            for p, a in zip(params, average):
                p.copy_(a)
    qm.eval()
    if state_file is not None and stop_after is None:
        state_file.unlink(missing_ok=True)
    return {
        "method": "quantization-aware training through Brevitas fake quantizers (STE), "
                  "the recipe's own batches and loss",
        "steps": total,
        "lr": config.lr,
        "lr_min": config.lr_min,
        "ema": config.ema,
        "batch_shape": list(batch[0].shape) if total > start else None,
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
    """Quantize a float ``model`` (``weight_bits`` / ``act_bits``), calibrate on ``calib``, train; return (model, report).

    ``calib`` is iterated once, twice with bias correction (as ptq8).
    """
    if is_quantized(model):
        raise GreenpipeError(
            f"{name} trains from the float model and calibrates itself as ptq8 does, but it was given an "
            "already-quantized one; remove its `start_from:`"
        )
    ctx = require_context(name, "the recipe's training task")
    act_quant = dpu.act_quantizer(config.act_calibration, config.percentile)
    if act_bits != 8:
        act_quant = act_quant.let(bit_width=act_bits)
    qm = quantize_graph_bits(model, act_quant, weight_bits)
    batches = dpu.calibrate(qm, calib)
    corrected = dpu.correct_bias(qm, calib) if config.bias_correction else 0
    training = train_qat(qm, name, config, model, ctx, stop_after)
    calibration = {**dpu.calibration_record(config.act_calibration, config.percentile, batches, corrected),
                   "note": "initial scales and biases only; QAT then trains weights, biases and activation scales"}
    return qm, {"calibration": calibration, "qat": training, **dpu.layer_report(qm)}


# External tools this module's adapters need, and how far the tests got with them (greenpipe.tooling).
EXTERNAL_TOOLS = dpu.EXTERNAL_TOOLS


@register_variant("qat8", Qat8Config, takes="model")
def quantize(model: nn.Module, calib: Iterable[torch.Tensor], config: Qat8Config) -> QuantResult:
    """ptq8's int8 DPU quantization of a float ``model``, then QAT on the train split."""
    qm, report = run_qat("qat8", model, calib, config)
    return QuantResult(model=qm, dpu_numerics=True, deployable_to_dpu=True, bits=dict(dpu.DPU_BITS),
                       report=report)
