"""Per-kernel variants ``tflite_fp32`` and ``tflite_int8``: one TFLite model per TSM kernel.

Each Keras kernel is exported as a SavedModel whose serving signature names
its inputs and output as the split manifest does (``kKK_shift``,
``kKK_residual`` -> ``kKK_output``), then converted:

* ``tflite_fp32``: float32 throughout (the CPU baseline the int8 figures are
  compared with);
* ``tflite_int8``: full-integer post-training quantization; the
  representative dataset is read from that kernel's own boundary dump
  (``<calib>/<input name>/``), so each kernel is calibrated on exactly the
  tensors it sees online, shift buffers included.  Inputs and outputs are
  int8, so the host shifts int8 tensors.  TFLite's scheme is per-tensor
  asymmetric activations with per-channel weights and float scales -- not the
  DPU's power-of-two fix-point (that is the ``vitis_tf`` path).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from pydantic import Field

from greenpipe.calib import check_finite, iter_boundary, read_manifest
from greenpipe.errors import DataError
from greenpipe.quant.kernels import write_kernels_manifest
from greenpipe.quant.registry import VariantConfig, register_variant
from greenpipe.runtime import tflite as tflite_runtime


class TfliteFp32Config(VariantConfig):
    pass


class TfliteInt8Config(VariantConfig):
    calib_samples: int = Field(0, ge=0)  # per kernel; 0 = every sample of the dump


def export_saved_model(kernel, entry: dict, path: Path) -> None:
    """Write ``kernel`` as a SavedModel with one signature named after the manifest's I/O."""
    import keras
    import tensorflow as tf

    names = [i["name"] for i in entry["inputs"]]
    out = entry["outputs"][0]["name"]
    specs = {i["name"]: tf.TensorSpec(i["shape"], tf.float32, name=i["name"]) for i in entry["inputs"]}
    archive = keras.export.ExportArchive()
    archive.track(kernel)
    archive.add_endpoint("serve", lambda feeds: {out: kernel([feeds[n] for n in names], training=False)},
                         input_signature=[specs])
    archive.write_out(str(path), verbose=False)


def representative(calib: Path, entry: dict, limit: int | None):
    """A representative-dataset generator: dicts of this kernel's dumped inputs, sample by sample."""
    names = [i["name"] for i in entry["inputs"]]
    for n in names:
        dumped = read_manifest(calib, n)
        if dumped["shape"] != entry["inputs"][names.index(n)]["shape"]:
            raise DataError(f"{calib / n}: dumped shape {dumped['shape']} != kernel input "
                            f"{entry['inputs'][names.index(n)]['shape']}; rerun `dvc repro video_calib`")
        check_finite(calib, n, limit)

    def gen():
        for arrays in zip(*(iter_boundary(calib, n, limit) for n in names)):
            yield {n: a.astype(np.float32) for n, a in zip(names, arrays)}

    return gen


def convert(kernel, entry: dict, out_file: Path, calib: Path | None, limit: int | None) -> None:
    """One kernel to ``out_file`` (.tflite): float when ``calib`` is None, else full int8."""
    import tensorflow as tf

    tmp = Path(tempfile.mkdtemp(prefix="greenpipe-kernel-"))
    try:
        export_saved_model(kernel, entry, tmp / "saved")
        conv = tf.lite.TFLiteConverter.from_saved_model(str(tmp / "saved"))
        if calib is not None:
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = representative(calib, entry, limit)
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.inference_input_type = tf.int8
            conv.inference_output_type = tf.int8
        out_file.write_bytes(conv.convert())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _quantize_all(kernels, manifest, calib, out, variant, limit) -> dict:
    from greenpipe.runtime.tflite import TfliteRunner

    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    files, io = [], []
    for kernel, entry in zip(kernels, manifest["kernels"]):
        name = f"{entry['name']}.tflite"
        convert(kernel, entry, out / name, calib, limit)
        files.append(name)
        r = TfliteRunner(out / name, threads=1)
        io.append({"name": entry["name"], "bytes": (out / name).stat().st_size,
                   "inputs": [vars(i) | {"dtype": str(i.dtype)} for i in r.inputs],
                   "outputs": [vars(i) | {"dtype": str(i.dtype)} for i in r.outputs]})
    write_kernels_manifest(out, manifest, files, variant, "tflite", {"tensors": io})
    return {"variant": variant, "kernels": len(files), "bytes": sum(k["bytes"] for k in io),
            "numerics": "float32" if calib is None else
            "int8 TFLite PTQ per kernel (per-tensor asymmetric activations, per-channel weights)",
            "bits": ({"weights": 32, "activations": 32} if calib is None
                     else {"weights": 8, "activations": 8, "bias": 32}),
            "dpu_numerics": False,  # TFLite's own int8 (asymmetric activations, float scales), not power-of-two
            "deployable_to_dpu": False,
            "calib_samples_per_kernel": None if calib is None else
            min(read_manifest(calib, manifest["kernels"][0]["inputs"][0]["name"])["count"], limit or 10**9),
            "wall_s": time.perf_counter() - t0}


# External tools (greenpipe.tooling): TensorFlow, as for the tflite runtime.
EXTERNAL_TOOLS = tflite_runtime.EXTERNAL_TOOLS


@register_variant("tflite_fp32", TfliteFp32Config, takes="kernels")
def quantize_fp32(kernels, manifest, calib, out, config) -> dict:
    return _quantize_all(kernels, manifest, None, Path(out), "tflite_fp32", None)


@register_variant("tflite_int8", TfliteInt8Config, takes="kernels")
def quantize_int8(kernels, manifest, calib, out, config) -> dict:
    return _quantize_all(kernels, manifest, Path(calib), Path(out), "tflite_int8", config.calib_samples or None)
