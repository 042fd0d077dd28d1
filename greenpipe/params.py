"""Typed, validated parameters loaded from params.yaml.

One helper, :func:`load_params`, reads the file, resolves per-profile values
(``{quick: A, full: B}`` follows ``base.profile``) and validates every section
into frozen pydantic models.  A wrong type, an unknown key or an out-of-range
value raises :class:`~greenpipe.errors.ParamsError` naming the key, the value
and what was expected, before any stage does work.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)
from pydantic_core import InitErrorDetails, PydanticCustomError

from greenpipe.errors import UNKNOWN_KEY, UNKNOWN_VARIANT_KEY, ParamsError, invalid_params  # noqa: F401  (re-exported)

if TYPE_CHECKING:
    from greenpipe.registry import Registry

PROFILES = ("quick", "full")


class Section(BaseModel):
    # allow_inf_nan=False: YAML's .inf / .nan pass ``gt=0`` checks (a timeout of .inf never fires), so every
    # float key must be a finite number.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


T = TypeVar("T")
# A tuple field that YAML writes as a list (strict validation takes no list for a tuple).
Listed = Annotated[T, BeforeValidator(lambda v: tuple(v) if isinstance(v, list) else v)]


def _unregistered(registry: Registry, also: str = "") -> PydanticCustomError:
    """The error for a name ``registry`` does not hold, listing what it does (plus ``also``)."""
    return PydanticCustomError("not_registered", f"not a registered {registry.kind}; registered: "
                                                 f"{', '.join(registry.names())}{also}")


def _check_registered(value: str, registry: Registry, also: tuple[str, ...] = ()) -> str:
    if value not in registry and value not in also:
        raise _unregistered(registry, "".join(f", or {a}" for a in also))
    return value


class BaseParams(Section):
    seed: int = Field(0, ge=0)
    profile: Literal["quick", "full"] = "quick"
    recipe: str = "denoise"  # a registered recipe (greenpipe.recipes)
    threads: int = Field(2, ge=1, le=256)
    # TensorFlow stages set TF_ENABLE_ONEDNN_OPTS from this, whatever the shell says: oneDNN's kernels change results.
    tf_onednn: bool = False

    @field_validator("recipe")
    @classmethod
    def _known_recipe(cls, v: str) -> str:
        from greenpipe.recipes import RECIPES  # imported here: reading params needs no recipe module

        return _check_registered(v, RECIPES)


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
    val_sources: Listed[tuple[str, ...]] = ()
    max_side: int = Field(512, ge=0)
    noise: NoiseParams = NoiseParams()


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
    tint: bool = False  # random per-channel gains on synthetic-noise crops (colour diversity for grey sources)
    dead_leaves: float = Field(0.0, ge=0, lt=1)  # share of crops cut from synthetic dead-leaves images
    dead_leaves_images: int = Field(40, ge=1, le=10000)  # how many (side 2 * crop) are drawn per run
    ema: float = Field(0.0, ge=0, lt=1)  # per-step decay of the weight average that is validated and saved; 0 = off
    # forward/backward arithmetic; auto = bf16 where the CPU has it natively. Weights and the saved model stay fp32.
    precision: Literal["fp32", "bf16", "auto"] = "fp32"
    # l1: mean |denoised - clean|; l1_relative: each crop's L1 over its noise's mean |noisy - clean|
    loss: Literal["l1", "l1_relative"] = "l1"

    @model_validator(mode="after")
    def _crop_fits_depth(self) -> "TrainParams":
        if self.crop % 2**self.depth:
            raise ValueError(f"crop={self.crop} must be a multiple of 2**depth={2**self.depth}")
        return self


class CalibDumpParams(Section):
    samples: int = Field(32, ge=1)
    crop: int = Field(128, ge=16)


class PruneParams(Section):
    """The shared prune stage (greenpipe/prune/stage.py): LKAM gates, utilisation, static removal, fine-tune."""

    gate_steps: int = Field(200, ge=1)  # training steps with the gates and the sparsity term
    sparsity_weight: float = Field(1.0, ge=0)  # times the mean gate, added to the recipe's loss
    lr: float = Field(0.003, gt=0)  # gate training: the model's weights
    gate_lr: float = Field(0.1, gt=0)  # gate training: the gates' own weights
    util_batches: int = Field(8, ge=1)  # training batches the utilisation is averaged over
    threshold: float = Field(0.05, ge=0, lt=1)  # kernels used less than this on average are removed
    channel_multiple: int = Field(1, ge=1)  # each layer keeps a multiple of this many kernels (the most used)
    finetune_steps: int = Field(200, ge=0)  # after removal, on the recipe's loss alone
    finetune_lr: float = Field(0.001, gt=0)


class BaselineParams(Section):
    methods: Listed[tuple[Literal["nlm", "wavelet"], ...]] = ("nlm", "wavelet")
    max_side: int = Field(192, ge=32)


class QuantizeParams(Section):
    # Each variant's own keys are validated by its registered config type
    # (greenpipe.quant), so adding a variant never touches this file.  Params checks here that each
    # entry names a registered handler: its key, or its `method:` when it has one.
    variants: dict[str, dict[str, Any]]


class TargetParams(Section):
    # A registered compile format (greenpipe.compile; checked by Params, whose check may import torch);
    # xmodel: a Vitis AI DPU (greenpipe/compile/vitis_dpu.py)
    format: str = "onnx"
    opset: int = Field(17, ge=13, le=21)
    agreement_tolerance: float = Field(0.0079, ge=0)
    arch: str | None = None  # xmodel only: the DPU's arch.json, relative to the repo root (infra/arch/)

    @model_validator(mode="after")
    def _arch_for_xmodel(self) -> "TargetParams":
        if self.format == "xmodel" and not self.arch:
            raise ValueError(
                "format xmodel needs arch: the DPU's arch.json, e.g. infra/arch/DPUCZDX8G/ZCU104/arch.json"
            )
        if self.format != "xmodel" and self.arch:
            raise ValueError(f"arch is only read by format xmodel (this target is format {self.format})")
        return self


class CompileParams(Section):
    targets: dict[str, TargetParams]


class DeviceParams(Section):
    kind: Literal["cpu", "gpu", "vck5000", "zcu104", "ultra96"] = "cpu"
    host: str = "local"  # "local" = run in this process; otherwise the device host whose Prefect worker runs it
    target: str = "cpu"
    runtime: str = "ort"  # a registered runtime (greenpipe.runtime)
    batch: int = Field(1, ge=1, le=64)
    meter: str = "estimate"  # a registered power meter (greenpipe.power), or "auto": rapl if readable, else estimate
    meter_options: dict[str, Any] = {}  # keyword options of that meter (e.g. {index: 0} for nvml)
    # Remote hosts only (host != local): where its Prefect worker listens and how long to wait for it.
    pool: str = ""  # Prefect work pool of the host (one per device kind, e.g. cpu-hosts)
    queue: str = ""  # work queue of that pool the host's worker polls (one per host, e.g. cpu-host-1)
    timeout_s: float = Field(600, gt=0)  # longest wait for one attempt (queued + running), seconds
    retries: int = Field(1, ge=0, le=10)  # new attempts after a crashed/failed run or a lost host
    lost_after_s: float = Field(30, gt=0)  # a queue no worker polled for this long = host lost, seconds

    @model_validator(mode="after")
    def _remote_needs_queue(self) -> "DeviceParams":
        if self.host != "local":
            missing = [k for k in ("pool", "queue") if not getattr(self, k)]
            if missing:
                raise ValueError(
                    f"host = {self.host!r} is remote, so {' and '.join(missing)} must name the Prefect work "
                    f"pool and queue its worker serves (e.g. pool: {'cpu-hosts' if self.kind == 'cpu' else self.kind}, "
                    f"queue: {self.host}); "
                    "or set host: local to run in this process"
                )
        return self

    @field_validator("runtime")
    @classmethod
    def _known_runtime(cls, v: str) -> str:
        from greenpipe.runtime import RUNTIMES  # imported here: reading params needs no runtime module

        return _check_registered(v, RUNTIMES)

    @field_validator("meter")
    @classmethod
    def _known_meter(cls, v: str) -> str:
        from greenpipe.power import METERS  # imported here: the meter modules are not needed to read params

        return _check_registered(v, METERS, also=("auto",))


class DeployParams(Section):
    input_size: int = Field(256, ge=16)
    single_stream_s: float = Field(4, gt=0)
    offline_s: float = Field(4, gt=0)
    repeats: int = Field(5, ge=1)  # LoadGen runs per scenario: figures are medians with their spread (min, max)
    eval_max_side: int = Field(0, ge=0)
    self_ensemble: Literal[1, 2, 4, 8] = 1  # also score and time each artifact averaged over this many flips/rotations
    self_ensemble_variants: Listed[tuple[str, ...]] = ()  # which variants get those rows; () = every variant
    self_ensemble_repeats: int = Field(5, ge=1)  # LoadGen runs of those rows (each >= 64 queries of n passes)
    devices: dict[str, DeviceParams]


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
    pareto_y: str = ""  # a metric of base.recipe; "" = its primary metric (checked by the report stage)


class GateRule(Section):
    """How far one metric may move the wrong way against the last good nightly before the gate fires."""

    better: Literal["higher", "lower"] | None = None  # None: from the figure's record (the rule `quality`)
    max_worse: float = Field(ge=0)  # in the metric's unit, or in percent of last night's value when relative
    relative: bool = False


class NightlyParams(Section):
    """The scheduled run (flows/nightly.py). No DVC stage reads this section, so editing it reruns nothing."""

    cron: str = "0 2 * * *"  # when the deployment runs (5-field cron), in `timezone`
    timezone: str = "UTC"  # IANA name, e.g. Europe/Berlin
    concurrency: int = Field(2, ge=1, le=64)  # DVC stages running at once
    measure_alone: bool = True  # deploy/soak on a `local` device run with no other stage beside them
    retries: int = Field(1, ge=0, le=10)  # further attempts of a failed stage
    retry_delay_s: float = Field(10, ge=0)  # s between attempts
    lock_retries: int = Field(8, ge=0, le=100)  # attempts when DVC reports its lock busy
    lock_backoff_s: float = Field(0.5, gt=0)  # first wait on a busy lock, doubled each time (s)
    git_pull: bool = False  # `git pull --ff-only` before the run
    dvc_pull: bool = False  # `dvc pull` before the run (fills the cache on a fresh build host)
    dvc_push: bool = True  # `dvc push` after the run
    remote: str = ""  # DVC remote for pull/push; "" = the repository's default remote
    results_branch: str = "nightly-results"  # git branch holding each night's dvc.lock, metrics and report
    gate: dict[str, GateRule] = {}  # quality (the recipe's primary metric), fps, mj_per_inference -> rule

    @field_validator("cron")
    @classmethod
    def _cron_fields(cls, v: str) -> str:
        # The full check is Prefect's (when it schedules); here only the shape, to keep params loading light.
        if len(v.split()) != 5:
            raise ValueError("expected a 5-field cron expression, e.g. '0 2 * * *' (02:00 every day)")
        return v

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        import zoneinfo

        try:
            zoneinfo.ZoneInfo(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError("expected an IANA time zone name, e.g. UTC or Europe/Berlin") from None
        return v


class VideoDataParams(Section):
    """Where the video recipe's clips come from (tasks/video_data.py)."""

    source: str = "builtin"  # builtin: camera-motion clips from data/clean; else a Jester / Something-Something folder
    val_sources: Listed[tuple[str, ...]] = ("coffee", "chelsea", "flower")  # built-in photographs held out for val
    train_clips_per_class: int = Field(16, ge=1)  # built-in: clips per class per train photograph
    val_clips_per_class: int = Field(8, ge=1)  # built-in: clips per class per val photograph
    # built-in: motion per frame, [low, high] drawn per scene: the pan as a fraction of the frame, the zoom ratio
    pan_per_frame: Listed[tuple[float, float]] = (0.1, 0.16)
    zoom_per_frame: Listed[tuple[float, float]] = (1.1, 1.17)

    @model_validator(mode="after")
    def _motion(self) -> VideoDataParams:
        (p0, p1), (z0, z1) = self.pan_per_frame, self.zoom_per_frame
        if not 0 < p0 <= p1 <= 1:
            raise ValueError(f"pan_per_frame = {list(self.pan_per_frame)}: expected [low, high] with "
                             "0 < low <= high <= 1 (fraction of the frame per frame)")
        if not 1 < z0 <= z1 <= 2:
            raise ValueError(f"zoom_per_frame = {list(self.zoom_per_frame)}: expected [low, high] with "
                             "1 < low <= high <= 2 (zoom ratio per frame)")
        return self


class VideoModelParams(Section):
    """greenpipe.models.tsm_tf.TSMConfig keys (the shift switch is the train stage's tsm / tsn)."""

    arch: Literal["mobilenetv2", "resnet50"] = "mobilenetv2"
    width_mult: float = Field(1.0, gt=0, le=2)
    input_size: int = Field(64, ge=16)  # px, H = W of a frame
    n_frames: int = Field(8, ge=2)  # frames per clip
    fold_div: int = Field(8, ge=2)  # 1 / fold_div of the channels shift
    last_channel: int = Field(1280, ge=8)  # MobileNetV2 head width
    resnet_width: int = Field(64, ge=8)
    resnet_blocks: Listed[tuple[int, ...]] = (3, 4, 6, 3)


class VideoTrainParams(Section):
    steps: int = Field(400, ge=1)
    batch_clips: int = Field(8, ge=1)
    lr: float = Field(0.003, gt=0, le=1)
    weight_decay: float = Field(0.0001, ge=0)
    eval_every: int = Field(100, ge=1)  # steps between val checks (the curve)
    # batch: BN on batch statistics (standard; a clip's frames share them); running: BN on running
    # statistics only (no information flows between frames except through the shift), batches of whole scenes
    bn: Literal["batch", "running"] = "batch"


class VideoCalibParams(Section):
    clips: int = Field(16, ge=1)  # train clips run through the float kernels; every frame is a sample


class VideoEvalParams(Section):
    smooth_window: int = Field(8, ge=1)  # frames of logits averaged (the online demo's smoothing)
    fps_frames: int = Field(200, ge=1)  # frames in the timed run
    warmup_frames: int = Field(20, ge=0)


class VideoParams(Section):
    """The video recipe (TSM); read only by the tasks/video_*.py stages."""

    data: VideoDataParams = VideoDataParams()
    model: VideoModelParams = VideoModelParams()
    train: VideoTrainParams = VideoTrainParams()
    calib: VideoCalibParams = VideoCalibParams()
    # Variants that take the kernels of a split network; each entry's keys are validated by its config
    # type (greenpipe.quant.registry.parse_variant), its name (key, or `method:`) by Params against the registry.
    quantize: dict[str, dict[str, Any]] = {"tflite_fp32": {}, "tflite_int8": {}}
    eval: VideoEvalParams = VideoEvalParams()


class Params(Section):
    base: BaseParams = BaseParams()
    ingest: IngestParams = IngestParams()
    # The recipe's data checks: their keys are validated by the type base.recipe declares
    # (Recipe.validate_params; greenpipe.recipes.base.recipe_validate_params gives it to the stage).
    validate_: dict[str, Any] = Field({}, alias="validate")
    train: TrainParams = TrainParams()
    calib_dump: CalibDumpParams = CalibDumpParams()
    baseline: BaselineParams = BaselineParams()
    prune: PruneParams = PruneParams()
    quantize: QuantizeParams
    compile: CompileParams
    deploy: DeployParams
    soak: SoakParams = SoakParams()
    report: ReportParams = ReportParams()
    video: VideoParams = VideoParams()
    nightly: NightlyParams = NightlyParams()
    # Sections a recipe types itself (Recipe.params_type), written at the top level under the recipe's
    # name: validated by that type, read with `recipe_section(name)`.
    recipes: dict[str, Any] = {}

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _gather_recipe_sections(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        from greenpipe.recipes import RECIPES  # light: the recipes load neither torch nor TensorFlow

        known = set(cls.model_fields) | {"validate"}
        owned = [k for k in data if k not in known and k in RECIPES
                 and getattr(RECIPES.get(k), "params_type", None) is not None]
        if not owned:
            return data
        return {**{k: v for k, v in data.items() if k not in owned}, "recipes": {k: data[k] for k in owned}}

    def recipe_section(self, name: str) -> Any:
        """The typed top-level section of recipe ``name`` (its ``Recipe.params_type``, defaults when absent)."""
        from greenpipe.recipes import RECIPES

        return RECIPES.get(name).params_type.model_validate(self.recipes.get(name, {}))

    def variant_table(self, key: str = "quantize.variants") -> dict[str, dict[str, Any]]:
        """The quantization variants' configs at ``key``: ``quantize.variants``, or ``<recipe>.variants``,
        a recipe's own table (entries of the same shape, run only by that recipe's stages)."""
        if key == "quantize.variants":
            return self.quantize.variants
        recipe, _, field = key.partition(".")
        table = self.recipes.get(recipe, {}).get("variants") if field == "variants" else None
        if not isinstance(table, dict):
            raise ParamsError(f"{key}: not a table of quantization variants in params.yaml; name "
                              "quantize.variants or a recipe's own <recipe>.variants mapping")
        return table

    @field_validator("validate_")
    @classmethod
    def _recipe_validate_keys(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        base = info.data.get("base")
        if base is None:  # base is invalid (its own error says why), so there is no recipe to check against
            return v
        from greenpipe.recipes import RECIPES  # light: the recipes load neither torch nor TensorFlow

        checks = RECIPES.get(base.recipe).validate_params
        if checks is None:
            if v:
                raise PydanticCustomError("no_validate_params", f"recipe {base.recipe} has no data checks "
                                          "(Recipe.validate_params is None); remove the section")
            return v
        # Its ValidationError becomes this field's errors, one per bad key (validate.<key>), listed
        # with those of the other sections.
        checks.model_validate(v)
        return v

    @model_validator(mode="after")
    def _cross_checks(self, info: ValidationInfo) -> "Params":
        errors = _device_target_errors(self) + _recipe_section_errors(self)
        if not (info.context or {}).get("light"):
            errors += _handler_errors(self)
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self


def _error(loc: tuple[str, ...], value: Any, error: PydanticCustomError) -> InitErrorDetails:
    return InitErrorDetails(type=error, loc=loc, input=value)


def _device_target_errors(params: Params) -> list[InitErrorDetails]:
    unknown = PydanticCustomError(
        "unknown_target", f"not a compile target (compile.targets has: {', '.join(params.compile.targets)})"
    )
    return [
        _error(("deploy", "devices", name, "target"), device.target, unknown)
        for name, device in params.deploy.devices.items()
        if device.target not in params.compile.targets
    ]


def _recipe_section_errors(params: Params) -> list[InitErrorDetails]:
    """Each recipe-owned section checked by its recipe's ``params_type``, errors located at ``<recipe>.<key>``."""
    from greenpipe.recipes import RECIPES

    errors = []
    for name, section in params.recipes.items():
        try:
            RECIPES.get(name).params_type.model_validate(section)
        except ValidationError as exc:
            errors += [_error((name, *(str(p) for p in e["loc"])), e.get("input"),
                              PydanticCustomError("invalid", e["msg"])) for e in exc.errors()]
    return errors


def _handler_errors(params: Params) -> list[InitErrorDetails]:
    """Compile formats and quantization variants that no module registers, or of the wrong kind.

    Their registries fill only when the modules that need torch are imported, so
    this runs when a whole Params is validated (on a build host), never at import.
    """
    from greenpipe.compile import TARGETS
    from greenpipe.quant import VARIANTS, variants_taking
    from greenpipe.quant.registry import METHOD_KIND, wrong_kind

    errors = [
        _error(("compile", "targets", name, "format"), target.format, _unregistered(TARGETS))
        for name, target in params.compile.targets.items()
        if target.format not in TARGETS
    ]
    tables = [
        (("quantize", "variants"), params.quantize.variants, "model"),
        (("video", "quantize"), params.video.quantize, "kernels"),
    ]
    tables += [((recipe, "variants"), section["variants"], "model") for recipe, section in params.recipes.items()
               if isinstance(section, dict) and isinstance(section.get("variants"), dict)]
    for prefix, entries, takes in tables:
        for name, entry in entries.items():
            # The entry's key names its handler unless it sets `method:` (two configurations of one method).
            handler = entry.get("method") or name
            loc = (*prefix, name, "method") if entry.get("method") else (*prefix, name)
            if isinstance(handler, str) and handler in VARIANTS and VARIANTS.get(handler).takes != takes:
                errors.append(_error(loc, handler, PydanticCustomError("wrong_kind", wrong_kind(
                    VARIANTS.get(handler), takes))))
            elif not isinstance(handler, str) or handler not in VARIANTS:
                errors.append(_error(loc, handler, PydanticCustomError("not_registered", (
                    f"not a registered {METHOD_KIND[takes]} variant; registered: "
                    f"{', '.join(variants_taking(takes))}"))))
    return errors


def resolve_profile(tree: Any, profile: str) -> Any:
    """Replace every ``{quick: A, full: B}`` mapping in ``tree`` by the profile's value."""
    if isinstance(tree, dict):
        if tree and set(tree) == set(PROFILES):
            return resolve_profile(tree[profile], profile)
        return {k: resolve_profile(v, profile) for k, v in tree.items()}
    if isinstance(tree, list):
        return [resolve_profile(v, profile) for v in tree]
    return tree




def parse_params(raw: dict, source: str = "params.yaml", light: bool = False) -> Params:
    """Validate an already-loaded params mapping (see :func:`load_params`)."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    profile = (raw.get("base") or {}).get("profile", "quick")
    if profile not in PROFILES:
        raise ParamsError(f"{source}: base.profile = {profile!r}: expected one of {', '.join(PROFILES)}")
    try:
        return Params.model_validate(resolve_profile(raw, profile), context={"light": light})
    except ValidationError as exc:
        raise invalid_params(exc, source) from None


def load_params(path: str | Path = "params.yaml", light: bool = False) -> Params:
    """Read and validate ``path``; raise ParamsError with every bad key listed.

    ``light`` leaves out the checks whose registries need torch (quantization variants, compile
    formats): a stage reads params with it, and checks the names it uses itself, naming the key
    (``parse_variant``, the compile stage's format). ``greenpipe check`` and the nightly check all.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found; run from the repository root or pass --params") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    return parse_params(raw, str(path), light)
