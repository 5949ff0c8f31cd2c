"""Procedurally drawn, labelled cartoon "faces" for tests and an explicitly labelled offline demo.

**These are not faces of people** and are never presented as such: an ellipse for the face, dots
for the eyes, a line for the mouth and a cap of hair. They stand in for UTKFace (research-only,
not redistributable) so that the CAAE pipeline can run and be tested offline. They are saved
under real UTKFace file names (``[age]_[gender]_[race]_[date&time].jpg.chip.jpg``) so the real
loader reads them.

Age changes the drawing in two known, measurable ways:

- **grey hair**: hair colour goes linearly from dark brown (age ≤ 30) to near white (age ≥ 80);
  :func:`hair_greyness` reads it back from the hair patch above the forehead;
- **wrinkles**: up to four dark forehead lines appear from age 35 on;
  :func:`wrinkle_score` measures their darkness against the skin.

Gender 1 adds long hair at the sides; race picks one of five skin tones. Example::

    img = render_face(age=70, gender=0, race=2, size=64, rng=np.random.default_rng(0))  # (64, 64, 3) uint8
    write_synthetic_utkface("runs/synthetic_utkface", count=600, image_size=128)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

SKIN = np.array([(236, 200, 170), (120, 80, 55), (230, 195, 150), (190, 140, 100), (205, 165, 130)], np.float32)
DARK_HAIR = np.array((60, 40, 25), np.float32)
GREY_HAIR = np.array((235, 235, 235), np.float32)
BACKGROUND = np.array((170, 190, 210), np.float32)

# regions (fractions of the side) the measurements read; render_face draws hair and forehead there
HAIR_PATCH = (slice(None), (0.10, 0.15), (0.42, 0.58))  # rows, cols
FOREHEAD = ((0.24, 0.35), (0.40, 0.60))


def greyness_of_age(age: float) -> float:
    """The hair's grey level in [0, 1] the renderer uses: 0 up to age 30, 1 from age 80."""
    return float(np.clip((age - 30.0) / 50.0, 0.0, 1.0))


def wrinkles_of_age(age: float) -> int:
    """Number of forehead lines: none before 35, one more every 10 years, at most four."""
    return int(np.clip((age - 25) // 10, 0, 4))


def render_face(age: int, gender: int, race: int, size: int = 128, rng: np.random.Generator | None = None) -> np.ndarray:
    """One labelled cartoon face as an ``(size, size, 3)`` uint8 RGB array (small random jitter and noise)."""
    rng = rng if rng is not None else np.random.default_rng()
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size  # (S, S) in [0, 1)
    dx, dy = rng.uniform(-0.02, 0.02, 2)
    img = np.empty((size, size, 3), np.float32)
    img[:] = BACKGROUND
    hair = (1 - greyness_of_age(age)) * DARK_HAIR + greyness_of_age(age) * GREY_HAIR
    cx, cy = 0.5 + dx, 0.56 + dy

    def ellipse(x0, y0, ax, ay):
        return ((xx - x0) / ax) ** 2 + ((yy - y0) / ay) ** 2 <= 1.0

    if gender == 1:  # long hair at the sides, behind the face
        img[ellipse(cx, cy + 0.05, 0.40, 0.40) & (yy > 0.2)] = hair
    img[ellipse(cx, 0.30 + dy, 0.34, 0.22)] = hair  # cap
    face = ellipse(cx, cy, 0.29, 0.37)
    img[face] = SKIN[race % len(SKIN)]
    for k in range(wrinkles_of_age(age)):  # forehead lines, darker with age
        y = 0.255 + 0.028 * k + dy
        line = (np.abs(yy - y) < 0.004 + 0.5 / size) & (np.abs(xx - cx) < 0.1) & face
        img[line] *= 0.55
    for ex in (-0.11, 0.11):  # eyes
        img[ellipse(cx + ex, cy - 0.04, 0.04, 0.025)] = (30, 30, 40)
    img[(np.abs(yy - (cy + 0.2)) < 0.012 + 0.5 / size) & (np.abs(xx - cx) < 0.09)] = (150, 60, 60)  # mouth
    img += rng.normal(0, 4.0, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _region(img: torch.Tensor, rows: tuple[float, float], cols: tuple[float, float]) -> torch.Tensor:
    h, w = img.shape[-2:]
    return img[..., int(rows[0] * h) : max(int(rows[1] * h), int(rows[0] * h) + 1),
               int(cols[0] * w) : max(int(cols[1] * w), int(cols[0] * w) + 1)]


def hair_greyness(images: torch.Tensor) -> torch.Tensor:
    """Mean brightness (in [0, 1]) of the hair patch of images ``(B, 3, H, W)`` in [0, 1] → ``(B,)``.

    Dark-brown hair reads about 0.16, fully grey hair about 0.92.
    """
    return _region(images, HAIR_PATCH[1], HAIR_PATCH[2]).mean(dim=(-3, -2, -1))


def wrinkle_score(images: torch.Tensor) -> torch.Tensor:
    """Forehead roughness of images ``(B, 3, H, W)``: mean absolute vertical brightness change in the forehead
    patch → ``(B,)``; smooth skin scores near 0, each extra line raises it."""
    patch = _region(images, *FOREHEAD).mean(dim=-3)  # (B, h, w)
    return (patch[..., 1:, :] - patch[..., :-1, :]).abs().mean(dim=(-2, -1))


def utkface_name(age: int, gender: int, race: int, index: int) -> str:
    """A UTKFace-style name with a made-up, unique ``date&time`` field (the index)."""
    return f"{age}_{gender}_{race}_{20170101000000000 + index}.jpg.chip.jpg"


def write_synthetic_utkface(
    root: str | Path, count: int = 600, image_size: int = 128, seed: int = 0, malformed: int = 0
) -> list[Path]:
    """Write ``count`` cartoon faces (ages 1–90 uniform, genders and races uniform) as UTKFace-named JPEGs.

    ``malformed`` extra files get broken names (for loader tests). Files already present are kept,
    so a second call is cheap. Returns the paths of the well-named files.
    """
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    (root / "README.txt").write_text(
        "SYNTHETIC cartoon faces drawn by ae_lightning.data.synthetic_faces for tests and offline demos.\n"
        "They are not photographs of people. Names follow UTKFace's [age]_[gender]_[race]_[date&time] scheme.\n"
    )
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        age, gender, race = int(rng.integers(1, 91)), int(rng.integers(0, 2)), int(rng.integers(0, 5))
        path = root / utkface_name(age, gender, race, i)
        face_rng = np.random.default_rng([seed, i])
        if not path.exists():
            Image.fromarray(render_face(age, gender, race, image_size, face_rng)).save(path, quality=95)
        paths.append(path)
    for j in range(malformed):
        bad = root / f"{20 + j}_1_{20170109150557335 + j}.jpg.chip.jpg"  # missing race field, as in the archive
        Image.fromarray(render_face(20 + j, 1, 0, image_size, rng)).save(bad, quality=95)
    return paths
