"""Measuring one compiled artifact on a device: the job a device is sent, and what it runs.

:class:`DeviceJob` names an artifact's variant and where and how it runs; :class:`DeployJob` adds
what a deploy measures.  :func:`measure` scores a runner on the val split with the job's recipe,
then benchmarks it with MLPerf LoadGen (SingleStream latency, Offline throughput) and writes
``eval.json``, ``bench.json``, ``loadgen/<scenario>/`` and ``samples/``.  With
``self_ensemble`` = n > 1 the runner is scored and timed again as an n-pass self-ensemble
(:mod:`greenpipe.runtime.ensemble`), SingleStream only.

The ``deploy`` stage (``tasks/deploy.py``) calls it in-process for a ``local`` device; a device
host's worker calls it from ``flows/device_run.py``.  This module imports neither torch nor DVC,
so a board runs it.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from greenpipe.errors import GreenpipeError
from greenpipe.params import Params
from greenpipe.quant.kernels import KERNELS_FILE, read_kernels_manifest

if TYPE_CHECKING:
    from greenpipe.recipes.base import Evaluation

SAMPLES = 3  # val outputs written under samples/ for the report
COMPILE_REPORT = "compile_report.json"  # what the compile stage writes beside its artifact (greenpipe.compile)


@dataclass(frozen=True)
class DeviceJob:
    """What every job for a device names: the artifact's variant and where and how it runs.

    Jobs are plain JSON (``to_dict`` / ``from_dict``); they travel to device hosts.
    """

    variant: str
    device: str  # key under deploy.devices
    kind: str
    target: str
    runtime: str
    batch: int
    threads: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        """The job from its JSON.  Field names that do not match mean the two hosts run different greenpipes."""
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(names))
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        missing = [n for n in required if n not in d]
        if unknown:
            raise GreenpipeError(
                f"{cls.__name__}: this host's greenpipe does not know the job field(s) {', '.join(unknown)}; the "
                "build host that sent the job runs a newer greenpipe. Install the build host's greenpipe "
                "version here and restart this host's worker"
            )
        if missing:
            raise GreenpipeError(
                f"{cls.__name__}: the job lacks the field(s) {', '.join(missing)}; the build host that sent it "
                "runs an older greenpipe than this host. Update greenpipe on the build host, or install its "
                "version here and restart this host's worker"
            )
        return cls(**d)


@dataclass(frozen=True)
class DeployJob(DeviceJob):
    """Everything a device needs to measure one artifact."""

    recipe: str
    multiple: int  # input H, W must be multiples of this (px)
    input_shape: list[int]  # one LoadGen query, batch 1 first (the recipe's bench_input)
    eval_options: dict[str, Any]  # what the recipe's evaluate needs besides the data (its eval_options)
    eval_max_side: int  # px, 0 = whole val images
    single_stream_s: float  # LoadGen minimum durations of each repeat, seconds
    offline_s: float
    artifact: str  # the artifact's path on the build host, as recorded in eval.json
    artifact_bytes: int
    self_ensemble: int = 1  # > 1: also score and time the artifact averaged over this many flips / rotations
    repeats: int = 1  # LoadGen runs per scenario: figures are their median, with the spread (min, max)
    ensemble_repeats: int = 1  # LoadGen runs of the self-ensemble rows (SingleStream only)


def _source(desc: dict) -> str:
    return f"measured on {desc['host']}, {desc['label']}"


def compiled_artifact(compiled_dir: Path, variant: str, target: str) -> tuple[dict, Path]:
    """(compile report, artifact path) of ``variant`` compiled for ``target`` under ``compiled_dir``.

    A per-kernel variant's directory (``kernels.json``: its quantizer wrote TFLite kernels or DPU
    xmodels, what the runtimes load) is deployable as it is, for every target: the artifact is the
    manifest and each kernel runs on the runtime it names. Raises GreenpipeError saying which
    compile to run when the artifact is not there.
    """
    from greenpipe.errors import GreenpipeError
    from greenpipe.io import read_json

    kernels = Path(compiled_dir) / KERNELS_FILE
    if kernels.exists():  # a per-kernel variant: its quantizer already wrote the kernels the runtimes load
        manifest = read_kernels_manifest(compiled_dir)
        missing = [k for k in ("recipe", "model_args") if k not in manifest]
        if missing:
            raise GreenpipeError(f"{kernels}: lacks {', '.join(missing)}; it was written by an older greenpipe: "
                                 f"rerun its quantize stage (dvc repro -f) to deploy it")
        return {"recipe": manifest["recipe"], "model_args": manifest["model_args"], "multiple": 1,
                "artifact": KERNELS_FILE, "kernels": len(manifest["kernels"]), "runtime": manifest["runtime"]}, kernels
    target_dir = Path(compiled_dir) / target
    report_path = target_dir / COMPILE_REPORT
    if not report_path.exists():
        raise GreenpipeError(
            f"{report_path}: missing; compile {variant} for target {target!r} first "
            f"(dvc repro compile@{variant}-{target}, or python -m tasks.compile --variant {variant} --target {target} ...)"
        )
    compiled = read_json(report_path)
    return compiled, target_dir / compiled["artifact"]


def load_artifact(recipe: str, runtime: str, path: str | Path, threads: int, batch: int = 1) -> Any:
    """A Runner for a deployed artifact: one graph on ``runtime``, or a kernel manifest on its recipe's host loop.

    A manifest (``kernels.json``) names the runtime of its kernels itself; the recipe's ``pipeline``
    runs them in order with whatever the host does between them (TSM: the shifts).
    """
    from greenpipe.runtime import load

    if Path(path).name == KERNELS_FILE:
        from greenpipe.recipes import get_recipe

        return get_recipe(recipe).pipeline(Path(path), threads, batch, load)
    return load(runtime, path, threads, batch)


def artifact_bytes(artifact: Path) -> int:
    """Size of what deploys: the file, or for a kernel manifest every file of its variant's directory."""
    if artifact.name != KERNELS_FILE:
        return artifact.stat().st_size
    return sum(p.stat().st_size for p in artifact.parent.rglob("*") if p.is_file())


def _ensembled(params: Params, recipe: Any, variant: str) -> bool:
    """Whether ``variant`` also gets the self-ensemble rows (the recipe allows it; the variant is listed)."""
    listed = params.deploy.self_ensemble_variants
    return bool(recipe.self_ensemble) and (not listed or variant in listed)


def deploy_job(params: Params, variant: str, device: str, compiled: dict, artifact: Path) -> DeployJob:
    """The job for ``device`` from params and the compile report of ``artifact``."""
    from greenpipe.recipes import get_recipe

    dev = params.deploy.devices[device]
    recipe = get_recipe(compiled["recipe"])
    multiple = int(compiled["multiple"])
    shape = recipe.bench_input(compiled["model_args"], params.deploy.input_size)
    if multiple > 1 and any(n % multiple for n in shape[-2:]):
        raise GreenpipeError(f"deploy.input_size = {params.deploy.input_size}: must be a multiple of {multiple} "
                             "for this model")
    return DeployJob(
        variant=variant,
        device=device,
        kind=dev.kind,
        target=dev.target,
        runtime=dev.runtime,
        batch=dev.batch,
        threads=params.base.threads,
        recipe=recipe.name,
        multiple=multiple,
        input_shape=list(shape),
        eval_options=recipe.eval_options(params, compiled["model_args"]),
        eval_max_side=params.deploy.eval_max_side,
        single_stream_s=params.deploy.single_stream_s,
        offline_s=params.deploy.offline_s,
        artifact=str(artifact),
        artifact_bytes=artifact_bytes(artifact),
        self_ensemble=params.deploy.self_ensemble if _ensembled(params, recipe, variant) else 1,
        repeats=params.deploy.repeats,
        ensemble_repeats=params.deploy.self_ensemble_repeats,
    )


def measure(job: DeployJob, runner: Any, data_dir: Path, out: Path, host: dict | None = None) -> dict:
    """Score ``runner`` on the val split and benchmark it; write the stage's outputs under ``out``.

    ``host`` (a device host's facts, see flows/device_run.py) replaces the runner's "local CPU" host
    line, so every figure says which machine measured it. Returns the stage's metrics: the recipe's
    metrics by name, ``quality`` (its :class:`~greenpipe.recipes.base.Quality` record), LoadGen figures.
    """
    from greenpipe.io import write_json
    from greenpipe.recipes import get_recipe

    desc = {**runner.describe(), "device": job.device, "kind": job.kind, "target": job.target}
    if host is not None:
        desc["host"] = host["label"]
        desc["host_facts"] = host
    outputs: dict[str, np.ndarray] = {}
    evaluation, bench = _score_and_time(job, runner, data_dir, out / "loadgen", outputs)
    source = _source(desc)
    report = {
        "variant": job.variant,
        "device_name": job.device,
        "artifact": job.artifact,
        "max_side": job.eval_max_side,
        "summary": evaluation.summary(),
        "per_sample": evaluation.per_sample,
        "source": f"deployed artifact on val, {source}",
    }
    bench = {**bench, "device": desc, "source": source}
    metrics = {
        "recipe": job.recipe,
        "variant": job.variant,
        "device_name": job.device,
        "target": job.target,
        **_headline(evaluation, bench),
        "input_shape": bench["input_shape"],
        "batch": job.batch,
        "model_mb": job.artifact_bytes / 1e6,
        "device": desc,
        "source": source,
    }
    if job.self_ensemble > 1:  # the same artifact again, averaged over flips / rotations of each input
        from greenpipe.runtime.ensemble import SelfEnsemble

        ensemble = SelfEnsemble(runner, job.self_ensemble)
        n = job.self_ensemble
        ens_source = _source({**desc, "label": ensemble.describe()["label"]})
        # SingleStream only: latency is what an ensemble trades; an Offline run would add its duration again.
        ens_eval, ens_bench = _score_and_time(job, ensemble, data_dir, out / f"loadgen-x{n}", offline=False,
                                              repeats=job.ensemble_repeats)
        report["self_ensemble"] = {"passes": n, "summary": ens_eval.summary(), "per_sample": ens_eval.per_sample,
                                   "source": f"deployed artifact on val, {ens_source}"}
        bench["self_ensemble"] = {**ens_bench, "passes": n, "source": ens_source}
        metrics["self_ensemble"] = {"passes": n, **_headline(ens_eval, ens_bench), "source": ens_source}
    write_json(out / "eval.json", report)
    write_json(out / "bench.json", bench)
    get_recipe(job.recipe).write_samples(outputs, out / "samples", SAMPLES)
    return metrics


def _score_and_time(job: DeployJob, runner: Any, data_dir: Path, loadgen_dir: Path,
                    outputs: dict[str, np.ndarray] | None = None, offline: bool = True,
                    repeats: int | None = None) -> tuple[Evaluation, dict]:
    """``runner``'s evaluation on the val split and its LoadGen results on ``job.input_shape`` queries
    (SingleStream, and Offline unless ``offline`` is false), ``repeats`` runs each (default ``job.repeats``)."""
    from greenpipe.bench.loadgen import benchmark
    from greenpipe.recipes import get_recipe
    from greenpipe.recipes.base import check_quality

    recipe = get_recipe(job.recipe)
    evaluation = recipe.evaluate(runner.run, data_dir, job.eval_max_side, multiple=job.multiple, outputs=outputs,
                                 **job.eval_options)
    check_quality(evaluation.quality, recipe, f"deploy {job.variant} on {job.device}")
    bench = benchmark(
        runner,
        tuple(job.input_shape),
        job.single_stream_s,
        job.offline_s if offline else None,
        loadgen_dir,
        batch=job.batch,
        seed=0,  # fixed rather than base.seed: the inputs only carry timing; keeps base.seed out of the deps
        repeats=repeats or job.repeats,
    )
    return evaluation, bench


def _headline(evaluation: Evaluation, bench: dict) -> dict:
    """The figures a metrics file leads with: quality on val, LoadGen latency, throughput and validity."""
    return {
        **evaluation.summary(),
        "p50_ms": bench["p50_ms"],
        "p90_ms": bench["p90_ms"],
        "p99_ms": bench["p99_ms"],
        "fps": bench["fps"],
        "repeats": bench["repeats"],  # the latency and fps figures are medians over this many LoadGen runs
        "spread": bench["spread"],  # {figure: [min, max]} over those runs
        "loadgen_valid": bench["valid"],  # LoadGen VALID and run to the rules' 600 s
        "loadgen_validity": bench["validity"],  # per scenario: VALID, INVALID or non-compliant (duration N s < 600 s)
        "loadgen_own_validity": bench["loadgen_validity"],  # LoadGen's own verdict per scenario
        "loadgen_duration_s": bench["duration_s"],
    }
