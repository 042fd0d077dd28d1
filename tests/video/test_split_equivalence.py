"""Split pipeline with CPU shifts == unified model, in float, online and offline, on real clips."""

import numpy as np
import pytest

from greenpipe.models.tsm_tf import build, clip_model, load_checkpoint, save_checkpoint
from greenpipe.video.host import HostPipeline, KerasKernel
from tests.video.conftest import real_clip, tiny_offline, tiny_online

TOL = 1e-5


def _online_unified(model, frames: np.ndarray) -> np.ndarray:
    """Run the unified online model frame by frame, feeding its buffers back: (T, classes)."""
    bufs = [np.zeros([1, *(int(d) for d in t.shape[1:])], np.float32) for t in model.inputs[1:]]
    out = []
    for t in range(len(frames)):
        logits, *bufs = (np.asarray(o) for o in model([frames[t : t + 1], *bufs], training=False))
        out.append(logits)
    return np.concatenate(out)


def test_online_split_equals_unified_over_a_frame_sequence():
    net = tiny_online()
    kernels, manifest = build(net, split=True)
    assert len(kernels) == 11 and net.n_shifts == 10  # MobileNetV2: a kernel boundary at each of 10 shifts
    unified = build(net, split=False)
    # Two real clips back to back, without a reset: buffers carry across the cut as in a live stream.
    frames = np.concatenate([real_clip("pan_right", 5), real_clip("zoom_in", 4, seed=1)]).astype(np.float32) / 255
    pipe = HostPipeline([KerasKernel(k) for k in kernels], manifest, online=True)
    split = np.concatenate([pipe.step(frames[t : t + 1]) for t in range(len(frames))])
    ref = _online_unified(unified, frames)
    assert np.abs(split - ref).max() <= TOL
    assert np.abs(ref).max() > 1e-3  # not a vacuous comparison of zeros


def test_online_model_equals_causal_clip_model():
    # Training runs whole clips with the causal shift; online inference must compute the same.
    net = tiny_online(seed=1)
    frames = real_clip("pan_up", 4).astype(np.float32) / 255
    clip = np.asarray(clip_model(net)(frames, training=False))
    assert np.abs(clip - _online_unified(build(net), frames)).max() <= TOL


def test_clip_logits_average_the_scored_frames_whatever_the_batch():
    # Val top-1 is scored in batches of clips; inference-mode BN must make the batch size irrelevant.
    from greenpipe.video.train import clip_logits, scored_frames

    net = tiny_online(seed=2)
    clips = np.stack([real_clip(label, 4, seed=i) for i, label in enumerate(["pan_up", "zoom_in", "pan_left"])])
    frames = clips.reshape(-1, *clips.shape[2:]).astype(np.float32) / 255
    per_frame = np.asarray(clip_model(net, clips=None)(frames, training=False)).reshape(3, 4, -1)
    expected = per_frame[:, scored_frames(net)].mean(axis=1)
    for batch in (1, 2, 64):
        assert np.abs(clip_logits(net, clips, batch_clips=batch) - expected).max() <= TOL


def test_offline_split_equals_unified_over_a_clip():
    net = tiny_offline()
    kernels, manifest = build(net, split=True)
    assert len(kernels) == 5 and manifest["mode"] == "offline"
    assert [k["inputs"][0]["shape"][0] for k in manifest["kernels"]] == [4] * 5  # N = 4 frames per batch
    clip = real_clip("zoom_out", 4).astype(np.float32) / 255
    pipe = HostPipeline([KerasKernel(k) for k in kernels], manifest, online=False)
    split = pipe.step(clip)
    ref = np.asarray(build(net, split=False)(clip, training=False))
    assert np.abs(split - ref).max() <= TOL
    # The shift matters: the same clip with frames reordered gives other logits.
    assert np.abs(np.asarray(build(net)(clip[::-1], training=False))[::-1] - ref).max() > 1e-4


@pytest.mark.parametrize("width", [0.25, 0.5, 1.0])
def test_mobilenetv2_has_ten_shifts_at_every_width(width):
    from greenpipe.models.tsm_tf import TSMConfig, make_net

    net = make_net(TSMConfig(input_size=32, width_mult=width, last_channel=16))
    assert net.n_shifts == 10 and net.n_kernels == 11


def test_tsn_has_one_kernel_and_no_buffers():
    net = tiny_online(shift=False)
    kernels, manifest = build(net, split=True)
    assert len(kernels) == 1 and len(build(net).inputs) == 1


def test_manifest_names_and_shapes_what_vai_q_needs():
    net = tiny_online()
    kernels, manifest = build(net, split=True)
    for k, (model, entry) in enumerate(zip(kernels, manifest["kernels"])):
        names = [i["name"] for i in entry["inputs"]]
        assert names == (["k00_input"] if k == 0 else [f"k{k:02d}_shift", f"k{k:02d}_residual"])
        assert [t.name for t in model.inputs] == names
        assert entry["outputs"][0]["name"] == f"k{k:02d}_output"
        assert [list(i["shape"]) for i in entry["inputs"]] == [[1, *(int(d) for d in t.shape[1:])]
                                                               for t in model.inputs]
        if k:
            prev = manifest["kernels"][k - 1]["outputs"][0]["shape"]
            assert all(i["shape"] == prev for i in entry["inputs"])  # shift-concat and residual: same shape
            assert entry["fold"] == prev[-1] // 8


def test_checkpoint_describes_itself(tmp_path):
    net = tiny_online(seed=2)
    save_checkpoint(tmp_path / "c.npz", net, {"net": "tsm"})
    loaded, header = load_checkpoint(tmp_path / "c.npz")
    assert header["recipe"] == "video" and header["net"] == "tsm" and loaded.config == net.config
    x = real_clip("static", 4).astype(np.float32) / 255
    np.testing.assert_array_equal(np.asarray(clip_model(loaded)(x)), np.asarray(clip_model(net)(x)))


def test_missing_checkpoint_says_which_stage_to_run(tmp_path):
    from greenpipe.errors import GreenpipeError

    with pytest.raises(GreenpipeError, match="video_train"):
        load_checkpoint(tmp_path / "none.npz")
