"""VOC and COCO readers and their named validation errors, on real files written to tmp_path."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from greenpipe.errors import DataError
from greenpipe.recipes.detect.data import (BoxOutsideImage, DuplicateId, EmptyBox, MissingImage, UnknownClass,
                                           load, read)


def write_image(path: Path, w: int = 64, h: int = 48) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)  # noise seeded by the name: every image differs
    Image.fromarray(np.random.default_rng(zlib.crc32(path.name.encode())).integers(0, 255, (h, w, 3), np.uint8)).save(path)


def write_voc(root: Path, stem: str, image: str, objects: list[tuple[str, tuple]], size=(64, 48),
              write_img: bool = True) -> Path:
    """One real VOC annotation file (and its image, unless told not to)."""
    objs = "".join(
        f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for n, b in objects)
    xml = (f"<annotation><folder>VOC</folder><filename>{image}</filename><size><width>{size[0]}</width>"
           f"<height>{size[1]}</height><depth>3</depth></size>{objs}</annotation>")
    path = root / "Annotations" / f"{stem}.xml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(xml)
    if write_img:
        write_image(root / "JPEGImages" / image, *size)
    return path


def voc_set(root: Path) -> Path:
    write_voc(root, "a", "a.jpg", [("cat", (1, 2, 30, 40)), ("dog", (10, 10, 64, 48))])
    write_voc(root, "b", "b.png", [])  # an image without objects is fine
    return root


def coco_doc() -> dict:
    return {"images": [{"id": 1, "file_name": "x.jpg", "width": 64, "height": 48},
                       {"id": 2, "file_name": "y.png", "width": 64, "height": 48}],
            "annotations": [{"id": 10, "image_id": 1, "category_id": 3, "bbox": [4, 5, 20, 10],
                             "area": 200, "iscrowd": 0}],
            "categories": [{"id": 3, "name": "tree"}, {"id": 1, "name": "bird"}]}


def coco_set(root: Path, doc: dict | None = None) -> Path:
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "instances.json").write_text(json.dumps(doc or coco_doc()))
    write_image(root / "images" / "x.jpg")
    write_image(root / "images" / "y.png")
    return root


def test_voc_reads_boxes_classes_and_empty_images(tmp_path):
    data = load(voc_set(tmp_path))
    assert data.fmt == "voc" and data.classes == ("cat", "dog")
    a, b = data.samples
    np.testing.assert_array_equal(a.boxes, [[1, 2, 30, 40], [10, 10, 64, 48]])
    assert data.labels(a).tolist() == [0, 1] and (a.width, a.height) == (64, 48)
    assert b.boxes.shape == (0, 4) and b.image.name == "b.png"


def test_voc_beside_the_images_and_size_from_the_image(tmp_path):
    (tmp_path / "t.xml").write_text("<annotation><filename>t.png</filename><object><name>tree</name>"
                                    "<bndbox><xmin>0</xmin><ymin>0</ymin><xmax>5</xmax><ymax>5</ymax>"
                                    "</bndbox></object></annotation>")
    write_image(tmp_path / "t.png", 40, 30)
    (s,) = load(tmp_path).samples
    assert (s.width, s.height) == (40, 30)


def test_coco_reads_categories_in_id_order(tmp_path):
    data = load(coco_set(tmp_path))
    assert data.fmt == "coco" and data.classes == ("bird", "tree")
    x, y = data.samples
    np.testing.assert_array_equal(x.boxes, [[4, 5, 24, 15]])
    assert data.labels(x).tolist() == [1] and len(y.boxes) == 0


def test_stated_format_and_class_order_win(tmp_path):
    data = load(voc_set(tmp_path), fmt="voc", classes=("dog", "cat", "bird"))
    assert data.labels(data.samples[0]).tolist() == [1, 0]


@pytest.mark.parametrize("obj, error, words", [
    (("cat", (10, 10, 70, 40)), BoxOutsideImage, "outside the 64x48"),
    (("cat", (-1, 10, 20, 40)), BoxOutsideImage, "outside"),
    (("cat", (10, 10, 10, 40)), EmptyBox, "width 0"),
    (("cat", (30, 10, 20, 40)), EmptyBox, "width -10"),
    (("zebra", (1, 1, 5, 5)), UnknownClass, "'zebra' is not one of cat, dog"),
])
def test_voc_faults_have_named_errors(tmp_path, obj, error, words):
    voc_set(tmp_path)
    write_voc(tmp_path, "c", "c.jpg", [("dog", (1, 1, 5, 5)), obj])
    with pytest.raises(error, match=words) as exc:
        load(tmp_path, classes=("cat", "dog"))
    assert "c.xml: object 1" in str(exc.value) and isinstance(exc.value, DataError)


def test_voc_missing_image_and_duplicate_image(tmp_path):
    voc_set(tmp_path)
    write_voc(tmp_path, "c", "gone.jpg", [], write_img=False)
    with pytest.raises(MissingImage, match="c.xml: image .*gone.jpg does not exist"):
        load(tmp_path)
    (tmp_path / "Annotations" / "c.xml").unlink()
    write_voc(tmp_path, "a_copy", "a.jpg", [])
    with pytest.raises(DuplicateId, match="image a.jpg is also annotated by .*a_copy.xml"):
        load(tmp_path)


@pytest.mark.parametrize("edit, error, words", [
    (lambda d: d["images"].append({"id": 1, "file_name": "y.png", "width": 9, "height": 9}),
     DuplicateId, "image id 1 is used by 2 images"),
    (lambda d: d["annotations"].append({**d["annotations"][0], "image_id": 2}),
     DuplicateId, "annotation id 10 is used 2 times"),
    (lambda d: d["categories"].append({"id": 3, "name": "bush"}), DuplicateId, "category id 3"),
    (lambda d: d["annotations"][0].update(image_id=7), MissingImage, "annotation 10 names image id 7"),
    (lambda d: d["images"].append({"id": 5, "file_name": "z.jpg", "width": 9, "height": 9}),
     MissingImage, "image 5: image .*z.jpg does not exist"),
    (lambda d: d["annotations"][0].update(category_id=9), UnknownClass, "annotation 10 .*category_id 9"),
    (lambda d: d["annotations"][0].update(bbox=[4, 5, 0, 10]), EmptyBox, "annotation 10 .*width 0"),
    (lambda d: d["annotations"][0].update(bbox=[50, 5, 20, 10]), BoxOutsideImage, "annotation 10"),
])
def test_coco_faults_have_named_errors(tmp_path, edit, error, words):
    doc = coco_doc()
    edit(doc)
    coco_set(tmp_path, doc)
    with pytest.raises(error, match=words) as exc:
        load(tmp_path)
    assert "instances.json" in str(exc.value)


def test_unknown_layout_and_format_say_what_was_expected(tmp_path):
    with pytest.raises(DataError, match="neither Pascal VOC .* nor COCO"):
        read(tmp_path)
    with pytest.raises(DataError, match="choose one of auto, voc, coco"):
        read(tmp_path, fmt="yolo")
    with pytest.raises(DataError, match="no such directory"):
        read(tmp_path / "nope")
