"""The TSM host loop on the VART runtime: DPU tensor names, fix-point scales, batch filling, host rescales.

No DPU is reachable here, so ``xir`` / ``vart`` are replaced by a stand-in
that follows VART's documented Python contract (``xir.Graph.deserialize``,
``toposort_child_subgraph``, ``Runner.create_runner``, int8 NHWC tensors with
a ``fix_point`` attribute, ``execute_async`` + ``wait``) and computes each
kernel with its float Keras model on the de-quantized inputs, quantizing the
output at its fix point: what a compiled kernel computes, up to the DPU's own
rounding.  The code under test is greenpipe's side: the adapter
(:class:`greenpipe.runtime.vart.VartRunner`), the name binding
(:func:`greenpipe.video.host.bind`) and the host loop.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest

from greenpipe.errors import GreenpipeError, ToolchainMissing
from greenpipe.models.tsm_tf import build
from greenpipe.video.host import HostPipeline, KerasKernel, bind, dequantize
from tests.video.conftest import real_clip, tiny_offline, tiny_online

DPU_BATCH = 3  # more than one frame: every online call fills the batch, offline clips span two calls


class _Tensor:
    def __init__(self, name: str, dims: tuple[int, ...], fix: int):
        self.name, self.dims, self._fix = name, list(dims), fix

    def get_attr(self, key: str):
        if key != "fix_point":
            raise KeyError(key)
        return self._fix


class _Subgraph:
    def __init__(self, name: str, device: str, spec: dict | None = None):
        self.name, self._attrs, self.spec = name, {"device": device, "dpu_name": "stand-in"}, spec

    def has_attr(self, key: str) -> bool:
        return key in self._attrs

    def get_attr(self, key: str):
        return self._attrs[key]


class _Runner:
    """Runs one kernel: int8 at 2**-fix in, float Keras kernel, int8 at 2**-fix out."""

    def __init__(self, spec: dict):
        self.spec, self.jobs, self.calls = spec, {}, []

    def get_input_tensors(self):
        return self.spec["inputs"]

    def get_output_tensors(self):
        return self.spec["outputs"]

    def execute_async(self, ins, outs):
        for t, a in zip(self.spec["inputs"], ins):
            assert a.dtype == np.int8 and list(a.shape) == t.dims, (t.name, a.shape, t.dims)
        self.calls.append([a.copy() for a in ins])
        real = {t.name: a.astype(np.float32) * 2.0 ** -t.get_attr("fix_point")
                for t, a in zip(self.spec["inputs"], ins)}
        model = self.spec["model"]
        by_model = {m: real[d] for d, m in self.spec["feeds"].items()}
        y = np.asarray(model([by_model[i.name] for i in model.inputs], training=False))
        out = self.spec["outputs"][0]
        q = np.clip(np.round(y * 2.0 ** out.get_attr("fix_point")), -128, 127).astype(np.int8)
        outs[0][...] = q.reshape(outs[0].shape)
        job = len(self.jobs) + 1
        self.jobs[job] = "pending"
        return job

    def wait(self, job):
        assert self.jobs.pop(job) == "pending"


def _fix_point(values: np.ndarray) -> int:
    """The power-of-two scale a DPU quantizer gives a tensor with this range."""
    return int(np.floor(np.log2(127.0 / max(float(np.abs(values).max()), 1e-6))))


@pytest.fixture
def stand_in_dpu(monkeypatch):
    """Install ``xir`` / ``vart`` modules backed by the registered kernels; yields the registry (path -> spec)."""
    registry: dict[str, dict] = {}

    class Graph:
        def __init__(self, spec):
            self.spec = spec

        @staticmethod
        def deserialize(path):
            return Graph(registry[str(path)])

        def get_root_subgraph(self):
            root = _Subgraph("root", "USER")
            root.toposort_child_subgraph = lambda: [_Subgraph("input", "CPU"),
                                                   _Subgraph(self.spec["name"], "DPU", self.spec)]
            return root

    xir = types.ModuleType("xir")
    xir.Graph = Graph
    vart = types.ModuleType("vart")
    vart.Runner = types.SimpleNamespace(create_runner=lambda subgraph, mode: _Runner(subgraph.spec))
    monkeypatch.setitem(sys.modules, "xir", xir)
    monkeypatch.setitem(sys.modules, "vart", vart)
    return registry


class _Recording(KerasKernel):
    """A float kernel that keeps every output it computes (to calibrate its fix point)."""

    def __init__(self, model, seen):
        super().__init__(model)
        self.seen = seen

    def invoke(self, feeds):
        out = super().invoke(feeds)
        self.seen.setdefault(self.outputs[0].name, []).append(out[self.outputs[0].name])
        return out


def _compile(registry, tmp_path: Path, kernels, manifest, frames: np.ndarray, online: bool,
             coarser_input: int | None = None) -> list[str]:
    """Register each kernel as a 'compiled' xmodel with calibrated fix points and decorated tensor names.

    Input names come back as the Vitis compilers decorate them (a suffix on
    one, a prefix on the other, in the opposite order to the manifest), the
    output under an unrelated name.  A kernel's inputs take its producer's
    output fix point, except ``coarser_input``'s, one below, as when
    neighbouring kernels are quantized separately: the host must rescale there.
    """
    seen: dict[str, list[np.ndarray]] = {}
    pipe = HostPipeline([_Recording(k, seen) for k in kernels], manifest, online=online,
                        on_feed=lambda k, feeds: [seen.setdefault(n, []).append(a) for n, a in feeds.items()])
    for t in range(len(frames)) if online else [0]:
        pipe.step(frames[t : t + 1] if online else frames)
    paths, fix = [], _fix_point(np.concatenate(seen[manifest["kernels"][0]["inputs"][0]["name"]]))
    for k, (model, entry) in enumerate(zip(kernels, manifest["kernels"])):
        in_fix = fix - 1 if k == coarser_input else fix
        ins, dpu_name = [], {}
        for i in reversed(entry["inputs"]):
            name = f"{i['name']}_aquant" if i["name"].endswith(("shift", "input")) else f"quant_{i['name']}"
            ins.append(_Tensor(name, (DPU_BATCH, *i["shape"][1:]), in_fix))
            dpu_name[i["name"]] = name
        out = entry["outputs"][0]
        fix = _fix_point(np.concatenate(seen[f"{model.name}_output"]))
        shape = out["shape"][1:] if len(out["shape"]) == 4 else [1, 1, *out["shape"][1:]]  # logits as (N, 1, 1, C)
        path = tmp_path / f"{entry['name']}.xmodel"
        path.write_bytes(b"stand-in")
        registry[str(path)] = {"name": entry["name"], "model": model, "inputs": ins,
                               "outputs": [_Tensor(f"{entry['name']}_fix_out", (DPU_BATCH, *shape), fix)],
                               "feeds": {dpu_name[i.name]: i.name for i in model.inputs}}
        paths.append(str(path))
    return paths


def _record_feeds(pipe: HostPipeline) -> dict[str, list[np.ndarray]]:
    """Every kernel input the pipeline feeds, as real values, by manifest name (appended per step)."""
    rec: dict[str, list[np.ndarray]] = {}
    infos = {i.name: i for k in pipe.kernels for i in k.inputs}

    def on_feed(k, feeds):
        for name, a in feeds.items():
            rec.setdefault(name, []).append(dequantize(a, infos[name]))

    pipe.on_feed = on_feed
    return rec


def _assert_boundaries_close(got: dict, ref: dict, tol: float = 0.1) -> None:
    """int8 boundary tensors track the float ones at every kernel input, on inputs that really vary."""
    assert got.keys() == ref.keys() and len(got) == 1 + 2 * (len({n[:3] for n in got}) - 1)  # every kernel input
    for name, r_list in ref.items():
        g, r = np.stack(got[name]), np.stack(r_list)
        span = np.abs(r).max()
        assert np.abs(g - r).max() <= tol * span, (name, np.abs(g - r).max(), span)
    frames = {n: np.concatenate(a) for n, a in ref.items()}  # (frames, H, W, C), online or offline
    varying = [n for n, a in frames.items() if np.std(a, axis=0).max() > 0.05 * np.abs(a).max()]
    assert len(varying) >= 4, varying  # not only a comparison of constants


def _vart_pipeline(paths, manifest, online):
    from greenpipe.runtime import RUNTIMES

    load = RUNTIMES.get("vart")
    return HostPipeline([bind(load(Path(p), 1, 1), k) for p, k in zip(paths, manifest["kernels"])],
                        manifest, online=online)


def test_online_tsm_runs_kernel_by_kernel_on_vart_with_int8_buffers(stand_in_dpu, tmp_path):
    net = tiny_online()
    kernels, manifest = build(net, split=True)
    frames = np.concatenate([real_clip("pan_right", 4), real_clip("zoom_in", 4, seed=1)]).astype(np.float32) / 255
    paths = _compile(stand_in_dpu, tmp_path, kernels, manifest, frames, online=True, coarser_input=3)
    pipe = _vart_pipeline(paths, manifest, online=True)

    k1 = pipe.kernels[1]
    assert [i.name for i in k1.inputs] == ["k01_shift", "k01_residual"]  # manifest names, manifest order
    assert all(i.dtype == np.int8 and i.zero_point == 0 and np.log2(i.scale) == round(np.log2(i.scale))
               for k in pipe.kernels for i in (*k.inputs, *k.outputs))
    assert pipe.rescaled == [3]  # only where the consumer's fix point differs from the producer's

    ref_pipe = HostPipeline([KerasKernel(k) for k in kernels], manifest, online=True)
    got_feeds, ref_feeds = _record_feeds(pipe), _record_feeds(ref_pipe)
    got = np.concatenate([pipe.step(frames[t : t + 1]) for t in range(len(frames))])
    ref = np.concatenate([ref_pipe.step(frames[t : t + 1]) for t in range(len(frames))])
    assert got.shape == ref.shape == (8, 5)
    assert np.abs(got - ref).max() <= 0.15 * np.abs(ref).max()
    _assert_boundaries_close(got_feeds, ref_feeds)
    # The buffers carry int8 history: after a reset, kernel 1's shift input for the same frame starts empty.
    before = got_feeds["k01_shift"][5]
    pipe.reset()
    pipe.step(frames[5:6])
    after = got_feeds["k01_shift"][-1]
    fold = manifest["kernels"][1]["fold"]
    assert not after[..., :fold].any() and before[..., :fold].any()
    np.testing.assert_array_equal(after[..., fold:], before[..., fold:])

    runner = pipe.kernels[1].kernel  # the VartRunner behind the bound names
    last_call = runner.runner.calls[-1]
    assert all(len(a) == DPU_BATCH and not a[1:].any() for a in last_call)  # one frame, the rest zero filler
    assert runner.describe()["runtime"] == "vart"


def test_offline_clip_longer_than_the_dpu_batch_goes_through_in_chunks(stand_in_dpu, tmp_path):
    net = tiny_offline()
    kernels, manifest = build(net, split=True)
    clip = real_clip("pan_left", 4).astype(np.float32) / 255  # 4 frames, DPU batch 3: calls of 3 + 1
    paths = _compile(stand_in_dpu, tmp_path, kernels, manifest, clip, online=False)
    pipe = _vart_pipeline(paths, manifest, online=False)
    ref_pipe = HostPipeline([KerasKernel(k) for k in kernels], manifest, online=False)
    got_feeds, ref_feeds = _record_feeds(pipe), _record_feeds(ref_pipe)
    got, ref = pipe.step(clip), ref_pipe.step(clip)
    assert got.shape == ref.shape == (4, 5)
    assert np.abs(got - ref).max() <= 0.15 * np.abs(ref).max()
    _assert_boundaries_close(got_feeds, ref_feeds)
    assert [len(c[0]) for c in pipe.kernels[0].kernel.runner.calls] == [DPU_BATCH, DPU_BATCH]  # 3 + 1 (+ 2 filler)


def test_unmatched_tensor_names_are_refused_with_both_lists(stand_in_dpu, tmp_path):
    net = tiny_online()
    kernels, manifest = build(net, split=True)
    frames = real_clip("pan_up", 2).astype(np.float32) / 255
    paths = _compile(stand_in_dpu, tmp_path, kernels, manifest, frames, online=True)
    residual = next(t for t in stand_in_dpu[paths[1]]["inputs"] if "residual" in t.name)
    residual.name = "conv_17"  # a name the manifest's k01_residual cannot be found in
    from greenpipe.runtime import RUNTIMES

    runner = RUNTIMES.get("vart")(Path(paths[1]), 1, 1)
    with pytest.raises(GreenpipeError, match=r"k01\.xmodel: cannot match .*'conv_17'.*unmatched: \['k01_residual'\]"):
        bind(runner, manifest["kernels"][1], paths[1])


def test_a_vart_variant_off_a_dpu_host_names_what_is_missing(monkeypatch, tmp_path):
    from greenpipe.quant.kernels import write_kernels_manifest
    from greenpipe.runtime import load
    from greenpipe.video.host import ClipRunner

    monkeypatch.setitem(sys.modules, "xir", None)
    monkeypatch.setitem(sys.modules, "vart", None)
    _, manifest = build(tiny_online(), split=True)
    write_kernels_manifest(tmp_path, manifest, [f"compiled/{k['name']}.xmodel" for k in manifest["kernels"]],
                           "vitis_tf", "vart", {})
    with pytest.raises(ToolchainMissing, match="runtime 'vart' needs the Vitis AI runtime Python modules"):
        ClipRunner.load(tmp_path, 1, load)
