"""Stage ``video_train``: train the online TSM MobileNetV2 (``--net tsm``) or its no-shift TSN baseline (``--net tsn``).

    python -m tasks.video_train --net tsm --data artifacts/video/data --out models/video/tsm \
        --metrics metrics/video/train_tsm.json --curve metrics/video/train_tsm_curve.csv

Both nets are the same network (``video.model``) trained the same way
(``video.train``); only the temporal shift differs.  Training runs on whole
clips with the causal shift inside each clip, which is exactly what the
online model computes frame by frame.  Val top-1 is the float Keras model's,
per-frame logits averaged over the clip.  Writes ``checkpoint.npz``
(config + weights; greenpipe/models/tsm_tf.py).
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

from greenpipe.params import Params
from tasks._cli import run_stage


def video_train(params: Params, net_name: str, data: Path, out: Path, curve_path: Path) -> dict:
    """Train ``tsm`` or ``tsn``; write the checkpoint and curve; return val top-1 and provenance."""
    from greenpipe.data.video import fingerprint, load_split, read_labels
    from greenpipe.models.tsm_tf import TSMConfig, make_net, save_checkpoint
    from greenpipe.runtime.base import describe_host
    from greenpipe.video.env import configure_tensorflow, dataset_root, group_size
    from greenpipe.video.train import TrainSettings, fit

    t0 = time.perf_counter()
    tf_settings = configure_tensorflow(params.base.threads, params.base.tf_onednn)
    vp, root = params.video, dataset_root(data)
    classes = read_labels(root)
    m = vp.model
    train = load_split(root, "train", m.n_frames, m.input_size)
    val = load_split(root, "val", m.n_frames, m.input_size)
    config = TSMConfig(arch=m.arch, num_classes=len(classes), input_size=m.input_size, n_frames=m.n_frames,
                       shift=net_name == "tsm", fold_div=m.fold_div, width_mult=m.width_mult,
                       last_channel=m.last_channel, resnet_width=m.resnet_width, resnet_blocks=m.resnet_blocks)
    import keras

    keras.utils.set_random_seed(params.base.seed)  # the initial weights: unseeded, every run starts elsewhere
    net = make_net(config)
    tp = vp.train
    settings = TrainSettings(tp.steps, tp.batch_clips, tp.lr, tp.weight_decay, params.base.seed, bn=tp.bn)
    # Whole scenes per batch only with running BN statistics: with batch statistics a batch of one
    # scene shot seven ways would let BN hand every clip the scene's mean, i.e. the label.
    group = group_size(data) if tp.bn == "running" else 1
    curve = fit(net, train[:2], val[:2], settings, classes, eval_every=tp.eval_every, group=group,
                log=lambda s: print(f"video_train {net_name}: {s}", flush=True))
    acc = curve[-1]["val_top1"]  # fit scores the final weights on the val clips
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out / "checkpoint.npz", net, {"net": net_name, "classes": classes, "val_top1": acc,
                                                  "data_fingerprint": fingerprint(root)})
    curve_path.parent.mkdir(parents=True, exist_ok=True)
    with open(curve_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["step", "loss", "val_top1", "wall_s"])
        w.writeheader()
        w.writerows(curve)
    return {
        "net": net_name,
        "shift": config.shift,
        "val_top1": acc,
        "val_clips": len(val[1]),
        "train_clips": len(train[1]),
        "chance_top1": 100.0 / len(classes),
        "model_args": config.to_dict(),
        "source": f"float Keras model (TensorFlow), per-frame logits averaged over each val clip; "
                  f"trained on {describe_host(params.base.threads)}",
        "tensorflow": tf_settings,  # the kernels and threads it trained with (params base.tf_onednn, base.threads)
        "wall_s": time.perf_counter() - t0,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--net", choices=["tsm", "tsn"], required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--metrics", type=Path, required=True)
    ap.add_argument("--curve", type=Path, required=True)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    run_stage(lambda params: video_train(params, args.net, args.data, args.out, args.curve), args.params,
              args.metrics)


if __name__ == "__main__":
    main()
