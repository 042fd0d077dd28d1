"""DPU readiness: per-layer verdicts from the documented limits, subgraph prediction, the xmodel target."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from greenpipe.compile import TARGETS, CompileJob
from greenpipe.compile.dpu_readiness import ARCHS, main, readiness, resolve_arch, to_markdown
from greenpipe.compile.vitis_dpu import READINESS_JSON, READINESS_MD, compiler_command, quantized_xmodel
from greenpipe.errors import GreenpipeError, ToolchainMissing
from greenpipe.params import TargetParams
from greenpipe.quant.artifact import read_quant_artifact

ROOT = Path(__file__).resolve().parents[2]
ARCH_FILES = sorted((ROOT / "infra" / "arch").rglob("arch.json"))
FAMILIES = ("DPUCZDX8G", "DPUCVDX8H")


class Net:
    """A tiny NCHW ONNX graph built op by op; every tensor is (1, C, 16, 16)-ish, weights random."""

    def __init__(self, channels: int = 8):
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.c = channels
        self.rng = np.random.default_rng(0)
        self.last = "input"

    def _name(self, op: str) -> str:
        return f"{op.lower()}{len(self.nodes)}"

    def conv(
        self, k: int = 3, cout: int | None = None, stride: int = 1, group: int = 1, src: str | None = None
    ):
        cout = cout or self.c
        name = self._name("Conv")
        w = self.rng.standard_normal((cout, self.c // group, k, k)).astype(np.float32)
        self.inits.append(numpy_helper.from_array(w, f"{name}.w"))
        self.nodes.append(
            helper.make_node(
                "Conv",
                [src or self.last, f"{name}.w"],
                [name],
                name=name,
                kernel_shape=[k, k],
                strides=[stride, stride],
                pads=[k // 2] * 4,
                group=group,
            )
        )
        self.c, self.last = cout, name
        return name

    def op(self, op_type: str, inputs: list[str] | None = None, **attrs):
        name = self._name(op_type)
        self.nodes.append(helper.make_node(op_type, inputs or [self.last], [name], name=name, **attrs))
        self.last = name
        return name

    def model(self, cin: int = 8) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes,
            "tiny",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, cin, 16, 16])],
            [helper.make_tensor_value_info(self.last, TensorProto.FLOAT, [1, None, None, None])],
            self.inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        onnx.checker.check_model(model)
        return model


def verdicts(report: dict) -> list[tuple[str, str]]:
    return [(layer["op"], layer["verdict"]) for layer in report["layers"]]


@pytest.mark.parametrize("arch", FAMILIES)
def test_sigmoid_between_convs_runs_on_the_cpu_and_splits_the_graph(arch):
    net = Net()
    net.conv()
    net.op("Relu")
    net.op("Sigmoid")
    net.conv()
    net.op("Relu")
    report = readiness(net.model(), arch)
    assert verdicts(report) == [
        ("Conv", "dpu"),
        ("Relu", "dpu"),
        ("Sigmoid", "cpu"),
        ("Conv", "dpu"),
        ("Relu", "dpu"),
    ]
    assert "sigmoid" in report["layers"][2]["reason"] and "CPU" in report["layers"][2]["reason"]
    assert [layer["subgraph"] for layer in report["layers"]] == [0, 0, None, 1, 1]
    assert report["summary"]["dpu_subgraphs"] == 2
    assert report["summary"]["cpu_layers"] == 1


@pytest.mark.parametrize("arch", FAMILIES)
def test_17x17_kernel_exceeds_the_conv_engine(arch):
    net = Net()
    net.conv(3)
    net.conv(17)
    net.conv(3)
    report = readiness(net.model(), arch)
    assert verdicts(report) == [("Conv", "dpu"), ("Conv", "cpu"), ("Conv", "dpu")]
    assert "kernel 17x17 outside w, h [1, 16]" in report["layers"][1]["reason"]
    assert report["summary"]["dpu_subgraphs"] == 2


def test_a_dpu_layer_waiting_on_a_cpu_layer_starts_a_new_subgraph():
    # conv -> sigmoid -> mul(conv, sigmoid) -> conv: the mul touches the first conv directly, but it
    # cannot run in the first subgraph because it needs the CPU's sigmoid.
    net = Net()
    first = net.conv()
    gate = net.op("Sigmoid")
    net.op("Mul", [first, gate])
    net.conv()
    report = readiness(net.model(), "DPUCZDX8G")
    assert verdicts(report) == [("Conv", "dpu"), ("Sigmoid", "cpu"), ("Mul", "dpu"), ("Conv", "dpu")]
    assert [layer["subgraph"] for layer in report["layers"]] == [0, None, 1, 1]
    assert report["summary"]["dpu_subgraphs"] == 2


def test_stride_and_depthwise_limits_differ_per_arch():
    net = Net()
    net.conv(3, stride=6)  # ZCU104: strides up to 8; VCK5000: up to 4
    net.conv(3, group=8)  # depthwise: ZCU104 has the engine, the VCK5000 8PE build has not
    net.op("MaxPool", kernel_shape=[4, 4], strides=[4, 4])  # VCK5000 8PE pools with kernel 1, 2, 3 or 7
    zcu, vck = readiness(net.model(), "DPUCZDX8G"), readiness(net.model(), "DPUCVDX8H")
    assert [v for _, v in verdicts(zcu)] == ["dpu", "dpu", "dpu"]
    assert [v for _, v in verdicts(vck)] == ["cpu", "cpu", "cpu"]
    reasons = [layer["reason"] for layer in vck["layers"]]
    assert "stride 6x6 outside w, h [1, 4]" in reasons[0]
    assert "no depthwise engine" in reasons[1]
    assert "kernel 4x4 outside w, h {1, 2, 3, 7}" in reasons[2]
    assert vck["summary"]["dpu_subgraphs"] == 0


def test_in_size_is_bounded_by_bank_depth():
    # VCK5000 8PE: kernel_w * kernel_h * ceil(in / 64) <= 256 -> 16x16 on 128 channels is 512 words.
    net = Net(channels=128)
    net.conv(15)
    report = readiness(net.model(cin=128), "DPUCVDX8H")
    assert report["layers"][0]["verdict"] == "cpu"
    assert "= 450 > bank_depth 256" in report["layers"][0]["reason"]
    assert readiness(net.model(cin=128), "DPUCZDX8G")["layers"][0]["verdict"] == "dpu"  # 450 <= 2048


@pytest.mark.parametrize(("alpha", "verdict"), [(0.1, "dpu"), (26 / 256, "dpu"), (0.2, "cpu")])
def test_leaky_relu_only_with_the_dpu_slope(alpha, verdict):
    net = Net()
    net.conv()
    net.op("LeakyRelu", alpha=alpha)
    layer = readiness(net.model(), "DPUCZDX8G")["layers"][1]
    assert layer["verdict"] == verdict
    if verdict == "cpu":
        assert "26/256" in layer["reason"]


def test_activation_without_a_layer_to_fuse_into_is_cpu():
    net = Net()
    net.op("Relu")  # straight on the model input
    net.conv()
    report = readiness(net.model(), "DPUCZDX8G")
    assert verdicts(report) == [("Relu", "cpu"), ("Conv", "dpu")]
    assert "no DPU layer before it" in report["layers"][0]["reason"]


def test_quantize_dequantize_nodes_are_looked_through():
    # input -> Q -> DQ -> Conv(DQ(int8 weights)) -> Relu -> Q -> DQ: the layers are the conv and the relu.
    net = Net()
    scale = numpy_helper.from_array(np.array(2.0**-6, np.float32), "scale")
    zero = numpy_helper.from_array(np.array(0, np.int8), "zero")
    w = numpy_helper.from_array(np.ones((8, 8, 3, 3), np.int8), "w_int8")
    net.inits += [scale, zero, w]
    net.op("QuantizeLinear", ["input", "scale", "zero"])
    x = net.op("DequantizeLinear", [net.last, "scale", "zero"])
    wq = net.op("DequantizeLinear", ["w_int8", "scale", "zero"])
    net.nodes.append(
        helper.make_node("Conv", [x, wq], ["conv"], name="conv", kernel_shape=[3, 3], pads=[1] * 4)
    )
    net.last = "conv"
    net.op("Relu")
    net.op("QuantizeLinear", [net.last, "scale", "zero"])
    net.op("DequantizeLinear", [net.last, "scale", "zero"])
    report = readiness(net.model(), "DPUCZDX8G")
    assert verdicts(report) == [("Conv", "dpu"), ("Relu", "dpu")]
    assert report["layers"][0]["attrs"]["in_channels"] == 8
    assert report["summary"]["dpu_subgraphs"] == 1


def _unet_onnx(tmp_path: Path) -> Path:
    import torch

    from greenpipe.models.unet import UNet, UNetConfig
    from greenpipe.quant.export import export_onnx

    torch.manual_seed(0)
    model = UNet(UNetConfig(in_channels=3, width=8, depth=2)).eval()
    return export_onnx(model, torch.rand(1, 3, 16, 16), tmp_path)


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_unet_export_runs_entirely_on_every_dpu(tmp_path, arch):
    report = readiness(_unet_onnx(tmp_path), arch)
    ops = {layer["op"] for layer in report["layers"]}
    assert {"Conv", "Relu", "MaxPool", "Resize", "Concat", "Add"} <= ops
    assert all(layer["verdict"] == "dpu" for layer in report["layers"]), [
        (layer["name"], layer["reason"]) for layer in report["layers"] if layer["verdict"] != "dpu"
    ]
    assert report["summary"]["dpu_subgraphs"] == 1
    assert report["summary"]["cpu_ops"] == []


@pytest.mark.parametrize("path", ARCH_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_arch_file_resolves_to_its_limits(path):
    target = json.loads(path.read_text())["target"]
    assert resolve_arch(path).name == target
    assert path.parent.parent.name == resolve_arch(path).family  # laid out <family>/<board>/arch.json


def test_arch_files_exist_for_the_three_boards():
    assert {p.parent.name for p in ARCH_FILES} == {"ZCU104", "Ultra96", "VCK50008PE"}


def test_unknown_arch_and_missing_arch_file_are_user_errors(tmp_path):
    with pytest.raises(GreenpipeError, match=r"no operator limits for it; known: .*DPUCZDX8G_ISA1_B4096"):
        resolve_arch("DPUCAHX8H")
    with pytest.raises(GreenpipeError, match="no such DPU arch file"):
        resolve_arch(tmp_path / "arch.json")
    fp = tmp_path / "fp.json"
    fp.write_text('{"fingerprint": "0x101000056010407"}')
    assert resolve_arch(fp).name == "DPUCZDX8G_ISA1_B4096"


def test_cli_prints_the_table(tmp_path, capsys):
    net = Net()
    net.conv()
    net.op("Tanh")
    path = tmp_path / "m.onnx"
    onnx.save(net.model(), path)
    assert main([str(path), "--arch", "DPUCZDX8G", "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "predicted DPU subgraphs: **1**" in out
    assert "| 1 | tanh1 | Tanh |" in out and "CPU" in out
    assert json.loads((tmp_path / "r.json").read_text())["summary"]["cpu_layers"] == 1
    assert main([str(tmp_path / "absent.onnx"), "--arch", "DPUCZDX8G"]) == 2
    assert "absent.onnx: no such ONNX file" in capsys.readouterr().err


def test_markdown_lists_cpu_layers_and_counts(tmp_path):
    report = readiness(_unet_onnx(tmp_path), "DPUCVDX8H")
    md = to_markdown(report)
    assert "predicted DPU subgraphs: **1**" in md and "| Conv | " in md
    assert "| # | layer |" not in md  # nothing on the CPU: no per-layer rows
    assert md.count("\n| ") > 5 and "| # | layer |" in to_markdown(report, all_layers=True)


# ---------------------------------------------------------------- the xmodel compile target


def _quant_dir(tmp_path: Path) -> Path:
    quant = tmp_path / "quant"
    onnx_path = _unet_onnx(quant)
    (quant / "quant_report.json").write_text(
        json.dumps(
            {
                "variant": "vitis_ptq",
                "artifact": onnx_path.name,
                "recipe": "denoise",
                "model_args": {"in_channels": 3, "width": 8, "depth": 2},
                "multiple": 4,
                "dpu_numerics": True,
            }
        )
    )
    return quant


@pytest.mark.parametrize(
    ("variant", "run_there"),
    [
        ("vitis_ptq", "is not on PATH here. It compiles the quantized xmodel"),
        ("ptq8", "is not on PATH here (variant ptq8 has no vai_q_pytorch xmodel: an xmodel target compiles"),
    ],
)
def test_xmodel_target_writes_the_report_then_names_the_missing_compiler(
    tmp_path, monkeypatch, variant, run_there
):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no vai_c_xir on this PATH
    quant_dir = _quant_dir(tmp_path)
    if variant.startswith("vitis_"):  # what vai_q_pytorch leaves in the quantize stage's output
        (quant_dir / "vai_q_output").mkdir()
        (quant_dir / "vai_q_output" / "UNet_int.xmodel").write_bytes(b"xir")
    arch = ROOT / "infra/arch/DPUCZDX8G/ZCU104/arch.json"
    job = CompileJob(
        variant=variant,
        target="zcu104",
        params=TargetParams(format="xmodel", arch=str(arch)),
        quant_dir=quant_dir,
        data_dir=tmp_path / "unused",
        out_dir=tmp_path / "out",
        threads=1,
    )
    with pytest.raises(ToolchainMissing) as err:
        TARGETS.get("xmodel")(job)
    message = str(err.value)
    assert "needs AMD's DPU compiler `vai_c_xir`, which is not on PATH" in message
    assert run_there in message
    assert "`greenpipe vitis-bundle CHECKPOINT CALIB_DUMP --arch " in message
    assert "`infra/vitis/run.sh BUNDLE ptq`" in message
    assert "vai_q_pytorch" in message and "DPUCZDX8G_ISA1_B4096" in message
    assert f"{job.out_dir / READINESS_MD}" in message and "predicted DPU subgraphs: 1" in message
    written = json.loads((job.out_dir / READINESS_JSON).read_text())
    assert written["arch"] == "DPUCZDX8G_ISA1_B4096" and written["summary"]["dpu_subgraphs"] == 1
    assert (job.out_dir / READINESS_MD).read_text().startswith("## DPU readiness: DPUCZDX8G_ISA1_B4096")


def test_xmodel_target_needs_a_vitis_quantized_xmodel(tmp_path):
    quant = read_quant_artifact(_quant_dir(tmp_path))
    with pytest.raises(
        GreenpipeError, match=r"no quantized xmodel under .*vai_q_output; .* vitis_\* variant"
    ):
        quantized_xmodel(quant)
    xmodel = quant.dir / "vai_q_output" / "UNet_int.xmodel"
    xmodel.parent.mkdir()
    xmodel.write_bytes(b"xir")
    assert quantized_xmodel(quant) == xmodel


def test_compiler_command_is_the_documented_call():
    cmd = compiler_command(Path("q/UNet_int.xmodel"), Path("infra/arch/a.json"), Path("out"))
    assert cmd == [
        "vai_c_xir",
        "-x",
        "q/UNet_int.xmodel",
        "-a",
        "infra/arch/a.json",
        "-o",
        "out",
        "-n",
        "model",
    ]


def test_xmodel_params_need_an_arch():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="format xmodel needs arch"):
        TargetParams(format="xmodel")
    with pytest.raises(ValidationError, match="arch is only read by format xmodel"):
        TargetParams(format="onnx", arch="infra/arch/DPUCZDX8G/ZCU104/arch.json")


@pytest.mark.vitis
def test_vai_c_xir_compiles_a_vitis_ptq_unet_for_zcu104(tmp_path):
    """Inside the Vitis AI container: vitis_ptq quantize, then the xmodel target runs the real compiler."""
    import shutil

    from greenpipe.quant.stage import quantize_stage
    from tasks.compile import compile_stage
    from tests.stage_fixtures import make_workspace, stage_params

    if shutil.which("vai_c_xir") is None:
        pytest.skip("needs vai_c_xir on PATH (the Vitis AI container)")
    ws = make_workspace(tmp_path)
    arch = str(ROOT / "infra/arch/DPUCZDX8G/ZCU104/arch.json")
    params = stage_params(
        quantize={"variants": {"vitis_ptq": {"calib_batches": 4}}},
        compile={"targets": {"zcu104": {"format": "xmodel", "arch": arch}}},
    )
    quant = tmp_path / "quant" / "vitis_ptq"
    quantize_stage(params, "vitis_ptq", ws.model, ws.calib, ws.data, quant)
    out = tmp_path / "compile" / "vitis_ptq" / "zcu104"
    metrics = compile_stage(params, "vitis_ptq", "zcu104", quant, ws.data, out)
    assert (out / "model.xmodel").stat().st_size > 0
    report = json.loads((out / "compile_report.json").read_text())
    assert report["artifact"] == "model.xmodel" and report["dpu_target"] == "DPUCZDX8G_ISA1_B4096"
    assert metrics["predicted_dpu_subgraphs"] == 1 and metrics["cpu_layers"] == 0
