"""``greenpipe data ...``: put a dataset where the ingest stage reads it.

    greenpipe data builtin [OUT]              # the built-in photographs (no download)
    greenpipe data use PATH [--out OUT]       # your SIDD / paired / clean folder, copied
    greenpipe data restore [--out OUT]        # whatever data.dvc records, else the built-in sample

OUT defaults to ``data``, the folder dvc.yaml's ingest stage reads
(``--raw data``).  A typer sub-app; greenpipe/cli.py mounts it as ``data``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import typer
from rich.console import Console

from greenpipe.errors import DataError, GreenpipeError

app = typer.Typer(
    no_args_is_help=True, help="Datasets: built-in sample, your own SIDD / paired / clean folder."
)
# No markup: paths and messages print as they are ("[10, 48] dB" is not a style tag).
console = Console(soft_wrap=True, markup=False, highlight=False)

# Where dvc.yaml's ingest stage reads the raw dataset (`--raw data`).
DEFAULT_RAW = Path("data")


def _fail(exc: GreenpipeError) -> None:
    Console(stderr=True, soft_wrap=True, markup=False, highlight=False).print(
        f"error: {exc}", style="bold red"
    )
    raise typer.Exit(2)


def _is_empty(folder: Path) -> bool:
    return not folder.exists() or (folder.is_dir() and not any(folder.iterdir()))


def _describe(root: Path) -> str:
    from greenpipe.data.readers import detect_layout, read_samples

    layout = detect_layout(root)
    samples = read_samples(root, layout)
    groups = len({s.group for s in samples})
    return f"{layout} layout, {len(samples)} sample(s) from {groups} source image(s)/scene(s)"


def copy_dataset(src: Path, out: Path, force: bool = False) -> tuple[str, int]:
    """Copy the files of the dataset at ``src`` (layout detected) to ``out``; return (layout, samples).

    Only the files the reader uses are copied, at the same relative paths, so
    ``out`` reads back as the same layout.  The copy lands in a temporary
    folder beside ``out`` first: a failure leaves ``out`` as it was.
    """
    from greenpipe.data.builtin import SOURCES_FILE
    from greenpipe.data.readers import detect_layout, read_samples
    from greenpipe.io import replacing_dir

    src, out = Path(src), Path(out)
    layout = detect_layout(src)
    samples = read_samples(src, layout)
    src_abs, out_abs = src.resolve(), out.resolve()
    if out_abs == src_abs or src_abs in out_abs.parents or out_abs in src_abs.parents:
        raise DataError(f"{out}: overlaps the source folder {src}; copy to a folder outside it")
    if not _is_empty(out) and not force:
        raise DataError(f"{out}: not empty; empty it first or pass --force to replace it")
    files = [p for s in samples for p in (s.clean, s.noisy) if p is not None]
    if layout == "builtin":
        files.append(src / SOURCES_FILE)

    with replacing_dir(out) as tmp:
        for path in files:
            target = tmp / path.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    return layout, len(samples)


def _out_hash(dvc_file_text: bytes) -> str:
    import yaml

    return str(yaml.safe_load(dvc_file_text)["outs"][0].get("md5"))


def _dvc(*args: str) -> str:
    """Run a DVC command in this checkout; its output, or a GreenpipeError with DVC's message."""
    done = subprocess.run([sys.executable, "-m", "dvc", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise GreenpipeError(f"`dvc {' '.join(args)}` failed: {(done.stderr or done.stdout).strip()[-500:]}")
    return done.stdout


@app.command()
def builtin(
    out: Path = typer.Argument(DEFAULT_RAW, help="folder to write clean/ and SOURCES.json into"),
) -> None:
    """Copy the built-in photographs (shipped inside installed packages) into OUT."""
    from greenpipe.data.builtin import materialize

    try:
        records = materialize(out)
    except GreenpipeError as exc:
        _fail(exc)
    console.print(f"wrote {len(records)} built-in image(s) to {out}/clean (licences: {out}/SOURCES.json)")


@app.command()
def use(
    path: Path = typer.Argument(..., help="your dataset: SIDD Medium sRGB, clean/ + noisy/, or clean images"),
    out: Path = typer.Option(DEFAULT_RAW, help="where the ingest stage reads raw data"),
    force: bool = typer.Option(False, help="replace OUT when it is not empty"),
) -> None:
    """Copy your dataset folder into OUT after checking its layout, and track it with DVC."""
    try:
        layout, count = copy_dataset(path, out, force)
        console.print(f"found the {layout} layout in {path}: copied {count} sample(s) to {out}")
        if Path(".dvc").is_dir() and out.resolve().is_relative_to(Path.cwd()):
            _dvc("add", "-q", str(out))
            console.print(f"`dvc add {out}` done: {out}.dvc now records your data; `dvc repro` reruns what depends on it")
    except GreenpipeError as exc:
        _fail(exc)


@app.command()
def restore(
    out: Path = typer.Option(DEFAULT_RAW, help="where the ingest stage reads raw data"),
    dvc_file: Path = typer.Option(Path("data.dvc"), help="the DVC file that records OUT"),
) -> None:
    """Make OUT hold the dataset: keep it if present, else check out DVC_FILE, else the built-in sample."""
    from greenpipe.data.builtin import materialize

    try:
        if not _is_empty(out):
            console.print(f"{out}: already holds a dataset ({_describe(out)})")
            return
        if dvc_file.is_file():
            done = subprocess.run(
                [sys.executable, "-m", "dvc", "checkout", "-q", str(dvc_file)],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode == 0 and not _is_empty(out):
                console.print(f"checked out {out} from the DVC cache ({_describe(out)})")
                return
        records = materialize(out)
        console.print(f"wrote the built-in sample to {out}: {len(records)} image(s)")
        if dvc_file.is_file():
            # Record the written sample's hash and compare: equal means data.dvc was the
            # built-in sample all along (and it is now in the local cache).
            recorded = dvc_file.read_bytes()
            _dvc("commit", "-q", "-f", str(dvc_file))
            if _out_hash(dvc_file.read_bytes()) != _out_hash(recorded):
                dvc_file.write_bytes(recorded)
                shutil.rmtree(out)  # it was empty before: leave it so
                raise GreenpipeError(
                    f"{dvc_file} records a dataset other than the built-in sample, and it is not in the DVC "
                    f"cache. Fetch it with `dvc pull {dvc_file}` (remote configured), or switch to the "
                    f"built-in sample with `dvc add {out}`."
                )
    except GreenpipeError as exc:
        _fail(exc)
