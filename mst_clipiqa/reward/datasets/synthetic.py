"""A procedural AIGIQA-style dataset with known quality and correspondence scores.

Each scene is two coloured shapes (circle, square, triangle) placed one above
or left of the other on a background (striped, checkered, gradient, plain),
with the prompt that describes it, e.g. "a red circle above a blue square on a
striped background". Each scene is rendered clean and then with every defect
at every severity ``s`` in ``levels`` (0 < s <= 1):

- ``blur``: Gaussian blur, sigma = (0.5 + 2.5 s) * size / 64
- ``noise``: additive Gaussian noise, std = 0.02 + 0.23 s
- ``jpeg``: JPEG compression at quality round(40 - 38 s)
- ``banding``: colour quantisation to round(2 + 14 (1 - s)) levels per channel
- ``artifact``: ceil(6 s) square patches (side size / 8) replaced by random colours

Scores (see :func:`quality_score`, :func:`correspondence_score`):

- quality = 5 - 4 * w * s, with defect weight w (``DEFECT_WEIGHTS``); clean images get 5.
- correspondence = 5 - 2 * k, where k in {0, 1, 2} is the number of attributes
  (colour or shape of either object) that the prompt gets wrong. A fraction
  ``mismatch_fraction`` of the images (drawn by seed) is paired with a prompt
  with one or two wrong attributes; the others keep the true prompt (k = 0).

Scores are on 1-5 (the data set's declared label ranges). The group of each
image is its scene id (``split_by="prompt"`` keeps a scene's images together). Files go under ``root`` with a
``manifest.json``; a later call with the same settings reuses them.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from .base import QualityDataset, QualitySample

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
COLOURS = {
    "red": (0.86, 0.16, 0.16), "green": (0.16, 0.67, 0.24), "blue": (0.16, 0.31, 0.86),
    "yellow": (0.90, 0.82, 0.16), "purple": (0.55, 0.24, 0.71), "orange": (0.94, 0.55, 0.12),
}
SHAPES = ("circle", "square", "triangle")
BACKGROUNDS = ("striped", "checkered", "gradient", "plain")
RELATIONS = ("above", "left of")
DEFECT_WEIGHTS = {"blur": 1.0, "noise": 1.0, "jpeg": 0.9, "banding": 0.8, "artifact": 1.0}


@dataclass(frozen=True)
class Scene:
    """Two objects, their relation and the background."""

    colour_a: str
    shape_a: str
    relation: str
    colour_b: str
    shape_b: str
    background: str

    def prompt(self) -> str:
        return (f"a {self.colour_a} {self.shape_a} {self.relation} a {self.colour_b} "
                f"{self.shape_b} on a {self.background} background")


def quality_score(defect: str | None, severity: float) -> float:
    """Quality of an image with ``defect`` at ``severity``; 5 when ``defect`` is None."""
    if defect is None:
        return 5.0
    return float(min(5.0, max(1.0, 5.0 - 4.0 * DEFECT_WEIGHTS[defect] * severity)))


def correspondence_score(n_wrong: int) -> float:
    """Correspondence of a prompt with ``n_wrong`` wrong attributes (0, 1 or 2)."""
    return 5.0 - 2.0 * n_wrong


# --------------------------------------------------------------------------- rendering


def _random_scene(rng: np.random.Generator) -> Scene:
    colours = list(COLOURS)
    a, b = rng.choice(len(colours), size=2, replace=False)
    return Scene(colours[a], SHAPES[rng.integers(3)], RELATIONS[rng.integers(2)],
                 colours[b], SHAPES[rng.integers(3)], BACKGROUNDS[rng.integers(4)])


def _background(kind: str, size: int) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size]
    period = max(size // 8, 2)
    if kind == "striped":
        tone = np.where((y // period) % 2 == 0, 0.85, 0.55)
    elif kind == "checkered":
        tone = np.where(((y // period) + (x // period)) % 2 == 0, 0.85, 0.55)
    elif kind == "gradient":
        tone = 0.25 + 0.7 * y / (size - 1)
    else:
        tone = np.full((size, size), 0.7)
    return np.repeat(tone[..., None], 3, axis=2).astype(np.float64)


def _shape_mask(shape: str, cx: float, cy: float, r: float, size: int) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size] + 0.5
    if shape == "circle":
        return (x - cx) ** 2 + (y - cy) ** 2 <= r * r
    if shape == "square":
        return (np.abs(x - cx) <= 0.85 * r) & (np.abs(y - cy) <= 0.85 * r)
    depth = y - (cy - r)  # triangle pointing up
    return (depth >= 0) & (depth <= 2 * r) & (np.abs(x - cx) <= depth / 2)


def render_scene(scene: Scene, size: int) -> np.ndarray:
    """The clean scene as a (size, size, 3) float array in [0, 1]."""
    image = _background(scene.background, size)
    near, far, r = 0.28 * size, 0.72 * size, 0.18 * size
    centres = ((size / 2, near), (size / 2, far)) if scene.relation == "above" \
        else ((near, size / 2), (far, size / 2))
    for (cx, cy), shape, colour in zip(centres, (scene.shape_a, scene.shape_b),
                                       (scene.colour_a, scene.colour_b)):
        image[_shape_mask(shape, cx, cy, r, size)] = COLOURS[colour]
    return image


def apply_defect(image: np.ndarray, defect: str, severity: float,
                 rng: np.random.Generator) -> np.ndarray:
    """``image`` (H, W, 3 in [0, 1]) degraded by ``defect`` at ``severity`` in (0, 1]."""
    size = image.shape[0]
    if defect == "blur":
        sigma = (0.5 + 2.5 * severity) * size / 64
        return ndimage.gaussian_filter(image, sigma=(sigma, sigma, 0))
    if defect == "noise":
        return np.clip(image + rng.normal(0.0, 0.02 + 0.23 * severity, image.shape), 0.0, 1.0)
    if defect == "jpeg":
        buffer = io.BytesIO()
        Image.fromarray(_to_uint8(image)).save(buffer, "JPEG", quality=round(40 - 38 * severity))
        return np.asarray(Image.open(buffer).convert("RGB"), dtype=np.float64) / 255.0
    if defect == "banding":
        levels = round(2 + 14 * (1 - severity))
        return np.round(image * (levels - 1)) / (levels - 1)
    if defect == "artifact":
        out, side = image.copy(), max(size // 8, 2)
        for _ in range(math.ceil(6 * severity)):
            top, left = rng.integers(0, size - side + 1, size=2)
            out[top:top + side, left:left + side] = rng.random((side, side, 3))
        return out
    raise ValueError(f"unknown defect {defect!r}; expected one of {list(DEFECT_WEIGHTS)}")


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)


def _wrong_prompt(scene: Scene, n_wrong: int, rng: np.random.Generator) -> str:
    fields = rng.choice(["colour_a", "shape_a", "colour_b", "shape_b"], size=n_wrong, replace=False)
    changes = {}
    for name in fields:
        pool = list(COLOURS) if name.startswith("colour") else list(SHAPES)
        pool.remove(getattr(scene, name))
        changes[str(name)] = pool[rng.integers(len(pool))]
    return replace(scene, **changes).prompt()


# --------------------------------------------------------------------------- dataset


def _plan(n_scenes: int, levels: Sequence[float], seed: int,
          mismatch_fraction: float) -> list[dict[str, Any]]:
    """Every image to make: file name, scene, defect, severity, prompt and scores."""
    entries = []
    for k in range(n_scenes):
        scene = _random_scene(np.random.default_rng([seed, 0, k]))
        variants: list[tuple[str | None, int, float]] = [(None, 0, 0.0)]
        variants += [(d, j, s) for d in DEFECT_WEIGHTS for j, s in enumerate(levels)]
        for defect, j, severity in variants:
            entries.append({
                "file": f"s{k:03d}_clean.png" if defect is None else f"s{k:03d}_{defect}_{j}.png",
                "scene": asdict(scene), "scene_index": k, "group": f"scene{k:03d}", "defect": defect,
                "severity": severity, "level": j, "prompt": scene.prompt(),
                "quality": quality_score(defect, severity), "n_wrong": 0,
            })
    n_mismatched = round(mismatch_fraction * len(entries))
    chosen = np.random.default_rng([seed, 2]).permutation(len(entries))[:n_mismatched]
    for i in sorted(int(c) for c in chosen):
        rng = np.random.default_rng([seed, 3, i])
        entries[i]["n_wrong"] = int(rng.integers(1, 3))
        entries[i]["prompt"] = _wrong_prompt(Scene(**entries[i]["scene"]), entries[i]["n_wrong"], rng)
    for entry in entries:
        entry["correspondence"] = correspondence_score(entry["n_wrong"])
    return entries


def _render_all(root: Path, entries: Sequence[dict[str, Any]], size: int, seed: int) -> None:
    clean: dict[int, np.ndarray] = {}
    for entry in entries:
        k = entry["scene_index"]
        if k not in clean:
            clean[k] = render_scene(Scene(**entry["scene"]), size)
        image = clean[k]
        if entry["defect"] is not None:
            d = list(DEFECT_WEIGHTS).index(entry["defect"])
            rng = np.random.default_rng([seed, 1, k, d, entry["level"]])
            image = apply_defect(image, entry["defect"], entry["severity"], rng)
        Image.fromarray(_to_uint8(image)).save(root / entry["file"], compress_level=1)


def _read_manifest(root: Path) -> dict[str, Any] | None:
    try:
        return json.loads((root / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _dataset(root: Path, entries: Sequence[dict[str, Any]]) -> QualityDataset:
    samples = [QualitySample(root / e["file"], e["prompt"],
                             {"quality": e["quality"], "correspondence": e["correspondence"]},
                             e["group"]) for e in entries]
    return QualityDataset(samples, "synthetic", ("quality", "correspondence"),
                          label_ranges={"quality": (1.0, 5.0), "correspondence": (1.0, 5.0)})


def load_synthetic_dataset(root: str | Path) -> QualityDataset:
    """The synthetic set already in ``root`` with the settings it was made with, else a new default one."""
    old = _read_manifest(Path(root))
    settings = dict(old["settings"]) if old and isinstance(old.get("settings"), dict) else {}
    settings.pop("version", None)
    return make_synthetic_dataset(root, **settings)


def make_synthetic_dataset(
    root: str | Path,
    n_scenes: int = 8,
    levels: Sequence[float] = (0.25, 0.5, 0.75, 1.0),
    size: int = 64,
    seed: int = 0,
    mismatch_fraction: float = 0.25,
) -> QualityDataset:
    """Generate (or reuse) the synthetic set under ``root``; see the module docstring.

    ``n_scenes * (1 + 5 * len(levels))`` images, deterministic in all arguments.
    Files of an earlier manifest with other settings are replaced.
    """
    levels = [float(s) for s in levels]
    if n_scenes < 1 or size < 16 or not levels or any(not 0 < s <= 1 for s in levels):
        raise ValueError(f"n_scenes={n_scenes}, size={size}, levels={levels}; expected "
                         "n_scenes >= 1, size >= 16 and severities in (0, 1]")
    if len(set(levels)) != len(levels) or not 0 <= mismatch_fraction <= 1:
        raise ValueError(f"levels={levels}, mismatch_fraction={mismatch_fraction}; expected "
                         "distinct levels and a fraction in [0, 1]")
    root = Path(root)
    settings = {"version": FORMAT_VERSION, "n_scenes": n_scenes, "levels": levels,
                "size": size, "seed": seed, "mismatch_fraction": mismatch_fraction}
    old = _read_manifest(root)
    if old and old.get("settings") == settings and \
            all((root / e["file"]).is_file() for e in old["samples"]):
        return _dataset(root, old["samples"])
    entries = _plan(n_scenes, levels, seed, mismatch_fraction)
    root.mkdir(parents=True, exist_ok=True)
    (root / MANIFEST).unlink(missing_ok=True)  # an interrupted run must not look complete
    if old and isinstance(old.get("samples"), list):
        keep = {e["file"] for e in entries}
        stale = {e.get("file") for e in old["samples"] if isinstance(e, dict)} - keep
        for name in stale:
            if isinstance(name, str):
                (root / Path(name).name).unlink(missing_ok=True)
    _render_all(root, entries, size, seed)
    (root / MANIFEST).write_text(json.dumps({"settings": settings, "samples": entries}, indent=1))
    return _dataset(root, entries)
