"""Small helpers the video stages share: TensorFlow's threads and quiet start, the dataset's root and digest."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from greenpipe.errors import DataError, GreenpipeError
from greenpipe.io import dir_sha256, files_sha256, read_json

# Written by the video_data stage: where the clips are, and a digest of them. The later stages depend on
# this one file (dvc.yaml), not on the clip folder: DVC then checks a few bytes per stage instead of
# walking thousands of clips, and the digest changes whenever a clip or a split list does.
DATASET_FILE = "dataset.json"


ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"


def configure_tensorflow(threads: int, onednn: bool = False) -> dict[str, object]:
    """Import TensorFlow with its start-up banners off, ``threads`` intra-op threads (one inter-op) and
    oneDNN's CPU kernels on or off as ``onednn`` (params ``base.tf_onednn``) says; return that setting.

    The kernels change results (the same seed gave a quite different quick-profile TSM top-1 on
    oneDNN's kernels in one run), so the stage sets ``TF_ENABLE_ONEDNN_OPTS`` from params, a declared
    DVC input, whatever the shell says. TensorFlow's own (Eigen) kernels are the default: for these small-frame nets
    a training step is ~18 % faster without oneDNN on a 2-thread x86 host (49.5 vs 60 ms for the quick
    profile's TSM, batch 8 x 6 frames at 32 px), and as deterministic. Raises GreenpipeError when
    TensorFlow was already imported in this process with the other setting (it reads the variable once).
    """
    wanted = "1" if onednn else "0"
    if "tensorflow" in sys.modules and os.environ.get(ONEDNN_ENV, "1") != wanted:
        raise GreenpipeError(
            f"TensorFlow was imported with {ONEDNN_ENV}={os.environ.get(ONEDNN_ENV, 'unset')} before this stage "
            f"could set it to {wanted} (params base.tf_onednn = {str(onednn).lower()}); "
            "run the stage in a fresh process (python -m tasks...)"
        )
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ[ONEDNN_ENV] = wanted
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # already initialised in this process (tests): the first setting stands
    return {ONEDNN_ENV: wanted, "intra_op_threads": threads, "inter_op_threads": 1}


def group_size(data_dir: str | Path) -> int:
    """Consecutive train clips shot from one scene (7 for the built-in set, 1 for other datasets)."""
    dataset_root(data_dir)  # the same error when video_data has not run
    return int(read_json(Path(data_dir) / DATASET_FILE).get("group_size", 1))


def dataset_root(data_dir: str | Path) -> Path:
    """The folder in the Jester layout that ``video_data`` prepared (itself, or the external source it names)."""
    data_dir = Path(data_dir)
    pointer = data_dir / DATASET_FILE
    if not pointer.exists():
        raise DataError(f"{pointer}: missing; run the video data stage first (dvc repro video_data)")
    return Path(read_json(pointer)["root"]) if read_json(pointer)["root"] != "." else data_dir


def dataset_digest(root: str | Path, *, clips: bool) -> dict:
    """sha256 over the dataset under ``root`` (names and bytes), for :data:`DATASET_FILE`.

    ``clips``: over every file (the built-in set, a few MB); otherwise over the label and split lists
    only -- a user's Jester or Something-Something folder is too large to hash on every run, so
    re-run ``video_data`` (``dvc repro -f video_data``) after changing its videos.
    """
    root = Path(root)
    if clips:
        sha, count = dir_sha256(root, skip=DATASET_FILE)
    else:
        lists = sorted(root.glob("*.csv"))
        sha, count = files_sha256(lists, root=root), len(lists)
    return {"sha256": sha, "files": count,
            "of": "every file" if clips else "the label and split lists (not the videos)"}
