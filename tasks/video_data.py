"""Stage ``video_data``: the video recipe's clips in the Jester / Something-Something layout.

    python -m tasks.video_data --photos data/clean --out artifacts/video/data --metrics metrics/video/data.json

``video.data.source: builtin`` synthesises camera-motion clips (pan left /
right / up / down, zoom in / out, static) from the built-in photographs in
``--photos``, train and val from disjoint photographs
(greenpipe/data/video.py), one lossless FFV1 AVI per clip; each scene is shot with all seven motions, and
``dataset.json`` records that group size for training's batch sampler and a digest of the clips (the later
stages depend on that file, not on the clip folder).  Any other value is a folder already in the
Jester / Something-Something layout: it is checked (both splits read, every
video found) and ``--out/dataset.json`` points the later stages at it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from greenpipe.data.video import materialize_builtin, read_labels, read_split
from greenpipe.io import replacing_dir, write_json
from greenpipe.params import Params
from greenpipe.video.env import DATASET_FILE, dataset_digest
from tasks._cli import run_stage


def video_data(params: Params, photos: Path, out: Path) -> dict:
    """Write (or check and point to) the clip dataset; return its counts and sources."""
    t0 = time.perf_counter()
    vp = params.video
    with replacing_dir(out) as tmp:
        if vp.data.source == "builtin":
            summary = materialize_builtin(
                photos, tmp, size=vp.model.input_size, n_frames=vp.model.n_frames,
                train_per_class=vp.data.train_clips_per_class, val_per_class=vp.data.val_clips_per_class,
                val_sources=vp.data.val_sources, seed=params.base.seed, pan=vp.data.pan_per_frame,
                zoom=vp.data.zoom_per_frame)
            write_json(tmp / DATASET_FILE, {"root": ".", "layout": "jester", "source": "builtin",
                                            "group_size": summary["group_size"],
                                            "digest": dataset_digest(tmp, clips=True)})
        else:
            root = Path(vp.data.source).resolve()
            train, val = read_split(root, "train"), read_split(root, "val")
            write_json(tmp / DATASET_FILE, {"root": str(root), "layout": "jester", "source": vp.data.source,
                                            "group_size": 1, "digest": dataset_digest(root, clips=False)})
            summary = {"classes": read_labels(root), "train_clips": len(train), "val_clips": len(val)}
    return {**summary, "wall_s": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--metrics", type=Path, required=True)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    run_stage(lambda params: video_data(params, args.photos, args.out), args.params, args.metrics)


if __name__ == "__main__":
    main()
