"""Geometric self-ensemble: average an image-to-image model over flips and rotations of its input.

``SelfEnsemble(runner, passes)`` is itself a Runner.  Its ``run(x)`` runs the
wrapped runner on ``passes`` transforms of ``x`` (the identity, the
horizontal flip, the 180-degree rotation and the vertical flip, then the same
four turned by 90 degrees), undoes each transform on the output and returns
the mean.  The noise left by a denoiser differs between the transformed
passes while the image does not, so the mean is cleaner; it costs ``passes``
forward passes.  Because evaluation and LoadGen both see a Runner, the
quality and the latency a report shows for an ensemble are measured on
exactly what a deployment would run.

``passes`` is 1 (off), 2, 4 or 8.  Up to 4 passes the input keeps its shape;
8 also runs H x W inputs as W x H, which an artifact compiled for one fixed
input size (a DPU xmodel) cannot take unless the input is square.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from greenpipe.errors import GreenpipeError
from greenpipe.runtime.base import Runner

# (quarter turns, horizontal flip), in the order passes take them: the first four keep H x W.
TRANSFORMS = ((0, False), (0, True), (2, False), (2, True), (1, False), (1, True), (3, False), (3, True))
PASSES = (1, 2, 4, 8)


def transform(x: np.ndarray, turns: int, flip: bool) -> np.ndarray:
    """(N, C, H, W): rotate by ``turns`` quarter turns, then mirror left-right if ``flip``."""
    y = np.rot90(x, turns, axes=(2, 3))
    return np.ascontiguousarray(y[..., ::-1] if flip else y)


def untransform(y: np.ndarray, turns: int, flip: bool) -> np.ndarray:
    """The inverse of :func:`transform`."""
    y = y[..., ::-1] if flip else y
    return np.rot90(y, -turns, axes=(2, 3))


class SelfEnsemble:
    """A Runner that averages ``runner`` over ``passes`` flips / rotations of each input."""

    def __init__(self, runner: Runner, passes: int):
        if passes not in PASSES:
            raise GreenpipeError(f"self-ensemble passes = {passes}: must be one of {', '.join(map(str, PASSES))}")
        self.runner = runner
        self.passes = passes

    def run(self, x: np.ndarray) -> np.ndarray:
        if self.passes == 1:
            return self.runner.run(x)  # the identity pass alone: no transform, no copy
        total = np.array(self.runner.run(x), dtype=np.float32)  # the identity pass, into a fresh buffer
        for turns, flip in TRANSFORMS[1 : self.passes]:
            total += untransform(self.runner.run(transform(x, turns, flip)), turns, flip)
        total /= self.passes
        return total

    def describe(self) -> dict[str, Any]:
        inner = self.runner.describe()
        return {**inner, "label": f"{inner['label']}, x{self.passes} self-ensemble", "self_ensemble": self.passes}
