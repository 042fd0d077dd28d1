"""Per-kernel quantization of a split network (TSM): a config type plus one handler, one registry.

The PyTorch variants (:mod:`greenpipe.quant.base`) quantize one model fed
from one boundary.  A TSM network is K kernels cut at every temporal shift,
each quantized on its own, fed by the calibration dump of *its* inputs
(``<calib>/<kernel input name>/``, :mod:`greenpipe.calib`).  A per-kernel
variant is therefore::

    class TfliteInt8Config(KernelVariantConfig):
        calib_samples: int = 0

    @register_kernel_variant("tflite_int8", TfliteInt8Config)
    def quantize(kernels, manifest, calib, out, config) -> dict: ...

``kernels`` are the float Keras kernels in pipeline order, ``manifest`` the
split manifest (names and shapes of every kernel's inputs and outputs),
``out`` the variant's directory; the handler writes one artifact per kernel
plus ``kernels.json`` (:func:`write_kernels_manifest`) and returns its report.
The key under ``video.quantize`` names the variant and, unless it says
``method: <registered name>``, also the handler.  TensorFlow is imported by
the handlers, never here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from greenpipe.errors import ParamsError
from greenpipe.io import read_json, write_json
from greenpipe.params import UNKNOWN_VARIANT_KEY, invalid_params
from greenpipe.registry import Registry

KERNELS_FILE = "kernels.json"


class KernelVariantConfig(BaseModel):
    """Keys every per-kernel variant accepts; a variant's config subclasses this."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    method: str | None = None  # registered handler to run; default: the variant's own name


Handler = Callable[[list, dict, Path, Path, Any], dict]


@dataclass(frozen=True)
class KernelVariant:
    name: str
    config_type: type[KernelVariantConfig]
    quantize: Handler


KERNEL_VARIANTS: Registry[KernelVariant] = Registry("per-kernel quantization variant")


def register_kernel_variant(name: str, config_type: type[KernelVariantConfig]) -> Callable[[Handler], Handler]:
    """Decorator: register ``fn(kernels, manifest, calib, out, config) -> report`` as ``name``."""

    def decorate(fn: Handler) -> Handler:
        KERNEL_VARIANTS.register(name)(KernelVariant(name, config_type, fn))
        return fn

    return decorate


def parse_kernel_variant(name: str, raw: Mapping[str, Any] | None,
                         key_prefix: str = "video.quantize") -> tuple[KernelVariant, KernelVariantConfig]:
    """Look up the handler of ``<key_prefix>.<name>`` and validate its keys (ParamsError names the key)."""
    key = f"{key_prefix}.{name}"
    raw = dict(raw or {})
    method = raw.get("method") or name
    if not isinstance(method, str) or method not in KERNEL_VARIANTS:
        raise ParamsError(f"{key}: no registered per-kernel quantization method {method!r} "
                          f"(registered: {', '.join(KERNEL_VARIANTS.names())}); name the entry after one "
                          "of them or set `method:` to one")
    variant = KERNEL_VARIANTS.get(method)
    try:
        config = variant.config_type.model_validate(raw)
    except ValidationError as exc:
        raise invalid_params(exc, key=key, unknown_key=UNKNOWN_VARIANT_KEY) from None
    return variant, config


def write_kernels_manifest(out: Path, manifest: dict, artifacts: list[str], variant: str, runtime: str,
                           extra: dict | None = None) -> dict:
    """``out/kernels.json``: the split manifest plus each kernel's artifact file and the runtime that runs it."""
    entries = [{**k, "artifact": a} for k, a in zip(manifest["kernels"], artifacts)]
    doc = {**manifest, "variant": variant, "runtime": runtime, "kernels": entries, **(extra or {})}
    write_json(Path(out) / KERNELS_FILE, doc)
    return doc


def read_kernels_manifest(root: str | Path) -> dict:
    from greenpipe.errors import GreenpipeError

    path = Path(root) / KERNELS_FILE
    if not path.exists():
        raise GreenpipeError(f"{path}: missing; run the per-kernel quantize stage first (dvc repro video_quantize)")
    return read_json(path)
