"""``greenpipe vitis-import``: a container run's xmodel back in the compile stage's layout, once checked.

``infra/vitis/run.sh BUNDLE ptq|fastft|qat`` leaves ``BUNDLE/out-<mode>/``:
the script's ``report.json`` (:mod:`greenpipe.vitis.vai_quantize`),
``compiled/model.xmodel`` and ``vai_c_xir``'s log. :func:`import_results`
counts none of it before it has checked that

* the bundle is the one greenpipe wrote: every file of ``bundle.json``'s
  ``sha256`` list unchanged, its ``arch.json`` naming the recorded DPU target
  (and the one ``arch`` names, when given), the report written for this very
  ``bundle.json`` and this mode;
* the run passed: ``status`` ``passed``, no step with a non-zero exit, the
  check step's max |bundled - greenpipe| within the script's tolerance;
* each file it takes (the xmodel, the compiler's log, the report) is there,
  non-empty, under its size cap, with the sha256 the container recorded.

Then it writes ``out`` as the ``xmodel`` compile target does
(:mod:`greenpipe.compile.vitis_dpu`: ``model.xmodel``, ``vai_c_xir.log``,
``compile_report.json``), plus ``vitis_report.json``, whole or not at all: a
rejection leaves ``out`` as it was. The compile report's ``source`` says the
xmodel came from the container, not from this machine. ``deploy`` then finds
it with :func:`greenpipe.deploy.compiled_artifact` like any compiled
artifact, for a device whose ``runtime`` is ``vart``.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

from greenpipe.compile.base import REPORT_FILE
from greenpipe.compile.vitis_dpu import ARTIFACT, COMPILER_LOG
from greenpipe.errors import GreenpipeError
from greenpipe.io import files_sha256, read_json, replacing_dir, write_json
from greenpipe.vitis.bundle import arch_target
from greenpipe.vitis.vai_quantize import CHECK_TOLERANCE

MODES = ("ptq", "fastft", "qat")
MAX_XMODEL_BYTES = 1 << 30  # a DPU program of greenpipe's models is a few MB; 1 GiB is no xmodel
MAX_TEXT_BYTES = 16 << 20  # report.json, the compiler's log
REPORT = "report.json"
CONTAINER_REPORT = "vitis_report.json"  # the script's report.json, as kept beside the imported xmodel
RERUN = "rerun `infra/vitis/run.sh {bundle} {mode}`, then import again"


def _json(path: Path, fix: str) -> dict:
    try:
        data = read_json(path)
    except FileNotFoundError:
        raise GreenpipeError(f"{path}: missing; {fix}") from None
    except ValueError as exc:
        raise GreenpipeError(f"{path}: not JSON ({exc}); {fix}") from None
    if not isinstance(data, dict):
        raise GreenpipeError(f"{path}: not a JSON object; {fix}")
    return data


def _checked_bundle(bundle: Path, arch: Path | None) -> dict:
    """bundle.json, once every file it lists is as greenpipe wrote it and the DPU targets agree."""
    manifest = _json(bundle / "bundle.json", "write the bundle with `greenpipe vitis-bundle`")
    if manifest.get("framework") != "torch":
        raise GreenpipeError(
            f"{bundle / 'bundle.json'}: framework {manifest.get('framework')!r}; vitis-import takes a PyTorch "
            "bundle's one xmodel (a Keras bundle's kernels deploy as a kernels.json manifest, which it does not "
            "write): import a bundle of a checkpoint.pt")
    for name, digest in sorted(manifest.get("sha256", {}).items()):
        path = bundle / name
        if not path.is_file() or files_sha256([path]) != digest:
            state = "missing" if not path.is_file() else "changed"
            raise GreenpipeError(
                f"{path}: {state} since `greenpipe vitis-bundle` wrote the bundle (bundle.json records its sha256), "
                "so the xmodel cannot be tied to the model greenpipe bundled; write the bundle again and rerun the "
                "container on it")
    target = arch_target(bundle / manifest["arch_file"])
    if target != manifest["dpu_target"]:
        raise GreenpipeError(f"{bundle / manifest['arch_file']}: DPU target {target}, bundle.json records "
                             f"{manifest['dpu_target']}; write the bundle again")
    if arch is not None and arch_target(arch) != target:
        raise GreenpipeError(
            f"{arch}: DPU target {arch_target(arch)}, but the bundle was compiled for {target} "
            f"({bundle / manifest['arch_file']}); an xmodel runs only on the DPU it was compiled for: pass that "
            f"DPU's arch file, or bundle again with --arch {arch}")
    return manifest


def _checked_file(path: Path, cap: int, recorded: dict | None, fix: str, copy_to: Path | None = None) -> None:
    """``path`` exists, is not empty, is at most ``cap`` bytes and (when ``recorded``) has its size and sha256.

    With ``copy_to`` the digest is taken of the copy, so what is checked is what was taken.
    """
    if not path.is_file():
        raise GreenpipeError(f"{path}: missing; {fix}")
    size = path.stat().st_size
    if size == 0:
        raise GreenpipeError(f"{path}: empty; {fix}")
    if size > cap:
        raise GreenpipeError(f"{path}: {size} bytes, over the {cap}-byte cap for this file; it is not what the "
                             f"container writes for greenpipe's models: {fix}")
    if copy_to is not None:
        shutil.copyfile(path, copy_to)
    taken = path if copy_to is None else copy_to
    if recorded is not None and (taken.stat().st_size != recorded.get("bytes")
                                 or files_sha256([taken]) != recorded.get("sha256")):
        raise GreenpipeError(f"{path}: size or sha256 differs from what the container's report records, so it "
                             f"changed after the run; {fix}")


def _checked_report(path: Path, manifest: dict, mode: str, fix: str) -> tuple[dict, float]:
    """The script's report and its check step's max |diff|, once it says this bundle's ``mode`` run passed."""
    _checked_file(path, MAX_TEXT_BYTES, None, fix)
    report = _json(path, fix)
    if report.get("bundle") != manifest:
        raise GreenpipeError(f"{path}: written for another bundle.json than the one beside it; {fix}")
    if report.get("mode") != mode:
        raise GreenpipeError(f"{path}: a {report.get('mode')!r} run, not {mode!r}; {fix}")
    steps = report.get("steps", [])
    if report.get("status") != "passed":
        last = steps[-1]["step"] if steps else "none"
        why = report.get("error") or "it stopped without saying why (killed?)"
        raise GreenpipeError(f"{path}: the container run did not pass (status {report.get('status')!r}, last step "
                             f"recorded: {last}): {why}. Fix that, then {fix}")
    failed = [s["step"] for s in steps if s.get("returncode", 0) != 0]
    if failed:
        raise GreenpipeError(f"{path}: step(s) {', '.join(failed)} exited non-zero; {fix}")
    check = next((s for s in steps if s.get("step") == "check"), None)
    diff = None if check is None else check.get("max_abs_diff")
    if not isinstance(diff, (int, float)) or not math.isfinite(diff) or diff > CHECK_TOLERANCE:
        raise GreenpipeError(
            f"{path}: the check step's max |bundled - greenpipe| is {diff} (tolerance {CHECK_TOLERANCE:g}): the "
            f"container did not quantize the model greenpipe bundled; {fix}")
    return report, diff


def import_results(bundle: Path, mode: str, out: Path, variant: str | None = None, target: str | None = None,
                   arch: Path | None = None, max_bytes: int = MAX_XMODEL_BYTES) -> dict:
    """Check ``bundle``'s ``out-<mode>/`` and write its xmodel under ``out`` in the compile layout; return metrics.

    ``variant`` (default ``vitis_<mode>``) and ``target`` (default ``out``'s name) are the keys the
    compile report records, as ``artifacts/compile/<variant>/<target>`` would; ``arch``: the DPU
    the xmodel is meant for (refused when it is another); ``max_bytes``: the xmodel's size cap.
    """
    bundle, out = Path(bundle), Path(out)
    if mode not in MODES:
        raise GreenpipeError(f"mode {mode!r}: vitis-import takes one of {', '.join(MODES)} (the run.sh mode run)")
    variant, target = variant or f"vitis_{mode}", target or out.name
    fix = RERUN.format(bundle=bundle, mode=mode)
    manifest = _checked_bundle(bundle, arch)
    run_dir = bundle / f"out-{mode}"
    report, check_diff = _checked_report(run_dir / REPORT, manifest, mode, fix)
    outputs = report.get("outputs", {})
    xmodel_name = f"compiled/{manifest['net_name']}.xmodel"
    compile_step = next((s for s in report["steps"] if s.get("step") == f"compile {manifest['net_name']}"), {})
    log_name = compile_step.get("log", "")
    if Path(log_name).name != log_name:  # the script writes a bare name beside the report
        raise GreenpipeError(f"{run_dir / REPORT}: compiler log {log_name!r} is not a file name; {fix}")
    for name in (xmodel_name, log_name):
        if name not in outputs:
            raise GreenpipeError(f"{run_dir / REPORT}: lists no output {name or 'compiler log'} among "
                                 f"{sorted(outputs)}; {fix}")
    xmodel = run_dir / xmodel_name
    from greenpipe.recipes import get_recipe

    recipe = get_recipe(manifest["recipe"])
    source = (f"compiled by vai_c_xir in the Vitis AI container {report['container']} from bundle {bundle} "
              f"(mode {mode}); checked and imported by greenpipe vitis-import, not produced here")
    with replacing_dir(out) as tmp:  # a rejection here removes tmp and leaves out as it was
        _checked_file(xmodel, max_bytes, outputs[xmodel_name], fix, tmp / ARTIFACT)
        _checked_file(run_dir / log_name, MAX_TEXT_BYTES, outputs[log_name], fix, tmp / COMPILER_LOG)
        shutil.copyfile(run_dir / REPORT, tmp / CONTAINER_REPORT)
        write_json(tmp / REPORT_FILE, {
            "variant": variant,
            "target": target,
            "format": "xmodel",
            "artifact": ARTIFACT,
            "source_artifact": str(xmodel),
            "arch": manifest["arch"],
            "dpu_target": manifest["dpu_target"],
            "recipe": recipe.name,
            "model_args": manifest["model_args"],
            "multiple": recipe.multiple(manifest["model_args"]),
            "input_shape": manifest["input_shape"],  # an xmodel's input shape is fixed: the bundle's
            "dpu_numerics": True,  # vai_q_pytorch's fix_point: int8 per-tensor pow2, what the DPU computes
            "model_mb": (tmp / ARTIFACT).stat().st_size / 1e6,
            "sha256": outputs[xmodel_name]["sha256"],
            "compiler": {"command": compile_step.get("command"), "log": COMPILER_LOG},
            "readiness": None,  # needs the quantize stage's ONNX export, which a bundle does not hold
            "agreement": None,  # the xmodel runs only on the DPU: the device's vart runtime checks it
            "container": {"image": report["container"], "mode": mode, "bundle": str(bundle),
                          "bundle_sha256": files_sha256([bundle / "bundle.json"]),
                          "check_max_abs_diff": check_diff, "report": CONTAINER_REPORT},
            "source": source,
        })
    return {"variant": variant, "target": target, "model_mb": (out / ARTIFACT).stat().st_size / 1e6,
            "dpu_target": manifest["dpu_target"], "source": source}
