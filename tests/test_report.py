"""The report stage: table rows, fp32 drop, Pareto front, markdown, PNG."""

import yaml

from greenpipe.io import write_json
from greenpipe.params import parse_params
from greenpipe.recipes import get_recipe
from greenpipe.report.summary import Row, Section, collect, markdown, pareto_front
from tasks.report import report

DENOISE = get_recipe("denoise")


def _quality(psnr, ssim):
    return {"psnr": psnr, "ssim": ssim, "quality": {"primary": "psnr", "value": psnr, "higher_is_better": True,
                                                    "unit": "dB", "values": {"psnr": psnr, "ssim": ssim}}}


SHORT = "non-compliant (duration 3 s < 600 s)"  # what deploy writes for the quick profile's 3 s LoadGen runs
LOADGEN = {"loadgen_valid": False, "loadgen_validity": {"SingleStream": SHORT, "Offline": SHORT},
           "loadgen_own_validity": {"SingleStream": "VALID", "Offline": "VALID"},
           "loadgen_duration_s": {"SingleStream": 3.0, "Offline": 3.0}}


def _deploy(psnr, p90, fps, src="measured on local CPU", x8=None):
    d = {**_quality(psnr, 0.9), "p50_ms": p90 * 0.9, "p90_ms": p90, "fps": fps, "model_mb": 1.0,
         **LOADGEN, "source": src}
    if x8 is not None:  # (psnr, p90, fps) of the artifact's 8-pass self-ensemble
        d["self_ensemble"] = {"passes": 8, **_quality(x8[0], 0.92), "p50_ms": x8[1] * 0.9, "p90_ms": x8[1],
                              "fps": x8[2], **LOADGEN, "source": f"{src}, x8 self-ensemble"}
    return d


def _metrics(root):
    write_json(root / "deploy" / "fp32-local.json", _deploy(32.0, 40.0, 25.0))
    write_json(root / "quantize" / "fp32.json", {"bits": {"weights": 32, "activations": 32}})  # the drop's reference
    write_json(root / "deploy" / "ptq8-local.json", _deploy(31.8, 12.0, 80.0))
    write_json(root / "compile" / "ptq8-cpu.json", {"agreement": {"max_abs_diff": 0.0078}})
    write_json(root / "quantize" / "ptq8.json", {"dpu_numerics": True})
    write_json(root / "deploy" / "inc-local.json", _deploy(31.9, 18.0, 55.0))
    write_json(root / "quantize" / "inc.json", {"dpu_numerics": False, "numerics": "Intel x86 path (INC)"})
    write_json(root / "baseline.json", {"noisy_psnr": 25.0, "nlm": {"psnr": 29.0, "ssim": 0.8},
                                        "wavelet": {"psnr": 28.0, "ssim": 0.7}})
    write_json(root / "train.json", {"val_psnr": 32.1, "val_ssim": 0.91})
    return root


def test_collect_computes_drop_vs_fp32(tmp_path):
    rows = {r.variant: r for r in collect(_metrics(tmp_path), DENOISE)}
    assert rows["fp32"].drop == 0.0
    assert abs(rows["ptq8"].drop - 0.2) < 1e-9
    assert rows["ptq8"].agreement_max_diff == 0.0078 and rows["ptq8"].dpu_numerics is True


def test_self_ensemble_runs_are_rows_of_their_own_compared_with_fp32s_ensemble(tmp_path):
    metrics = _metrics(tmp_path)
    write_json(metrics / "deploy" / "fp32-local.json", _deploy(32.0, 40.0, 25.0, x8=(32.3, 320.0, 3.1)))
    write_json(metrics / "deploy" / "ptq8-local.json", _deploy(31.8, 12.0, 80.0, x8=(32.2, 96.0, None)))
    rows = {r.label: r for r in collect(metrics, DENOISE)}
    assert sorted(rows) == ["fp32", "fp32 x8", "inc", "ptq8", "ptq8 x8"]
    ens = rows["ptq8 x8"]
    assert ens.passes == 8 and ens.quality == 32.2 and ens.p90_ms == 96.0 and ens.fps is None
    assert abs(ens.drop - 0.1) < 1e-9 and abs(rows["ptq8"].drop - 0.2) < 1e-9
    assert ens.source.endswith("x8 self-ensemble") and ens.dpu_numerics is True and ens.model_mb == 1.0
    text = markdown([Section(DENOISE, list(rows.values()), DENOISE.references(metrics))])
    assert "| ptq8 x8 | local | 32.20 | 0.9200 | +0.10 |" in text and "| 96.00 | — |" in text  # no Offline: no fps
    assert "| non-local means, tuned on train | 29.00 | 0.8000 |" in text
    assert "| UNet float (PyTorch, after training) | 32.10 | 0.9100 |" in text
    table = text.split("Same val data")[0]
    assert table.index("| ptq8 |") < table.index("| fp32 x8 |")  # single passes first, then the ensembles


def test_pareto_front_drops_dominated():
    mk = lambda v, x, y: Row(v, "d", {"m": y}, "m", 0, None, x, None, None, None, None, None, "s")  # noqa: E731
    rows = [mk("a", 10, 30), mk("b", 20, 29), mk("c", 30, 33)]
    assert [r.variant for r in pareto_front(rows, "p90_ms", "m")] == ["a", "c"]
    # A lower-is-better metric turns the front over.
    assert [r.variant for r in pareto_front(rows, "p90_ms", "m", higher_y=False)] == ["a", "b"]


def test_report_stage_writes_table_plot_and_markdown(tmp_path):
    with open("params.yaml") as f:
        params = parse_params(yaml.safe_load(f))
    metrics = _metrics(tmp_path / "metrics")
    report(params, metrics, tmp_path / "out")
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "| ptq8 | local | 31.80 |" in md and "non-local means" in md and "measured on local CPU" in md
    # inc is labelled as the Intel x86 path wherever variants are tabled, never as DPU numerics.
    assert "| no: Intel x86 path (INC) |" in md and "Intel x86 path (INC)" in (tmp_path / "out" / "table.csv").read_text()
    assert (tmp_path / "out" / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "out" / "table.csv").read_text().startswith("variant,device,psnr")


def test_markdown_without_references():
    text = markdown([Section(DENOISE, [])])
    assert text.startswith("# greenpipe summary") and "other methods" not in text


def test_a_pareto_y_that_is_not_a_metric_of_the_recipe_names_the_key(tmp_path):
    import pytest

    from greenpipe.errors import ParamsError
    from greenpipe.report.summary import pareto_plot

    rows = collect(_metrics(tmp_path), DENOISE)
    with pytest.raises(ParamsError, match=r"report.pareto_y = 'top1'.*psnr, ssim"):
        pareto_plot(rows, tmp_path / "p.png", DENOISE, "p90_ms", "top1")


def test_loadgen_column_says_non_compliant_for_short_runs_and_flags_unrecorded_durations(tmp_path):
    metrics = _metrics(tmp_path)
    legacy = {k: v for k, v in _deploy(31.9, 18.0, 55.0).items() if not k.startswith("loadgen")}
    write_json(metrics / "deploy" / "inc-local.json", {**legacy, "loadgen_valid": True,
                                                       "loadgen_validity": {"SingleStream": "VALID", "Offline": "VALID"}})
    text = markdown([Section(DENOISE, collect(metrics, DENOISE))])
    ptq8 = next(line for line in text.splitlines() if line.startswith("| ptq8 |"))
    assert ptq8.endswith(f"| {SHORT} | [1] |") and "| VALID |" not in text  # then the source column
    inc = next(line for line in text.splitlines() if line.startswith("| inc |"))
    assert inc.endswith("| LoadGen VALID; duration not recorded, so not shown to meet the rules' 600 s | [1] |")


def _timed(p90s, fpss):
    """A deploy metrics file's speed figures from 5 LoadGen repeats: medians and min - max."""
    med = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
    return {"p90_ms": med(p90s), "fps": med(fpss), "repeats": len(p90s),
            "spread": {"p90_ms": [min(p90s), max(p90s)], "fps": [min(fpss), max(fpss)]}}


def test_speed_differences_within_the_spread_are_no_significant_difference(tmp_path):
    metrics = _metrics(tmp_path)
    # ptq8 and fastft8 compile to the same graph: their runs overlap; fp32 is twice as slow throughout.
    for variant, p90s, fpss in (("ptq8", [14.1, 13.9, 14.6, 14.0, 17.2], [70.3, 62.0, 71.0, 69.9, 68.5]),
                                ("fastft8", [14.4, 14.2, 15.0, 14.3, 14.9], [62.1, 60.8, 66.0, 63.3, 61.7]),
                                ("fp32", [29.3, 29.0, 30.1, 29.6, 31.0], [34.2, 33.9, 35.0, 34.4, 33.1])):
        write_json(metrics / "deploy" / f"{variant}-local.json", {**_deploy(31.8, 0, 0), **_timed(p90s, fpss)})
    write_json(metrics / "quantize" / "fastft8.json", {"dpu_numerics": True})
    text = markdown([Section(DENOISE, collect(metrics, DENOISE))])
    assert "| 14.10 (13.90–17.20) | 69.9 (62.0–71.0) |" in text  # ptq8: median (min–max) of its 5 runs
    assert ("- fastft8 vs ptq8 (local): p90 ms 14.40 (14.20–15.00) vs 14.10 (13.90–17.20): no significant "
            "difference; fps 62.1 (60.8–66.0) vs 69.9 (62.0–71.0): no significant difference") in text
    assert ("- fp32 vs ptq8 (local): p90 ms 29.60 (29.00–31.00) vs 14.10 (13.90–17.20): ptq8 2.10x lower than "
            "fp32; fps 34.2 (33.1–35.0) vs 69.9 (62.0–71.0): ptq8 2.04x faster than fp32") in text
    # inc has a single run: its differences are not judged.
    assert "- fp32 vs inc (local): p90 ms 29.60 (29.00–31.00) vs 18.00: not judged (fewer than 5 repeats)" in text


def _tuned(variant, model, metric, fp32, trials):
    """A tuned quantize stage's metrics: its quality record and the trial log (greenpipe/quant/inc.py's keys)."""
    return {"variant": variant, "model": model, "numerics": "Intel x86 path (INC)", "tolerable_loss": 0.01,
            "fp32_score": fp32, "chosen_trial": len(trials), "quality": {"primary": metric, "value": trials[-1][1]},
            "trials": [{"trial": k + 1, "act_algo": algo, "w_granularity": "per_channel", "fp32_layers": kept,
                        "score": score, "relative_loss": (fp32 - score) / fp32, "passed": (fp32 - score) / fp32 <= 0.01,
                        "wall_s": 2.5} for k, (algo, score, kept) in enumerate(trials)]}


def test_the_report_lists_every_tuning_trial_of_every_recipe(tmp_path):
    with open("params.yaml") as f:
        params = parse_params(yaml.safe_load(f))
    metrics = _metrics(tmp_path / "metrics")
    write_json(metrics / "quantize" / "inc.json", _tuned("inc", "models/denoise", "psnr", 31.5, [("minmax", 31.49, [])]))
    write_json(metrics / "segment" / "quantize" / "hrnet-inc.json", _tuned(
        "inc", "models/segment/hrnet", "miou", 0.40, [("minmax", 0.37, []), ("kl", 0.38, []), ("minmax", 0.399, ["head"])]))
    report(params, metrics, tmp_path / "out")
    md = (tmp_path / "out" / "summary.md").read_text()
    section = md[md.index("## Accuracy-aware tuning"):]
    assert "### hrnet inc (Intel x86 path (INC))" in section
    assert "| fp32 | — | — | — | 0.4 | — | — | — | [q2] |" in section
    assert "- tolerable relative loss 0.01: a trial passes at val miou >= 0.396 (fp32 x (1 - loss)); chosen: trial 3." \
        in section
    assert "| 1 | minmax | per_channel | none | 0.37 | 0.075 | no | 2.5 | [q2] |" in section
    assert "| 3 | minmax | per_channel | `head` | 0.399 | 0.0025 | yes | 2.5 | [q2] |" in section
    assert "### denoise inc" in section and "| 1 | minmax | per_channel | none | 31.49 | " in section
    hrnet = (metrics / "segment/quantize/hrnet-inc.json").as_posix()
    assert f"- [q2] scored on val by the quantize stage (the fp32 model, then each trial's fake-quant PyTorch " \
        f"candidate): {hrnet}" in section
