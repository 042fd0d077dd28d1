"""Calibration dumps for a split TSM network: every kernel's inputs, as the kernel sees them online.

The float kernels run in the host loop (:class:`greenpipe.video.host.HostPipeline`)
over calibration clips from the train split, frame by frame with the shift
buffers carried across the frames of a clip (zeros at each clip's start, as a
new video starts online), and every kernel input is recorded: boundary
``k00_input`` (the frame), then ``kKK_shift`` and ``kKK_residual`` for each
kernel k >= 1.  The format is :mod:`greenpipe.calib`'s (one directory per
boundary, arrays + manifest); ``split.json`` beside ``index.json`` is the split
manifest, so a per-kernel quantizer finds each kernel's boundaries by its
input names.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from greenpipe.calib import BoundaryWriter, write_index
from greenpipe.io import replacing_dir, write_json
from greenpipe.models.tsm_tf import TSMNet, split_models
from greenpipe.video.host import HostPipeline, KerasKernel

SPLIT_FILE = "split.json"


def boundary_names(manifest: dict) -> list[str]:
    """Every kernel input name in pipeline order: the boundaries of the dump."""
    return [i["name"] for k in manifest["kernels"] for i in k["inputs"]]


def dump(net: TSMNet, clips: np.ndarray, sources: list[str], out: str | Path) -> dict:
    """Dump every kernel input over ``clips`` (N, T, H, W, 3) uint8 into ``out``; return the manifests.

    ``sources[i]`` names clip i (its video id); each sample's source is
    ``<video id>@<frame index>`` (online) or ``<video id>`` (offline, one clip per sample).
    """
    out = Path(out)
    kernels, manifest = split_models(net)
    names = boundary_names(manifest)
    with replacing_dir(out) as tmp:
        writers = {n: BoundaryWriter(tmp, n) for n in names}
        current = {"source": ""}

        def record(_k: int, feeds: dict[str, np.ndarray]) -> None:
            for name, array in feeds.items():
                writers[name].add(array, current["source"])

        online = net.config.online
        pipe = HostPipeline([KerasKernel(k) for k in kernels], manifest, online=online, on_feed=record)
        for clip, source in zip(clips, sources):
            frames = clip.astype(np.float32) / 255.0  # (T, H, W, 3)
            pipe.reset()  # a new video: shift buffers start at zero
            if online:
                for t in range(len(frames)):
                    current["source"] = f"{source}@{t}"
                    pipe.step(frames[t : t + 1])
            else:
                current["source"] = source
                pipe.step(frames)
        manifests = {n: w.close() for n, w in writers.items()}
        write_index(tmp, names)
        write_json(tmp / SPLIT_FILE, manifest)
    return manifests
