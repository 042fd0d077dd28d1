"""Per-kernel variant ``vitis_tf``: each TSM kernel through vai_q_tensorflow and vai_c_tensorflow.

For every kernel it writes, under the variant's directory:

* ``kKK.pb``: the float kernel as a frozen inference GraphDef whose
  placeholders are the manifest's input names (``kKK_shift``,
  ``kKK_residual``) and whose output node is ``kKK_output``;
* ``commands.sh``: per kernel, the ``vai_q_tensorflow quantize`` call
  (``--input_nodes/--input_shapes/--output_nodes`` from the split manifest,
  ``--input_fn greenpipe.quant.vitis_tf_input.input_fn`` serving that
  kernel's calibration dump) and the ``vai_c_tensorflow`` compile of its
  ``quantize_eval_model.pb`` for the DPU arch (UG1414, "vai_q_tensorflow
  Usage" and "Compiling the Model");
* ``kernels.json``: the split manifest plus each kernel's xmodel path.

The commands run when ``vai_q_tensorflow`` and ``vai_c_tensorflow`` are on
PATH (the Vitis AI TensorFlow 1.15 container); otherwise the variant writes
everything above and raises :class:`ToolchainMissing` naming what is missing,
meant for the same ``commands.sh`` to run inside the container. As written
it cannot: ``input_fn`` imports greenpipe (Python 3.11), which the container
lacks, and Keras TF 2 kernels belong to vai_q_tensorflow2, not the TF 1.15
quantizer. The container bundle (:mod:`greenpipe.vitis`: ``greenpipe
vitis-bundle`` on the video checkpoint) takes the same kernels to
vai_q_tensorflow2 and vai_c_tensorflow2 instead.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

from pydantic import Field

from greenpipe.calib import read_manifest
from greenpipe.errors import GreenpipeError, ToolchainMissing
from greenpipe.quant.kernels import write_kernels_manifest
from greenpipe.quant.registry import VariantConfig, register_variant
from greenpipe import tooling

TOOLS = ("vai_q_tensorflow", "vai_c_tensorflow")
INPUT_FN = "greenpipe.quant.vitis_tf_input.input_fn"


class VitisTfConfig(VariantConfig):
    calib_iter: int = Field(0, ge=0)  # calibration batches per kernel; 0 = every dumped sample
    quant_method: int = Field(1, ge=0, le=2)  # vai_q_tensorflow --method: 0 non-overflow, 1 min-diffs, 2 min-diffs + depthwise
    arch: str = "infra/arch/DPUCZDX8G/ZCU104/arch.json"  # the DPU's arch.json, relative to the repo root


def commands(manifest: dict, calib: Path, out: Path, config: VitisTfConfig, count: int) -> list[list[str]]:
    """Per kernel: the vai_q_tensorflow quantize argv and the vai_c_tensorflow argv (pure; no tool needed)."""
    calib_iter = min(config.calib_iter or count, count)  # input_fn serves only what was dumped
    cmds = []
    for k in manifest["kernels"]:
        name = k["name"]
        q_dir = out / "vai_q" / name
        cmds.append([
            "vai_q_tensorflow", "quantize",
            "--input_frozen_graph", str(out / f"{name}.pb"),
            "--input_nodes", ",".join(i["name"] for i in k["inputs"]),
            "--input_shapes", ":".join(",".join(str(d) for d in i["shape"]) for i in k["inputs"]),
            "--output_nodes", ",".join(o["name"] for o in k["outputs"]),
            "--input_fn", INPUT_FN,
            "--method", str(config.quant_method),
            "--calib_iter", str(calib_iter),
            "--output_dir", str(q_dir),
        ])
        cmds.append([
            "vai_c_tensorflow",
            "--frozen_pb", str(q_dir / "quantize_eval_model.pb"),
            "--arch", config.arch,
            "--output_dir", str(out / "compiled" / name),
            "--net_name", name,
        ])
    return cmds


def environment(calib: Path, kernel: str) -> dict[str, str]:
    """What :mod:`greenpipe.quant.vitis_tf_input` reads to serve ``kernel``'s dump."""
    return {"GREENPIPE_CALIB": str(calib), "GREENPIPE_KERNEL": kernel}


def freeze(kernel, entry: dict, path: Path) -> None:
    """Write ``kernel`` as a frozen GraphDef: placeholders named after its inputs, output node ``kKK_output``."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    names = [i["name"] for i in entry["inputs"]]
    out = entry["outputs"][0]["name"]
    specs = [tf.TensorSpec(i["shape"], tf.float32, name=i["name"]) for i in entry["inputs"]]

    @tf.function(input_signature=specs)
    def serve(*args):
        return tf.identity(kernel(list(args), training=False), name=out)

    frozen = convert_variables_to_constants_v2(serve.get_concrete_function())
    graph = frozen.graph.as_graph_def()
    missing = [n for n in (*names, out) if n not in {node.name for node in graph.node}]
    if missing:
        raise GreenpipeError(f"{path.name}: frozen graph lacks nodes {missing}; the kernel's names did not survive "
                             "freezing (a TensorFlow version change?)")
    path.write_bytes(graph.SerializeToString())


# External tools this module's adapters need, and how far the tests got with them (greenpipe.tooling).
EXTERNAL_TOOLS = (tooling.Tool(
    "vai_q_tensorflow + vai_c_tensorflow", "never",
    "nothing: tests/video/test_calib_and_quant.py checks the commands greenpipe writes, not their run. As "
    "written they cannot run in a Vitis AI container (their input_fn imports greenpipe, which needs Python 3.11; "
    "Keras TF 2 kernels belong to vai_q_tensorflow2, the container bundle's path for them)",
    "docker run -v $PWD:/workspace -w /workspace xilinx/vitis-ai-tensorflow2-cpu:ubuntu2004-3.5.0.300 "
    "sh artifacts/video/quant/vitis_tf/commands.sh",
    tooling.command(["vai_q_tensorflow", "--version"])),)


@register_variant("vitis_tf", VitisTfConfig, takes="kernels")
def quantize(kernels, manifest, calib, out, config) -> dict:
    out, calib = Path(out), Path(calib).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for kernel, entry in zip(kernels, manifest["kernels"]):
        freeze(kernel, entry, out / f"{entry['name']}.pb")
    count = int(read_manifest(calib, manifest["kernels"][0]["inputs"][0]["name"])["count"])
    cmds = commands(manifest, calib, out, config, count)
    lines = ["#!/bin/sh", "# Per-kernel vai_q_tensorflow + vai_c_tensorflow; run inside the Vitis AI TF container.",
             "set -e"]
    for k, (q, c) in zip(manifest["kernels"], zip(cmds[::2], cmds[1::2])):
        env = " ".join(f"{key}={shlex.quote(v)}" for key, v in environment(calib, k["name"]).items())
        lines += [f"{env} {shlex.join(q)}", shlex.join(c)]
    (out / "commands.sh").write_text("\n".join(lines) + "\n")
    xmodels = [f"compiled/{k['name']}/{k['name']}.xmodel" for k in manifest["kernels"]]
    write_kernels_manifest(out, manifest, xmodels, "vitis_tf", "vart", {"arch": config.arch})
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        raise ToolchainMissing(
            f"variant vitis_tf needs {' and '.join(missing)} on PATH (AMD Vitis AI, TensorFlow 1.15 flavour), "
            f"which {'are' if len(missing) > 1 else 'is'} not installed here. The frozen kernels and the exact "
            f"commands are in {out}/commands.sh, for a Vitis AI TensorFlow container; they have never run there "
            f"and their input_fn imports greenpipe, which such a container cannot run (docs/tools.md); the "
            f"container bundle takes these kernels to vai_q_tensorflow2 (`greenpipe vitis-bundle`). "
            f"Check: `which {' '.join(TOOLS)}`."
        )
    for k, q, c in zip(manifest["kernels"], cmds[::2], cmds[1::2]):
        for argv, env in ((q, environment(calib, k["name"])), (c, {})):
            done = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True, check=False)
            if done.returncode:
                raise GreenpipeError(f"{argv[0]} failed on kernel {k['name']} (exit {done.returncode}): "
                                     f"{done.stderr.strip()[-800:]}; the full command is in {out}/commands.sh")
    return {"variant": "vitis_tf", "kernels": len(kernels), "arch": config.arch,
            "numerics": "DPU int8, power-of-two scales (vai_q_tensorflow)"}
