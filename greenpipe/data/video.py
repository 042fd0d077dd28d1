"""Video data: the Jester / Something-Something frame-folder layout, video files, built-in motion clips.

Layout read (20BN Jester v1 and Something-Something v1 ship exactly this)::

    <root>/<frames>/<video id>/00001.jpg ...   # one folder of frames per video (any sub-folder name)
    <root>/*labels.csv                         # one class name per line
    <root>/*train.csv, <root>/*validation.csv  # "<video id>;<class name>" per line (';' or ',')

A video may also be a file ``<root>/**/<video id>.{mp4,webm,avi,mov,mkv}``
instead of a folder (Something-Something v2), read with OpenCV.

Built-in default (:func:`materialize_builtin`): no installed package ships a
video clip with a stated licence (scikit-image's ``no_time_for_that_tiny.gif``
states none, so it is not used).  So clips are synthesised from the real
photographs greenpipe already ships (``data/clean``, licences in
``data/SOURCES.json``): a window moves over a photograph as a camera would --
pan left / right / up / down, zoom in / out, or stay static -- and each frame is
the window resampled to ``size`` px.  Every class draws its window positions
and scales from the same per-frame distribution, so a single frame cannot tell
the class: only motion between frames does (what Jester's swipe classes need).
Train and validation clips come from disjoint photographs.  Each clip is
stored as one lossless FFV1 AVI (Something-Something v2 style: the split lists
name video files), which the readers decode to exactly the frames rendered.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from greenpipe.errors import DataError
from greenpipe.io import files_sha256

# Camera motion, named from the camera's point of view: in ``pan_right`` the
# window moves right over the scene, so the content slides left in the frame.
CLASSES = ("static", "pan_left", "pan_right", "pan_up", "pan_down", "zoom_in", "zoom_out")
VIDEO_EXTS = (".mp4", ".webm", ".avi", ".mov", ".mkv")
FRAME_EXTS = (".jpg", ".jpeg", ".png")


# --------------------------------------------------------------------------- synthetic camera motion


@dataclass(frozen=True)
class Window:
    """A square crop window on the source photograph: centre (x, y) and side, in source px."""

    x: float
    y: float
    side: float


def trajectory(label: str, n_frames: int, centre: tuple[float, float], side: float, travel: float,
               zoom: float) -> list[Window]:
    """The window in each of ``n_frames`` frames for camera motion ``label``.

    ``travel`` is the pan distance over the clip (source px), ``zoom`` the
    ratio of the window's largest to smallest side over the clip (> 1).  The
    motion is symmetric about the middle frame, where the window is
    (``centre``, ``side``), so per-frame positions and scales have the same
    distribution in every class.
    """
    if label not in CLASSES:
        raise DataError(f"camera motion {label!r}: unknown; expected one of {', '.join(CLASSES)}")
    out = []
    for t in range(n_frames):
        u = t / max(n_frames - 1, 1) - 0.5  # -0.5 at the first frame, +0.5 at the last
        x, y, s = centre[0], centre[1], side
        if label == "pan_right":
            x += travel * u
        elif label == "pan_left":
            x -= travel * u
        elif label == "pan_down":  # image y grows downwards
            y += travel * u
        elif label == "pan_up":
            y -= travel * u
        elif label == "zoom_in":  # the window shrinks: the scene grows in the frame
            s = side * zoom ** (-u)
        elif label == "zoom_out":
            s = side * zoom**u
        out.append(Window(x, y, s))
    return out


def render(image: np.ndarray, windows: list[Window], size: int) -> np.ndarray:
    """Resample each window of ``image`` (H, W, 3) uint8 to (size, size): (T, size, size, 3) uint8."""
    import cv2

    frames = []
    for w in windows:
        k = w.side / size  # source px per output px
        # Output pixel centre (i + 0.5) maps to x - side/2 + (i + 0.5) * k, minus 0.5 for OpenCV's pixel grid.
        m = np.array([[k, 0, w.x - w.side / 2 + 0.5 * k - 0.5], [0, k, w.y - w.side / 2 + 0.5 * k - 0.5]])
        frames.append(cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                     borderMode=cv2.BORDER_REFLECT))
    return np.stack(frames)


# Default motion per frame: the pan as a fraction of the frame, the zoom ratio.  What a network
# needs is motion of about a pixel or more where its shifts are (see docs/architecture.md).
PAN_PER_FRAME = (0.1, 0.16)
ZOOM_PER_FRAME = (1.1, 1.17)


@dataclass(frozen=True)
class Scene:
    """Where a clip is shot: the middle window (centre, side) and, over the whole clip, how far it pans
    (travel, source px) or zooms (ratio)."""

    centre: tuple[float, float]
    side: float
    travel: float
    zoom: float


def draw_scene(image_shape: tuple[int, ...], size: int, rng: np.random.Generator, n_frames: int,
               pan: tuple[float, float] = PAN_PER_FRAME, zoom: tuple[float, float] = ZOOM_PER_FRAME) -> Scene:
    """A random scene on a photograph of ``image_shape`` for ``n_frames``-frame clips of ``size`` px.

    The middle window's side is 1.5-2x ``size``; ``pan`` is the range of the
    pan per frame as a fraction of that side (so of the frame), ``zoom`` the
    range of the zoom ratio per frame (> 1).  The centre leaves room for the
    largest window any class reaches, so every class can be shot from the
    same scene.
    """
    h, w = image_shape[:2]
    side = float(rng.uniform(1.5, 2.0) * size)
    t = float(rng.uniform(*pan) * (n_frames - 1) * side)
    z = float(rng.uniform(*zoom) ** (n_frames - 1))
    half = max(side * z**0.5, side + t) / 2
    if 2 * half >= min(h, w):
        raise DataError(f"photograph of {w}x{h} px is too small for {size} px clips with this motion; "
                        f"use larger images (short side >= {photo_side(size, n_frames, pan, zoom)} px)")
    return Scene((float(rng.uniform(half, w - half)), float(rng.uniform(half, h - half))), side, t, z)


def photo_side(size: int, n_frames: int, pan: tuple[float, float] = PAN_PER_FRAME,
               zoom: tuple[float, float] = ZOOM_PER_FRAME) -> int:
    """Short side (px) a photograph is scaled to: room for the largest window of the motion, with a margin."""
    reach = 2.0 * size * max(1 + pan[1] * (n_frames - 1), zoom[1] ** ((n_frames - 1) / 2))
    return int(np.ceil(1.25 * reach))


def shoot(image: np.ndarray, scene: Scene, label: str, n_frames: int, size: int) -> np.ndarray:
    """The clip of camera motion ``label`` in ``scene``: (n_frames, size, size, 3) uint8."""
    return render(image, trajectory(label, n_frames, scene.centre, scene.side, scene.travel, scene.zoom), size)


def synth_clip(image: np.ndarray, label: str, n_frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One clip of camera motion ``label`` over ``image`` from a random scene: (n_frames, size, size, 3) uint8."""
    return shoot(image, draw_scene(image.shape, size, rng, n_frames), label, n_frames, size)


def _load_photo(path: Path, short_side: int) -> np.ndarray:
    """A photograph as (H, W, 3) uint8 RGB, scaled so its short side is ``short_side`` px."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(f"{path}: not a readable image; restore the built-in data with `greenpipe data restore`")
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    scale = short_side / min(img.shape[:2])
    return cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)


def write_video(path: Path, frames: np.ndarray, fps: float = 12.0) -> None:
    """(T, H, W, 3) uint8 RGB -> a lossless FFV1 AVI that :func:`read_video` returns bit for bit.

    One file per clip rather than a folder of frames keeps the built-in set at
    one file per clip, which is what DVC walks and hashes on every
    ``dvc status`` / ``dvc repro`` (six frame files per clip made that walk
    the slowest part of a no-op repro).
    """
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), fps, (w, h))
    if not writer.isOpened():
        raise DataError(f"{path}: this OpenCV build cannot write FFV1 video (lossless); install "
                        "opencv-python-headless as the project pins it (`make demo` does)")
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()


def materialize_builtin(photos: str | Path, out: str | Path, *, size: int, n_frames: int, train_per_class: int,
                        val_per_class: int, val_sources: tuple[str, ...], seed: int,
                        pan: tuple[float, float] = PAN_PER_FRAME, zoom: tuple[float, float] = ZOOM_PER_FRAME) -> dict:
    """Write the built-in camera-motion dataset under ``out``: Jester's split lists, one lossless video per clip.

    ``photos`` is a folder of photographs (``data/clean``, the built-in set);
    train clips come from every photograph not named in ``val_sources`` (file
    stems), val clips from those; ``pan`` and ``zoom`` are the per-frame motion
    ranges (:func:`draw_scene`).  Returns counts and per-split sources;
    ``out/SOURCES.json`` records each clip's photograph and its licence when
    ``photos/../SOURCES.json`` has one.
    """
    photos, out = Path(photos), Path(out)
    files = sorted(p for p in photos.glob("*") if p.suffix.lower() in FRAME_EXTS)
    if not files:
        raise DataError(f"{photos}: no photographs; run `greenpipe data restore` to put the built-in set back")
    stems = {p.stem for p in files}
    missing = [v for v in val_sources if v not in stems]
    if missing:
        raise DataError(f"video.val_sources: {missing} not among the photographs in {photos} "
                        f"({', '.join(sorted(stems))}); name some of those")
    licences = {}
    src = photos.parent / "SOURCES.json"
    if src.exists():
        licences = {r["name"]: {k: r.get(k) for k in ("title", "licence", "attribution")}
                    for r in json.loads(src.read_text())}
    rng = np.random.default_rng(seed)
    rows: dict[str, list[tuple[str, str]]] = {"train": [], "validation": []}
    clip_sources = {}
    for path in files:
        split = "validation" if path.stem in val_sources else "train"
        per_class = val_per_class if split == "validation" else train_per_class
        if per_class == 0:
            continue
        image = _load_photo(path, short_side=photo_side(size, n_frames, pan, zoom))
        for i in range(per_class):
            # One scene shot with every camera motion: within a group, content says nothing about
            # the class, which training uses (greenpipe.video.train samples whole groups).
            scene = draw_scene(image.shape, size, rng, n_frames, pan, zoom)
            for label in CLASSES:
                vid = f"{path.stem}-{i:03d}-{label}"
                write_video(out / "videos" / f"{vid}.avi", shoot(image, scene, label, n_frames, size))
                rows[split].append((vid, label))
                clip_sources[vid] = path.stem
    out.mkdir(parents=True, exist_ok=True)
    (out / "video-labels.csv").write_text("".join(f"{c}\n" for c in CLASSES))
    for split, entries in rows.items():
        (out / f"video-{split}.csv").write_text("".join(f"{v};{lab}\n" for v, lab in entries))
    per_source = sorted(set(clip_sources.values()))
    (out / "SOURCES.json").write_text(json.dumps(
        {"how": "camera-motion clips synthesised by moving a crop window over real photographs "
                "(greenpipe.data.video.materialize_builtin)",
         "photographs": {s: licences.get(s, {}) for s in per_source},
         "clips": clip_sources}, indent=1) + "\n")
    return {
        "classes": list(CLASSES),
        "train_clips": len(rows["train"]),
        "val_clips": len(rows["validation"]),
        "train_sources": sorted({clip_sources[v] for v, _ in rows["train"]}),
        "val_sources": sorted({clip_sources[v] for v, _ in rows["validation"]}),
        "frames_per_clip": n_frames,
        "size": size,
        "group_size": len(CLASSES),  # consecutive rows of the split lists share one scene
        "pan_per_frame": list(pan),
        "zoom_per_frame": list(zoom),
    }


# --------------------------------------------------------------------------- readers


@dataclass(frozen=True)
class ClipRef:
    """One video of a split: its id, class index and where its frames are (folder or file)."""

    id: str
    label: int
    path: Path


def _find_one(root: Path, patterns: tuple[str, ...], what: str) -> Path:
    for pattern in patterns:
        hits = sorted(root.glob(pattern))
        if hits:
            return hits[0]
    raise DataError(f"{root}: no {what} (looked for {', '.join(patterns)}); expected the Jester / "
                    "Something-Something layout: <root>/*labels.csv, *train.csv, *validation.csv and frame folders")


def read_labels(root: str | Path) -> list[str]:
    """Class names in index order (``*labels.csv``, one per line)."""
    path = _find_one(Path(root), ("*labels.csv",), "labels file")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _read_rows(path: Path) -> list[tuple[str, str]]:
    text = path.read_text()
    delimiter = ";" if ";" in text.split("\n", 1)[0] else ","
    rows = []
    for n, row in enumerate(csv.reader(text.splitlines(), delimiter=delimiter), 1):
        if not row:
            continue
        if len(row) < 2:
            raise DataError(f"{path}:{n}: expected '<video id>;<class name>', got {row!r}")
        rows.append((row[0].strip(), row[1].strip()))
    return rows


def _index_videos(root: Path) -> dict[str, Path]:
    """Video id -> its frame folder or video file, anywhere under ``root``."""
    found: dict[str, Path] = {}
    for path in root.rglob("*"):
        if path.is_file() and path.suffix.lower() in VIDEO_EXTS:
            found.setdefault(path.stem, path)
        elif path.is_file() and path.suffix.lower() in FRAME_EXTS:
            found.setdefault(path.parent.name, path.parent)
    return found


def read_split(root: str | Path, split: str) -> list[ClipRef]:
    """The clips of ``split`` ("train" or "val") in CSV order."""
    root = Path(root)
    classes = read_labels(root)
    index = {c: i for i, c in enumerate(classes)}
    patterns = ("*train.csv",) if split == "train" else ("*validation.csv", "*val.csv")
    rows = _read_rows(_find_one(root, patterns, f"{split} list"))
    videos = _index_videos(root)
    clips = []
    for vid, name in rows:
        if name not in index:
            raise DataError(f"{root}: video {vid} has class {name!r}, which the labels file does not list")
        if vid not in videos:
            raise DataError(f"{root}: video {vid} of the {split} list has no frame folder or video file")
        clips.append(ClipRef(vid, index[name], videos[vid]))
    if not clips:
        raise DataError(f"{root}: the {split} list is empty")
    return clips


def read_video(path: str | Path) -> np.ndarray:
    """Every frame of a video file as (T, H, W, 3) uint8 RGB (OpenCV)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    frames = []
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    finally:
        cap.release()
    if not frames:
        raise DataError(f"{path}: OpenCV decodes no frame (unsupported codec or corrupt file); "
                        "convert it to H.264 MP4 or extract frames into a folder")
    return np.stack(frames)


def read_frames(path: Path) -> np.ndarray:
    """A frame folder (sorted by name) or video file as (T, H, W, 3) uint8 RGB."""
    import cv2

    if path.is_file():
        return read_video(path)
    frames = []
    for f in sorted(p for p in path.iterdir() if p.suffix.lower() in FRAME_EXTS):
        img = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if img is None:
            raise DataError(f"{f}: not a readable image; remove or replace it")
        frames.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    if not frames:
        raise DataError(f"{path}: no frames")
    return np.stack(frames)


def sample_indices(length: int, n_frames: int) -> np.ndarray:
    """TSN's test-time sampling: the centre frame of each of ``n_frames`` equal segments."""
    return ((np.arange(n_frames) + 0.5) * length / n_frames).astype(int).clip(0, length - 1)


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """(T, H, W, 3) -> (T, size, size, 3); unchanged when already that size."""
    import cv2

    if frames.shape[1:3] == (size, size):
        return frames
    return np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames])


def load_clip(ref: ClipRef, n_frames: int, size: int) -> np.ndarray:
    """``n_frames`` frames of ``ref`` resized to (size, size): (n_frames, size, size, 3) uint8."""
    frames = read_frames(ref.path)
    return resize_frames(frames[sample_indices(len(frames), n_frames)], size)


def load_split(root: str | Path, split: str, n_frames: int, size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """All clips of a split in memory: (clips, T, size, size, 3) uint8, labels (clips,), ids."""
    refs = read_split(root, split)
    return (np.stack([load_clip(r, n_frames, size) for r in refs]), np.array([r.label for r in refs]),
            [r.id for r in refs])


def fingerprint(root: str | Path) -> str:
    """sha256 of the split lists and labels: what a checkpoint records about its data."""
    root = Path(root)
    return files_sha256(sorted(root.glob("*.csv")), root=root)[:16]
