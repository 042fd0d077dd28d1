"""Typed, validated parameters loaded from params.yaml.

One helper, :func:`load_params`, reads the file, resolves per-profile values
(``{quick: A, full: B}`` follows ``base.profile``) and validates every section
into frozen pydantic models.  A wrong type, an unknown key or an out-of-range
value raises :class:`~greenpipe.errors.ParamsError` naming the key, the value
and what was expected, before any stage does work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from greenpipe.errors import ParamsError

PROFILES = ("quick", "full")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


PosInt = Field(ge=1)


class BaseParams(Section):
    seed: int = Field(0, ge=0)
    profile: Literal["quick", "full"] = "quick"
    recipe: Literal["denoise"] = "denoise"
    threads: int = Field(2, ge=1, le=256)


class NoiseParams(Section):
    shot: tuple[float, float] = (0.0005, 0.004)
    read: tuple[float, float] = (0.0000002, 0.00002)
    seed_offset: int = Field(1, ge=0)

    @field_validator("shot", "read", mode="before")
    @classmethod
    def _range(cls, v: Any) -> Any:
        if isinstance(v, list):
            v = tuple(float(x) if isinstance(x, int) else x for x in v)
        if isinstance(v, tuple) and len(v) == 2 and all(isinstance(x, float) for x in v):
            if not 0 <= v[0] <= v[1] <= 1:
                raise ValueError("expected [low, high] with 0 <= low <= high <= 1")
        return v


class IngestParams(Section):
    layout: Literal["auto", "builtin", "sidd", "paired", "clean"] = "auto"
    val_fraction: float = Field(0.25, gt=0, lt=1)
    val_sources: tuple[str, ...] = ()
    max_side: int = Field(512, ge=0)
    noise: NoiseParams = NoiseParams()

    @field_validator("val_sources", mode="before")
    @classmethod
    def _list(cls, v: Any) -> Any:
        return tuple(v) if isinstance(v, list) else v


class ValidateParams(Section):
    min_side: int = Field(64, ge=8)
    channels: Literal[1, 3] = 3
    bit_depth: Literal[8, 16] = 8
    max_val_train_overlap: int = Field(0, ge=0)
    noisy_psnr: tuple[float, float] = (10.0, 48.0)
    min_train: int = Field(4, ge=1)
    min_val: int = Field(1, ge=1)

    @field_validator("noisy_psnr", mode="before")
    @classmethod
    def _pair(cls, v: Any) -> Any:
        return tuple(float(x) for x in v) if isinstance(v, list) else v


class TrainParams(Section):
    width: int = Field(16, ge=4, le=256)
    depth: int = Field(3, ge=1, le=6)
    epochs: int = Field(6, ge=1)
    steps_per_epoch: int = Field(60, ge=1)
    batch_size: int = Field(8, ge=1)
    crop: int = Field(64, ge=16)
    lr: float = Field(0.002, gt=0, le=1)
    lr_min: float = Field(0.0001, ge=0, le=1)
    val_every: int = Field(1, ge=1)
    val_max_side: int = Field(256, ge=0)
    fresh_noise: bool = True

    @model_validator(mode="after")
    def _crop_fits_depth(self) -> "TrainParams":
        if self.crop % 2**self.depth:
            raise ValueError(f"crop={self.crop} must be a multiple of 2**depth={2**self.depth}")
        return self


class CalibDumpParams(Section):
    samples: int = Field(32, ge=1)
    crop: int = Field(128, ge=16)


class BaselineParams(Section):
    methods: tuple[Literal["nlm", "wavelet"], ...] = ("nlm", "wavelet")
    max_side: int = Field(192, ge=32)

    @field_validator("methods", mode="before")
    @classmethod
    def _list(cls, v: Any) -> Any:
        return tuple(v) if isinstance(v, list) else v


class QuantizeParams(Section):
    # Each variant's own keys are validated by its registered config type
    # (greenpipe.quant), so adding a variant never touches this file.
    variants: dict[str, dict[str, Any]]


class TargetParams(Section):
    format: Literal["onnx"] = "onnx"
    opset: int = Field(17, ge=13, le=21)
    agreement_tolerance: float = Field(0.0079, ge=0)


class CompileParams(Section):
    targets: dict[str, TargetParams]


class DeviceParams(Section):
    kind: Literal["cpu", "gpu", "vck5000", "zcu104", "ultra96"] = "cpu"
    host: str = "local"  # "local" = run in this process; otherwise the device-agent host
    target: str = "cpu"
    runtime: Literal["ort", "vart", "torch_cuda", "tflite"] = "ort"
    batch: int = Field(1, ge=1, le=64)
    meter: str = "estimate"  # a registered power meter (greenpipe.power), or "auto": rapl if readable, else estimate
    meter_options: dict[str, Any] = {}  # keyword options of that meter (e.g. {index: 0} for nvml)

    @field_validator("meter")
    @classmethod
    def _known_meter(cls, v: str) -> str:
        from greenpipe.power import METERS  # imported here: the meter modules are not needed to read params

        if v != "auto" and v not in METERS:
            raise ValueError(f"expected a power meter ({', '.join(METERS.names())}) or 'auto'")
        return v


class DeployParams(Section):
    input_size: int = Field(256, ge=16)
    single_stream_s: float = Field(4, gt=0)
    offline_s: float = Field(4, gt=0)
    eval_max_side: int = Field(0, ge=0)
    devices: dict[str, DeviceParams]


def _check_device_targets(params: "Params") -> None:
    for name, device in params.deploy.devices.items():
        if device.target not in params.compile.targets:
            raise ValueError(
                f"deploy.devices.{name}.target = {device.target!r}: not a compile target "
                f"(compile.targets has: {', '.join(params.compile.targets)})"
            )


class SoakStoreParams(Section):
    # Off unless a bucket is named here or in GREENPIPE_SOAK_BUCKET; credentials come from boto3's chain.
    bucket: str = ""
    prefix: str = "greenpipe"
    endpoint: str = ""  # "" = boto3's default (AWS, or AWS_ENDPOINT_URL_S3)


class SoakParams(Section):
    idle_s: float = Field(2, ge=0)
    warmup_s: float = Field(3, ge=0)
    duration_s: float = Field(12, gt=0)
    window_s: float = Field(3, gt=0)
    sample_hz: float = Field(10, gt=0, le=1000)
    overhead_pairs: int = Field(3, ge=0)
    overhead_block_s: float = Field(1, gt=0)
    store: SoakStoreParams = SoakStoreParams()

    @model_validator(mode="after")
    def _window_fits(self) -> "SoakParams":
        if self.window_s > self.duration_s:
            raise ValueError(f"window_s={self.window_s} must not exceed duration_s={self.duration_s}")
        return self


class ReportParams(Section):
    pareto_x: Literal["p90_ms", "p50_ms", "fps"] = "p90_ms"
    pareto_y: Literal["psnr", "ssim"] = "psnr"


class Params(Section):
    base: BaseParams = BaseParams()
    ingest: IngestParams = IngestParams()
    validate_: ValidateParams = Field(ValidateParams(), alias="validate")
    train: TrainParams = TrainParams()
    calib_dump: CalibDumpParams = CalibDumpParams()
    baseline: BaselineParams = BaselineParams()
    quantize: QuantizeParams
    compile: CompileParams
    deploy: DeployParams
    soak: SoakParams = SoakParams()
    report: ReportParams = ReportParams()

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)

    @model_validator(mode="after")
    def _cross_checks(self) -> "Params":
        _check_device_targets(self)
        return self


def resolve_profile(tree: Any, profile: str) -> Any:
    """Replace every ``{quick: A, full: B}`` mapping in ``tree`` by the profile's value."""
    if isinstance(tree, dict):
        if tree and set(tree) == set(PROFILES):
            return resolve_profile(tree[profile], profile)
        return {k: resolve_profile(v, profile) for k, v in tree.items()}
    if isinstance(tree, list):
        return [resolve_profile(v, profile) for v in tree]
    return tree


def _describe(error: dict) -> str:
    key = ".".join("validate" if p == "validate_" else str(p) for p in error["loc"])
    value = error.get("input")
    shown = "(missing)" if error["type"] == "missing" else repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    msg = error["msg"]
    if error["type"] == "extra_forbidden":
        msg = "unknown key (check the spelling against params.yaml in the repository)"
    return f"  {key} = {shown}: {msg}"


def parse_params(raw: dict, source: str = "params.yaml") -> Params:
    """Validate an already-loaded params mapping (see :func:`load_params`)."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    profile = (raw.get("base") or {}).get("profile", "quick")
    if profile not in PROFILES:
        raise ParamsError(f"{source}: base.profile = {profile!r}: expected one of {', '.join(PROFILES)}")
    try:
        return Params.model_validate(resolve_profile(raw, profile))
    except ValidationError as exc:
        lines = "\n".join(_describe(e) for e in exc.errors())
        raise ParamsError(f"{source}: {exc.error_count()} invalid value(s):\n{lines}") from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``path``; raise ParamsError with every bad key listed."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found; run from the repository root or pass --params") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    return parse_params(raw, str(path))
