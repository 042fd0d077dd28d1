"""Stage ``video_eval``'s work: the quantized TSM kernels with CPU shifts; top-1, FPS, where the time goes.

For every per-kernel variant under ``video.quantize``, :func:`video_eval`
runs the host loop (greenpipe/video/host.py): the K kernels in order with the
shifts on the CPU (int8 buffers for int8 kernels), each kernel on its
manifest's runtime: TFLite for ``tflite_fp32`` / ``tflite_int8``, VART on the
DPU for ``vitis_tf``'s xmodels.  A variant whose runtime this host lacks
(VART off a DPU host) is listed under ``not_run`` with the reason; the stage
fails only when nothing runs.

* **top-1** on the val clips, online: frame by frame from empty buffers,
  logits smoothed over ``video.eval.smooth_window`` frames, argmax at the
  clip's last frame;
* **FPS as TSM's online demo reports it**: 1 / (pre-process + inference) of
  one frame, from the mean per-frame times of a timed run of
  ``video.eval.fps_frames`` frames (after ``warmup_frames``), with the
  per-kernel and per-shift breakdown;
* **sustained throughput**: frames / wall-clock over the same run.

It also reads the train stage's metrics to report TSM vs the no-shift TSN
baseline, and int8 vs float top-1.  Run it as ``python -m tasks.video_eval``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from greenpipe.params import Params


def video_eval(params: Params, data: Path, quant: Path, train_metrics: Path) -> dict:
    """Evaluate every per-kernel variant this host can run; return top-1, FPS, breakdowns and the comparisons."""
    from greenpipe.data.video import load_split
    from greenpipe.errors import GreenpipeError, ToolchainMissing
    from greenpipe.io import read_json
    from greenpipe.recipes import get_recipe
    from greenpipe.video.env import configure_tensorflow, dataset_root
    from greenpipe.runtime import load
    from greenpipe.video.host import ClipRunner, timed_run

    configure_tensorflow(params.base.threads, params.base.tf_onednn)
    vp, root = params.video, dataset_root(data)
    recipe = get_recipe("video")
    m, ev = vp.model, vp.eval
    val_clips = load_split(root, "val", m.n_frames, m.input_size)[0]
    results, not_run = {}, {}
    for variant in vp.quantize:
        try:
            runner = ClipRunner.load(quant / variant, params.base.threads, load)
            pipe, described = runner.pipe, runner.first
        except ToolchainMissing as exc:  # e.g. vitis_tf's xmodels need VART and a DPU: run this stage on its host
            not_run[variant] = str(exc)
            print(f"video_eval: {variant} not run here: {exc}", file=sys.stderr)
            continue
        evaluation = recipe.evaluate(runner.run, root, n_frames=m.n_frames, size=m.input_size,
                                     window=ev.smooth_window)
        timing = timed_run(pipe, val_clips, ev.fps_frames, ev.warmup_frames)
        results[variant] = {
            "top1": evaluation.quality.value, "clips": evaluation.quality.samples,
            "confusion": evaluation.extra["confusion"], "quality": evaluation.quality.to_dict(),
            "kernels": len(pipe.kernels), **timing,
            "source": f"measured on {described['host']} with {described['label']}; host loop in Python "
                      f"(numpy shifts), input {m.input_size}x{m.input_size}, batch 1",
        }
    if not results:
        raise GreenpipeError("no variant under video.quantize runs on this host "
                             f"({'; '.join(f'{v}: {m}' for v, m in not_run.items())}); add a TFLite one "
                             "(tflite_fp32 / tflite_int8) to params.yaml, or run this stage where the toolchain is")
    tsm, tsn = (read_json(train_metrics / f"train_{n}.json") for n in ("tsm", "tsn"))
    out = {
        "variants": results,
        "tsm_float_top1": tsm["val_top1"],
        "tsn_float_top1": tsn["val_top1"],
        "tsm_minus_tsn_points": tsm["val_top1"] - tsn["val_top1"],
        "comparison_source": "float Keras models from video_train (same network, shift on / off), val clips",
        "fps_definition": "fps = 1 / (preprocess + inference) per frame, as TSM's online demo; "
                          "sustained_fps = frames / wall-clock of the timed run",
        "preprocess_definition": "uint8 frame at the input size -> float [0, 1] -> the first kernel's input "
                                 "type (no decode or resize: the clips are stored at the input size)",
    }
    if not_run:
        out["not_run"] = not_run
    if "tflite_int8" in results and "tflite_fp32" in results:
        out["int8_minus_float_points"] = results["tflite_int8"]["top1"] - results["tflite_fp32"]["top1"]
    return out
