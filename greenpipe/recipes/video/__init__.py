"""Recipe ``video``: Temporal Shift Module (TSM) networks in Keras, scored by clip top-1.

Model: TSM MobileNetV2 online (default) or ResNet50 offline,
:mod:`greenpipe.models.tsm_tf`; ``shift: false`` is the TSN baseline.
Data: the Jester / Something-Something frame-folder layout or video files,
built-in camera-motion clips by default (:mod:`greenpipe.data.video`).
Pipeline boundaries: the input of every kernel between shifts --
``k00_input``, then ``kKK_shift`` and ``kKK_residual`` per kernel (11 kernels,
21 boundaries for MobileNetV2).  Pre-processing: frames (H, W, 3) uint8 ->
(1, S, S, 3) float32 in [0, 1] (kernel 0 normalises).  Score: top-1 of the
logits smoothed over a window of frames (the online demo's smoothing) at each
clip's last frame.

The recipe's own stages (``tasks/video_*.py``) and the shared calibration dump
(``tasks/calib_dump.py``) use it; TensorFlow is imported
only when a model is built, so importing this module stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from greenpipe.recipes.base import RECIPES, Evaluation, Metric, Quality, Reference

if TYPE_CHECKING:
    from greenpipe.calib import CalibrationSamples


class VideoRecipe:
    name = "video"
    self_ensemble = False  # a flipped clip is another gesture (pan left vs pan right)
    validate_params = None  # no data checks stage: its clips are made (or read) by video_data
    metrics = (Metric("top1", "top-1", "%", higher_is_better=True, lo=0.0, hi=100.0, fmt=".1f"),)

    def build_model(self, model_args: dict[str, Any]):
        """A fresh :class:`~greenpipe.models.tsm_tf.TSMNet` (Keras layers) from a checkpoint's ``model_args``."""
        from greenpipe.models.tsm_tf import TSMConfig, make_net

        return make_net(TSMConfig(**model_args))

    def boundaries(self, model) -> dict[str, None]:
        """Every kernel input of the split network, in pipeline order (all dumped by the host loop)."""
        from greenpipe.models.tsm_tf import split_models
        from greenpipe.video.calib import boundary_names

        return {name: None for name in boundary_names(split_models(model)[1])}

    def calibration_samples(self, model_dir: Path, data_root: Path, params,
                            rng: np.random.Generator) -> CalibrationSamples:
        """Every kernel input over ``video.calib.clips`` train clips, run by the host loop, and ``split.json``.

        The float network of ``model_dir/checkpoint.npz`` is split at every shift
        and fed each clip frame by frame, shift buffers carried across a clip's
        frames (greenpipe/video/calib.py).
        """
        from greenpipe.models.tsm_tf import load_checkpoint
        from greenpipe.video.calib import calibration
        from greenpipe.video.env import configure_tensorflow, dataset_root

        configure_tensorflow(params.base.threads, params.base.tf_onednn)
        net, _ = load_checkpoint(Path(model_dir) / "checkpoint.npz")
        size, count = net.config.input_size, params.video.calib.clips
        drawn = list(calibration_clips(dataset_root(data_root), count, size, rng))
        return calibration(net, np.stack([c for _, c in drawn]), [s for s, _ in drawn])

    def multiple(self, model_args: dict[str, Any]) -> int:
        """Frames are resized to the model's input size, so any size is accepted."""
        return 1

    def evaluate(self, run: Callable[[np.ndarray], np.ndarray], data_root: Path, max_side: int = 0,
                 multiple: int = 1, outputs: dict[str, np.ndarray] | None = None, *, n_frames: int = 8,
                 size: int = 64, window: int = 8, classes: list[str] | None = None) -> Evaluation:
        """Top-1 (%) of ``run`` on the val split.

        ``run`` maps one clip, (T, size, size, 3) float32 in [0, 1], to per-frame
        logits (T, classes) -- the online loop starting from empty buffers.
        The prediction is the argmax at the last frame of the logits smoothed
        over ``window`` frames.  ``outputs`` (if a dict) receives each clip's
        per-frame logits by video id.
        """
        from greenpipe.data.video import load_clip, read_labels, read_split
        from greenpipe.video.host import smooth

        data_root = _root(data_root)
        names = classes or read_labels(data_root)
        rows, confusion = [], np.zeros((len(names), len(names)), dtype=int)
        for ref in read_split(data_root, "val"):
            logits = run(load_clip(ref, n_frames, size).astype(np.float32) / 255.0)
            if outputs is not None:
                outputs[ref.id] = logits
            pred = int(np.argmax(smooth(logits, window)[-1]))
            confusion[ref.label, pred] += 1
            rows.append({"name": ref.id, "label": int(ref.label), "pred": pred, "top1": 100.0 * (pred == ref.label)})
        top1 = float(np.mean([r["top1"] for r in rows]))
        return Evaluation(Quality.of(self.metrics, {"top1": top1}, len(rows)), rows,
                          {"classes": list(names), "confusion": confusion.tolist()})

    def write_samples(self, outputs: Mapping[str, np.ndarray], out_dir: Path, count: int) -> list[Path]:
        """The first ``count`` clips' per-frame logits (by video id) as CSV: frame, then one column per class."""
        from greenpipe.io import atomic_write_bytes

        paths = []
        for name in sorted(outputs)[:count]:
            logits = np.asarray(outputs[name])
            lines = ["frame," + ",".join(f"c{i}" for i in range(logits.shape[-1]))]
            lines += [f"{t}," + ",".join(f"{v:.5g}" for v in row) for t, row in enumerate(logits)]
            paths.append(out_dir / f"{name}.csv")
            atomic_write_bytes(paths[-1], ("\n".join(lines) + "\n").encode())
        return paths

    def bench_input(self, model_args: dict[str, Any], input_size: int) -> tuple[int, ...]:
        """One frame, ``1 x S x S x 3`` at the model's own input size S (online TSM: one frame per call)."""
        s = int(model_args["input_size"])
        return (1, s, s, 3)

    def eval_options(self, params, model_args: dict[str, Any]) -> dict[str, Any]:
        """Clip length and frame size of the model, smoothing window from ``video.eval``."""
        return {"n_frames": int(model_args["n_frames"]), "size": int(model_args["input_size"]),
                "window": int(params.video.eval.smooth_window)}

    def eval_files(self, data_root: Path) -> list[Path]:
        """The labels and val lists and every val clip's video file or frames."""
        from greenpipe.data.video import read_split

        root = _root(data_root)
        lists = sorted(p for p in root.iterdir() if p.is_file() and p.suffix == ".csv" and "train" not in p.name)
        clips = []
        for ref in read_split(root, "val"):
            clips += sorted(p for p in ref.path.rglob("*") if p.is_file()) if ref.path.is_dir() else [ref.path]
        return lists + clips

    def pipeline(self, manifest: Path, threads: int, batch: int, load: Callable[..., Any]) -> Any:
        """The TSM host loop over the manifest's kernels (each on the runtime the manifest names)."""
        from greenpipe.video.host import ClipRunner

        return ClipRunner.load(Path(manifest).parent, threads, load)

    def references(self, metrics: Path) -> list[Reference]:
        """The float TSM and its no-shift baseline (TSN) from the train stages' metrics."""
        from greenpipe.io import read_json

        refs = []
        for net, label in (("tsm", "TSM float (Keras)"), ("tsn", "TSN float, no shift (Keras)")):
            path = metrics / "video" / f"train_{net}.json"
            top1 = read_json(path).get("val_top1") if path.exists() else None
            if top1 is not None:
                refs.append(Reference(label, {"top1": top1}, f"metrics/video/train_{net}.json"))
        return refs


def calibration_clips(data_root: Path, count: int, size: int,
                      rng: np.random.Generator) -> Iterator[tuple[str, np.ndarray]]:
    """``count`` train clips, drawn without replacement: (video id, (T, size, size, 3) uint8).

    Every frame of each clip is kept: online, the kernels see every frame of a stream.
    """
    from greenpipe.data.video import read_frames, read_split, resize_frames

    refs = read_split(data_root, "train")
    for i in rng.permutation(len(refs))[:count]:
        yield refs[i].id, resize_frames(read_frames(refs[i].path), size)


def _root(data_root: Path) -> Path:
    """The Jester-layout folder: what the video data stage's pointer names, or ``data_root`` itself."""
    from greenpipe.video.env import DATASET_FILE, dataset_root

    return dataset_root(data_root) if (Path(data_root) / DATASET_FILE).exists() else Path(data_root)


RECIPES.register("video")(VideoRecipe())
