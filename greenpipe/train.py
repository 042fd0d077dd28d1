"""The shared trainer: fit a recipe's float model on the prepared train split.

``train(params, data, out, curve)`` asks the recipe for its training task
(``Recipe.training``: model args, random batches, the loss) and runs the
loop every recipe shares: Adam with a cosine learning-rate schedule
(:func:`cosine_schedule`, also the QAT variants'), a weight average with a
warm-up (``train.ema``), bf16 autocast where the CPU has it
(``train.precision``), per-epoch validation through the recipe's own
``evaluate()``, a resume state after every epoch (greenpipe/resume.py: a
killed run resumes with the same result as an uninterrupted one), the curve
CSV and a self-describing checkpoint.  Deterministic under ``base.seed``
(same params and data -> same weights).  The train stage (tasks/train.py)
is its command line.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch.optim.lr_scheduler import LambdaLR

from greenpipe.errors import GreenpipeError
from greenpipe.io import atomic_write_bytes
from greenpipe.params import Params
from greenpipe.recipes import get_recipe
from greenpipe.recipes.base import Quality, Recipe
from greenpipe.resume import load_state, save_state, save_torch
from greenpipe.runtime.base import native_bf16


def cosine_lr(step: int, total: int, lr: float, lr_min: float) -> float:
    """The learning rate at ``step`` of ``total``: ``lr`` falling along a half cosine to ``lr_min``."""
    return lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * step / total))


def cosine_schedule(opt: torch.optim.Optimizer, total: int, lr: float, lr_min: float) -> LambdaLR:
    """A per-step scheduler for ``opt`` (made with ``lr``): :func:`cosine_lr` over ``total`` steps."""
    return LambdaLR(opt, lambda s: cosine_lr(s, total, lr, lr_min) / lr)


def cpu_has_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU does bf16 arithmetic natively (AVX512-BF16 or AMX flags in ``cpuinfo``)."""
    return bool(native_bf16(cpuinfo))


def train_precision(requested: str) -> str:
    """The arithmetic a run uses for ``train.precision``: ``auto`` is bf16 where the CPU has it natively."""
    native = cpu_has_bf16()
    if requested == "auto":
        return "bf16" if native else "fp32"
    if requested == "bf16" and not native:
        print("train: train.precision = bf16 but this CPU has no native bf16 (no avx512_bf16 / amx_bf16 "
              "flag): it is emulated and slow; set train.precision: auto or fp32", file=sys.stderr)
    return requested


def ema_with_warmup(decay: float):
    """Per-step weight averaging whose decay ramps up as ``min(decay, (1 + n) / (10 + n))`` after n updates.

    A fixed decay of 0.999 from the first step keeps the random start and the
    high-learning-rate phase in the average for thousands of steps (after
    4480 steps 1 % of the average is still the first step's weights, and the
    per-epoch val score starts far below the model's); with the ramp the
    average follows the model early on (0.998 at step 4480, ``decay`` from
    step 8991).
    """

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n: torch.Tensor) -> None:
        d = min(decay, (1.0 + float(n)) / (10.0 + float(n)))
        torch._foreach_lerp_(averaged, current, 1.0 - d)

    return update


def evaluate_float(recipe: Recipe, model: torch.nn.Module, data: Path, max_side: int, multiple: int
                   ) -> Quality:
    """The recipe's score of the float ``model`` on val, centre-cropped to ``max_side`` px (0: whole)."""
    model.eval()
    with torch.no_grad():
        run = lambda x: model(torch.from_numpy(x)).numpy()  # noqa: E731
        quality = recipe.evaluate(run, data, max_side, multiple).quality
    model.train()
    return quality


def _run_key(tp, seed: int, fingerprint: str) -> str:
    blob = json.dumps({"train": tp.model_dump(), "seed": seed, "data": fingerprint})
    return hashlib.sha256(blob.encode()).hexdigest()


def train(params: Params, data: Path, out: Path, curve: Path, resume_state: Path | None = None,
          recipe_name: str = "", net: str = "") -> dict:
    """Train the recipe's model; write ``out/checkpoint.pt`` and the curve CSV; return metrics.

    ``recipe_name`` (default ``base.recipe``) picks the recipe; ``net`` one of its networks, for a
    recipe that trains several (passed to ``Recipe.training`` as ``net=``).  The loop's settings are
    the task's ``train_params`` where it has them (a recipe's own section), else ``params.train``;
    a task's ``initial_weights`` (a state dict, e.g. a user's checkpoint) start the model.

    Metrics: ``val_<metric>`` for every metric of the recipe's final evaluation
    on the whole val split, its ``quality`` record, the loss, steps, wall time (s).
    """
    recipe = get_recipe(recipe_name or params.base.recipe)
    if not hasattr(recipe, "training"):
        raise GreenpipeError(f"recipe {recipe.name} has no training task (Recipe.training) for the shared "
                             "trainer; train it with its own stage (docs/architecture.md lists them)")
    task = recipe.training(params, data, **({"net": net} if net else {}))
    tp = getattr(task, "train_params", None) or params.train
    torch.manual_seed(params.base.seed)
    torch.set_num_threads(params.base.threads)
    model = recipe.build_model(task.model_args)
    if getattr(task, "initial_weights", None) is not None:
        model.load_state_dict(task.initial_weights)
    # channels-last: oneDNN's fast layout for convolutions on CPU; no effect on other tensors
    model = model.to(memory_format=torch.channels_last)
    multiple = recipe.multiple(task.model_args)
    key = _run_key(tp, params.base.seed, task.data_fingerprint)

    opt = torch.optim.Adam(model.parameters(), lr=tp.lr)
    total = tp.epochs * tp.steps_per_epoch
    sched = cosine_schedule(opt, total, tp.lr, tp.lr_min)
    rng = np.random.default_rng(params.base.seed)
    rows: list[dict] = []
    start_epoch, resumed_from = 0, None
    # The weight average (when train.ema > 0) is what is validated and saved: a short cosine run's last
    # iterates are noisy, their average is a better model.
    ema = torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=ema_with_warmup(tp.ema)) if tp.ema else None
    state = load_state(resume_state, key, model, opt, sched, rng)
    if state is not None:
        rows, start_epoch, resumed_from = state["rows"], state["epoch"], state["epoch"]
        if ema is not None:
            ema.load_state_dict(state["ema"])
    best = ema.module if ema is not None else model

    # bf16 autocast runs the convolutions on the CPU's bf16 units (AVX512-BF16 / AMX), ~1.7x per step
    # here; the weights, the optimizer and the weight average stay fp32.
    precision = train_precision(tp.precision)
    bf16 = precision == "bf16"
    primary = recipe.metrics[0]  # what the progress bar shows and the curve records
    column = f"val_{primary.name}"
    t0 = time.perf_counter()
    model.train()
    val = rows[-1][column] if rows else float("nan")
    shown = f"loss {{task.fields[loss]:.4f}}  val {{task.fields[val]:{primary.fmt}}} {primary.unit}"
    columns = [TextColumn("train"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
               TextColumn(shown), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, transient=False) as bar:
        done = start_epoch * tp.steps_per_epoch
        progress = bar.add_task("train", total=total, completed=done, loss=0.0, val=val)
        for epoch in range(start_epoch, tp.epochs):
            losses = []
            for _ in range(tp.steps_per_epoch):
                batch = task.batch(rng)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    outputs = model(batch[0])
                loss = task.loss(outputs.float(), batch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                if ema is not None:
                    ema.update_parameters(model)
                losses.append(loss.item())
                bar.update(progress, advance=1, loss=float(np.mean(losses[-20:])))
            if (epoch + 1) % tp.val_every == 0 or epoch + 1 == tp.epochs:
                val = evaluate_float(recipe, best, data, tp.val_max_side, multiple).value
                bar.update(progress, val=val)
            rows.append({"step": (epoch + 1) * tp.steps_per_epoch, "epoch": epoch + 1,
                         "loss": float(np.mean(losses)), column: val, "lr": sched.get_last_lr()[0]})
            if resume_state is not None:
                save_state(resume_state, key, model, opt, sched, rng, epoch=epoch + 1, rows=rows,
                           ema=ema.state_dict() if ema is not None else None)
    wall = time.perf_counter() - t0

    quality = evaluate_float(recipe, best, data, 0, multiple)
    out.mkdir(parents=True, exist_ok=True)
    save_torch(out / "checkpoint.pt", {"recipe": recipe.name, "model_args": task.model_args,
                                       "state_dict": best.state_dict(),
                                       "data_fingerprint": task.data_fingerprint,
                                       "params": {"train": tp.model_dump(), "seed": params.base.seed},
                                       "precision": precision})
    curve.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"step,epoch,loss,{column},lr"] + [
        f"{r['step']},{r['epoch']},{r['loss']:.6f},{r[column]:.4f},{r['lr']:.6g}" for r in rows
    ]
    atomic_write_bytes(curve, ("\n".join(lines) + "\n").encode())
    if resume_state is not None:
        resume_state.unlink(missing_ok=True)
    return {
        **{f"val_{name}": value for name, value in quality.values.items()},
        "quality": quality.to_dict(),
        "final_loss": rows[-1]["loss"],
        "steps": total,
        "wall_s": wall,
        "resumed_from_epoch": resumed_from,
        "params_m": sum(p.numel() for p in best.parameters()) / 1e6,
        "precision": precision,  # what training computed in; the saved weights are fp32 either way
        "source": "float PyTorch model on the whole val images (measured)",
    }
