"""The ``segment:`` section of params.yaml, typed (``SegmentRecipe.params_type``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from greenpipe.params import Listed, Section
from greenpipe.recipes.segment.data import CITYSCAPES_CLASSES


class SegmentDataParams(Section):
    source: Literal["builtin", "cityscapes"] = "builtin"
    cityscapes_root: str = ""  # a folder holding leftImg8bit/ and gtFine/ (source: cityscapes)
    # Cityscapes train classes kept, in this order (every other one is the ignore label 255).
    classes: Listed[tuple[str, ...]] = ("road", "sidewalk", "building", "vegetation", "sky", "car", "person",
                                        "pole", "traffic sign")
    size: Listed[tuple[int, int]] = (128, 256)  # H, W of generated scenes; Cityscapes images are resized to it
    train_scenes: int = Field(48, ge=1)  # builtin: generated train scenes
    val_scenes: int = Field(12, ge=1)
    max_images: int = Field(0, ge=0)  # cityscapes: at most this many per split (0 = all)

    @field_validator("classes")
    @classmethod
    def _known(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [c for c in v if c not in CITYSCAPES_CLASSES]
        if unknown or len(set(v)) != len(v) or not v:
            raise ValueError(f"expected distinct Cityscapes train classes ({', '.join(CITYSCAPES_CLASSES)}); "
                             f"got unknown or repeated {unknown or list(v)}")
        return v

    @model_validator(mode="after")
    def _root(self) -> "SegmentDataParams":
        if self.source == "cityscapes" and not self.cityscapes_root:
            raise ValueError("source: cityscapes needs cityscapes_root (the folder holding leftImg8bit/, gtFine/)")
        return self


class SegmentValidateParams(Section):
    min_train: int = Field(4, ge=1)
    min_val: int = Field(1, ge=1)


class SegmentModelParams(Section):
    arch: Literal["unet", "hrnet"]
    width: int | str = 16  # unet: channels at full resolution; hrnet: tiny | w18s | w48
    depth: int = Field(4, ge=1, le=6)  # unet only: 2x down-samplings
    checkpoint: str = ""  # a state dict (.pt) of this architecture to start from ("" = from scratch)


class SegmentTrainParams(Section):
    """What the shared trainer reads (greenpipe/train.py), plus the crops."""

    epochs: int = Field(4, ge=1)
    steps_per_epoch: int = Field(40, ge=1)
    batch_size: int = Field(4, ge=1)
    crop: Listed[tuple[int, int]] = (128, 256)  # H, W
    lr: float = Field(0.003, gt=0)
    lr_min: float = Field(0.0001, ge=0)
    val_every: int = Field(1, ge=1)
    val_max_side: int = Field(0, ge=0)
    ema: float = Field(0.0, ge=0, lt=1)
    precision: Literal["fp32", "bf16", "auto"] = "auto"


class SegmentEvalParams(Section):
    latency_sizes: Listed[tuple[Listed[tuple[int, int]], ...]] = ((256, 512), (512, 1024), (1024, 2048))


class SegmentParams(Section):
    data: SegmentDataParams = SegmentDataParams()
    validate_: SegmentValidateParams = Field(SegmentValidateParams(), alias="validate")
    models: dict[str, SegmentModelParams] = {"unet": SegmentModelParams(arch="unet"),
                                             "hrnet": SegmentModelParams(arch="hrnet", width="w18s")}
    train: SegmentTrainParams = SegmentTrainParams()
    calib_samples: int = Field(16, ge=1)
    # The recipe's own quantization variants (entries as under quantize.variants: the key or `method:` names
    # the handler; each handler's config type checks the rest), and which of them run on both networks.
    variants: dict[str, dict[str, Any]] = {"fp32": {}, "ptq8": {}}
    quantize: Listed[tuple[str, ...]] = ("fp32", "ptq8")
    # Which of those also get deploy and soak rows (LoadGen and energy on every device); the rest are
    # scored and timed by segment_eval only.
    deploy: Listed[tuple[str, ...]] = ("fp32", "ptq8")
    eval: SegmentEvalParams = SegmentEvalParams()

    model_config = Section.model_config | {"populate_by_name": True}

    @model_validator(mode="after")
    def _quantize_known(self) -> "SegmentParams":
        unknown = [v for v in self.quantize if v not in self.variants]
        if unknown:
            raise ValueError(f"quantize: {unknown} not keys of segment.variants (it has: {', '.join(self.variants)}); "
                             "add them there")
        undeployable = [v for v in self.deploy if v not in self.quantize]
        if undeployable:
            raise ValueError(f"deploy: {undeployable} not in segment.quantize ({', '.join(self.quantize)}); "
                             "a deployed variant must be quantized and compiled first: add it there")
        return self
