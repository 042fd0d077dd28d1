"""Quantize, export and compile a greenpipe Vitis bundle inside the Vitis AI 3.5 PyTorch container.

A standalone script: ``greenpipe vitis-bundle`` copies it into every bundle,
and ``infra/vitis/run.sh BUNDLE ptq|qat`` runs it in the container. It never
imports greenpipe and uses only what the container ships: Python 3.8, numpy,
torch 1.13, vai_q_pytorch (``pytorch_nndct``) and ``vai_c_xir``. Written
against ``xilinx/vitis-ai-pytorch-cpu:ubuntu2004-3.5.0.306`` from the
vai_q_pytorch and vai_c_xir sections of UG1414 (v3.5); it has not been run
there yet (docs/tools.md)::

    python vai_quantize.py BUNDLE --check        # torch + numpy only: model.py reproduces greenpipe's float outputs
    python vai_quantize.py BUNDLE --mode ptq     # calibrate, export the xmodel, compile it for arch.json
    python vai_quantize.py BUNDLE --mode qat --qat-steps 200

Steps, each written to ``<out>/report.json`` as it completes:

1. check: ``model.load("weights.npz")`` on ``reference.npz``'s input gives its
   output (max |diff| <= 1e-4); otherwise stop, nothing is quantized;
2. ptq: ``torch_quantizer("calib", ...)`` with the DPU target of ``arch.json``,
   every calibration sample forwarded through ``quant_model``,
   ``export_quant_config()``; then ``torch_quantizer("test", ...)``, one forward
   of the reference input (its shape is the deployed shape) and
   ``export_xmodel(deploy_check=False)``;
   qat: ``QatProcessor(model, (dummy,), bitwidth=8)``, ``trainable_model()``,
   ``--qat-steps`` Adam steps matching the float model's outputs on the
   calibration samples (L1; the bundle holds no labels), ``to_deployable()``,
   ``deployable_model(used_for_xmodel=True)``, one forward of the reference
   input, ``export_xmodel()``;
3. ``vai_c_xir -x <out>/quantized/<Model>_int.xmodel -a arch.json -o <out>/compiled -n <name>``.

Exit status 0 when every step ran, 2 with one line naming what is missing or wrong.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

CONTAINER = "xilinx/vitis-ai-pytorch-cpu:ubuntu2004-3.5.0.306"
CHECK_TOLERANCE = 1e-4  # max |bundled - greenpipe| on the reference input: the same float math, another torch


class BundleError(Exception):
    """A problem the user can act on: one line, exit status 2."""


def need(module: str, what: str):
    """Import ``module`` or raise BundleError naming it, what ships it and where to run."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        missing = getattr(exc, "name", None) or module
        raise BundleError(
            f"vai_quantize.py needs the Python module {missing!r} ({what}), which is not importable here. "
            f"Run this script inside the Vitis AI 3.5 PyTorch container ({CONTAINER}, conda env "
            f"vitis-ai-pytorch): `infra/vitis/run.sh BUNDLE ptq`. Check: `python -c \"import {module}\"`."
        ) from None


def read_json(path: Path) -> dict:
    if not path.exists():
        raise BundleError(f"{path}: missing; this is not a bundle written by `greenpipe vitis-bundle` (rewrite it)")
    return json.loads(path.read_text())


class Report:
    """``<out>/report.json``, rewritten after every step so a failed run says how far it got."""

    def __init__(self, path: Path, bundle: dict):
        self.path = path
        self.data = {"bundle": bundle, "steps": [], "container": CONTAINER}

    def step(self, name: str, **facts) -> None:
        self.data["steps"].append({"step": name, **facts})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2) + "\n")
        tmp.replace(self.path)


def load_model(bundle: Path, manifest: dict):
    """The bundled float model (``model.py`` + ``weights.npz``), in eval mode."""
    spec = importlib.util.spec_from_file_location("greenpipe_bundle_model", bundle / manifest["model_file"])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.load(str(bundle / manifest["weights_file"]))


def calibration(bundle: Path, manifest: dict, limit: int):
    """The calibration samples (dump order) as float32 arrays, at most ``limit`` (0 = all)."""
    np = need("numpy", "numpy")
    calib = read_json(bundle / manifest["calib_manifest"])
    entries = calib["entries"][: limit or None]
    with np.load(str(bundle / manifest["calib_archive"]), allow_pickle=False) as archive:
        return [archive[name].astype(np.float32) for name in entries]


def check(bundle: Path, manifest: dict, report: Report):
    """Step 1: the bundled model reproduces the float outputs greenpipe recorded; return (model, input)."""
    np = need("numpy", "numpy")
    torch = need("torch", "PyTorch")
    model = load_model(bundle, manifest)
    with np.load(str(bundle / manifest["reference_file"]), allow_pickle=False) as ref:
        x, expected = ref["input"], ref["output"]
    with torch.no_grad():
        got = model(torch.from_numpy(x)).numpy()
    diff = float(np.max(np.abs(got - expected)))
    report.step("check", torch=torch.__version__, max_abs_diff=diff, tolerance=CHECK_TOLERANCE)
    if not diff <= CHECK_TOLERANCE:
        raise BundleError(f"{bundle / manifest['model_file']}: on this torch ({torch.__version__}) the bundled "
                          f"model differs from greenpipe's float outputs by {diff:g} (> {CHECK_TOLERANCE:g}); "
                          "nothing was quantized. Rewrite the bundle, and report the torch versions")
    return model, torch.from_numpy(x)


def ptq(model, dummy, samples, args, manifest: dict, out: Path, report: Report) -> None:
    """Step 2 (ptq): calibrate, then export the xmodel from test mode."""
    torch = need("torch", "PyTorch")
    apis = need("pytorch_nndct.apis", "vai_q_pytorch, AMD's Vitis AI quantizer")
    device = torch.device(args.device)
    qdir = str(out / "quantized")
    target = manifest["dpu_target"]
    model = model.to(device)
    quantizer = apis.torch_quantizer("calib", model, (dummy.to(device),), output_dir=qdir, device=device,
                                     target=target)
    with torch.no_grad():
        for x in samples:
            quantizer.quant_model(torch.from_numpy(x).to(device))
    quantizer.export_quant_config()
    report.step("calibrate", samples=len(samples), target=target, output_dir=qdir)
    quantizer = apis.torch_quantizer("test", model, (dummy.to(device),), output_dir=qdir, device=device,
                                     target=target)
    with torch.no_grad():
        quantizer.quant_model(dummy.to(device))
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


def qat(model, dummy, samples, args, manifest: dict, out: Path, report: Report) -> None:
    """Step 2 (qat): train the quantized model towards the float outputs, then the deployable model's xmodel."""
    torch = need("torch", "PyTorch")
    nndct = need("pytorch_nndct", "vai_q_pytorch, AMD's Vitis AI quantizer")
    device = torch.device(args.device)
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


def compile_xmodel(bundle: Path, manifest: dict, out: Path, report: Report) -> Path:
    """Step 3: vai_c_xir for the bundle's arch.json; return the compiled xmodel."""
    found = sorted((out / "quantized").glob("*_int.xmodel"))
    if len(found) != 1:
        raise BundleError(f"{out / 'quantized'}: expected one *_int.xmodel from vai_q_pytorch, found "
                          f"{[p.name for p in found]}; see the quantizer's log above")
    if shutil.which("vai_c_xir") is None:
        raise BundleError(f"vai_c_xir is not on PATH: the quantized model is at {found[0]}; compile it inside "
                          f"{CONTAINER} (`infra/vitis/run.sh BUNDLE ptq`). Check: `which vai_c_xir`")
    command = ["vai_c_xir", "-x", str(found[0]), "-a", str(bundle / manifest["arch_file"]),
               "-o", str(out / "compiled"), "-n", manifest["net_name"]]
    proc = subprocess.run(command, capture_output=True, text=True, check=False)  # status checked below
    (out / "vai_c_xir.log").write_text(f"$ {' '.join(command)}\n{proc.stdout}\n{proc.stderr}")
    compiled = out / "compiled" / f"{manifest['net_name']}.xmodel"
    report.step("compile", command=command, returncode=proc.returncode, log="vai_c_xir.log",
                xmodel=str(compiled) if compiled.exists() else None)
    if proc.returncode != 0 or not compiled.exists():
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise BundleError(f"vai_c_xir failed (exit {proc.returncode}) for {manifest['dpu_target']}; "
                          f"full log: {out / 'vai_c_xir.log'}\n{tail}")
    return compiled


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path, help="the folder `greenpipe vitis-bundle` wrote")
    parser.add_argument("--mode", choices=("ptq", "qat"), default="ptq")
    parser.add_argument("--check", action="store_true", help="only step 1 (needs torch and numpy alone)")
    parser.add_argument("--out", type=Path, help="where results go (default: BUNDLE/out-<mode>)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--calib-samples", type=int, default=0, help="0 = every calibration sample")
    parser.add_argument("--qat-steps", type=int, default=200)
    parser.add_argument("--qat-lr", type=float, default=1e-5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    bundle = args.bundle.resolve()
    out = (args.out or bundle / f"out-{'check' if args.check else args.mode}").resolve()
    try:
        manifest = read_json(bundle / "bundle.json")
        report = Report(out / "report.json", manifest)
        model, dummy = check(bundle, manifest, report)
        if args.check:
            print(f"check passed: {bundle / manifest['model_file']} reproduces greenpipe's float outputs "
                  f"(max |diff| {report.data['steps'][-1]['max_abs_diff']:g}); report: {report.path}")
            return 0
        samples = calibration(bundle, manifest, args.calib_samples)
        (ptq if args.mode == "ptq" else qat)(model, dummy, samples, args, manifest, out, report)
        compiled = compile_xmodel(bundle, manifest, out, report)
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"compiled for {manifest['dpu_target']}: {compiled}; report: {report.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
