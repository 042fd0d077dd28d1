"""The temporal-shift op against a plain numpy reference written loop by loop."""

import numpy as np
import pytest

from greenpipe.models.tsm_tf import online_shift, temporal_shift
from greenpipe.video.host import shift_clip


def reference(x: np.ndarray, n_frames: int, fold_div: int, bidirectional: bool) -> np.ndarray:
    """TSM's shift, frame by frame and channel by channel: (N*T, H, W, C)."""
    nt, h, w, c = x.shape
    fold = c // fold_div
    v = x.reshape(nt // n_frames, n_frames, h, w, c)
    out = np.zeros_like(v)
    for n in range(v.shape[0]):
        for t in range(n_frames):
            for ch in range(c):
                if bidirectional and ch < fold:
                    src = t + 1  # from the future
                elif (bidirectional and ch < 2 * fold) or (not bidirectional and ch < fold):
                    src = t - 1  # from the past
                else:
                    src = t
                if 0 <= src < n_frames:
                    out[n, t, :, :, ch] = v[n, src, :, :, ch]
    return out.reshape(x.shape)


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("c,fold_div", [(16, 8), (24, 4), (8, 8)])
def test_temporal_shift_matches_reference(bidirectional, c, fold_div):
    x = np.random.default_rng(c).standard_normal((2 * 5, 3, 4, c)).astype(np.float32)  # 2 clips of 5 frames
    got = np.asarray(temporal_shift(x, 5, fold_div, bidirectional))
    np.testing.assert_array_equal(got, reference(x, 5, fold_div, bidirectional))


def test_shift_moves_channels_and_keeps_the_rest():
    x = np.arange(4 * 1 * 1 * 8, dtype=np.float32).reshape(4, 1, 1, 8)
    got = np.asarray(temporal_shift(x, 4, 8, bidirectional=True))
    assert got[1, 0, 0, 0] == x[2, 0, 0, 0]  # channel 0 from the next frame
    assert got[1, 0, 0, 1] == x[0, 0, 0, 1]  # channel 1 from the previous frame
    assert got[3, 0, 0, 0] == 0 and got[0, 0, 0, 1] == 0  # off the clip's ends: zeros
    np.testing.assert_array_equal(got[..., 2:], x[..., 2:])


def test_online_shift_over_frames_equals_causal_clip_shift():
    x = np.random.default_rng(1).standard_normal((6, 2, 2, 16)).astype(np.float32)
    buf = np.zeros((1, 2, 2, 2), np.float32)
    frames = []
    for t in range(6):
        shifted, buf = online_shift(x[t : t + 1], buf, 8)
        frames.append(np.asarray(shifted))
    np.testing.assert_array_equal(np.concatenate(frames), reference(x, 6, 8, bidirectional=False))


@pytest.mark.parametrize("zero", [0, -3])
def test_host_clip_shift_matches_reference(zero):
    x = np.random.default_rng(2).integers(-128, 127, (5, 2, 3, 16)).astype(np.int8)
    ref = reference((x.astype(np.int32) - zero).astype(np.float32), 5, 8, True) + zero  # zeros = the zero point
    np.testing.assert_array_equal(shift_clip(x, 2, zero), ref.astype(np.int8))
