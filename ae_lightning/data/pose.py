"""SYNTHETIC 2-D image → 3-D pose data: procedural stick figures (no motion-capture data ship with the suite).

Hong et al. (2015) recover 3-D human poses from images with real motion capture (HumanEva-style); no
licensed mocap may ship here, so this module *generates* the pairs, and everything built on it says
SYNTHETIC. Numbers on these data are not comparable with the paper's.

One sample:

1. a 16-joint skeleton (:data:`JOINTS`: pelvis root, spine, neck, head, shoulders / elbows / wrists,
   hips / knees / ankles) with fixed bone lengths (:data:`BONE_LENGTHS`, in *skeleton units*: the thigh is
   0.42, the standing figure about 1.7 tall);
2. random joint angles, each uniform within an anatomical range (:data:`ANGLE_LIMITS`: knees and elbows
   bend one way only, the spine bends a little), posed by forward kinematics in the body frame
   (x: the body's left, y: up, z: where it faces);
3. a random camera azimuth: the body turned about the vertical axis, giving the pose in camera coordinates;
4. orthographic projection onto the image plane (x right, y up; depth dropped), drawn as a 64×64 grey stick
   figure: anti-aliased lines a few pixels wide, the torso and head brightest, the left limbs lighter grey
   than the right ones (so the image tells left from right, as colour and shading do in a photograph; the
   depth of each limb stays ambiguous, as in any single view).

The target is the 3-D pose in camera coordinates, root-relative (the pelvis is at 0), in skeleton units:
what the image shows, turned with the camera. Samples are a function of ``(seed, split, index)`` only
(``numpy`` generator seeded with the triple), so index ``i`` is the same sample in any set size, and the
splits draw from disjoint seed triples. Drawing is vectorised in torch (distance of every pixel to every
bone, in windows around the bones), not a Python loop over pixels: 4,000 images take 2-3 CPU-seconds.

Example::

    ds = SyntheticPoseDataset("train", size=1000)        # in memory: images (1000, 1, 64, 64), poses (1000, 16, 3)
    image, pose = ds[0]                                  # (1, 64, 64) in [0, 1], (16, 3) root-relative
    dm = PoseDataModule(train_size=3000, batch_size=64)  # batches: (images (B, 1, 64, 64), poses (B, 16, 3))
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from ae_lightning.data.common import ArrayImageDataset, ImageDataModule

JOINTS = (
    "pelvis", "spine", "neck", "head",
    "left_shoulder", "left_elbow", "left_wrist", "right_shoulder", "right_elbow", "right_wrist",
    "left_hip", "left_knee", "left_ankle", "right_hip", "right_knee", "right_ankle",
)
#: the parent of each joint in the kinematic tree (-1: the root)
PARENTS = (-1, 0, 1, 2, 2, 4, 5, 2, 7, 8, 0, 10, 11, 0, 13, 14)
#: length of the bone from each joint's parent to it, in skeleton units (0 for the root)
BONE_LENGTHS = (0.0, 0.25, 0.25, 0.2, 0.18, 0.28, 0.25, 0.18, 0.28, 0.25, 0.1, 0.42, 0.4, 0.1, 0.42, 0.4)
NUM_JOINTS = len(JOINTS)

#: uniform ranges (degrees) of the joint angles; arms and legs draw their own angles per side
ANGLE_LIMITS = {
    "spine_flexion": (-15.0, 35.0),     # bend forward (+) / back
    "spine_lateral": (-15.0, 15.0),
    "spine_twist": (-30.0, 30.0),
    "neck_flexion": (-20.0, 40.0),
    "shoulder_flexion": (-40.0, 170.0),  # arm raised forward (+) / back
    "shoulder_abduction": (0.0, 120.0),  # arm raised sideways, away from the body
    "shoulder_rotation": (-60.0, 60.0),  # about the upper arm: turns the plane the elbow bends in
    "elbow_flexion": (0.0, 145.0),       # one way only
    "hip_flexion": (-25.0, 100.0),       # thigh forward (+) / back
    "hip_abduction": (-10.0, 40.0),      # away from the body (+)
    "hip_rotation": (-30.0, 30.0),
    "knee_flexion": (0.0, 130.0),        # one way only (the shin goes back)
}
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}

#: pixels per skeleton unit at 64×64: the figure (pelvis at the centre) reaches about ±1.05 units
PIXELS_PER_UNIT_64 = 29.0
#: grey level of each bone (indexed by its child joint): torso and head 1.0, left limbs 0.8, right limbs 0.5
BONE_GREY = (0.0, 1.0, 1.0, 1.0, 1.0, 0.8, 0.8, 1.0, 0.5, 0.5, 1.0, 0.8, 0.8, 1.0, 0.5, 0.5)


def _rot(axis: str, a: torch.Tensor) -> torch.Tensor:
    """Right-handed rotations by angles ``a`` (N,) in radians about ``axis``: (N, 3, 3)."""
    c, s = torch.cos(a), torch.sin(a)
    o, z = torch.ones_like(a), torch.zeros_like(a)
    rows = {
        "x": [[o, z, z], [z, c, -s], [z, s, c]],
        "y": [[c, z, s], [z, o, z], [-s, z, c]],
        "z": [[c, -s, z], [s, c, z], [z, z, o]],
    }[axis]
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)  # (N, 3, 3)


def angle_names() -> list[str]:
    """The drawn angles in their fixed order: body angles, then each limb angle for the left and right side."""
    names = []
    for key in ANGLE_LIMITS:
        if key.startswith(("shoulder", "elbow", "hip", "knee")):
            names += [f"left_{key}", f"right_{key}"]
        else:
            names.append(key)
    return names


def draw_parameters(seed: int, split: str, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """``(angles (N, A) in radians, azimuths (N,) in radians)`` of samples ``indices`` of ``split``.

    Sample ``i`` comes from a generator seeded with ``(seed, split id, i)`` alone: the same index gives the same
    sample whatever else is drawn, and the three splits use disjoint seed triples."""
    if split not in SPLIT_IDS:
        raise ValueError(f"split must be one of {sorted(SPLIT_IDS)}, got {split!r}")
    names = angle_names()
    low = np.array([ANGLE_LIMITS[n.removeprefix("left_").removeprefix("right_")][0] for n in names])
    high = np.array([ANGLE_LIMITS[n.removeprefix("left_").removeprefix("right_")][1] for n in names])
    u = np.empty((len(indices), len(names) + 1))
    for row, i in enumerate(indices):
        u[row] = np.random.default_rng([int(seed), SPLIT_IDS[split], int(i)]).random(len(names) + 1)
    angles = np.deg2rad(low + (high - low) * u[:, :-1])  # (N, A)
    azimuth = 2 * math.pi * u[:, -1]  # (N,)
    return torch.from_numpy(angles).float(), torch.from_numpy(azimuth).float()


def forward_kinematics(angles: torch.Tensor) -> torch.Tensor:
    """Joint positions (N, 16, 3) in the body frame (x left, y up, z front), pelvis at 0, from ``angles`` (N, A)."""
    a = dict(zip(angle_names(), angles.unbind(1), strict=True))
    n = angles.shape[0]
    bone = torch.tensor(BONE_LENGTHS)
    down = torch.tensor([0.0, -1.0, 0.0])
    up = -down
    eye = torch.eye(3).expand(n, 3, 3)
    joints = [torch.zeros(n, 3) for _ in JOINTS]

    def place(j: int, rotation: torch.Tensor, direction: torch.Tensor) -> None:
        joints[j] = joints[PARENTS[j]] + bone[j] * (rotation @ direction)  # (N, 3)

    torso = _rot("y", a["spine_twist"]) @ _rot("z", a["spine_lateral"]) @ _rot("x", a["spine_flexion"])  # (N, 3, 3)
    place(1, torso, up)
    place(2, torso, up)
    place(3, torso @ _rot("x", a["neck_flexion"]), up)
    left = torch.tensor([1.0, 0.0, 0.0])
    for side, sign, (shoulder, elbow, wrist), (hip, knee, ankle) in (
        ("left", 1.0, (4, 5, 6), (10, 11, 12)), ("right", -1.0, (7, 8, 9), (13, 14, 15)),
    ):
        place(shoulder, torso, sign * left)
        # abduction away from the body (about z, signed by side), flexion forward (about -x), then the arm's own twist
        arm = (torso @ _rot("z", sign * a[f"{side}_shoulder_abduction"]) @ _rot("x", -a[f"{side}_shoulder_flexion"])
               @ _rot("y", sign * a[f"{side}_shoulder_rotation"]))
        place(elbow, arm, down)
        place(wrist, arm @ _rot("x", -a[f"{side}_elbow_flexion"]), down)  # the forearm bends forward
        place(hip, eye, sign * left)
        thigh = (_rot("z", sign * a[f"{side}_hip_abduction"]) @ _rot("x", -a[f"{side}_hip_flexion"])
                 @ _rot("y", sign * a[f"{side}_hip_rotation"]))
        place(knee, thigh, down)
        place(ankle, thigh @ _rot("x", a[f"{side}_knee_flexion"]), down)  # the shin bends back
    return torch.stack(joints, dim=1)  # (N, 16, 3)


def to_camera(body: torch.Tensor, azimuth: torch.Tensor) -> torch.Tensor:
    """Poses (N, J, 3) seen by a camera at ``azimuth`` (N,) radians about the vertical axis (camera x right, y up)."""
    return body @ _rot("y", azimuth).transpose(1, 2)  # (N, J, 3): each joint rotated by R_y(azimuth)


def project(camera: torch.Tensor, image_size: int = 64) -> torch.Tensor:
    """Pixel coordinates (N, J, 2) as (column, row) of camera-frame poses: orthographic, pelvis at the centre."""
    scale = PIXELS_PER_UNIT_64 * image_size / 64
    centre = (image_size - 1) / 2
    return torch.stack([centre + scale * camera[..., 0], centre - scale * camera[..., 1]], dim=-1)  # (N, J, 2)


def render(pixels: torch.Tensor, image_size: int = 64, line_width: float = 2.5, chunk: int = 512) -> torch.Tensor:
    """Stick-figure images (N, 1, S, S) in [0, 1] from joint pixel coordinates ``pixels`` (N, J, 2).

    Every bone is a segment parent → child of grey :data:`BONE_GREY`; a pixel's value is the largest over the
    bones of grey × coverage, coverage ``clamp(width/2 + 1/2 − distance, 0, 1)`` (an anti-aliased edge one pixel
    wide). The head is a disc (a thick stub). Vectorised: the distance of every pixel of a window around each
    bone (its bounding box, the same size for all bones) to that bone, all bones of ``chunk`` images at once,
    then one ``scatter_reduce(amax)`` into the images. Windows instead of whole images: a bone covers a few
    hundred of the 4,096 pixels, so this is ~10× less work than measuring every pixel against every bone."""
    bones = [j for j, p in enumerate(PARENTS) if p >= 0]
    parent = torch.tensor([PARENTS[j] for j in bones])
    grey = torch.tensor([BONE_GREY[j] for j in bones]).view(1, -1, 1)  # (1, S, 1)
    width = torch.tensor([2.2 * line_width if JOINTS[j] == "head" else line_width for j in bones])  # (S,)
    radius = width.view(1, -1) / 2 + 0.5  # (1, S): where the coverage reaches 0
    longest = max(BONE_LENGTHS) * PIXELS_PER_UNIT_64 * image_size / 64
    side = math.ceil(longest + 2 * float(radius.max())) + 2  # window side: any bone with its stroke fits
    offsets = torch.arange(side, dtype=torch.float32)
    win_col, win_row = (g.reshape(1, 1, -1) for g in torch.meshgrid(offsets, offsets, indexing="xy"))  # (1, 1, W)
    out = []
    for part in pixels.split(chunk):
        n = part.shape[0]
        a, b = part[:, parent], part[:, bones]  # (n, S, 2) bone ends (col, row)
        origin = (torch.minimum(a, b) - radius.unsqueeze(-1)).floor()  # (n, S, 2) the window's top-left pixel
        col = origin[..., :1] + win_col  # (n, S, W)
        row = origin[..., 1:] + win_row  # (n, S, W)
        ax, ay = a[..., :1], a[..., 1:]  # (n, S, 1)
        abx, aby = b[..., :1] - ax, b[..., 1:] - ay  # (n, S, 1)
        dx, dy = col - ax, row - ay  # (n, S, W)
        t = ((dx * abx + dy * aby) / (abx * abx + aby * aby).clamp_min(1e-9)).clamp(0, 1)  # (n, S, W)
        dist = torch.sqrt((dx - t * abx) ** 2 + (dy - t * aby) ** 2)  # (n, S, W)
        value = (radius.unsqueeze(-1) - dist).clamp(0, 1) * grey  # (n, S, W)
        inside = (col >= 0) & (col < image_size) & (row >= 0) & (row < image_size)  # (n, S, W)
        index = torch.where(inside, row * image_size + col, 0).long().view(n, -1)  # (n, S*W)
        value = torch.where(inside, value, 0).view(n, -1)  # (n, S*W)
        flat = torch.zeros(n, image_size * image_size).scatter_reduce(1, index, value, "amax")  # (n, P)
        out.append(flat)
    return torch.cat(out).view(-1, 1, image_size, image_size)  # (N, 1, S, S)


def generate(seed: int, split: str, indices, image_size: int = 64, line_width: float = 2.5) -> dict[str, torch.Tensor]:
    """SYNTHETIC samples ``indices`` of ``split``: ``image`` (N, 1, S, S), ``pose`` (N, 16, 3) camera frame,
    root-relative; ``body`` (N, 16, 3) the same pose in the body frame; ``azimuth`` (N,) radians."""
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    angles, azimuth = draw_parameters(seed, split, indices)
    body = forward_kinematics(angles)  # (N, 16, 3)
    pose = to_camera(body, azimuth)  # (N, 16, 3)
    image = render(project(pose, image_size), image_size, line_width)  # (N, 1, S, S)
    return {"image": image, "pose": pose, "body": body, "azimuth": azimuth}


class SyntheticPoseDataset(ArrayImageDataset):
    """SYNTHETIC ``(image (1, S, S), pose (16, 3))`` pairs, generated in memory at construction.

    Args:
        split: ``train``, ``val`` or ``test``: disjoint seed triples ``(seed, split id, index)``.
        size: number of samples (index ``i`` is the same sample for any ``size`` above ``i``).
        seed: the data set's seed.
        image_size: side of the square images (the figure scales with it).
        line_width: stroke width in pixels at this size.
        transform: applied to an image (1, S, S) or a gathered batch (B, 1, S, S).

    It has no files: nothing to download, no root; the same arguments give the same data on any machine.
    """

    def __init__(
        self,
        split: str = "train",
        size: int = 1000,
        seed: int = 0,
        image_size: int = 64,
        line_width: float = 2.5,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if size < 1:
            raise ValueError(f"SyntheticPoseDataset({split!r}) needs size >= 1, got {size}")
        sample = generate(seed, split, np.arange(size), image_size, line_width)
        super().__init__(sample["image"], sample["pose"], transform)
        self.split, self.seed = split, seed
        self.poses = sample["pose"]  # (N, 16, 3), the labels ArrayImageDataset returns
        self.azimuths = sample["azimuth"]  # (N,)


class PoseDataModule(ImageDataModule):
    """SYNTHETIC stick-figure images and their root-relative 3-D poses: batches ``(images (B, 1, S, S), poses (B, 16, 3))``.

    Train, val and test are generated at ``setup`` (in memory, 2-3 CPU-seconds for 4,000 samples) from disjoint
    seeds; loaders follow :class:`~ae_lightning.data.common.ImageDataModule` (seeded per-epoch shuffle, one
    gather per batch). ``image_shape`` is ``(1, image_size, image_size)``; ``pose_dim`` = 16 × 3 = 48 is what a
    pose net takes (the configs' ``in_features``).
    """

    num_joints = NUM_JOINTS
    pose_dim = 3 * NUM_JOINTS

    def __init__(
        self,
        train_size: int = 5000,
        val_size: int = 500,
        test_size: int = 1000,
        image_size: int = 64,
        line_width: float = 2.5,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        self.save_hyperparameters()
        if min(train_size, val_size, test_size) < 1:
            raise ValueError(f"PoseDataModule needs at least one sample per split, got train_size={train_size}, "
                             f"val_size={val_size}, test_size={test_size}")
        self.image_shape = (1, image_size, image_size)
        self.source = f"SYNTHETIC stick figures ({NUM_JOINTS} joints, {image_size}x{image_size}, seed {seed})"

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        hp = self.hparams
        self.train_set, self.val_set, self.test_set = (
            SyntheticPoseDataset(split, n, hp.seed, hp.image_size, hp.line_width)
            for split, n in (("train", hp.train_size), ("val", hp.val_size), ("test", hp.test_size)))
