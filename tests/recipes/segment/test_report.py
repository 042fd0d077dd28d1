"""The report's rows for a recipe with two networks: each variant's drop is against its own model's fp32."""

from __future__ import annotations

import pytest

from greenpipe.io import write_json
from greenpipe.recipes import get_recipe
from greenpipe.report.summary import Section, collect, markdown, recipe_findings


def test_each_network_is_compared_with_its_own_float_row(tmp_path):
    scores = {"unet-fp32": 0.30, "unet-ptq8": 0.28, "hrnet-fp32": 0.50, "hrnet-ptq8": 0.47}
    for variant, miou in scores.items():
        net, method = variant.split("-")
        quality = {"primary": "miou", "value": miou, "higher_is_better": True, "values": {"miou": miou}}
        write_json(tmp_path / "segment" / "deploy" / f"{variant}-local.json",
                   {"recipe": "segment", "variant": variant, "device_name": "local", "quality": quality,
                    "p90_ms": 10.0, "fps": 100.0, "source": "measured on test"})
        write_json(tmp_path / "segment" / "quantize" / f"{variant}.json",
                   {"model": f"models/segment/{net}", "bits": {"weights": 32 if method == "fp32" else 8}})
    rows = {r.variant: r for r in collect(tmp_path, get_recipe("segment"))}
    assert rows["unet-ptq8"].drop == pytest.approx(0.02) and rows["hrnet-ptq8"].drop == pytest.approx(0.03)
    assert rows["hrnet-fp32"].drop == pytest.approx(0.0)


def test_the_summary_shows_every_evaluated_variant_not_only_the_deployed_ones(tmp_path):
    quality = {"primary": "miou", "value": 0.3, "higher_is_better": True, "values": {"miou": 0.3}}
    write_json(tmp_path / "segment" / "deploy" / "hrnet-fp32-local.json",
               {"recipe": "segment", "variant": "hrnet-fp32", "device_name": "local", "quality": quality,
                "p90_ms": 10.0, "fps": 100.0, "source": "measured on test"})
    variants = {"fp32": 0.301, "pt2e8": 0.299, "bf16": 0.3}
    write_json(tmp_path / "segment" / "eval_hrnet.json", {"model": "hrnet", "variants": {v: {} for v in variants}})
    for variant, miou in variants.items():
        write_json(tmp_path / "segment" / "hrnet" / f"{variant}.json",
                   {"model": "hrnet", "variant": variant, "host": "test CPU", "scales": {
                       "256x512": {"miou": miou, "pixel_acc": 0.8}},
                    "latency_ms": {"256x512": 5.0}, "latency_spread_ms": {"256x512": [4.5, 6.0]}})
    recipe = get_recipe("segment")
    section = Section(recipe, collect(tmp_path, recipe), [], recipe_findings(recipe, tmp_path))
    text = markdown([section])
    assert [r.variant for r in section.rows] == ["hrnet-fp32"]
    for variant, miou in variants.items():
        assert f"| hrnet | {variant} | 256x512 | {miou:.3f} | 0.800 | 5.0 (4.5-6.0) |" in text
    assert "Measured on test CPU" in text and "metrics/segment/<model>/<variant>.json" in text


def test_a_recipe_without_its_own_findings_adds_nothing(tmp_path):
    assert recipe_findings(get_recipe("video"), tmp_path) == ""
    assert recipe_findings(get_recipe("segment"), tmp_path) == ""  # no eval stage has run
