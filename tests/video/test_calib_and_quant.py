"""Per-boundary calibration dump, per-kernel TFLite int8 + host loop, the Vitis input_fn and commands."""

import numpy as np
import pytest

from greenpipe.calib import boundaries, dump_calibration, iter_boundary, read_manifest
from greenpipe.errors import ParamsError, ToolchainMissing
from greenpipe.models.tsm_tf import split_models
from greenpipe.quant import parse_variant, variants_taking
from greenpipe.quant.kernels import read_kernels_manifest
from greenpipe.video.calib import boundary_names, calibration
from greenpipe.video.host import HostPipeline, KerasKernel, dequantize, quantize
from tests.video.conftest import real_clip, tiny_offline, tiny_online

T = 4


@pytest.fixture(scope="module")
def dumped(tmp_path_factory):
    net = tiny_online(seed=5)
    clips = np.stack([real_clip(label, T, seed=i) for i, label in enumerate(("pan_left", "zoom_in", "static"))])
    root = tmp_path_factory.mktemp("calib") / "calib"
    dump_calibration(calibration(net, clips, ["a", "b", "c"]), root)
    return net, root, clips


def test_dump_has_every_boundary_with_manifest(dumped):
    net, root, clips = dumped
    _, manifest = split_models(net)
    assert boundaries(root) == boundary_names(manifest)
    assert len(boundaries(root)) == 1 + 2 * 10  # k00_input, then shift + residual for kernels 1..10
    for k in manifest["kernels"]:
        for i in k["inputs"]:
            m = read_manifest(root, i["name"])
            assert m["count"] == len(clips) * T and m["shape"] == i["shape"] and m["dtype"] == "float32"
            assert m["sources"][:2] == ["a@0", "a@1"]


def test_shift_buffers_are_carried_across_frames_and_reset_per_clip(dumped):
    net, root, _ = dumped
    _, manifest = split_models(net)
    for k in (1, 5, 10):
        fold = manifest["kernels"][k]["fold"]
        sh = list(iter_boundary(root, f"k{k:02d}_shift"))
        res = list(iter_boundary(root, f"k{k:02d}_residual"))
        for s in range(len(sh)):
            if s % T == 0:  # first frame of a clip: empty buffer
                assert not sh[s][..., :fold].any()
            else:  # the previous frame's first fold
                np.testing.assert_array_equal(sh[s][..., :fold], res[s - 1][..., :fold])
            np.testing.assert_array_equal(sh[s][..., fold:], res[s][..., fold:])


def test_dumped_frames_are_the_clips(dumped):
    _, root, clips = dumped
    first = list(iter_boundary(root, "k00_input"))
    np.testing.assert_array_equal(first[T + 1][0], clips[1, 1].astype(np.float32) / 255)


@pytest.fixture(scope="module")
def dumped_offline(tmp_path_factory):
    """The offline ResNet (5 kernels): cheaper where the test is about conversion, not online buffers."""
    net = tiny_offline(seed=6)
    clips = np.stack([real_clip(label, T, seed=i) for i, label in enumerate(("pan_right", "zoom_out"))])
    root = tmp_path_factory.mktemp("calib_offline") / "calib"
    dump_calibration(calibration(net, clips, ["a", "b"]), root)
    return net, root, clips


def test_offline_dump_holds_one_clip_per_sample(dumped_offline):
    net, root, clips = dumped_offline
    m = read_manifest(root, "k02_shift")
    assert m["count"] == len(clips) and m["shape"][0] == T and m["sources"] == ["a", "b"]


@pytest.fixture(scope="module")
def int8_kernels(dumped, tmp_path_factory):
    net, root, _ = dumped
    kernels, manifest = split_models(net)
    out = tmp_path_factory.mktemp("quant") / "tflite_int8"
    variant, config = parse_variant("tflite_int8", {}, "video.quantize", takes="kernels")
    report = variant.quantize(kernels, manifest, root, out, config)
    return net, out, report


def _runners(out):
    from greenpipe.runtime import RUNTIMES

    manifest = read_kernels_manifest(out)
    return [RUNTIMES.get("tflite")(out / k["artifact"], 1, 1) for k in manifest["kernels"]], manifest


class _Dequantized:
    """An int8 TFLite kernel seen through float tensors: quantize in, dequantize out (the fake-quant chain)."""

    def __init__(self, runner):
        self.runner, self.inputs = runner, [i.__class__(i.name, i.shape, np.dtype(np.float32)) for i in runner.inputs]
        self.outputs = [o.__class__(o.name, o.shape, np.dtype(np.float32)) for o in runner.outputs]

    def invoke(self, feeds):
        q = {i.name: quantize(feeds[i.name], i) for i in self.runner.inputs}
        return {o.name: dequantize(v, o) for o, v in zip(self.runner.outputs, self.runner.invoke(q).values())}


def test_int8_kernels_with_int8_buffers_equal_the_fake_quant_chain(int8_kernels):
    net, out, report = int8_kernels
    assert report["kernels"] == 11
    runners, manifest = _runners(out)
    assert all(i.dtype == np.int8 and i.scale > 0 for r in runners for i in r.inputs)
    frames = np.concatenate([real_clip("pan_down", T, seed=9), real_clip("zoom_out", T, seed=8)]) / np.float32(255)
    int8 = HostPipeline(runners, manifest, online=True)
    fake = HostPipeline([_Dequantized(r) for r in runners], manifest, online=True)
    a = np.concatenate([int8.step(frames[t : t + 1]) for t in range(len(frames))])
    b = np.concatenate([fake.step(frames[t : t + 1]) for t in range(len(frames))])
    lsb = runners[-1].outputs[0].scale
    # Equal up to the rounding of the host's rescales (none at all where neighbouring scales agree).
    assert np.abs(a - b).max() <= 2 * lsb * max(1, len(int8.rescaled))
    # ... and int8 stays close to the float network it came from.
    ref = np.concatenate([HostPipeline([KerasKernel(k) for k in split_models(net)[0]], manifest,
                                       online=True).step(frames[t : t + 1]) for t in range(len(frames))])
    assert np.abs(a - ref).max() <= 0.25 * np.abs(ref).max()


def test_litert_and_tensorflow_interpreters_agree_bit_for_bit(int8_kernels):
    """The runtime loads kernels with LiteRT's interpreter where installed; TensorFlow's gives the same bits."""
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    _, out, _ = int8_kernels
    manifest = read_kernels_manifest(out)
    runners, _ = _runners(out)
    assert runners[0].describe()["label"].startswith("LiteRT ")
    rng = np.random.default_rng(0)
    for k in manifest["kernels"]:
        sigs = [cls(model_path=str(out / k["artifact"]), num_threads=1).get_signature_runner()
                for cls in (Interpreter, tf.lite.Interpreter)]
        feeds = {n: rng.integers(-128, 128, d["shape"], dtype=np.int8)
                 for n, d in sigs[0].get_input_details().items()}
        outs = [sig(**feeds) for sig in sigs]
        for name in outs[0]:
            np.testing.assert_array_equal(outs[0][name], outs[1][name], err_msg=f"{k['artifact']}: {name}")


def test_float_tflite_kernels_equal_keras(dumped_offline, tmp_path):
    net, root, _ = dumped_offline
    kernels, manifest = split_models(net)
    variant, config = parse_variant("tflite_fp32", {}, "video.quantize", takes="kernels")
    variant.quantize(kernels, manifest, root, tmp_path / "fp32", config)
    runners, km = _runners(tmp_path / "fp32")
    clip = real_clip("pan_up", T) / np.float32(255)
    a = HostPipeline(runners, km, online=False).step(clip)
    b = HostPipeline([KerasKernel(k) for k in kernels], manifest, online=False).step(clip)
    np.testing.assert_allclose(a, b, atol=1e-4)
    assert runners[0].describe()["runtime"] == "tflite"


def test_vitis_input_fn_serves_each_node_its_dump(dumped, monkeypatch):
    from greenpipe.quant import vitis_tf_input

    _, root, _ = dumped
    fn = vitis_tf_input.make_input_fn(root, "k03")
    batch = fn(5)
    assert sorted(batch) == ["k03_residual", "k03_shift"]
    for node, array in batch.items():
        np.testing.assert_array_equal(array, list(iter_boundary(root, node))[5])
    assert list(vitis_tf_input.make_input_fn(root, "k00")(0)) == ["k00_input"]
    monkeypatch.setenv("GREENPIPE_CALIB", str(root))
    monkeypatch.setenv("GREENPIPE_KERNEL", "k07")
    np.testing.assert_array_equal(vitis_tf_input.input_fn(2)["k07_shift"], list(iter_boundary(root, "k07_shift"))[2])
    from greenpipe.errors import GreenpipeError

    with pytest.raises(GreenpipeError, match="calib_iter"):
        fn(10_000)


def test_vitis_tf_writes_frozen_kernels_and_commands_then_names_missing_tools(dumped_offline, tmp_path):
    import shutil

    net, root, _ = dumped_offline
    kernels, manifest = split_models(net)
    variant, config = parse_variant("vitis_tf", {"calib_iter": 1}, "video.quantize", takes="kernels")
    if shutil.which("vai_q_tensorflow") and shutil.which("vai_c_tensorflow"):
        pytest.skip("Vitis AI TensorFlow tools are installed here; the missing-tool path does not apply")
    with pytest.raises(ToolchainMissing, match="vai_q_tensorflow and vai_c_tensorflow"):
        variant.quantize(kernels, manifest, root, tmp_path / "v", config)
    cmds = (tmp_path / "v" / "commands.sh").read_text()
    assert "--input_nodes k03_shift,k03_residual" in cmds
    shape = ",".join(str(d) for d in manifest["kernels"][3]["inputs"][0]["shape"])
    assert shape.startswith("4,") and f"--input_shapes {shape}:{shape}" in cmds
    assert "--output_nodes k03_output" in cmds and "--input_nodes k00_input " in cmds
    assert "GREENPIPE_KERNEL=k03" in cmds and "--calib_iter 1" in cmds and "vai_c_tensorflow --frozen_pb" in cmds
    import tensorflow as tf

    graph = tf.compat.v1.GraphDef()
    graph.ParseFromString((tmp_path / "v" / "k03.pb").read_bytes())
    names = {n.name for n in graph.node}
    assert {"k03_shift", "k03_residual", "k03_output"} <= names
    assert not any(n.op in ("VarHandleOp", "ReadVariableOp") for n in graph.node)  # frozen


def test_every_kernel_variant_is_registered_and_validates_its_keys():
    assert {"tflite_fp32", "tflite_int8", "vitis_tf"} <= set(variants_taking("kernels"))
    with pytest.raises(ParamsError, match="video.quantize.tflite_int8.calib_sample"):
        parse_variant("tflite_int8", {"calib_sample": 3}, "video.quantize", takes="kernels")
    with pytest.raises(ParamsError, match="no registered per-kernel"):
        parse_variant("int3", {}, "video.quantize", takes="kernels")
