"""Geometric self-ensemble: each transform is undone exactly, and averaging cancels what is not equivariant."""

import numpy as np
import pytest

from greenpipe.errors import GreenpipeError
from greenpipe.runtime.ensemble import PASSES, TRANSFORMS, SelfEnsemble, transform, untransform


class FixedPattern:
    """A 'denoiser' that returns its input plus one fixed pattern laid on the input grid as it arrives."""

    def __init__(self, pattern: np.ndarray):
        self.pattern = pattern
        self.shapes: list[tuple[int, ...]] = []

    def run(self, x: np.ndarray) -> np.ndarray:
        self.shapes.append(x.shape)
        return x + self.pattern[: x.shape[2], : x.shape[3]]

    def describe(self) -> dict:
        return {"runtime": "test", "label": "fixed pattern", "host": "here"}


@pytest.mark.parametrize("turns, flip", TRANSFORMS)
def test_every_transform_is_undone(turns, flip):
    x = np.random.default_rng(0).random((2, 3, 5, 7), dtype=np.float32)
    y = transform(x, turns, flip)
    assert y.shape == ((2, 3, 7, 5) if turns % 2 else x.shape) and y.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(untransform(y, turns, flip), x)


def test_the_first_eight_transforms_are_all_distinct():
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    seen = {transform(x, t, f).tobytes() for t, f in TRANSFORMS}
    assert len(seen) == 8


@pytest.mark.parametrize("passes", PASSES)
def test_ensemble_averages_a_fixed_pattern_down(passes):
    """A pattern that does not move with the image is spread over ``passes`` placements and averaged:
    its RMS falls about as 1 / sqrt(passes), while the image itself comes back untouched."""
    rng = np.random.default_rng(1)
    size = 64
    pattern = rng.normal(0, 0.1, (size, size)).astype(np.float32)
    x = rng.random((1, 3, size, size), dtype=np.float32)
    inner = FixedPattern(pattern)
    out = SelfEnsemble(inner, passes).run(x)
    assert out.shape == x.shape and out.dtype == np.float32 and len(inner.shapes) == passes
    residual_rms = float(np.sqrt(np.mean((out - x) ** 2)))
    assert residual_rms == pytest.approx(0.1 / np.sqrt(passes), rel=0.1)


def test_up_to_four_passes_keep_a_non_square_input_as_it_is():
    inner = FixedPattern(np.zeros((8, 8), np.float32))
    SelfEnsemble(inner, 4).run(np.zeros((1, 3, 4, 8), np.float32))
    assert set(inner.shapes) == {(1, 3, 4, 8)}
    SelfEnsemble(inner, 8).run(np.zeros((1, 3, 4, 8), np.float32))
    assert (1, 3, 8, 4) in inner.shapes


def test_describe_names_the_ensemble_and_bad_passes_are_refused():
    inner = FixedPattern(np.zeros((4, 4), np.float32))
    desc = SelfEnsemble(inner, 8).describe()
    assert desc["label"] == "fixed pattern, x8 self-ensemble" and desc["self_ensemble"] == 8
    assert desc["host"] == "here"
    with pytest.raises(GreenpipeError, match="self-ensemble passes = 3: must be one of 1, 2, 4, 8"):
        SelfEnsemble(inner, 3)


class KeepsOutputs(FixedPattern):
    """A runner that keeps the output arrays it returned (as a runtime with bound output buffers owns them)."""

    def __init__(self, pattern: np.ndarray):
        super().__init__(pattern)
        self.outputs: list[np.ndarray] = []

    def run(self, x: np.ndarray) -> np.ndarray:
        self.outputs.append(super().run(x))
        return self.outputs[-1]


def test_one_pass_is_the_runner_itself_and_more_passes_never_write_into_its_outputs():
    rng = np.random.default_rng(2)
    x = rng.random((1, 3, 8, 8), dtype=np.float32)
    pattern = rng.normal(0, 0.1, (8, 8)).astype(np.float32)
    inner = KeepsOutputs(pattern)
    assert SelfEnsemble(inner, 1).run(x) is inner.outputs[-1]
    inner.outputs.clear()
    mean = SelfEnsemble(inner, 4).run(x)
    assert not any(mean is out for out in inner.outputs)
    for out, (turns, flip) in zip(inner.outputs, TRANSFORMS[:4], strict=True):  # each pass's output as it came back
        np.testing.assert_array_equal(out, transform(x, turns, flip) + pattern)
