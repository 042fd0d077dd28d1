"""Variant ``fastft8``: int8 DPU-numerics PTQ plus layer-wise learned rounding (AdaRound).

What Vitis AI's ``fast_finetune`` does, with Brevitas' own implementation
(``brevitas_examples.common.learned_round``, the AdaRound / learned-round
trainer Brevitas ships): the model is quantized and its activation scales
calibrated exactly as ``ptq8`` does (:mod:`greenpipe.quant.dpu`); then, one
conv at a time in graph order, the rounding of every weight (floor or ceil)
is learned so that the layer's output, fed the *quantized* model's input to
it, matches the *float* layer's output on the calibration batches.  Only the
rounding moves: every weight stays an int8 value on its layer's power-of-two
grid (per-tensor, symmetric), so the result is as deployable to a DPU as
``ptq8``.  Bias correction runs last, on the learned weights.

params.yaml::

    quantize:
      variants:
        fastft8:
          act_calibration: percentile   # as ptq8
          percentile: 99.99
          iterations: {quick: 30, full: 1000}    # per layer (AdaRound paper: 10k; Brevitas examples: 1k)
          batch_size: {quick: 2, full: 4}        # calibration crops per iteration
          lr: 0.001
          rounding: hard_sigmoid        # hard_sigmoid (AdaRound) | sigmoid | identity
          loss: regularised_mse         # regularised_mse (AdaRound's round-to-0/1 term) | mse
          bias_correction: true

Run: ``dvc repro quantize@fastft8`` (needs the ``accelerate`` package, which
Brevitas' learned-round trainer imports).
"""

from __future__ import annotations

import time
from typing import Any, Iterable, Literal

import torch
from pydantic import Field
from torch import nn

from greenpipe.errors import GreenpipeError, ToolchainMissing
from greenpipe.quant import dpu
from greenpipe.quant.base import QuantResult
from greenpipe.quant.registry import VariantConfig, register_variant
from greenpipe.quant.export import is_quantized


class Fastft8Config(VariantConfig):
    act_calibration: dpu.ActCalibration = "percentile"
    percentile: float = Field(99.99, gt=50, le=100)
    iterations: int = Field(150, ge=1)  # optimizer steps per layer
    batch_size: int = Field(4, ge=1)  # calibration samples per step
    lr: float = Field(1e-3, gt=0)
    rounding: Literal["hard_sigmoid", "sigmoid", "identity"] = "hard_sigmoid"
    loss: Literal["regularised_mse", "mse"] = "regularised_mse"
    bias_correction: bool = True


def _trainer_modules():
    try:
        from brevitas_examples.common.learned_round import learned_round_args as args
        from brevitas_examples.common.learned_round import learned_round_method as method
        from brevitas_examples.common.learned_round import learned_round_trainer as trainer
        from brevitas_examples.common.learned_round.learned_round_utils import Cache
    except ModuleNotFoundError as exc:
        raise ToolchainMissing(
            f"fastft8 needs Brevitas' learned-round trainer, which failed to import: no module "
            f"{exc.name!r}. Install it into the venv: `uv pip install accelerate` (brevitas_examples "
            "imports accelerate); check with `python -c \"import brevitas_examples.common."
            "learned_round.learned_round_trainer\"`"
        ) from None
    return args, method, trainer, Cache


def _layer_cache(base: type) -> Any:
    class LayerCache(base):
        """Inputs (from the quantized model) and float targets of one layer, one sample per entry."""

        def __init__(self) -> None:
            self.inputs: list[torch.Tensor] = []
            self.outputs: list[torch.Tensor] = []

        def store_inputs(self, args, kwargs) -> None:
            x = getattr(args[0], "value", args[0])  # a QuantTensor carries its dequantized values
            self.inputs.extend(torch.split(x.detach(), 1, 0))

        def store_output(self, output) -> None:
            y = getattr(output, "value", output)
            self.outputs.extend(torch.split(y.detach(), 1, 0))

        def reset_cache(self) -> None:
            self.inputs, self.outputs = [], []

        def __len__(self) -> int:
            return len(self.inputs)

        def __getitem__(self, i):
            return self.inputs[i], self.outputs[i]

        def collate_fn(self, batch):
            inputs, outputs = zip(*batch)
            return torch.cat(inputs), torch.cat(outputs)

    return LayerCache()


def _model_forward(model: nn.Module, x: torch.Tensor) -> None:
    model(x)


def _layer_forward(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = layer(x)
    return getattr(out, "value", out)


def learned_round(model: nn.Module, batches: list[torch.Tensor], config: Fastft8Config) -> dict:
    """Learn the rounding of every quantized conv of ``model`` in place; return what was done."""
    args, method, trainer_mod, cache_base = _trainer_modules()
    from brevitas.nn.quant_layer import QuantWeightBiasInputOutputLayer

    losses = [args.LossArgs(cls="mse")]
    if config.loss == "regularised_mse":
        # AdaRound: MSE plus a term pushing every rounding variable to 0 or 1.
        losses = [args.LossArgs(cls="round_reg", kwargs={"max_count": config.iterations}),
                  args.LossArgs(cls="mse", kwargs={"reduction": "none", "dim": 1})]
    trainer_config = args.TrainerConfig(
        training_args=args.TrainingArgs(
            optimizers_args=[args.OptimizerArgs(target_params="learned_round", optimizer_cls="Adam",
                                                lr=config.lr, optimizer_kwargs={})],
            batch_size=config.batch_size,
            iters=config.iterations,
            losses_args=losses,
            use_best_model=False,
            use_amp=False,  # float16 autocast is a GPU speed trick; on CPU it only loses precision
            fast_update=False,
        ),
        training_handlers=[args.HandlerSpec(
            name="learned_round",
            config=method.LearnedRoundArgs(learned_round_param=config.rounding, learned_round_kwargs={}),
        )],
    )
    is_layer = lambda module, name: isinstance(module, QuantWeightBiasInputOutputLayer)  # noqa: E731
    layers = trainer_mod.get_blocks(model, is_layer)
    trainer = trainer_mod.LearnedRoundTrainer(config=trainer_config)
    for spec in trainer_config.training_handlers:
        method.TRAINING_HANDLERS_REGISTRY.get(spec.name)(config=spec.config).prepare_model(model)
    cache = _layer_cache(cache_base)
    t0 = time.perf_counter()
    per_layer = []
    # LearnedRoundTrainer.train() does exactly this loop, but first hands the
    # model to accelerate's GPU/CPU offloading, which fails on Brevitas' shared
    # quantizers and buys nothing on a CPU; the per-layer steps are the library's.
    for index, layer in enumerate(layers):
        cache.reset_cache()
        trainer._populate_cache(cache, model, _model_forward, layer, batches,
                                capture_quant_input=True, capture_quant_output=False)
        block_losses = trainer._instantiate_losses(layer)
        # The cache holds plain tensors (the dequantized int8 inputs); a layer
        # built to return a QuantTensor refuses a plain input, and the output's
        # values are the same either way (its bias quantizer scales itself).
        returns_quant_tensor, layer.return_quant_tensor = layer.return_quant_tensor, False
        loader = trainer._instantiate_block_dataloader(cache)
        with trainer_mod.block_optimization_cm(module=layer,
                                               target_params=trainer._get_all_target_parameters(layer)):
            init_loss, last_loss, _ = trainer._training_loop(
                model=layer, forward=_layer_forward, data_loader=loader, block_losses=block_losses)
        layer.return_quant_tensor = returns_quant_tensor
        per_layer.append({"layer": index, "loss_first_step": float(init_loss), "loss_last_step": float(last_loss)})
    model.eval()  # learned rounding is hard (floor or ceil per weight) in eval mode
    return {
        "method": "learned rounding (AdaRound), layer-wise, Brevitas learned_round trainer",
        "rounding": config.rounding,
        "loss": config.loss,
        "layers": len(layers),
        "iterations_per_layer": config.iterations,
        "batch_size": config.batch_size,
        "lr": config.lr,
        "samples": len(batches),
        "per_layer": per_layer,
        "wall_s": time.perf_counter() - t0,
    }


# External tools this module's adapters need, and how far the tests got with them (greenpipe.tooling).
EXTERNAL_TOOLS = dpu.EXTERNAL_TOOLS


@register_variant("fastft8", Fastft8Config, takes="model")
def quantize(model: nn.Module, calib: Iterable[torch.Tensor], config: Fastft8Config) -> QuantResult:
    """Quantize a float ``model`` as ptq8 does, then learn each layer's weight rounding on ``calib``."""
    if is_quantized(model):
        raise GreenpipeError(
            "fastft8 quantizes a float model, but it was given an already-quantized one; "
            "remove its `start_from:` (it calibrates itself as ptq8 does)"
        )
    batches = list(calib)
    act_quant = dpu.act_quantizer(config.act_calibration, config.percentile)
    qm = dpu.quantize_graph(model, act_quant)
    calibrated = dpu.calibrate(qm, batches)
    finetune = learned_round(qm, batches, config)
    corrected = dpu.correct_bias(qm, batches) if config.bias_correction else 0
    calibration = dpu.calibration_record(config.act_calibration, config.percentile, calibrated, corrected)
    return QuantResult(
        model=qm.eval(),
        dpu_numerics=True,
        deployable_to_dpu=True,
        bits=dict(dpu.DPU_BITS),
        report={"calibration": calibration, "fast_finetune": finetune, **dpu.layer_report(qm)},
    )
