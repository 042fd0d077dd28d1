"""What a variant may need from its stage besides the model and calibration batches.

Most variants only read calibration batches.  Quantization-aware training
(qat8, qat4, vitis_qat) needs the recipe's training task (its batches and
its loss: :class:`greenpipe.recipes.base.TrainingTask`) and a place for its
resume state; accuracy-aware tuning (inc) and the Vitis adapters need the
val split.  The quantize stage opens a context around the call::

    training = partial(recipe.training, params, data_dir)   # built on first use
    with quant_context(QuantContext(data=data_dir, training=training,
                                    seed=params.base.seed, out=out)):
        result = quantize_variant(variant, variants, model, calib)

and a handler that needs it calls :func:`require_context`, which fails with
a message naming the variant when no stage opened one (a bare library call).
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from greenpipe.errors import GreenpipeError


@dataclass(frozen=True)
class QuantContext:
    data: Path  # prepared dataset (train/ and val/ splits, manifest.json)
    training: Callable[[], Any] | None = None  # -> the recipe's TrainingTask for this model (None: not given)
    seed: int = 0  # base.seed
    out: Path | None = None  # the quantize stage's output directory (resume state goes beside it)
    recipe: str = "denoise"
    multiple: int = 8  # input H, W must be multiples of this
    threads: int = 2

    def state_file(self, variant: str) -> Path | None:
        """Resume state for ``variant``: beside the output dir (DVC empties the dir itself before a run)."""
        if self.out is None:
            return None
        return self.out.parent / f".{self.out.name}.{variant}-resume.pt"


_CURRENT: ContextVar[QuantContext | None] = ContextVar("greenpipe_quant_context", default=None)


@contextmanager
def quant_context(ctx: QuantContext) -> Iterator[QuantContext]:
    """Make ``ctx`` visible to the variant handlers called inside the ``with`` block."""
    token = _CURRENT.set(ctx)
    try:
        yield ctx
    finally:
        _CURRENT.reset(token)


def require_context(variant: str, what: str) -> QuantContext:
    """The open context, or a GreenpipeError saying that ``variant`` needs ``what`` from its stage."""
    ctx = _CURRENT.get()
    if ctx is None:
        raise GreenpipeError(
            f"variant {variant} needs {what}, which only the quantize stage provides; run it with "
            f"`dvc repro quantize@{variant}` (or wrap the call in greenpipe.quant.context.quant_context)"
        )
    return ctx
