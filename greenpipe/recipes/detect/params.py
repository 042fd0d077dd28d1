"""The ``detect:`` section of params.yaml, typed (``DetectRecipe.params_type``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from greenpipe.params import Listed, Section


class DetectDataParams(Section):
    # builtin: the deepforest wheel's annotated aerial images, kept under data/detect/deepforest
    # (greenpipe/recipes/detect/builtin.py); voc / coco / auto: a user's folder at ``root``.
    source: Literal["builtin", "voc", "coco", "auto"] = "builtin"
    root: str = ""  # source voc / coco / auto: the annotation root (greenpipe/recipes/detect/data.py)
    classes: Listed[tuple[str, ...]] = ()  # the class list and its order; () = the names the data declares
    tile: int = Field(192, ge=16)  # px: images are cut into tile x tile crops (an image smaller is one tile)
    min_visible: float = Field(0.5, gt=0, le=1)  # a box cut by a tile edge is kept when this share of it is inside
    val_fraction: float = Field(0.15, gt=0, lt=1)  # of the tiles, drawn with base.seed, scored as val
    input_size: int = Field(128, ge=32, multiple_of=16)  # px, square: what every model of the recipe takes

    @model_validator(mode="after")
    def _root(self) -> "DetectDataParams":
        if self.source != "builtin" and not self.root:
            raise ValueError(f"source: {self.source} needs root (the folder holding the annotations and images)")
        return self


class DetectValidateParams(Section):
    min_train: int = Field(4, ge=1)  # tiles
    min_val: int = Field(1, ge=1)
    min_objects: int = Field(1, ge=1)  # boxes in the train split


class DetectModelParams(Section):
    backbone: Literal["vgg", "mobilenet"]
    width: int = Field(16, ge=1)  # channels of the first stage; later stages 2x, 4x, 8x


class DetectTrainParams(Section):
    """What the shared trainer reads (greenpipe/train.py)."""

    epochs: int = Field(4, ge=1)
    steps_per_epoch: int = Field(50, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(0.003, gt=0)
    lr_min: float = Field(0.0001, ge=0)
    val_every: int = Field(1, ge=1)
    val_max_side: int = Field(0, ge=0)  # not used: a detector scores whole tiles
    ema: float = Field(0.0, ge=0, lt=1)
    precision: Literal["fp32", "bf16", "auto"] = "auto"


class DetectEvalParams(Section):
    latency_s: float = Field(2.0, gt=0)  # LoadGen SingleStream seconds per repeat (batch 1)
    repeats: int = Field(5, ge=1)  # LoadGen runs per artifact: latency is their median, with min-max


class DetectParams(Section):
    data: DetectDataParams = DetectDataParams()
    validate_: DetectValidateParams = Field(DetectValidateParams(), alias="validate")
    models: dict[str, DetectModelParams] = {"vgg": DetectModelParams(backbone="vgg"),
                                            "mobilenet": DetectModelParams(backbone="mobilenet")}
    prune: Listed[tuple[str, ...]] = ("vgg",)  # keys of models the shared prune stage prunes into <key>_pruned
    chains: Listed[tuple[str, ...]] = ("vgg", "vgg_pruned", "mobilenet")  # calib, quantize, compile, eval
    train: DetectTrainParams = DetectTrainParams()
    calib_samples: int = Field(16, ge=1)
    quantize: Listed[tuple[str, ...]] = ("fp32", "ptq8")  # keys of quantize.variants run on every chain
    eval: DetectEvalParams = DetectEvalParams()

    model_config = Section.model_config | {"populate_by_name": True}

    @model_validator(mode="after")
    def _known(self) -> "DetectParams":
        unknown = [k for k in self.prune if k not in self.models]
        if unknown:
            raise ValueError(f"prune names {unknown}, not keys of models ({', '.join(self.models)})")
        chains = set(self.models) | {f"{k}_pruned" for k in self.prune}
        bad = [k for k in self.chains if k not in chains]
        if bad:
            raise ValueError(f"chains names {bad}: each must be a key of models or <key>_pruned of a key in prune")
        return self
