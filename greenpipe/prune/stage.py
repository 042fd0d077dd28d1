"""The ``prune`` stage's work: LKAM kernel pruning of any recipe's float model that declares prunable units.

A model offers pruning with a ``prunable()`` method listing greenpipe.prune.lkam ``Unit``\\ s (a
conv-BN-ReLU block and every conv reading its output: the dependencies a removed kernel drags
with it). The stage does not know the recipe: it takes the batches and the loss from
``Recipe.training`` and scores through ``Recipe.evaluate``.

1. Gate training: an LKAM gate on every unit, ``prune.gate_steps`` steps of the recipe's loss plus
   ``prune.sparsity_weight`` x the mean gate (model and gates trained together; the gates at their
   own ``prune.gate_lr``: Adam moves a parameter about its learning rate per step whatever the
   gradient's scale, and a gate starts open at sigmoid(3), so closing one in a few hundred steps
   takes a larger rate than the model's).
2. Utilisation: each kernel's mean gate over ``prune.util_batches`` training batches, saved
   (``utilisation.json``) and plotted per layer, kernels sorted, the threshold drawn.
3. Static removal: kernels below ``prune.threshold`` go with the input channels of their readers,
   except that each layer keeps the nearest multiple of ``prune.channel_multiple`` kernels (the most used:
   CPU convolutions vectorise over 8 or 16 channels); the kept kernels' utilisation is folded into
   their BatchNorm (the static-gated net, without the removed kernels); the gates go.
4. Fine-tune: ``prune.finetune_steps`` steps of the recipe's loss alone (cosine from
   ``prune.finetune_lr``).

The pruned checkpoint stores ``kept`` (kernel indices per unit) in its ``model_args``, so the
recipe's ``build_model`` rebuilds its narrowed shape. Dynamic (per-input) gating is not kept: the
exported ONNX graph is static.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from greenpipe.errors import GreenpipeError
from greenpipe.io import write_json
from greenpipe.params import Params
from greenpipe.prune.lkam import attach_gates, macs_and_params, prune, sparsity, utilisation
from greenpipe.recipes import get_recipe
from greenpipe.recipes.base import model_from_checkpoint
from greenpipe.resume import save_torch
from greenpipe.train import cosine_lr, evaluate_float


def _score(recipe, model: torch.nn.Module, data: Path, multiple: int):
    """The recipe's val quality of ``model``, left in eval mode (BatchNorm statistics frozen)."""
    quality = evaluate_float(recipe, model, data, 0, multiple)
    model.eval()
    return quality


def _fit(model: torch.nn.Module, task, rng: np.random.Generator, steps: int, lr: float, extra=None,
         gates: torch.nn.Module | None = None, gate_lr: float = 0.0) -> float:
    """``steps`` Adam steps of ``task.loss`` (+ ``extra()``), cosine from ``lr`` (``gates``' parameters from
    ``gate_lr``); the last 20 steps' mean loss."""
    model.train()
    gate_ids = {id(p) for p in gates.parameters()} if gates is not None else set()
    groups = [{"params": [p for p in model.parameters() if id(p) not in gate_ids], "lr": lr}]
    if gates is not None:
        groups.append({"params": list(gates.parameters()), "lr": gate_lr})
    opt = torch.optim.Adam(groups)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: cosine_lr(step, steps, 1.0, 1 / 30))
    losses = []
    for _ in range(steps):
        batch = task.batch(rng)
        loss = task.loss(model(batch[0]), batch)
        if extra is not None:
            loss = loss + extra()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    model.eval()
    return float(np.mean(losses[-20:])) if losses else float("nan")


def plot_utilisation(util: dict[str, np.ndarray], threshold: float, title: str, path: Path) -> None:
    """One panel per layer: its kernels' mean utilisation, sorted, with the removal threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 4
    rows = -(-len(util) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.2 * rows), squeeze=False)
    for ax, (name, u) in zip(axes.flat, util.items()):
        ax.bar(np.arange(len(u)), np.sort(u)[::-1], width=1.0, color="tab:blue")
        ax.axhline(threshold, color="tab:red", lw=1)
        ax.set_ylim(0, 1)
        ax.set_title(f"{name}: {int((u >= threshold).sum())}/{len(u)} kept", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(util):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def prune_stage(params: Params, model_dir: Path, data: Path, out: Path, figures: Path, net: str = "") -> dict:
    """Prune ``model_dir``'s checkpoint into ``out/checkpoint.pt``; utilisation under ``figures``; return metrics."""
    t0 = time.perf_counter()
    pp = params.prune
    model, ckpt = model_from_checkpoint(Path(model_dir) / "checkpoint.pt")
    recipe = get_recipe(ckpt["recipe"])
    if not callable(getattr(model, "prunable", None)):
        raise GreenpipeError(f"{model_dir}: the {recipe.name} model {type(model).__name__} declares no prunable "
                             "convolutions (a prunable() method listing greenpipe.prune.lkam.Unit); remove its "
                             "prune stage from dvc.yaml or give the model that method")
    if ckpt["model_args"].get("kept"):
        raise GreenpipeError(f"{model_dir}: this checkpoint is already pruned; prune the trained model instead")
    task = recipe.training(params, Path(data), **({"net": net} if net else {}))
    torch.manual_seed(params.base.seed)
    torch.set_num_threads(params.base.threads)
    rng = np.random.default_rng([params.base.seed, 7])
    multiple = recipe.multiple(ckpt["model_args"])
    example = task.batch(np.random.default_rng(0))[0][:1]
    macs_before, params_before = macs_and_params(model, example)
    before = _score(recipe, model, Path(data), multiple)

    units = model.prunable()
    if not units:
        raise GreenpipeError(f"{model_dir}: the {recipe.name} model lists no prunable units; nothing to prune")
    gates = attach_gates(model, units)
    gate_loss = _fit(model, task, rng, pp.gate_steps, pp.lr, lambda: pp.sparsity_weight * sparsity(gates),
                     gates, pp.gate_lr)
    util = utilisation(model, gates, [task.batch(rng)[0] for _ in range(pp.util_batches)])
    by_unit = {u.name: x for u, x in zip(units, util)}
    kernels_before = {u.name: u.kernels for u in units}
    kept = prune(model, units, util, pp.threshold, pp.channel_multiple)
    removed_only = _score(recipe, model, Path(data), multiple)
    finetune_loss = _fit(model, task, rng, pp.finetune_steps, pp.finetune_lr)
    after = _score(recipe, model, Path(data), multiple)
    macs_after, params_after = macs_and_params(model, example)

    name = Path(out).name
    plot_utilisation(by_unit, pp.threshold, f"{name}: mean LKAM gate per kernel over {pp.util_batches} training "
                     f"batches; removed below {pp.threshold:g}", Path(figures) / "utilisation.png")
    write_json(Path(figures) / "utilisation.json", {k: v.tolist() for k, v in by_unit.items()})
    out.mkdir(parents=True, exist_ok=True)
    save_torch(out / "checkpoint.pt", {"recipe": recipe.name, "model_args": {**ckpt["model_args"], "kept": kept},
                                       "state_dict": model.state_dict(),
                                       "data_fingerprint": ckpt.get("data_fingerprint", ""),
                                       "pruned_from": Path(model_dir).as_posix(),
                                       "params": {"prune": pp.model_dump(), "seed": params.base.seed}})
    return {
        "model": name,
        "pruned_from": Path(model_dir).as_posix(),
        "recipe": recipe.name,
        "macs_before": macs_before, "macs_after": macs_after,
        "macs_removed_pct": 100.0 * (1 - macs_after / macs_before),
        "params_before": params_before, "params_after": params_after,
        "threshold": pp.threshold,
        "channel_multiple": pp.channel_multiple,
        "kernels_before": kernels_before,
        "kept_kernels": {k: len(v) for k, v in kept.items()},
        **{f"val_{k}_before": v for k, v in before.values.items()},
        **{f"val_{k}_removed_only": v for k, v in removed_only.values.items()},
        **{f"val_{k}_after": v for k, v in after.values.items()},
        "gate_loss": gate_loss, "finetune_loss": finetune_loss,
        "wall_s": time.perf_counter() - t0,
        "source": f"float PyTorch model on {params.base.threads} threads; MACs counted over every Conv2d at the "
                  "model's input size (batch 1); val scores by the recipe's evaluate (measured)",
    }
