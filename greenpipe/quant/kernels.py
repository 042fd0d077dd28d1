"""The ``kernels.json`` manifest that every per-kernel variant writes next to its artifacts.

A TSM network is K kernels cut at every temporal shift, each quantized on its
own, fed by the calibration dump of *its* inputs (``<calib>/<kernel input
name>/``, :mod:`greenpipe.calib`), by a variant registered with
``takes="kernels"`` (:mod:`greenpipe.quant.registry`)::

    @register_variant("tflite_int8", TfliteInt8Config, takes="kernels")
    def quantize(kernels, manifest, calib, out, config) -> dict: ...

``kernels`` are the float Keras kernels in pipeline order, ``manifest`` the
split manifest (names and shapes of every kernel's inputs and outputs),
``out`` the variant's directory; the handler writes one artifact per kernel
plus ``kernels.json`` (:func:`write_kernels_manifest`) and returns its report.
Its entry lives under ``video.quantize``.  TensorFlow is imported by the
handlers, never here.
"""

from __future__ import annotations

from pathlib import Path

from greenpipe.io import read_json, write_json

KERNELS_FILE = "kernels.json"


def write_kernels_manifest(out: Path, manifest: dict, artifacts: list[str], variant: str, runtime: str,
                           extra: dict | None = None) -> dict:
    """``out/kernels.json``: the split manifest plus each kernel's artifact file and the runtime that runs it."""
    entries = [{**k, "artifact": a} for k, a in zip(manifest["kernels"], artifacts)]
    doc = {**manifest, "variant": variant, "runtime": runtime, "kernels": entries, **(extra or {})}
    write_json(Path(out) / KERNELS_FILE, doc)
    return doc


def read_kernels_manifest(root: str | Path) -> dict:
    from greenpipe.errors import GreenpipeError

    path = Path(root) / KERNELS_FILE
    if not path.exists():
        raise GreenpipeError(f"{path}: missing; run the per-kernel quantize stage first (dvc repro video_quantize)")
    return read_json(path)
