"""Variant ``inc``: Intel Neural Compressor 3.x static int8 PTQ for x86, tuned against the recipe's val metric.

This is the open Intel x86 path, **not DPU numerics**: INC's PT2E flow
(``torch.export`` -> torchao's ``X86InductorQuantizer``) gives uint8
asymmetric per-tensor activations and int8 symmetric weights (per channel by
default) with float scales; the conv that feeds the residual add keeps a
float output.  Nothing here is a power of two, and no DPU runs it.

Accuracy-aware tuning is INC's ``autotune``: the float model is exported once,
then each candidate config of the tuning space is calibrated on the dumped
calibration crops and scored with the recipe's primary metric on the val split
(its ``Quality`` record, what the quantize stage reports for every variant; it
must be higher-is-better, as INC's relative loss assumes).  Tuning stops at the first
trial whose loss is within ``tolerable_loss``, *relative* as INC defines it::

    (fp32_score - trial_score) / fp32_score <= tolerable_loss   # 0.012 of a 30.8 dB score = 0.37 dB

or after ``max_trials``; when no trial got there the stage fails, listing every
trial.  Every trial (its config, score, relative loss, pass/fail, wall time) is
recorded in quant_report.json (``tuning``) and in the stage's metrics
(``trials``).  The space is tried in this order: for each ``fp32_layers``
entry (layers kept in float; ``[]`` = none), each ``act_algo``, each
``w_granularity``.

After tuning, each conv bias is snapped onto its int32 accumulator grid
(``s_x * s_w`` per output channel) in the fake-quant model itself, so the
compiled artifact, whose ``QLinearConv`` adds an int32 bias, computes the same
model (:mod:`greenpipe.compile.qdq`); the largest change is recorded.

params.yaml::

    quantize:
      variants:
        inc:
          tolerable_loss: 0.012              # relative loss of the val metric accepted (INC's definition, above)
          max_trials: {quick: 2, full: 6}
          calib_samples: {quick: 16, full: 0}  # calibration crops per trial (0 = every dumped crop)
          eval_max_side: 0                   # centre-crop val images for trial scores (0 = whole images)
          act_algo: [minmax, kl]             # activation observers: min/max, KL (histogram)
          w_granularity: [per_channel]       # per_channel | per_tensor
          fp32_layers: [[], [inc.0, head]]   # layers kept in float, per trial (module names)

It needs the val split from its stage (:mod:`greenpipe.quant.context`).
"""

from __future__ import annotations

import itertools
import logging
import time
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from greenpipe.errors import GreenpipeError, ParamsError, ToolchainMissing
from greenpipe.quant.base import QuantResult
from greenpipe.quant.registry import VariantConfig, register_variant
from greenpipe.quant.context import require_context
from greenpipe.quant.export import is_pt2e_quantized, is_quantized
from greenpipe import tooling

LABEL = "Intel x86 path (INC)"  # what the report's tables show beside dpu_numerics = no
NUMERICS = (
    "Intel x86 int8 (INC 3.x PT2E, X86InductorQuantizer): uint8 asymmetric activations, int8 symmetric "
    "weights, float scales; not DPU numerics"
)
_FLOAT_BITS = {"weights": 32, "activations": 32, "bias": 32}  # a trial that kept every layer float
_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)


class IncConfig(VariantConfig):
    tolerable_loss: float = Field(0.012, ge=0, lt=1)  # relative loss of the val metric: (fp32 - trial) / fp32
    max_trials: int = Field(4, ge=1)
    calib_samples: int = Field(16, ge=0)  # crops per trial; 0 = every dumped crop
    eval_max_side: int = Field(0, ge=0)  # px; centre-crop val images for trial scores (0 = whole)
    act_algo: list[Literal["minmax", "kl"]] = Field(["minmax", "kl"], min_length=1)
    w_granularity: list[Literal["per_channel", "per_tensor"]] = Field(["per_channel"], min_length=1)
    fp32_layers: list[list[str]] = Field([[]], min_length=1)  # per trial: module names kept in float


def _inc():
    """INC's PyTorch API, imported on first use (it is slow and logs at import)."""
    # torchao tries its CUDA-only kernel libraries at import and warns for each one a CPU cannot load;
    # INC warns that it found no accelerator. Neither concerns a CPU run.
    logging.getLogger("torchao").setLevel(logging.ERROR)
    try:
        with _quiet_inc():
            from neural_compressor.torch import quantization
            from neural_compressor.torch.export import export
    except ImportError as exc:
        raise ToolchainMissing(
            f"variant inc needs Intel Neural Compressor for PyTorch ({exc}); install the project's "
            "dependencies (`pip install -e .` brings neural-compressor-pt)"
        ) from None
    return quantization, export


@contextmanager
def _quiet_inc() -> Iterator[None]:
    """INC logs every trial's table at INFO; the trials go to the report instead."""
    from neural_compressor.common.utils.logger import Logger

    logger = Logger().get_logger()  # INC's singleton sets its level once, on first use
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def tuning_space(config: IncConfig, model: nn.Module) -> list[dict[str, Any]]:
    """The trials' settings in the order INC tries them (duplicates dropped)."""
    modules = dict(model.named_modules())
    for entry in config.fp32_layers:
        unknown = [name for name in entry if not name or name not in modules]
        if unknown:
            layers = ", ".join(n for n, m in modules.items() if isinstance(m, _WEIGHTED))
            raise ParamsError(
                f"{config.key}.fp32_layers: {unknown} not a layer of the model; "
                f"use module names such as: {layers}"
            )
    space: list[dict[str, Any]] = []
    for fp32, algo, gran in itertools.product(config.fp32_layers, config.act_algo, config.w_granularity):
        trial = {"act_algo": algo, "w_granularity": gran, "fp32_layers": sorted(set(fp32))}
        if trial not in space:
            space.append(trial)
    return space


def _inc_config(trial: dict[str, Any]):
    quantization, _ = _inc()
    cfg = quantization.StaticQuantConfig(act_algo=trial["act_algo"], w_granularity=trial["w_granularity"])
    if trial["fp32_layers"]:
        cfg.set_local(trial["fp32_layers"], quantization.StaticQuantConfig(w_dtype="fp32", act_dtype="fp32"))
    return cfg


def _describe(cfg) -> dict[str, Any]:
    """The trial settings of an INC static-quant config (the inverse of :func:`_inc_config`)."""
    return {"act_algo": cfg.act_algo, "w_granularity": cfg.w_granularity, "fp32_layers": sorted(cfg.local_config)}


def _runner(model: nn.Module):
    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()

    return run


def require_float(model: nn.Module, variant: str) -> None:
    """Refuse an already-quantized model: the x86 int8 variants quantize a float one."""
    if is_quantized(model) or is_pt2e_quantized(model):
        raise GreenpipeError(
            f"{variant} quantizes a float model, but it was given an already-quantized one; "
            "point its `start_from:` at a float variant (or remove it)"
        )


def export_inputs(batches: list[torch.Tensor]) -> tuple[tuple[torch.Tensor], tuple[dict[int, Any]]]:
    """``torch.export``'s example inputs and dynamic shapes for an image model: two calibration crops
    as one batch (a batch of 1 would be pinned as a constant), with batch, height and width left free."""
    example = torch.cat([batches[0], batches[1 % len(batches)]])
    auto = torch.export.Dim.AUTO
    return (example,), ({0: auto, 2: auto, 3: auto},)


# External tools this module's adapters need, and how far the tests got with them (greenpipe.tooling).
EXTERNAL_TOOLS = (tooling.Tool(
    "Intel Neural Compressor (+ torchao PT2E)", "real", "tests/quant/test_inc.py and the demo's quantize@inc",
    "pytest tests/quant/test_inc.py", tooling.module("neural_compressor", "neural-compressor-pt")),)


@register_variant("inc", IncConfig, takes="model")
def quantize(model: nn.Module, calib: Iterable[torch.Tensor], config: IncConfig) -> QuantResult:
    """Tune and quantize a float ``model``; each trial iterates ``calib_samples`` of ``calib``."""
    require_float(model, "inc")
    ctx = require_context("inc", "the val split to score each tuning trial on")
    from greenpipe.recipes import get_recipe

    recipe = get_recipe(ctx.recipe)
    metric = recipe.metrics[0]
    if not metric.higher_is_better:
        raise GreenpipeError(
            f"inc: recipe {recipe.name!r} scores {metric.name}, where lower is better; INC's accuracy-aware "
            "tuning compares a relative loss of a higher-is-better score. Use another int8 variant for it"
        )
    batches = list(itertools.islice(calib, config.calib_samples or None))
    if not batches:
        raise GreenpipeError("inc: no calibration batches; rerun `dvc repro calib_dump`")
    space = tuning_space(config, model)
    quantization, export = _inc()
    example, dynamic = export_inputs(batches)

    trials: list[dict[str, Any]] = []
    baseline: dict[str, float] = {}
    clock = [time.perf_counter()]

    def run_fn(prepared: nn.Module) -> None:
        with torch.no_grad():
            for batch in batches:
                prepared(batch)

    def eval_fn(candidate: nn.Module) -> float:
        t_eval = time.perf_counter()
        score = recipe.evaluate(_runner(candidate), ctx.data, config.eval_max_side, multiple=ctx.multiple).quality.value
        now = time.perf_counter()
        mapping = getattr(candidate, "qconfig", None)
        if not mapping:  # INC scores the float model first: the baseline
            baseline.update(score=score, eval_s=now - t_eval)
        else:
            loss = (baseline["score"] - score) / baseline["score"]
            trials.append({
                "trial": len(trials) + 1,
                **_describe(next(iter(mapping.values()))),
                "score": score,
                "relative_loss": loss,
                "passed": score >= baseline["score"] * (1 - config.tolerable_loss),  # INC's own test
                "quantize_s": t_eval - clock[0],
                "eval_s": now - t_eval,
                "wall_s": now - clock[0],
            })
        clock[0] = time.perf_counter()
        return score

    t0 = time.perf_counter()
    with _quiet_inc():
        exported = export(model, example, dynamic_shapes=dynamic)
        tune = quantization.TuningConfig(
            config_set=[_inc_config(t) for t in space],
            tolerable_loss=config.tolerable_loss,
            max_trials=config.max_trials,
        )
        clock[0] = time.perf_counter()
        qmodel = quantization.autotune(exported, tune, eval_fn=eval_fn, run_fn=run_fn, example_inputs=example)
    tuning = {
        "metric": f"{ctx.recipe} val {metric.heading()} of the fake-quant model"
        + (f", centre crops of {config.eval_max_side} px" if config.eval_max_side else ", whole images"),
        "fp32_score": baseline.get("score"),
        "tolerable_loss": config.tolerable_loss,
        "loss": "relative, INC's definition: (fp32 - trial) / fp32; a trial passes when loss <= tolerable_loss",
        "target_score": baseline["score"] * (1 - config.tolerable_loss),
        "max_trials": min(config.max_trials, len(space)),
        "space": space,
        "trials": trials,
        "tuning_s": time.perf_counter() - t0,
    }
    passed = [t for t in trials if t["passed"]]
    if not passed:
        lines = "\n".join(
            f"  trial {t['trial']}: {_label(t)}: {metric.name} {t['score']:.4g} {metric.unit}, "
            f"loss {t['relative_loss']:.4f}" for t in trials
        )
        raise GreenpipeError(
            f"inc: no tuning trial within tolerable_loss {config.tolerable_loss} of fp32 "
            f"({metric.name} {baseline['score']:.4g} {metric.unit}, target {tuning['target_score']:.4g}):\n{lines}\n"
            f"raise {config.key}.max_trials, widen its tuning space (act_algo, w_granularity, "
            "fp32_layers) or loosen tolerable_loss"
        )
    chosen = passed[0]  # INC stops at the first trial that meets the goal
    tuning["chosen_trial"] = chosen["trial"]
    to_eval(qmodel)
    snapped = snap_bias_to_accumulator(qmodel)
    layers = layer_report(model, qmodel, chosen["fp32_layers"])
    return QuantResult(
        model=qmodel,
        dpu_numerics=False,  # float scales, asymmetric uint8 activations: x86 numerics
        deployable_to_dpu=False,
        bits={"weights": 8, "activations": 8, "bias": 32} if layers["quantized_layers"] else dict(_FLOAT_BITS),
        report={
            "numerics": NUMERICS,
            "calibration": {
                "activations": chosen["act_algo"],
                "weights": f"minmax, symmetric int8, {chosen['w_granularity']}",
                "batches": len(batches),
                "method": "INC 3.x static PTQ (PT2E, X86InductorQuantizer), accuracy-aware autotune",
            },
            "tuning": tuning,
            "bias": {
                "what": "float in INC's model; snapped to int32 at s_x * s_w per output channel "
                "(what QLinearConv adds) in the fake-quant model after tuning",
                "convs": snapped["convs"],
                "max_abs_change": snapped["max_abs_change"],
            },
            **layers,
        },
        metrics={
            "numerics": LABEL,
            "tolerable_loss": config.tolerable_loss,
            "fp32_score": baseline["score"],
            "chosen_trial": chosen["trial"],
            "trials": [
                {k: t[k] for k in ("trial", "act_algo", "w_granularity", "fp32_layers", "score", "relative_loss",
                                   "passed", "wall_s")}
                for t in trials
            ],
        },
    )


def to_eval(gm: nn.Module) -> None:
    """Eval mode for an exported graph module, which refuses ``.eval()``: torchao swaps its
    dropout / batch-norm ops (the UNet has none), and the flags follow so exporters do not warn."""
    from torchao.quantization.pt2e import move_exported_model_to_eval

    move_exported_model_to_eval(gm)
    for module in gm.modules():
        module.training = False


def _label(trial: dict[str, Any]) -> str:
    fp32 = f", fp32 {','.join(trial['fp32_layers'])}" if trial["fp32_layers"] else ""
    return f"{trial['act_algo']} activations, {trial['w_granularity']} weights{fp32}"


# ---- the converted graph: (N, C, H, W) tensors between quantize / dequantize ops ----

def _qd(name: str):
    return getattr(torch.ops.quantized_decomposed, name).default


def _attr(gm: nn.Module, target: str) -> torch.Tensor:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _scale(gm: nn.Module, node) -> torch.Tensor | None:
    """The float32 scale of a dequantize node (per-tensor: 0-d; per-channel: (C,)), else None."""
    if not hasattr(node, "target"):
        return None
    if node.target == _qd("dequantize_per_tensor"):
        return torch.tensor(float(node.args[1]), dtype=torch.float32)
    if node.target == _qd("dequantize_per_channel"):
        return _attr(gm, node.args[1].target).detach().to(torch.float32)
    return None


def snap_bias_to_accumulator(gm: nn.Module) -> dict[str, Any]:
    """Round every quantized conv's bias to a multiple of ``s_x * s_w`` (float32), in place.

    ONNX Runtime's ``QLinearConv`` adds the bias as int32 in accumulator units;
    after this the fake-quant model's float bias is exactly such a value.
    """
    changed, worst = 0, 0.0
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target not in (torch.ops.aten.conv2d.default,
                                                             torch.ops.aten.convolution.default):
            continue
        if len(node.args) < 3 or node.args[2] is None or getattr(node.args[2], "op", None) != "get_attr":
            continue
        s_x, s_w = _scale(gm, node.args[0]), _scale(gm, node.args[1])
        if s_x is None or s_w is None:
            continue  # a float layer (fp32_layers) or an unquantized input
        bias = _attr(gm, node.args[2].target)
        acc = (s_x * s_w).expand(bias.shape)  # float32 products, as the compile stage forms them
        k = torch.round(bias.detach().double() / acc.double())
        if k.abs().max() >= 2**31 - 1:
            continue  # outside int32: stays float (the compile stage then keeps it float too)
        new = (k.float() * acc).to(bias.dtype)
        worst = max(worst, float((new - bias.detach()).abs().max()))
        with torch.no_grad():
            bias.copy_(new)
        changed += 1
    return {"convs": changed, "max_abs_change": worst}


_SAME_SCALE_OPS = ("relu.default", "upsample_nearest2d.vec", "max_pool2d.default")


def _requantized(node) -> bool:
    """Does every path from ``node`` reach a quantize op through ops that keep its scale (ReLU, copies)?"""
    frontier = list(node.users)
    while frontier:
        user = frontier.pop()
        if user.target == _qd("quantize_per_tensor"):
            continue
        if getattr(user.target, "__name__", None) not in _SAME_SCALE_OPS:
            return False
        frontier.extend(user.users)
    return True


def _weight_owner(node) -> str:
    """'inc.0' for a conv whose weight is get_attr 'inc.0.weight' (through its quantize / dequantize)."""
    weight = node.args[1]
    while getattr(weight, "op", None) == "call_function":
        weight = weight.args[0]
    return str(getattr(weight, "target", "")).rsplit(".", 1)[0]


def layer_report(model: nn.Module, qmodel: nn.Module, fp32_layers: list[str]) -> dict[str, list[dict]]:
    """Which weighted layers run int8, which stayed float and why, what passes through unchanged."""
    convs = [n for n in qmodel.graph.nodes if n.op == "call_function"
             and n.target in (torch.ops.aten.conv2d.default, torch.ops.aten.convolution.default)]
    int8 = {_weight_owner(n): n for n in convs if _scale(qmodel, n.args[1]) is not None}
    quantized, float_layers = [], []
    for name, m in model.named_modules():
        if not isinstance(m, _WEIGHTED):
            continue
        row = {"layer": name, "type": type(m).__name__}
        if name in int8:
            if not _requantized(int8[name]):
                row["output"] = "float: it feeds a float op (the residual add), so its result is not requantized"
            quantized.append(row)
        elif any(name == f or name.startswith(f + ".") for f in fp32_layers):
            float_layers.append({**row, "why": "kept float by the chosen tuning trial (fp32_layers)"})
        else:
            float_layers.append({**row, "why": "X86InductorQuantizer left it unannotated"})
    passthrough = [
        {"layer": name, "type": type(m).__name__,
         "why": "max / nearest copy: input and output share one scale (runs on the integers once compiled)"}
        for name, m in model.named_modules() if isinstance(m, (nn.MaxPool2d, nn.Upsample))
    ]
    return {"quantized_layers": quantized, "float_layers": float_layers, "passthrough_ops": passthrough}
