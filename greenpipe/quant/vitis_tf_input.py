"""The ``input_fn`` vai_q_tensorflow calls to calibrate one TSM kernel: ``--input_fn greenpipe.quant.vitis_tf_input.input_fn``.

vai_q_tensorflow imports ``module.function`` and calls it with the
calibration iteration (0, 1, ...); it must return ``{input node name: array}``
for that batch.  Which kernel and which dump are given by the environment
(``GREENPIPE_CALIB`` = the calibration dump, ``GREENPIPE_KERNEL`` = ``kKK``),
which ``commands.sh`` of the ``vitis_tf`` variant sets per call;
:func:`make_input_fn` builds the same function without the environment.
Iteration i serves sample i of each of the kernel's input boundaries
(``<calib>/<input node name>/``), shift buffers already applied as online.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np

from greenpipe.calib import check_finite, open_boundary
from greenpipe.errors import GreenpipeError
from greenpipe.io import read_json


def make_input_fn(calib: str | Path, kernel: str) -> Callable[[int], dict[str, np.ndarray]]:
    """``input_fn(iter) -> {node: array}`` for ``kernel`` (e.g. ``k03``) from the dump at ``calib``."""
    calib = Path(calib)
    split = calib / "split.json"
    if not split.exists():
        raise GreenpipeError(f"{split}: missing; {calib} is not a TSM calibration dump (dvc repro video_calib)")
    entries = {k["name"]: k for k in read_json(split)["kernels"]}
    if kernel not in entries:
        raise GreenpipeError(f"kernel {kernel!r}: not in {split} (kernels: {', '.join(entries)})")
    nodes = [i["name"] for i in entries[kernel]["inputs"]]
    for n in nodes:
        check_finite(calib, n)
    dumps = {n: open_boundary(calib, n) for n in nodes}  # (entries, archive), open while input_fn lives

    def input_fn(iter: int) -> dict[str, np.ndarray]:
        out = {}
        for n, (entries, archive) in dumps.items():
            if iter >= len(entries):
                raise GreenpipeError(f"input_fn: calibration iteration {iter} but {calib / n} holds "
                                     f"{len(entries)} samples; pass --calib_iter <= {len(entries)}")
            out[n] = archive[entries[iter]].astype(np.float32)
        return out

    return input_fn


def input_fn(iter: int) -> dict[str, np.ndarray]:
    """vai_q_tensorflow's entry point: the kernel and dump come from GREENPIPE_KERNEL / GREENPIPE_CALIB."""
    try:
        calib, kernel = os.environ["GREENPIPE_CALIB"], os.environ["GREENPIPE_KERNEL"]
    except KeyError as exc:
        raise GreenpipeError(f"input_fn: {exc.args[0]} is not set; run the kernel's line of the vitis_tf "
                             "variant's commands.sh, which sets GREENPIPE_CALIB and GREENPIPE_KERNEL") from None
    return _cached(calib, kernel)(iter)


@lru_cache(maxsize=4)
def _cached(calib: str, kernel: str) -> Callable[[int], dict[str, np.ndarray]]:
    return make_input_fn(calib, kernel)  # vai_q_tensorflow calls input_fn once per batch: read manifests once
