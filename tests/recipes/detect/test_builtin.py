"""Taking only the annotated images out of a deepforest-layout wheel (written here as a real zip)."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from greenpipe.errors import DataError
from greenpipe.recipes.detect.builtin import voc_from_wheel
from greenpipe.recipes.detect.data import load


def png_bytes(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def voc_xml(image: str, box: tuple) -> str:
    return (f"<annotation><filename>{image}</filename><size><width>40</width><height>30</height></size>"
            f"<object><name>Tree</name><bndbox><xmin>{box[0]}</xmin><ymin>{box[1]}</ymin><xmax>{box[2]}</xmax>"
            f"<ymax>{box[3]}</ymax></bndbox></object></annotation>")


def test_only_annotated_images_their_xml_and_the_licence_are_taken(tmp_path):
    wheel = tmp_path / "deepforest-0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("deepforest/__init__.py", "import torch\n")
        z.writestr("deepforest/data/a.xml", voc_xml("a.png", (1, 2, 10, 12)))
        z.writestr("deepforest/data/a.png", png_bytes(40, 30))
        z.writestr("deepforest/data/b.xml", voc_xml("b.tif", (1, 2, 10, 12)))  # its image is not shipped
        z.writestr("deepforest/data/example.csv", "image_path,xmin\n")
        z.writestr("deepforest-0.dist-info/licenses/LICENSE", "MIT License\n")
    written = voc_from_wheel(wheel, tmp_path / "voc")
    assert [p.name for p in written] == ["a.xml"]
    assert sorted(p.name for p in (tmp_path / "voc").iterdir()) == ["LICENSES", "a.png", "a.xml"]
    assert (tmp_path / "voc" / "LICENSES" / "LICENSE").read_text() == "MIT License\n"
    data = load(tmp_path / "voc")
    assert data.classes == ("Tree",) and data.samples[0].boxes.tolist() == [[1, 2, 10, 12]]


def test_a_file_that_is_not_such_a_wheel_is_named(tmp_path):
    (tmp_path / "x.whl").write_text("not a zip")
    with pytest.raises(DataError, match="x.whl: not a readable wheel"):
        voc_from_wheel(tmp_path / "x.whl", tmp_path / "voc")
    with zipfile.ZipFile(tmp_path / "y.whl", "w") as z:
        z.writestr("other/data/a.xml", voc_xml("a.png", (1, 2, 10, 12)))
    with pytest.raises(DataError, match="no VOC XML with its image under deepforest/data/"):
        voc_from_wheel(tmp_path / "y.whl", tmp_path / "voc")
