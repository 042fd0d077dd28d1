"""The report's rows for a recipe with two networks: each variant's drop is against its own model's fp32."""

from __future__ import annotations

import pytest

from greenpipe.io import write_json
from greenpipe.recipes import get_recipe
from greenpipe.report.summary import collect


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
