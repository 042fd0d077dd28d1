"""Quantize, export and compile a greenpipe Vitis bundle inside a Vitis AI 3.5 container.

A standalone script: ``greenpipe vitis-bundle`` copies it into every bundle,
and ``infra/vitis/run.sh BUNDLE ptq|fastft|qat|check`` runs it in the container. It
never imports greenpipe and uses only what the container ships: Python 3.8,
numpy, and for a PyTorch bundle torch 1.13, vai_q_pytorch (``pytorch_nndct``)
and ``vai_c_xir`` (``xilinx/vitis-ai-pytorch-cpu:ubuntu2004-3.5.0.306``), for
a Keras bundle TensorFlow 2.12, vai_q_tensorflow2 and ``vai_c_tensorflow2``
(``xilinx/vitis-ai-tensorflow2-cpu:ubuntu2004-3.5.0.300``). Written from the
vai_q_pytorch, vai_q_tensorflow2 and compiler sections of UG1414 (v3.5); it
has not been run in either container yet (docs/tools.md)::

    python vai_quantize.py BUNDLE --check        # framework + numpy only: model.py reproduces greenpipe's outputs
    python vai_quantize.py BUNDLE --mode ptq     # calibrate, export, compile for arch.json
    python vai_quantize.py BUNDLE --mode fastft  # ptq with vai_q's fast finetune (AdaQuant) before export
    python vai_quantize.py BUNDLE --mode qat --qat-steps 200

Steps, each written to ``<out>/report.json`` as it completes:

1. check: ``model.py``'s ``load("weights.npz")`` on ``reference.npz``'s inputs
   gives its outputs (max |diff| <= 1e-4); otherwise stop, nothing is quantized;
2. PyTorch ptq: ``torch_quantizer("calib", ...)`` with the DPU target of
   ``arch.json``, every calibration sample through ``quant_model``,
   ``export_quant_config()``; ``torch_quantizer("test", ...)``, one forward of
   the reference input (its shape is the deployed shape),
   ``export_xmodel(deploy_check=False)``.
   PyTorch fastft: as ptq, with ``quantizer.fast_finetune(evaluate, (quant_model,
   pairs, l1_loss))`` in calib mode before the calibration forwards (pairs:
   the first ``--ft-samples`` calibration samples with the float model's
   outputs on them; the bundle holds no labels) and ``quantizer.load_ft_param()``
   in test mode before the export.
   PyTorch qat: ``QatProcessor(model, (dummy,), bitwidth=8)``,
   ``trainable_model()``, ``--qat-steps`` Adam steps matching the float
   model's outputs on the calibration samples (L1; the bundle holds no
   labels), ``to_deployable()``, ``deployable_model(used_for_xmodel=True)``,
   one forward, ``export_xmodel()``.
   Keras, per kernel: ptq ``VitisQuantizer(kernel).quantize_model(calib_dataset=...)``;
   fastft the same with ``include_fast_ft=True, fast_ft_epochs=--ft-epochs``;
   qat ``get_qat_model(init_quant=True, calib_dataset=...)``, ``fit`` towards
   the float kernel's outputs (MAE), ``VitisQuantizer.get_deploy_model()``;
   the quantized kernel saved as ``quantized/<kernel>.h5``;
3. compile: ``vai_c_xir -x quantized/<Model>_int.xmodel`` (PyTorch) or
   ``vai_c_tensorflow2 -m quantized/<kernel>.h5`` (each Keras kernel) with
   ``-a arch.json``, into ``compiled/``.

``report.json`` also holds ``mode`` and ``status``: ``running`` while it runs,
``failed`` with the ``error`` when it stops, ``passed`` once every step ran,
with ``outputs``: each compiled xmodel and compiler log (relative to
``<out>``) with its size and sha256 (what ``greenpipe vitis-import`` checks
before it takes the xmodel back).

Exit status 0 when every step ran, 2 with one line naming what is missing or wrong.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.util
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

CONTAINERS = {
    "torch": ("xilinx/vitis-ai-pytorch-cpu:ubuntu2004-3.5.0.306", "vitis-ai-pytorch"),
    "keras": ("xilinx/vitis-ai-tensorflow2-cpu:ubuntu2004-3.5.0.300", "vitis-ai-tensorflow2"),
}
CHECK_TOLERANCE = 1e-4  # max |bundled - greenpipe| on the reference inputs: the same float math, another version


class BundleError(Exception):
    """A problem the user can act on: one line, exit status 2."""


def need(module: str, what: str, framework: str = "torch"):
    """Import ``module`` or raise BundleError naming the missing module, what ships it and where to run."""
    image, env = CONTAINERS[framework]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        missing = getattr(exc, "name", None) or module
        raise BundleError(
            f"vai_quantize.py needs the Python module {missing!r} ({what}), which is not importable here. "
            f"Run this script inside the Vitis AI 3.5 container ({image}, conda env {env}): "
            f"`infra/vitis/run.sh BUNDLE ptq`. Check: `python -c \"import {module}\"`."
        ) from None


def read_json(path: Path) -> dict:
    if not path.exists():
        raise BundleError(f"{path}: missing; this is not a bundle written by `greenpipe vitis-bundle` (rewrite it)")
    return json.loads(path.read_text())


class Report:
    """``<out>/report.json``, rewritten after every step so a failed run says how far it got."""

    def __init__(self, path: Path, bundle: dict, mode: str):
        self.path = path
        self.data = {"bundle": bundle, "container": CONTAINERS[bundle["framework"]][0], "mode": mode,
                     "status": "running", "steps": []}

    def step(self, name: str, **facts) -> None:
        self.data["steps"].append({"step": name, **facts})
        self._write()

    def finish(self, out: Path, files: list) -> None:
        """Every step ran: record ``files`` (under ``out``) with their sizes and sha256."""
        self.data["outputs"] = {str(p.relative_to(out)): {"bytes": p.stat().st_size, "sha256": sha256(p)}
                                for p in files}
        self.data["status"] = "passed"
        self._write()

    def fail(self, error: str) -> None:
        self.data.update(status="failed", error=error)
        self._write()

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2) + "\n")
        tmp.replace(self.path)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(str(path), "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_models(bundle: Path, manifest: dict):
    """What ``model.py``'s ``load("weights.npz")`` returns: a torch model, or Keras kernels by name."""
    spec = importlib.util.spec_from_file_location("greenpipe_bundle_model", bundle / manifest["model_file"])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.load(str(bundle / manifest["weights_file"]))


def calibration(bundle: Path, manifest: dict, boundary: str, limit: int) -> list:
    """The calibration samples of ``boundary`` (dump order) as float32 arrays, at most ``limit`` (0 = all)."""
    np = need("numpy", "numpy", manifest["framework"])
    root = bundle / manifest["calibration"]["dir"] / boundary
    entries = read_json(root / "manifest.json")["entries"][: limit or None]
    with np.load(str(root / "arrays.npz"), allow_pickle=False) as archive:
        return [archive[name].astype(np.float32) for name in entries]


def _compare(got, expected, where: str, version: str, bundle: Path, manifest: dict) -> float:
    np = need("numpy", "numpy", manifest["framework"])
    diff = float(np.max(np.abs(np.asarray(got) - expected)))
    if not diff <= CHECK_TOLERANCE:
        raise BundleError(f"{bundle / manifest['model_file']}: on this {version} the bundled {where} differs from "
                          f"greenpipe's float outputs by {diff:g} (> {CHECK_TOLERANCE:g}); nothing was quantized. "
                          "Rewrite the bundle, and report both versions")
    return diff


def check(bundle: Path, manifest: dict, report: Report):
    """Step 1: the bundled model reproduces the float outputs greenpipe recorded; return the loaded model(s)."""
    np = need("numpy", "numpy", manifest["framework"])
    models = load_models(bundle, manifest)
    with np.load(str(bundle / manifest["reference_file"]), allow_pickle=False) as ref:
        reference = {k: ref[k] for k in ref.files}
    if manifest["framework"] == "torch":
        torch = need("torch", "PyTorch")
        with torch.no_grad():
            got = models(torch.from_numpy(reference["input"])).numpy()
        version = f"torch {torch.__version__}"
        diffs = {"model": _compare(got, reference["output"], "model", version, bundle, manifest)}
    else:
        tf = need("tensorflow", "TensorFlow", "keras")
        version, diffs = f"TensorFlow {tf.__version__}", {}
        for k in manifest["kernels"]:
            xs = [reference[f"{k['name']}/{i['name']}"] for i in k["inputs"]]
            got = models[k["name"]](xs if len(xs) > 1 else xs[0], training=False)
            diffs[k["name"]] = _compare(got, reference[f"{k['name']}/output"], f"kernel {k['name']}", version,
                                        bundle, manifest)
    report.step("check", framework_version=version, max_abs_diff=max(diffs.values()), per_part=diffs,
                tolerance=CHECK_TOLERANCE)
    return models, reference


def _l1_evaluate(quant_model, pairs, loss_fn) -> float:
    """What fast_finetune runs the quantized model with: the mean loss over (input, float output) pairs."""
    torch = need("torch", "PyTorch")
    total = 0.0
    with torch.no_grad():
        for x, y in pairs:
            total += float(loss_fn(quant_model(x), y))
    return total / max(len(pairs), 1)


def torch_ptq(model, reference, args, bundle: Path, manifest: dict, out: Path, report: Report) -> None:
    """Step 2, PyTorch ptq / fastft: calibrate (fastft: fast finetune first), then export from test mode."""
    torch = need("torch", "PyTorch")
    apis = need("pytorch_nndct.apis", "vai_q_pytorch, AMD's Vitis AI quantizer")
    samples = calibration(bundle, manifest, manifest["calibration"]["boundaries"][0], args.calib_samples)
    device = torch.device(args.device)
    dummy = torch.from_numpy(reference["input"]).to(device)
    qdir, target = str(out / "quantized"), manifest["dpu_target"]
    model = model.to(device)
    finetune = args.mode == "fastft"
    if finetune:  # the targets: the float model's outputs, taken before the quantizer wraps the model
        with torch.no_grad():
            pairs = [(x, model(x)) for x in (torch.from_numpy(s).to(device) for s in samples[: args.ft_samples])]
    quantizer = apis.torch_quantizer("calib", model, (dummy,), output_dir=qdir, device=device, target=target)
    if finetune:
        t0 = time.time()
        quantizer.fast_finetune(_l1_evaluate, (quantizer.quant_model, pairs, torch.nn.functional.l1_loss))
        report.step("fast_finetune", samples=len(pairs), seconds=time.time() - t0,
                    loss="L1 to the float model's outputs on the calibration samples")
    with torch.no_grad():
        for x in samples:
            quantizer.quant_model(torch.from_numpy(x).to(device))
    quantizer.export_quant_config()
    report.step("calibrate", samples=len(samples), target=target, output_dir=qdir)
    quantizer = apis.torch_quantizer("test", model, (dummy,), output_dir=qdir, device=device, target=target)
    if finetune:
        quantizer.load_ft_param()
    with torch.no_grad():
        quantizer.quant_model(dummy)
    quantizer.export_xmodel(output_dir=qdir, deploy_check=False)
    report.step("export_xmodel", input_shape=list(dummy.shape), output_dir=qdir)


def swap_functional(model) -> int:
    """Put vai_q_pytorch's own Add / Cat modules in place of model.py's; return how many were swapped."""
    functional = need("pytorch_nndct.nn.modules.functional", "vai_q_pytorch's functional modules")
    swapped = 0
    for name, child in list(model.named_children()):
        kind = type(child).__name__
        if kind in ("Add", "Cat") and type(child).__module__ == "greenpipe_bundle_model":
            setattr(model, name, getattr(functional, kind)())
            swapped += 1
    return swapped


def torch_qat(model, reference, args, bundle: Path, manifest: dict, out: Path, report: Report) -> None:
    """Step 2, PyTorch qat: train the quantized model towards the float outputs, then the deployable xmodel."""
    torch = need("torch", "PyTorch")
    nndct = need("pytorch_nndct", "vai_q_pytorch, AMD's Vitis AI quantizer")
    samples = calibration(bundle, manifest, manifest["calibration"]["boundaries"][0], args.calib_samples)
    device = torch.device(args.device)
    dummy = torch.from_numpy(reference["input"])
    qdir = str(out / "quantized")
    with torch.no_grad():
        targets = [model(torch.from_numpy(x)) for x in samples]
    swapped = swap_functional(model)
    processor = nndct.QatProcessor(model, (dummy,), bitwidth=8)
    trainable = processor.trainable_model().to(device)
    optimizer = torch.optim.Adam(trainable.parameters(), lr=args.qat_lr)
    generator = torch.Generator().manual_seed(args.seed)
    trainable.train()
    t0, losses = time.time(), []
    for _ in range(args.qat_steps):
        k = int(torch.randint(len(samples), (1,), generator=generator))
        loss = torch.nn.functional.l1_loss(trainable(torch.from_numpy(samples[k]).to(device)), targets[k].to(device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    report.step("qat_train", steps=args.qat_steps, lr=args.qat_lr, swapped_functional=swapped,
                first_loss=losses[0] if losses else None, last_loss=losses[-1] if losses else None,
                seconds=time.time() - t0, loss="L1 to the float model's outputs on the calibration samples")
    processor.to_deployable(trainable, qdir)
    deployable = processor.deployable_model(qdir, used_for_xmodel=True)
    with torch.no_grad():
        deployable(dummy.to(device))
    processor.export_xmodel(qdir)
    report.step("export_xmodel", input_shape=list(dummy.shape), output_dir=qdir)


def _kernel_dataset(kernel: dict, bundle: Path, manifest: dict, limit: int):
    """A tf.data.Dataset of ``{input name: sample}`` (each sample already batched as the kernel takes it)."""
    np = need("numpy", "numpy", "keras")
    tf = need("tensorflow", "TensorFlow", "keras")
    inputs = {i["name"]: np.stack(calibration(bundle, manifest, i["name"], limit)) for i in kernel["inputs"]}
    return tf.data.Dataset.from_tensor_slices(inputs), len(next(iter(inputs.values())))


def keras_quantize(models, reference, args, bundle: Path, manifest: dict, out: Path, report: Report) -> None:
    """Step 2, Keras: each kernel through vai_q_tensorflow2 (ptq, fastft, or qat ending with the deploy model)."""
    tf = need("tensorflow", "TensorFlow", "keras")
    vq = need("tensorflow_model_optimization.quantization.keras.vitis_quantize",
              "vai_q_tensorflow2, AMD's Vitis AI quantizer for TensorFlow 2", "keras")
    (out / "quantized").mkdir(parents=True, exist_ok=True)
    for kernel in manifest["kernels"]:
        name, model = kernel["name"], models[kernel["name"]]
        data, count = _kernel_dataset(kernel, bundle, manifest, args.calib_samples)
        quantizer = vq.VitisQuantizer(model)
        if args.mode in ("ptq", "fastft"):
            finetune = {"include_fast_ft": True, "fast_ft_epochs": args.ft_epochs} if args.mode == "fastft" else {}
            quantized = quantizer.quantize_model(calib_dataset=data, calib_steps=count, **finetune)
            facts = {"samples": count, **finetune}
        else:
            qat_model = quantizer.get_qat_model(init_quant=True, calib_dataset=data, calib_steps=count)
            outputs = model.predict(data, verbose=0)  # the batches concatenated: back to one entry per sample
            targets = tf.data.Dataset.from_tensor_slices(outputs.reshape((count, *kernel["outputs"][0]["shape"])))
            qat_model.compile(optimizer=tf.keras.optimizers.Adam(args.qat_lr), loss="mae")
            history = qat_model.fit(tf.data.Dataset.zip((data, targets)).repeat(), steps_per_epoch=args.qat_steps,
                                    epochs=1, verbose=0)
            quantized = vq.VitisQuantizer.get_deploy_model(qat_model)
            facts = {"samples": count, "steps": args.qat_steps, "lr": args.qat_lr,
                     "last_loss": float(history.history["loss"][-1]),
                     "loss": "MAE to the float kernel's outputs on the calibration samples"}
        path = out / "quantized" / f"{name}.h5"
        quantized.save(str(path))
        report.step(f"quantize {name}", mode=args.mode, h5=str(path), **facts)


def _run(command: list, log: Path, what: str, report: Report, **facts) -> None:
    proc = subprocess.run(command, capture_output=True, text=True, check=False)  # status checked below
    log.write_text(f"$ {' '.join(command)}\n{proc.stdout}\n{proc.stderr}")
    report.step(what, command=command, returncode=proc.returncode, log=log.name, **facts)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise BundleError(f"{command[0]} failed (exit {proc.returncode}); full log: {log}\n{tail}")


def compile_all(bundle: Path, manifest: dict, out: Path, report: Report) -> list:
    """Step 3: the DPU compiler for the bundle's arch.json; return the compiled xmodels and their logs."""
    arch = str(bundle / manifest["arch_file"])
    compiler = "vai_c_xir" if manifest["framework"] == "torch" else "vai_c_tensorflow2"
    if shutil.which(compiler) is None:
        image = CONTAINERS[manifest["framework"]][0]
        raise BundleError(f"{compiler} is not on PATH: the quantized model is under {out / 'quantized'}; compile "
                          f"inside {image} (`infra/vitis/run.sh BUNDLE ptq`). Check: `which {compiler}`")
    if manifest["framework"] == "torch":
        found = sorted((out / "quantized").glob("*_int.xmodel"))
        if len(found) != 1:
            raise BundleError(f"{out / 'quantized'}: expected one *_int.xmodel from vai_q_pytorch, found "
                              f"{[p.name for p in found]}; see the quantizer's log above")
        jobs = [(manifest["net_name"], [compiler, "-x", str(found[0])])]
    else:
        jobs = [(k["name"], [compiler, "-m", str(out / "quantized" / f"{k['name']}.h5")]) for k in manifest["kernels"]]
    compiled = []
    for name, head in jobs:
        where = out / "compiled" / (name if manifest["framework"] == "keras" else "")
        _run([*head, "-a", arch, "-o", str(where), "-n", name], out / f"{compiler}_{name}.log", f"compile {name}",
             report, target=manifest["dpu_target"])
        xmodel = where / f"{name}.xmodel"
        if not xmodel.exists():
            raise BundleError(f"{compiler} exited 0 but wrote no {xmodel}; see {out / f'{compiler}_{name}.log'}")
        compiled += [xmodel, out / f"{compiler}_{name}.log"]
    return compiled


def torch_quantize(model, reference, args, bundle: Path, manifest: dict, out: Path, report: Report) -> None:
    """Step 2 of a PyTorch bundle, by mode."""
    (torch_qat if args.mode == "qat" else torch_ptq)(model, reference, args, bundle, manifest, out, report)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path, help="the folder `greenpipe vitis-bundle` wrote")
    parser.add_argument("--mode", choices=("ptq", "fastft", "qat"), default="ptq")
    parser.add_argument("--check", action="store_true", help="only step 1 (needs the framework and numpy alone)")
    parser.add_argument("--out", type=Path, help="where results go (default: BUNDLE/out-<mode>)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="PyTorch bundles")
    parser.add_argument("--calib-samples", type=int, default=0, help="0 = every calibration sample")
    parser.add_argument("--ft-samples", type=int, default=16, help="PyTorch fastft: calibration samples it "
                        "finetunes on")
    parser.add_argument("--ft-epochs", type=int, default=10, help="Keras fastft: fast_ft_epochs per layer")
    parser.add_argument("--qat-steps", type=int, default=200)
    parser.add_argument("--qat-lr", type=float, default=1e-5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    bundle = args.bundle.resolve()
    mode = "check" if args.check else args.mode
    out = (args.out or bundle / f"out-{mode}").resolve()
    report = None
    try:
        manifest = read_json(bundle / "bundle.json")
        if manifest.get("framework") not in CONTAINERS:
            raise BundleError(f"{bundle / 'bundle.json'}: framework {manifest.get('framework')!r} is not one this "
                              f"script knows ({', '.join(CONTAINERS)}); rewrite the bundle with this greenpipe")
        report = Report(out / "report.json", manifest, mode)
        models, reference = check(bundle, manifest, report)
        if args.check:
            report.finish(out, [])
            print(f"check passed: {bundle / manifest['model_file']} reproduces greenpipe's float outputs "
                  f"(max |diff| {report.data['steps'][-1]['max_abs_diff']:g}); report: {report.path}")
            return 0
        if manifest["framework"] == "keras":
            keras_quantize(models, reference, args, bundle, manifest, out, report)
        else:
            torch_quantize(models, reference, args, bundle, manifest, out, report)
        compiled = compile_all(bundle, manifest, out, report)
        report.finish(out, compiled)
    except BundleError as exc:
        if report is not None:
            report.fail(str(exc))
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a tool's own error: recorded as the run's failure, then its traceback
        if report is not None:
            report.fail(f"{type(exc).__name__}: {exc}")
        raise
    xmodels = [str(p) for p in compiled if p.suffix == ".xmodel"]
    print(f"compiled for {manifest['dpu_target']}: {', '.join(xmodels)}; report: {report.path}. "
          f"Next, on the build host: greenpipe vitis-import BUNDLE {mode} --out DIR")
    return 0


if __name__ == "__main__":
    sys.exit(main())
