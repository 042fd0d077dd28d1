"""Calibration samples of a split TSM network: every kernel's inputs, as the kernel sees them online.

The float kernels run in the host loop (:class:`greenpipe.video.host.HostPipeline`)
over calibration clips from the train split, frame by frame with the shift
buffers carried across the frames of a clip (zeros at each clip's start, as a
new video starts online), and every kernel input is recorded: boundary
``k00_input`` (the frame), then ``kKK_shift`` and ``kKK_residual`` for each
kernel k >= 1.  :func:`calibration` hands them to :func:`greenpipe.calib.dump_calibration`
(one directory per boundary, arrays + manifest) with ``split.json`` beside
``index.json``: the split manifest, so a per-kernel quantizer finds each
kernel's boundaries by its input names.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from greenpipe.calib import CalibrationSamples
from greenpipe.models.tsm_tf import TSMNet, split_models
from greenpipe.video.host import HostPipeline, KerasKernel

SPLIT_FILE = "split.json"


def boundary_names(manifest: dict) -> list[str]:
    """Every kernel input name in pipeline order: the boundaries of the dump."""
    return [i["name"] for k in manifest["kernels"] for i in k["inputs"]]


def calibration(net: TSMNet, clips: np.ndarray, sources: list[str]) -> CalibrationSamples:
    """Every kernel input over ``clips`` (N, T, H, W, 3) uint8, as calibration samples.

    ``sources[i]`` names clip i (its video id); each sample's source is
    ``<video id>@<frame index>`` (online) or ``<video id>`` (offline, one clip per sample).
    """
    kernels, manifest = split_models(net)
    online = net.config.online
    per_clip = clips.shape[1] if online else 1
    return CalibrationSamples(
        boundaries=boundary_names(manifest),
        samples=_kernel_inputs(kernels, manifest, online, clips, sources),
        files={SPLIT_FILE: manifest},
        facts={"kernels": net.n_kernels, "clips": len(clips), "samples_per_boundary": len(clips) * per_clip},
        stats=("shape", "count", "min", "max", "mean", "std"),
    )


def _kernel_inputs(kernels: list, manifest: dict, online: bool, clips: np.ndarray,
                   sources: list[str]) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
    """(source, {kernel input name: array}) per frame (online) or clip (offline), via the host loop."""
    feeds: dict[str, np.ndarray] = {}

    def record(_k: int, kernel_feeds: dict[str, np.ndarray]) -> None:
        feeds.update((name, np.array(a)) for name, a in kernel_feeds.items())  # a copy: buffers move on

    pipe = HostPipeline([KerasKernel(k) for k in kernels], manifest, online=online, on_feed=record)
    for clip, source in zip(clips, sources):
        frames = clip.astype(np.float32) / 255.0  # (T, H, W, 3)
        pipe.reset()  # a new video: shift buffers start at zero
        if online:
            steps = [(f"{source}@{t}", frames[t : t + 1]) for t in range(len(frames))]
        else:
            steps = [(source, frames)]
        for name, x in steps:
            feeds.clear()
            pipe.step(x)
            yield name, dict(feeds)
