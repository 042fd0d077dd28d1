"""The recipe protocol: everything the shared stages need to know about one system.

Validation, training, calibration dumps, quantization, compile, deploy, eval,
soak, the report and the nightly gate are shared and never name a recipe's
metric: they read a :class:`Quality` record. A recipe is a package
``greenpipe/recipes/<name>/`` whose ``__init__`` registers one object with
``RECIPES.register("<name>")``, and a line in ``greenpipe/recipes/__init__.py``
imports it. docs/architecture.md ("How to add a recipe") walks through it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from greenpipe.registry import Registry

if TYPE_CHECKING:  # torch only where a model is built: device hosts evaluate artifacts without it
    import torch
    from pydantic import BaseModel
    from torch import nn

    from greenpipe.calib import CalibrationSamples
    from greenpipe.params import Params


@dataclass(frozen=True)
class Metric:
    """One figure a recipe scores: its name in metrics files, how to show it, which way is better."""

    name: str  # key in metrics JSON, e.g. "top1"
    label: str  # column heading, e.g. "top-1"
    unit: str = ""  # "dB", "%", "" (a ratio)
    higher_is_better: bool = True
    lo: float = -math.inf  # plausible range: a value outside it is a broken evaluation, not a bad model
    hi: float = math.inf
    fmt: str = ".3f"
    column: bool = True  # a column of the report's table (False: a property of the data, not of a model)

    def heading(self) -> str:
        return f"{self.label} {self.unit}".strip()

    def format(self, value: float | None) -> str:
        from greenpipe.report.text import num

        return num(value, self.fmt)


@dataclass(frozen=True)
class Quality:
    """What an evaluation scored: the primary metric and its direction, secondary metrics, units.

    ``values`` holds every metric by name (the primary one included); ``samples`` is how many val
    samples were scored. Metrics files carry it as ``quality`` (``to_dict``) beside the flat values.
    """

    primary: str
    values: Mapping[str, float]
    higher_is_better: bool
    units: Mapping[str, str] = field(default_factory=dict)
    samples: int = 0

    @property
    def value(self) -> float:
        return float(self.values[self.primary])

    @property
    def unit(self) -> str:
        return self.units.get(self.primary, "")

    @property
    def secondary(self) -> dict[str, float]:
        return {k: v for k, v in self.values.items() if k != self.primary}

    def worse_by(self, reference: float) -> float:
        """How much worse this is than ``reference`` of the same metric, in its unit (negative = better)."""
        return reference - self.value if self.higher_is_better else self.value - reference

    def to_dict(self) -> dict[str, Any]:
        return {"primary": self.primary, "value": self.value, "higher_is_better": self.higher_is_better,
                "unit": self.unit, "values": dict(self.values), "units": dict(self.units),
                "samples": self.samples}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Quality:
        return cls(d["primary"], dict(d["values"]), bool(d["higher_is_better"]), dict(d.get("units", {})),
                   int(d.get("samples", 0)))

    @classmethod
    def of(cls, metrics: tuple[Metric, ...], values: Mapping[str, float], samples: int) -> Quality:
        """The record for ``values`` scored under ``metrics`` (the first is the primary one)."""
        return cls(metrics[0].name, {m.name: float(values[m.name]) for m in metrics if m.name in values},
                   metrics[0].higher_is_better, {m.name: m.unit for m in metrics}, samples)


@dataclass(frozen=True)
class Evaluation:
    """A recipe's score of one model or artifact on the val split."""

    quality: Quality
    per_sample: list[dict]  # one row per val sample: {"name": ..., <metric>: ...}
    extra: dict = field(default_factory=dict)  # recipe-specific figures (a confusion matrix, ...)

    def summary(self) -> dict[str, Any]:
        """The flat figures a metrics file leads with: every metric by name, the sample count, the record."""
        return {**self.quality.values, "samples": self.quality.samples, "quality": self.quality.to_dict()}


@dataclass(frozen=True)
class Reference:
    """Another method scored on the same val data (a classical baseline, the float model): a report row."""

    label: str
    values: Mapping[str, float]  # by metric name
    source: str  # where the figures come from (a metrics file, how measured)
    color: str = "tab:red"  # its line in the Pareto plot


class TrainingTask(Protocol):
    """What the shared trainer (greenpipe/train.py) runs for one recipe: its batches and its loss.

    The trainer owns the rest (optimizer, schedule, weight average, precision,
    validation through ``Recipe.evaluate``, resume, checkpoint).
    """

    model_args: dict[str, Any]  # what ``Recipe.build_model`` takes; stored in the checkpoint
    data_fingerprint: str  # identifies the training data (checkpoint provenance, resume key)

    def batch(self, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
        """One random batch drawn from ``rng`` only: ``(inputs, *targets)``; ``inputs`` go to the model."""

    def loss(self, outputs: torch.Tensor, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The scalar training loss of the model's fp32 ``outputs`` on ``batch``."""


class Recipe(Protocol):
    """One system greenpipe carries. ``metrics[0]`` is the primary metric (what the gate compares).

    ``self_ensemble`` says whether averaging the outputs over flips / rotations of the input
    (greenpipe.runtime.ensemble) is meaningful for it (deploy.self_ensemble is ignored otherwise).
    """

    name: str
    metrics: tuple[Metric, ...]
    self_ensemble: bool
    validate_params: type[BaseModel] | None
    """The frozen type of params.yaml's ``validate:`` section (its data checks); None: it has none."""

    def build_model(self, model_args: dict[str, Any]) -> nn.Module:
        """A fresh float model from the ``model_args`` a checkpoint stores."""

    def boundaries(self, model: nn.Module) -> dict[str, nn.Module | None]:
        """Pipeline boundaries: name -> module whose *input* is dumped (None = the model input)."""

    def calibration_samples(
        self, model_dir: Path, data_root: Path, params: Params, rng: np.random.Generator
    ) -> CalibrationSamples:
        """What the calibration dump holds: the float model's tensors at every boundary, per sample.

        The model is the one the train stage wrote to ``model_dir``; samples are drawn from
        the train split under ``data_root`` with ``rng`` only (in the recipe's own params
        section). ``greenpipe.calib.dump_calibration`` writes them, the same for every recipe.
        """

    def multiple(self, model_args: dict[str, Any]) -> int:
        """Input H and W must be multiples of this (the runtime pads)."""

    def evaluate(
        self,
        run: Callable[[np.ndarray], np.ndarray],
        data_root: Path,
        max_side: int = 0,
        multiple: int = 8,
        outputs: dict[str, np.ndarray] | None = None,
    ) -> Evaluation:
        """Score ``run`` (input batch -> output batch, numpy) on the val split.

        When ``outputs`` is a dict, each post-processed output is stored in it by sample name (the
        compile stage compares them with the fake-quant model's; deploy writes a few as samples).
        """

    def write_samples(self, outputs: Mapping[str, np.ndarray], out_dir: Path, count: int) -> list[Path]:
        """Write up to ``count`` of ``outputs`` as files a person looks at (the report links them)."""

    def references(self, metrics: Path) -> list[Reference]:
        """Other methods on the same val data, from the recipe's own stages' metrics under ``metrics``."""

    def bench_input(self, model_args: dict[str, Any], input_size: int) -> tuple[int, ...]:
        """The shape of one benchmark / soak query for the deployed artifact (batch 1 first).

        ``input_size`` is ``deploy.input_size``; a recipe whose model takes a fixed size ignores it.
        """

    def eval_options(self, params: Params, model_args: dict[str, Any]) -> dict[str, Any]:
        """Keyword arguments ``evaluate`` needs besides the data (they travel in a device job: JSON)."""

    def eval_files(self, data_root: Path) -> list[Path]:
        """The files under ``data_root`` that ``evaluate`` reads (what a remote device host is sent)."""

    def pipeline(self, manifest: Path, threads: int, batch: int, load: Callable[..., Any]) -> Any:
        """A Runner over a kernel manifest (``kernels.json``) of more than one kernel: the recipe's host loop.

        ``load(runtime, path, threads, batch)`` loads one kernel (greenpipe.runtime.load, passed in so
        that a recipe never imports the runtimes, some of which rebuild models through the recipes).

        ``run(x)`` takes what ``evaluate`` hands its runner; ``describe()`` says what ran.
        """


    def training(self, params: Params, data_root: Path) -> TrainingTask:
        """The training task on the prepared data at ``data_root`` under ``params`` (train section, seed).

        Raises DataError when the data cannot be trained on (e.g. a sample smaller than a crop).
        """


RECIPES: Registry[Recipe] = Registry("recipe")


def get_recipe(name: str) -> Recipe:
    return RECIPES.get(name)


def recipe_validate_params(params: Params) -> BaseModel:
    """``params``' ``validate:`` section as the type ``base.recipe`` declares (``Recipe.validate_params``).

    Params checked the section against that type when it was loaded; a recipe that declares none
    has no validate stage to read it.
    """
    from pydantic import ValidationError

    from greenpipe.errors import ParamsError
    from greenpipe.errors import invalid_params

    recipe = get_recipe(params.base.recipe)
    if recipe.validate_params is None:
        raise ParamsError(f"base.recipe = {recipe.name!r}: recipe {recipe.name} has no data checks "
                          "(Recipe.validate_params is None); its data is not validated by this stage")
    try:
        return recipe.validate_params.model_validate(params.validate_)
    except ValidationError as exc:
        raise invalid_params(exc, key="validate") from None


def write_sample_images(outputs: Mapping[str, np.ndarray], out_dir: Path, count: int,
                        render: Callable[[np.ndarray], np.ndarray]) -> list[Path]:
    """The first ``count`` outputs (by name) as ``out_dir/<name>.png``, each image ``render(output)``."""
    from greenpipe.io import write_image

    names = sorted(outputs)[:count]
    for name in names:
        write_image(out_dir / f"{name}.png", render(outputs[name]))
    return [out_dir / f"{name}.png" for name in names]


class OneKernelRecipe:
    """The defaults of a recipe whose model is one kernel and whose prepared data has ``manifest.json``
    and a ``val/`` folder: ``evaluate`` needs nothing besides the data, a remote host is sent that val
    split, and a manifest of several kernels is not its artifact. Subclass it and define the rest.
    """

    name: str

    def eval_options(self, params: Params, model_args: dict[str, Any]) -> dict[str, Any]:
        return {}

    def eval_files(self, data_root: Path) -> list[Path]:
        """``manifest.json`` and every file under ``val/``."""
        data_root = Path(data_root)
        return [data_root / "manifest.json", *sorted(p for p in (data_root / "val").rglob("*") if p.is_file())]

    def pipeline(self, manifest: Path, threads: int, batch: int, load: Callable[..., Any]) -> Any:
        from greenpipe.errors import GreenpipeError

        raise GreenpipeError(f"{manifest}: the {self.name} model is one kernel; "
                             "a manifest of several is not its artifact")


def metric_of(recipe: Recipe, name: str, key: str = "") -> Metric:
    """The recipe's :class:`Metric` called ``name``; with ``key`` (a params key), an unknown name is an error."""
    found = next((m for m in recipe.metrics if m.name == name), None)
    if found is not None:
        return found
    if key:
        from greenpipe.errors import ParamsError

        raise ParamsError(f"{key} = {name!r}: not a metric of recipe {recipe.name!r}; "
                          f"choose one of {', '.join(m.name for m in recipe.metrics)} (or \"\" for the primary one)")
    return Metric(name, name)


def check_quality(quality: Quality, recipe: Recipe, where: str) -> None:
    """Raise when a metric is not finite or outside its plausible range: the evaluation, not the model, broke."""
    from greenpipe.errors import GreenpipeError

    for m in recipe.metrics:
        v = quality.values.get(m.name)
        if v is None:
            continue
        if not math.isfinite(v) and not (v == math.inf and m.hi == math.inf):
            raise GreenpipeError(f"{where}: {recipe.name} metric {m.name} = {v}: not a finite number")
        if not m.lo <= v <= m.hi:
            raise GreenpipeError(
                f"{where}: {recipe.name} metric {m.name} = {v:g} is outside its plausible range "
                f"[{m.lo:g}, {m.hi:g}] {m.unit}; the evaluation is broken, not the model"
            )


def load_checkpoint(path: str | Path) -> dict:
    """A self-describing checkpoint: recipe, model_args, state_dict, data fingerprint."""
    import torch

    from greenpipe.errors import GreenpipeError

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise GreenpipeError(f"{path}: no checkpoint; run the train stage first (dvc repro train)") from None
    for key in ("recipe", "model_args", "state_dict"):
        if key not in ckpt:
            raise GreenpipeError(f"{path}: not a greenpipe checkpoint (no {key!r}); retrain with `dvc repro train`")
    return ckpt


def model_from_checkpoint(path: str | Path) -> "tuple[nn.Module, dict]":
    """Rebuild the float model a checkpoint describes, in eval mode."""
    ckpt = load_checkpoint(path)
    model = get_recipe(ckpt["recipe"]).build_model(ckpt["model_args"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), ckpt
