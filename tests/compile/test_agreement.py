"""The compile stage's agreement check: outputs within the tolerance pass, isolated rounding flips pass and
are recorded, a wrong model fails naming how far and how many."""

from __future__ import annotations

import numpy as np
import pytest

from greenpipe.compile import agreement
from greenpipe.errors import GreenpipeError

TOL = 0.0079


def _outputs(flips: int, by: float) -> tuple[dict, dict]:
    reference = {f"s{i}": np.linspace(0, 1, 10_000).reshape(100, 100) for i in range(2)}
    deployed = {k: v.copy() for k, v in reference.items()}
    deployed["s1"].flat[:flips] += by
    return deployed, reference


def test_outputs_within_the_tolerance_pass_and_record_no_outliers():
    deployed, reference = _outputs(flips=50, by=TOL / 2)
    agreed = agreement.compare(deployed, reference, TOL)
    assert "outliers" not in agreed and agreed["max_abs_diff"] == pytest.approx(TOL / 2)
    agreement.check(agreed, TOL, "inc", "cpu")


def test_isolated_rounding_flips_pass_and_are_recorded():
    deployed, reference = _outputs(flips=20, by=0.023)  # 20 of 20000 outputs: a share of 1e-3
    agreed = agreement.compare(deployed, reference, TOL)
    assert agreed["outliers"]["count"] == 20 and agreed["outliers"]["of"] == 20_000
    assert agreed["outliers"]["share"] == pytest.approx(1e-3) and agreed["worst_sample"] == "s1"
    agreement.check(agreed, TOL, "inc", "cpu")


@pytest.mark.parametrize("flips, by, why", [(21, 0.023, "share 0.00105"),  # too many
                                             (1, 4.5 * TOL, "1 of 20000 outputs")])  # too far
def test_a_wrong_model_fails_saying_how_far_and_how_many(flips, by, why):
    deployed, reference = _outputs(flips, by)
    agreed = agreement.compare(deployed, reference, TOL)
    with pytest.raises(GreenpipeError, match=rf"sample 's1': max \|diff\| = .* > tolerance 0\.0079 \(.*{why}.*"
                                             r"isolated rounding flips pass up to a share of 0\.001 within 4 x"):
        agreement.check(agreed, TOL, "inc", "cpu")
