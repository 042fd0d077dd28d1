"""Host-loop arithmetic: int8 rescales between kernels, zero-point buffers, logit smoothing."""

import numpy as np

from greenpipe.video.host import HostPipeline, TensorInfo, convert, dequantize, quantize, smooth


def test_rescale_between_int8_scales_matches_requantizing_the_real_values():
    src = TensorInfo("a", (1, 8), np.dtype(np.int8), 0.05, -3)
    dst = TensorInfo("b", (1, 8), np.dtype(np.int8), 0.08, 4)
    q = np.arange(-128, 128, dtype=np.int8)
    direct = convert(q, src, dst).astype(int)
    via_real = quantize(dequantize(q, src), dst).astype(int)
    # Equal up to how a value lying on a rounding tie in float32 is rounded: at most one LSB.
    assert np.abs(direct - via_real).max() <= 1 and np.mean(direct == via_real) > 0.9
    np.testing.assert_allclose(dequantize(convert(q, src, dst), dst), dequantize(q, src), atol=0.04 + 1e-6)
    assert convert(q, src, src) is q  # same representation: passed through untouched


def _requantized(q, src, dst):
    lo, hi = np.iinfo(dst.dtype).min, np.iinfo(dst.dtype).max
    y = np.round((q.astype(np.float32) - src.zero_point) * np.float32(src.scale / dst.scale)) + dst.zero_point
    return np.clip(y, lo, hi).astype(dst.dtype)


def test_an_8_bit_rescale_by_table_equals_the_arithmetic_on_every_value_and_keeps_the_shape():
    for src_t, dst_t in ((np.int8, np.int8), (np.uint8, np.int8), (np.int8, np.uint8)):
        src = TensorInfo("a", (1, 8), np.dtype(src_t), 0.05, -3 if src_t is np.int8 else 130)
        dst = TensorInfo("b", (1, 8), np.dtype(dst_t), 0.08, 4 if dst_t is np.int8 else 120)
        info = np.iinfo(src_t)
        q = np.arange(info.min, info.max + 1, dtype=src_t)
        np.testing.assert_array_equal(convert(q, src, dst), _requantized(q, src, dst))
        x = np.random.default_rng(0).integers(info.min, info.max + 1, (2, 4, 4, 16)).astype(src_t)
        out = convert(x[..., 8:], src, dst)  # a non-contiguous slice, as the shift makes
        assert out.shape == (2, 4, 4, 8) and out.dtype == dst_t
        np.testing.assert_array_equal(out, _requantized(x[..., 8:], src, dst))


def test_smoothing_averages_the_last_window_frames():
    logits = np.array([[0.0, 3.0], [2.0, 1.0], [4.0, -1.0]])
    np.testing.assert_allclose(smooth(logits, 2), [[0, 3], [1, 2], [3, 0]])
    np.testing.assert_allclose(smooth(logits, 1), logits)


class _Echo:
    """A kernel that returns its (single or shift) input unchanged, in int8."""

    def __init__(self, name, inputs, out):
        self.inputs, self.outputs, self.name = inputs, [out], name

    def invoke(self, feeds):
        key = self.inputs[0].name
        return {self.outputs[0].name: feeds[key]}


def test_int8_buffers_start_at_the_zero_point_and_carry_the_previous_frame():
    q = TensorInfo("k00_input", (1, 1, 1, 8), np.dtype(np.int8), 0.1, 5)
    out0 = TensorInfo("k00_output", (1, 1, 1, 8), np.dtype(np.int8), 0.1, 5)
    k1_in = [TensorInfo("k01_shift", (1, 1, 1, 8), np.dtype(np.int8), 0.1, 5),
             TensorInfo("k01_residual", (1, 1, 1, 8), np.dtype(np.int8), 0.1, 5)]
    kernels = [_Echo("k00", [q], out0), _Echo("k01", k1_in, TensorInfo("k01_output", (1, 1, 1, 8),
                                                                          np.dtype(np.int8), 0.1, 5))]
    manifest = {"kernels": [{"name": "k00", "fold": 0}, {"name": "k01", "fold": 1}]}
    pipe = HostPipeline(kernels, manifest, online=True)
    f0, f1 = np.full((1, 1, 1, 8), 1.0), np.full((1, 1, 1, 8), 2.0)
    y0, y1 = pipe.step(f0), pipe.step(f1)
    assert y0[..., 0] == 0.0 and np.allclose(y0[..., 1:], 1.0)  # empty buffer = real zero
    assert np.isclose(y1[..., 0], 1.0) and np.allclose(y1[..., 1:], 2.0)  # channel 0 from the previous frame
    assert pipe.rescaled == []
    pipe.reset()
    assert pipe.step(f1)[..., 0] == 0.0
