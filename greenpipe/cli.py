"""The ``greenpipe`` command line.

    greenpipe denoise --variant ptq8 IN_DIR OUT_DIR   # run a compiled model over your images
    greenpipe data restore | builtin | use PATH       # put a dataset where data.dvc expects it
    greenpipe check                                   # validate params.yaml, list the stages
    greenpipe run                                     # the whole DAG as a Prefect flow over DVC
    greenpipe summary                                 # print the last report
    greenpipe doctor [--markdown]                     # which external tools / meters work here
    greenpipe vitis-bundle CHECKPOINT CALIB --arch A --out B   # plain files for the Vitis AI container
    greenpipe vitis-import B ptq --out artifacts/compile/vitis_ptq/zcu104   # its xmodel back, checked
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

from greenpipe.errors import GreenpipeError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="greenpipe: CNNs from data to measured int8 deployments.")
console = Console()
err = Console(stderr=True)

def _fail(exc: GreenpipeError) -> None:
    err.print(f"[bold red]error:[/] {exc}")
    raise typer.Exit(2)


@app.command()
def denoise(
    in_dir: Path = typer.Argument(..., help="folder of noisy images (any size; 8- or 16-bit; alpha kept)"),
    out_dir: Path = typer.Argument(..., help="where the denoised PNGs go (same names, same bit depth)"),
    variant: str = typer.Option("ptq8", help="quantization variant whose compiled artifact to run"),
    target: str = typer.Option("cpu", help="compile target of the artifact"),
    model: Path = typer.Option(None, help="explicit model.onnx (default: the DVC output of compile@VARIANT-TARGET)"),
    tile: int = typer.Option(512, help="tile side in px for large images (0 = whole image at once)"),
    threads: int = typer.Option(2, help="ONNX Runtime intra-op threads"),
    self_ensemble: int = typer.Option(
        1, help="average the model over this many flips / rotations of each tile (1, 2, 4 or 8): "
        "a cleaner result for that many times the compute"),
    in_place: bool = typer.Option(
        False, "--in-place", help="OUT_DIR is IN_DIR: replace each image by its denoised PNG, moving the "
        "original into IN_DIR/originals/ first"),
) -> None:
    """Denoise every image in IN_DIR with a compiled artifact and write PNGs to OUT_DIR.

    Nothing is lost: clashing names and OUT_DIR = IN_DIR (see --in-place) are refused; depth and alpha kept.
    """
    from rich.progress import track

    from greenpipe.data.readers import IMAGE_SUFFIXES
    from greenpipe.recipes.denoise import tile_step
    from greenpipe.recipes.denoise.folder import ORIGINALS, check_output, denoise_folder, model_geometry, plan
    from greenpipe.runtime.ensemble import SelfEnsemble

    try:
        if model is None:
            from greenpipe.pipeline import stage_out

            model = stage_out(f"compile@{variant}-{target}") / "model.onnx"
        if not model.exists():
            raise GreenpipeError(f"{model}: no compiled model; run `dvc repro compile@{variant}-{target}` first")
        jobs, skipped = plan(in_dir, out_dir, in_place, IMAGE_SUFFIXES)
        geometry = model_geometry(model)
        if tile:
            tile_step(tile, geometry.context, geometry.multiple)
        from greenpipe.runtime import load

        run = SelfEnsemble(load("ort", model, threads, 1), self_ensemble).run
        check_output(out_dir, jobs)
        label = variant if self_ensemble == 1 else f"{variant} x{self_ensemble}"
        failed = denoise_folder(run, jobs, tile, geometry, in_place,
                                lambda items: track(items, description=f"denoise ({label})", console=err))
        console.print(f"wrote {len(jobs) - len(failed)} image(s) to {out_dir} with {model}")
        if skipped:
            console.print(f"skipped {len(skipped)} already done (their originals are in {in_dir / ORIGINALS}/; "
                          "move that folder away to denoise them again)")
        if failed:
            raise GreenpipeError("some inputs were skipped:\n  " + "\n  ".join(failed))
    except GreenpipeError as exc:
        _fail(exc)


@app.command()
def summary(path: Path = typer.Argument(Path("reports/summary/summary.md"))) -> None:
    """Print the last report's summary."""
    from rich.markdown import Markdown

    if not path.exists():
        _fail(GreenpipeError(f"{path}: no report yet; run `dvc repro` (or `make demo`) first"))
    text = path.read_text()
    if console.is_terminal:
        console.print(Markdown(text))
    else:  # a log or a pipe: the plain markdown keeps every column
        print(text, end="")


def check_params(path: Path) -> "Params":  # noqa: F821
    """Validate params.yaml completely, variant configs included (they live with their variants)."""
    from greenpipe.params import load_params
    from greenpipe.quant import parse_variant

    params = load_params(path)
    for name, raw in params.quantize.variants.items():
        parse_variant(name, raw)
    for name, raw in params.video.quantize.items():
        parse_variant(name, raw, "video.quantize", takes="kernels")
    return params


@app.command()
def check(params: Path = typer.Option(Path("params.yaml"), help="params file to validate")) -> None:
    """Validate params.yaml (every key, every variant) and list the stages dvc.yaml expands to."""
    from greenpipe.pipeline import stages

    try:
        p = check_params(params)
        names = [s.name for s in stages(".")]
    except GreenpipeError as exc:
        _fail(exc)
    console.print(f"{params}: valid (profile {p.base.profile}); {len(names)} stages: {', '.join(names)}")


@app.command()
def run(
    params: Path = typer.Option(Path("params.yaml"), help="params file (validated before anything runs)"),
) -> None:
    """Run the whole DAG as a Prefect flow: one task per DVC stage, DVC decides what reruns."""
    from greenpipe.cli_flow import flow_command, run_flow

    try:
        check_params(params)
        command = flow_command("pipeline")
    except GreenpipeError as exc:
        _fail(exc)
    if run_flow(command) != 0:
        raise typer.Exit(1)


@app.command()
def doctor(
    markdown: bool = typer.Option(False, "--markdown", help="print the static tool status table (docs/tools.md)"),
) -> None:
    """Which external tools, runtimes and meters are present here, their versions, and what is usable."""
    from rich.table import Table

    from greenpipe import doctor as doc

    if markdown:
        print(doc.markdown(), end="")
        return
    report = doc.examine()
    table = Table(title="external tools on this machine (greenpipe doctor)")
    for column in ("tool", "here", "version / why not", "used by", "status in greenpipe's tests", "proof on a real host"):
        table.add_column(column, overflow="fold")
    for row, found in report.tools:
        here = "[green]present[/]" if found.present else "[red]absent[/]"
        table.add_row(row.tool.name, here, found.detail, doc.used_by(row.used_by), doc.EVIDENCE[row.tool.evidence],
                      row.tool.proof)
    console.print(table)
    for kind in doc.KINDS:
        usable = ", ".join(report.usable[kind]) or "none"
        missing = ", ".join(report.unusable[kind]) or "none"
        console.print(f"{kind}s usable here: {usable}; not usable (a tool is missing): {missing}")


@app.command("vitis-bundle")
def vitis_bundle(
    checkpoint: Path = typer.Argument(..., help="the float model's checkpoint: models/denoise/checkpoint.pt, "
                                      "models/video/tsm/checkpoint.npz (Keras kernels) ..."),
    calib: Path = typer.Argument(..., help="its calibration dump: artifacts/calib, artifacts/video/calib ..."),
    arch: Path = typer.Option(..., help="the DPU's arch file, e.g. infra/arch/DPUCZDX8G/ZCU104/arch.json"),
    out: Path = typer.Option(..., help="the bundle folder to write (replaced whole)"),
    input_size: int = typer.Option(0, help="H = W of a PyTorch model's deployed input; 0 = deploy.input_size"),
    samples: int = typer.Option(0, help="calibration samples to bundle; 0 = all of the dump"),
    params: Path = typer.Option(Path("params.yaml"), help="params file (read for deploy.input_size)"),
) -> None:
    """Write what the Vitis AI container quantizes and compiles; run it with `infra/vitis/run.sh OUT ptq|qat`."""
    from greenpipe.vitis.bundle import write_bundle

    try:
        if input_size <= 0:
            from greenpipe.params import load_params

            input_size = load_params(params).deploy.input_size
        manifest = write_bundle(checkpoint, calib, arch, out, input_size, samples)
    except GreenpipeError as exc:
        _fail(exc)
    what = (f"{manifest['model_class']}, input {manifest['input_shape']}" if manifest["framework"] == "torch"
            else f"{len(manifest['kernels'])} Keras kernels")
    samples = ", ".join(f"{b}: {n}" for b, n in manifest["calibration"]["samples"].items())
    console.print(f"{out}: {manifest['recipe']} {what}; calibration samples {samples}; DPU {manifest['dpu_target']}. "
                  f"Next: infra/vitis/run.sh {out} ptq   (or qat)")


@app.command("vitis-import")
def vitis_import(
    bundle: Path = typer.Argument(..., help="the bundle folder the container ran on"),
    mode: str = typer.Argument(..., help="the mode it ran: ptq, fastft or qat (its BUNDLE/out-MODE/)"),
    out: Path = typer.Option(..., help="where the xmodel goes, in the compile layout: "
                             "artifacts/compile/vitis_MODE/TARGET (replaced whole)"),
    variant: str = typer.Option("", help="variant the compile report names; default vitis_MODE"),
    target: str = typer.Option("", help="compile target the compile report names; default OUT's folder name"),
    arch: Path = typer.Option(None, help="the DPU's arch file the xmodel is for; refused when it names another DPU"),
) -> None:
    """Check what the Vitis AI container left in BUNDLE/out-MODE/ and write its xmodel under OUT for deploy."""
    from greenpipe.vitis.results import import_results

    try:
        metrics = import_results(bundle, mode, out, variant or None, target or None, arch)
    except GreenpipeError as exc:
        _fail(exc)
    console.print(f"{out}: {metrics['variant']} for {metrics['target']} ({metrics['dpu_target']}, "
                  f"{metrics['model_mb']:.2f} MB); {metrics['source']}. Deploy it on a device whose runtime is "
                  f"vart and whose target is {metrics['target']}")


def _mount_data() -> None:
    try:
        from greenpipe.cli_data import app as data_app
    except ImportError:  # pragma: no cover - only while the data CLI is absent
        return
    app.add_typer(data_app, name="data", help="Datasets: built-in sample, your own SIDD / paired / clean folder.")
    app.add_typer(__import__("greenpipe.cli_nightly", fromlist=["app"]).app, name="nightly")
    app.add_typer(__import__("greenpipe.cli_farm", fromlist=["app"]).app, name="farm")


_mount_data()

if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
