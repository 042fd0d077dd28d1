"""The compile stage's agreement check: its tolerance holds for image outputs as set, and scales with outputs
(logits) that reach beyond [-1, 1]."""

from __future__ import annotations

import numpy as np
import pytest

from greenpipe.compile import agreement
from greenpipe.errors import GreenpipeError


def test_outputs_within_unit_range_keep_the_tolerance_as_set():
    reference = {"a": np.array([0.0, 0.5, 1.0]), "b": np.array([-0.25, 0.75])}
    assert agreement.output_scale(reference) == 1.0
    assert agreement.tolerance_for(0.0079, 1.0) == {"tolerance": 0.0079}


def test_logits_scale_the_tolerance_and_the_error_says_how():
    reference = {"a": np.array([[3.0, -20.0]]), "b": np.array([[1.0, 2.0]])}
    deployed = {"a": np.array([[3.0, -20.1]]), "b": np.array([[1.0, 2.0]])}
    scale = agreement.output_scale(reference)
    tolerance = agreement.tolerance_for(0.0079, scale)
    assert scale == 20.0 and tolerance == {"tolerance": pytest.approx(0.158), "tolerance_per_unit": 0.0079,
                                           "output_scale": 20.0}
    agreed = {**agreement.compare(deployed, reference), **tolerance}
    agreement.check(agreed, tolerance["tolerance"], "inc", "cpu")  # 0.1 on a logit of 20: within
    wrong = {"a": np.array([[3.0, -19.0]]), "b": np.array([[1.0, 2.0]])}  # a whole unit off: a wrong model
    with pytest.raises(GreenpipeError, match=r"max \|diff\| = 1 > tolerance 0\.158, 0\.0079 x the outputs' "
                                             r"largest magnitude 20 \(compile\.targets\.cpu\.agreement_tolerance\)"):
        agreement.check({**agreement.compare(wrong, reference), **tolerance}, tolerance["tolerance"], "inc", "cpu")
