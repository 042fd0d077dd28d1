"""Procedurally generated street scenes with exact pixel labels (the segment recipe's built-in data).

A scene is drawn in one-point perspective: a horizon and a vanishing point,
the road as a trapezoid converging on it, sidewalks beside it, building
facades on both sides whose tops converge too, sky above; then, far to near
(painter's order), trees, poles with traffic signs, people on the sidewalks
and cars on the road, each scaled by its distance below the horizon.  The
label map is drawn first (polygons, no anti-aliasing) and every pixel of the
image takes the texture of its class, cut from the real photographs the
project ships (``data/clean``: gravel road, brick facades, grass trees, ...),
so labels are exact.  Deterministic: the same ``rng`` state gives the same
scene.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# The classes a generated scene draws, in Cityscapes' names (a subset of its train classes).
SCENE_CLASSES = ("road", "sidewalk", "building", "vegetation", "sky", "car", "person", "pole", "traffic sign")

# Which shipped photograph textures each class (file stems under data/clean), and a tint range.
TEXTURES = {
    "road": ("gravel", (0.35, 0.55)),
    "sidewalk": ("brick", (0.6, 0.85)),
    "building": ("china", (0.6, 1.0)),
    "vegetation": ("grass", (0.5, 0.9)),
    "sky": ("hubble_deep_field", (0.9, 1.0)),
    "car": ("coffee", (0.5, 1.0)),
    "person": ("astronaut", (0.6, 1.0)),
    "pole": ("camera", (0.3, 0.5)),
    "traffic sign": ("coins", (0.8, 1.0)),
}


def load_photos(photos: Path) -> dict[str, np.ndarray]:
    """The texture photographs under ``photos`` by stem, as (H, W, 3) float32 in [0, 1]."""
    from greenpipe.errors import DataError
    from greenpipe.io import read_image

    out = {}
    for stem, _ in TEXTURES.values():
        found = sorted(photos.glob(f"{stem}.*"))
        if not found:
            raise DataError(f"{photos}: no {stem}.* photograph (a scene texture); run `greenpipe data builtin data`")
        img = read_image(found[0])
        out[stem] = np.repeat(img[..., None], 3, -1) if img.ndim == 2 else img[..., :3]
    return out


def _texture(photo: np.ndarray, h: int, w: int, rng: np.random.Generator, tint: tuple[float, float]) -> np.ndarray:
    """An (h, w, 3) layer: a random crop of ``photo``, resized, with a random colour gain."""
    from PIL import Image

    ph, pw = photo.shape[:2]
    ch, cw = int(ph * rng.uniform(0.3, 0.7)), int(pw * rng.uniform(0.3, 0.7))
    top, left = int(rng.integers(ph - ch + 1)), int(rng.integers(pw - cw + 1))
    crop = (photo[top : top + ch, left : left + cw] * 255).astype(np.uint8)
    layer = np.asarray(Image.fromarray(crop).resize((w, h), Image.BILINEAR), np.float32) / 255
    return layer * rng.uniform(*tint, size=3).astype(np.float32)


def _sky(h: int, w: int, rng: np.random.Generator, photo: np.ndarray) -> np.ndarray:
    """A vertical blue-to-pale gradient with a faint photo texture (clouds stand-in)."""
    top, bottom = np.array([0.35, 0.55, 0.9]) * rng.uniform(0.7, 1.1), np.array([0.8, 0.85, 0.95])
    t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    grad = (1 - t) * top + t * bottom
    return np.clip(grad + 0.25 * _texture(photo, h, w, rng, (0.9, 1.0)), 0, 1).astype(np.float32)


def draw_scene(rng: np.random.Generator, height: int, width: int,
               photos: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """One scene: (image (H, W, 3) float32 in [0, 1], label (H, W) uint8 index into SCENE_CLASSES)."""
    from PIL import Image, ImageDraw

    cls = {name: i for i, name in enumerate(SCENE_CLASSES)}
    h, w = height, width
    horizon = rng.uniform(0.35, 0.5) * h
    vx = rng.uniform(0.35, 0.65) * w
    label = Image.new("L", (w, h), cls["sky"])
    draw = ImageDraw.Draw(label)

    def toward(x: float, y: float, t: float) -> tuple[float, float]:
        """The point a fraction ``t`` of the way from (x, y) to the vanishing point."""
        return x + (vx - x) * t, y + (horizon - y) * t

    # road and sidewalks: trapezoids from the bottom edge to the vanishing point
    road_l, road_r = vx - rng.uniform(0.45, 0.8) * w, vx + rng.uniform(0.45, 0.8) * w
    walk = rng.uniform(0.2, 0.5) * w
    draw.polygon([(road_l - walk, h), (vx, horizon), (road_r + walk, h)], fill=cls["sidewalk"])
    draw.polygon([(road_l, h), (vx, horizon), (road_r, h)], fill=cls["road"])
    # facades: from the sidewalk's outer edge up to a roof line that converges on the vanishing point
    for side in (-1, 1):
        base_x = road_l - walk if side < 0 else road_r + walk
        edge = 0.0 if side < 0 else float(w)
        roof = rng.uniform(0.0, 0.25) * h
        depth = rng.uniform(0.75, 0.95)
        far_base, far_roof = toward(base_x, h, depth), toward(edge, roof, depth)
        near_base = (edge, h + (base_x - edge) * (horizon - h) / (base_x - vx) if base_x != vx else h)
        draw.polygon([(edge, roof), far_roof, far_base, near_base], fill=cls["building"])
    # objects far to near; t = 1 at the horizon, 0 at the bottom edge
    objects = []
    for _ in range(int(rng.integers(1, 4))):
        objects.append(("vegetation", rng.uniform(0.2, 0.8), int(rng.choice([-1, 1]))))
    for _ in range(int(rng.integers(1, 4))):
        objects.append(("pole", rng.uniform(0.1, 0.85), int(rng.choice([-1, 1]))))
    for _ in range(int(rng.integers(0, 4))):
        objects.append(("person", rng.uniform(0.2, 0.85), int(rng.choice([-1, 1]))))
    for _ in range(int(rng.integers(1, 4))):
        objects.append(("car", rng.uniform(0.15, 0.8), 0))
    for kind, t, side in sorted(objects, key=lambda o: -o[1]):
        s = 1 - t  # scale: 1 at the bottom edge
        if kind == "car":
            lane = rng.uniform(0.2, 0.8)
            bx, by = toward(road_l + lane * (road_r - road_l), h, t)
            cw, ch = 0.35 * w * s, 0.18 * w * s
            draw.rectangle([bx - cw / 2, by - ch, bx + cw / 2, by], fill=cls["car"])
            draw.rectangle([bx - cw / 3, by - 1.6 * ch, bx + cw / 3, by - ch], fill=cls["car"])
            continue
        walk_x = (road_l - walk * rng.uniform(0.2, 0.8)) if side < 0 else (road_r + walk * rng.uniform(0.2, 0.8))
        bx, by = toward(walk_x, h, t)
        if kind == "vegetation":
            r = 0.18 * w * s
            draw.rectangle([bx - r / 8, by - 1.5 * r, bx + r / 8, by], fill=cls["vegetation"])
            draw.ellipse([bx - r, by - 3.2 * r, bx + r, by - 1.2 * r], fill=cls["vegetation"])
        elif kind == "pole":
            ph, pw = 0.9 * h * s, max(1.0, 0.012 * w * s)
            draw.rectangle([bx - pw, by - ph, bx + pw, by], fill=cls["pole"])
            if rng.random() < 0.7:
                r = 0.04 * w * s + 1
                draw.rectangle([bx - r, by - ph - r, bx + r, by - ph + r], fill=cls["traffic sign"])
        else:  # person: body and head
            ph, pw = 0.45 * h * s, 0.04 * w * s + 1
            draw.rectangle([bx - pw, by - 0.85 * ph, bx + pw, by], fill=cls["person"])
            draw.ellipse([bx - pw * 0.8, by - ph, bx + pw * 0.8, by - 0.8 * ph], fill=cls["person"])
    labels = np.asarray(label, np.uint8)
    layers = np.stack([_sky(h, w, rng, photos[TEXTURES["sky"][0]]) if name == "sky"
                       else _texture(photos[TEXTURES[name][0]], h, w, rng, TEXTURES[name][1])
                       for name in SCENE_CLASSES])  # (K, H, W, 3)
    image = np.take_along_axis(layers, labels[None, :, :, None].astype(np.int64), 0)[0]
    light = rng.uniform(0.75, 1.15)  # global exposure
    return np.clip(image * light, 0, 1).astype(np.float32), labels
