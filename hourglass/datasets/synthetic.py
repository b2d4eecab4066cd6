"""Procedural 2D people with MPII labels: the default, download-free dataset of every command.

A person is an articulated 3D stick body (kinematic tree in MPII order, pelvis root) posed by
forward kinematics from per-family joint-angle priors, turned by a yaw angle, projected
orthographically and drawn with OpenCV as depth-ordered convex shapes (capsule limbs, rounded
torso, head ellipse with a face/hair cue) over a cluttered background, then occluded, blurred,
re-lit and noised. Every shape is a convex polygon, so the drawn pixels and the visibility labels
come from the same geometry: a joint is visible (1) when the front-most shape covering it is a
body part incident to it, occluded (0) when another part or an external occluder covers it, and
absent (-1) when it lies outside the crop.

Determinism: person ``i`` depends only on ``(seed, start + i)``: its layout (pose, placement,
occluders: everything the labels depend on) comes from ``default_rng([seed, index, 0])`` and its
appearance (colours, clutter, blur, noise) from ``default_rng([seed, index, 1])``. Chunks and
worker processes therefore produce identical bytes, and :func:`sample_poses` gives the labels
without drawing.

Coordinates: crop pixels, 0-based, the centre of pixel (row r, column c) is (x=c, y=r); the image
covers [-0.5, S-0.5] on both axes. Left/right as in MPII/LSP: a frontal person's right side is on
the image's left.
"""

from __future__ import annotations

import colorsys
import dataclasses
import math
import multiprocessing as mp
from collections.abc import Iterable
from dataclasses import dataclass, field

import cv2
import numpy as np

from hourglass.checks import Rule, check, count, non_negative, ordered, positive, probability
from hourglass.errors import AlposeError
from hourglass.joints import MPII_INDEX, MPII_JOINTS

# Bump whenever a change alters rendered bytes or labels for the same config (cache identity).
GENERATOR_VERSION = 1
CLIP_PROFILES: tuple[str, ...] = ("equal", "long_tail")

FAMILY_NAMES: tuple[str, ...] = (
    "standing",
    "walking",
    "arms_overhead",
    "crouching",
    "sitting",
    "lying",
    "inverted",
)
# Long-tailed default mixture (docs/studies/2026-11-22-quickstart-design.md).
DEFAULT_FAMILY_WEIGHTS: dict[str, float] = {
    "standing": 0.40,
    "walking": 0.30,
    "arms_overhead": 0.10,
    "crouching": 0.08,
    "sitting": 0.06,
    "lying": 0.04,
    "inverted": 0.02,
}

PART_NAMES: tuple[str, ...] = (
    "torso",
    "neck",
    "head",
    "r_upper_arm",
    "r_forearm",  # includes the right hand
    "l_upper_arm",
    "l_forearm",  # includes the left hand
    "r_thigh",
    "r_shin",  # includes the right foot
    "l_thigh",
    "l_shin",  # includes the left foot
)
PART_INDEX = {name: i for i, name in enumerate(PART_NAMES)}
OCCLUDER = -1  # part id of external occluders (and of background in the parts map)

_J = MPII_INDEX
# Body parts touching each joint: the joint is "visible" when one of these is drawn on top of it.
_INCIDENT = {
    "r_ankle": ("r_shin",),
    "r_knee": ("r_thigh", "r_shin"),
    "r_hip": ("r_thigh", "torso"),
    "l_hip": ("l_thigh", "torso"),
    "l_knee": ("l_thigh", "l_shin"),
    "l_ankle": ("l_shin",),
    "pelvis": ("torso",),
    "thorax": ("torso", "neck"),
    "upper_neck": ("neck", "head"),
    "head_top": ("head",),
    "r_wrist": ("r_forearm",),
    "r_elbow": ("r_upper_arm", "r_forearm"),
    "r_shoulder": ("r_upper_arm", "torso"),
    "l_shoulder": ("l_upper_arm", "torso"),
    "l_elbow": ("l_upper_arm", "l_forearm"),
    "l_wrist": ("l_forearm",),
}
JOINT_PARTS: tuple[frozenset[int], ...] = tuple(
    frozenset(PART_INDEX[p] for p in _INCIDENT[name]) for name in MPII_JOINTS
)

# Segment lengths as fractions of stature H: Drillis, Contini & Bluestein (1964) as drawn in
# Winter, "Biomechanics and Motor Control of Human Movement" (4th ed. 2009), Fig. 4.1: chin 0.870,
# shoulder 0.818, hip joint 0.530, knee 0.285, ankle 0.039; upper arm 0.186, forearm 0.146,
# hand 0.108, shoulder width 0.259, hip width 0.191, foot length 0.152. Joint centres sit a little
# inside the breadths (shoulder, hip half-widths below are hand-set).
SEGMENT = {
    "torso": 0.288,  # pelvis (hip level) -> thorax (shoulder level)
    "neck": 0.052,  # thorax -> upper neck (chin level)
    "head": 0.130,  # upper neck -> head top
    "shoulder": 0.110,  # thorax -> shoulder joint, sideways
    "hip": 0.080,  # pelvis -> hip joint, sideways
    "upper_arm": 0.186,
    "forearm": 0.146,
    "thigh": 0.245,
    "shin": 0.246,
    "hand": 0.070,  # drawn hand blob beyond the wrist (shorter than 0.108: fingers curled)
    "foot": 0.110,
}
# Half-thicknesses in units of H (hand-set to look like a slim adult at 1.0x thickness).
RADIUS = {
    "torso": 0.045,  # rounding of the shoulder-hip quadrilateral
    "neck": 0.030,
    "head_half_width": 0.048,
    "upper_arm": 0.034,
    "forearm": 0.028,
    "hand": 0.026,
    "thigh": 0.054,
    "shin": 0.040,
    "foot": 0.024,
}
# Skin tones (RGB), roughly spanning Fitzpatrick types I-VI; hair colours (RGB).
SKIN_TONES = np.array(
    [
        [255, 224, 196],
        [241, 194, 160],
        [224, 172, 130],
        [198, 134, 96],
        [160, 104, 70],
        [120, 76, 50],
        [88, 56, 38],
    ],
    np.float32,
)
HAIR_COLOURS = np.array(
    [[20, 16, 14], [60, 40, 25], [110, 75, 40], [190, 160, 110], [130, 130, 130], [150, 60, 30]],
    np.float32,
)

_SHIFT = 4  # fixed-point fractional bits for OpenCV drawing (1/16 px)
_VMAX = 32  # vertices per padded convex polygon
_CAPSULE_ARC = 9  # vertices per capsule end cap
_ARC = np.linspace(-math.pi / 2, math.pi / 2, _CAPSULE_ARC)
_ARC_COS, _ARC_SIN = np.cos(_ARC)[None, :, None], np.sin(_ARC)[None, :, None]
_RING24 = np.linspace(0, 2 * math.pi, 24, endpoint=False)
_RING24_COS, _RING24_SIN = np.cos(_RING24)[:, None], np.sin(_RING24)[:, None]
_DISC8 = np.stack(
    [
        np.cos(np.linspace(0, 2 * math.pi, 8, endpoint=False)),
        np.sin(np.linspace(0, 2 * math.pi, 8, endpoint=False)),
    ],
    axis=1,
)


@dataclass
class SyntheticConfig:
    """Difficulty knobs of the synthetic set; every field is plain so a Hydra YAML can set it."""

    size: int = 64  # crop side S in pixels (64, 128 and 256 are tested)
    supersample: int = 2  # draw at this factor, then cv2.INTER_AREA down (anti-aliasing)
    # Longest side of the person's box as a fraction of S. 0.70-0.95 per the prototype:
    # with 0.55-0.85 the head-normalised PCKh threshold became too small to learn.
    extent_min: float = 0.70
    extent_max: float = 0.95
    limb_jitter: float = 0.12  # each segment length scaled by U(1 - j, 1 + j)
    thickness_min: float = 0.85  # per-person limb-thickness factor range
    thickness_max: float = 1.25
    family_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_FAMILY_WEIGHTS))
    angle_jitter_deg: float = 5.0  # Gaussian jitter added to every family-prior joint angle
    rotation_deg: float = 10.0  # global in-plane rotation U(-r, r) on top of the family's own
    back_view_prob: float = 0.2  # frontal families seen from behind (left/right swap sides)
    occluder_prob: float = 0.35  # chance of external occluders, each placed over a random joint
    occluder_max: int = 2  # 1..occluder_max occluders when present
    occluder_size_min: float = 0.12  # occluder size as a fraction of S
    occluder_size_max: float = 0.30
    clutter_min: int = 2  # background shapes per image (bars, blobs, boxes, polygons, lines)
    clutter_max: int = 10
    distractor_prob: float = 0.4  # chance that a clutter shape is a limb-like capsule bar
    texture_prob: float = 0.4  # chance that a garment is striped or blotchy instead of plain
    blur_prob: float = 0.3
    blur_sigma_max: float = 1.0  # Gaussian sigma U(0.3, max) in output pixels
    noise_sigma_max: float = 6.0  # per-pixel Gaussian noise, sigma U(0, max) in 0-255 units
    contrast_min: float = 0.7  # image * c + b
    contrast_max: float = 1.3
    brightness_max: float = 30.0  # b ~ U(-max, max)
    truncation_prob: float = 0.10  # person shifted so some joints leave the crop
    truncation_min: float = 0.10  # fraction of the person's extent pushed out of the crop
    truncation_max: float = 0.35
    # Redundancy, as in pose sets cut from video (MPII's images come from YouTube videos):
    # training persons come in clips of `clip_length` frames that share the person, pose, clothes
    # and background; each frame moves the person slightly (shift, zoom, rotation) in the static
    # scene. 1 = every person independent. Validation and test persons are always independent.
    clip_length: int = 1
    # "equal": every clip has clip_length frames. "long_tail": clip lengths halve octave by
    # octave from clip_length down to 1 frame, with 2^k clips of length clip_length / 2^k, so
    # every octave holds about the same number of frames and the number of clips of length L
    # falls as 1/L: a few long videos and many short ones, as in sets cut from video.
    clip_profile: str = "equal"
    clip_shift: float = 0.04  # per-frame camera shift, fraction of S per axis
    clip_scale: float = 0.05  # per-frame zoom U(1 - s, 1 + s)
    clip_rotation_deg: float = 4.0  # per-frame in-plane rotation U(-r, r)

    def validate(self) -> None:
        """Raise one AlposeError line on a setting that cannot render: a knob of the wrong type or
        out of its range (:data:`KNOB_RULES`), an empty range, bad family names."""
        for name, rule in KNOB_RULES.items():
            check(knob_key(name), getattr(self, name), rule, knob_hint(name))
        if not isinstance(self.clip_profile, str) or self.clip_profile not in CLIP_PROFILES:
            raise AlposeError(
                f"unknown clip_profile '{self.clip_profile}'; known: {', '.join(CLIP_PROFILES)}"
            )
        if not isinstance(self.family_weights, dict):
            raise AlposeError(
                f"dataset.generator.family_weights={self.family_weights!r} is not allowed: it "
                "must map pose families to weights, e.g. {lying: 1.0}"
            )
        unknown = sorted(set(self.family_weights) - set(FAMILY_NAMES))
        if unknown:
            raise AlposeError(f"unknown pose families {unknown}; known: {', '.join(FAMILY_NAMES)}")
        for family, weight in self.family_weights.items():
            key = f"family_weights.{family}"
            check(knob_key(key), weight, non_negative(), knob_hint("family_weights"))
        if sum(float(w) for w in self.family_weights.values()) <= 0:
            raise AlposeError("family_weights must be non-negative with a positive sum")
        for low, high in _KNOB_RANGES:
            ordered(
                knob_key(low),
                getattr(self, low),
                knob_key(high),
                getattr(self, high),
                knob_hint(low),
            )

    def family_cdf(self) -> np.ndarray:
        """Cumulative family probabilities in FAMILY_NAMES order (for inverse-CDF sampling)."""
        w = np.array([float(self.family_weights.get(f, 0.0)) for f in FAMILY_NAMES])
        return np.cumsum(w / w.sum())


def knob_key(name: str) -> str:
    """The config key of a generator knob (the crop side is ``dataset.size``)."""
    return "dataset.size" if name == "size" else f"dataset.generator.{name}"


def knob_hint(name: str) -> str:
    """How to set a generator knob, for an error line."""
    if name == "size":
        return "pass `--size N` to `alpose prepare synthetic` or dataset.size=N to `alpose run`/`train`"
    return (
        f"pass `--set {name}=VALUE` to `alpose prepare synthetic` or "
        f"dataset.generator.{name}=VALUE to `alpose run`/`train`"
    )


# What each generator knob allows (its type and range); the error names the knob and the value.
KNOB_RULES: dict[str, Rule] = {
    "size": count(8, what="a crop side in pixels"),
    "supersample": count(1),
    "extent_min": Rule(low=0, high=2, low_open=True, what="a fraction of the crop side"),
    "extent_max": Rule(low=0, high=2, low_open=True, what="a fraction of the crop side"),
    "limb_jitter": Rule(low=0, high=1, high_open=True, what="a relative jitter"),
    "thickness_min": positive(),
    "thickness_max": positive(),
    "angle_jitter_deg": Rule(low=0, high=180, what="an angle in degrees"),
    "rotation_deg": Rule(low=0, high=180, what="an angle in degrees"),
    "back_view_prob": probability(),
    "occluder_prob": probability(),
    "occluder_max": count(1),
    "occluder_size_min": Rule(low=0, high=1, low_open=True, what="a fraction of the crop side"),
    "occluder_size_max": Rule(low=0, high=1, low_open=True, what="a fraction of the crop side"),
    "clutter_min": count(0),
    "clutter_max": count(0),
    "distractor_prob": probability(),
    "texture_prob": probability(),
    "blur_prob": probability(),
    "blur_sigma_max": non_negative(what="a blur sigma in pixels"),
    "noise_sigma_max": non_negative(what="a noise sigma in 0-255 units"),
    "contrast_min": non_negative(),
    "contrast_max": non_negative(),
    "brightness_max": Rule(low=0, high=255, what="a brightness offset in 0-255 units"),
    "truncation_prob": probability(),
    "truncation_min": probability(),
    "truncation_max": probability(),
    "clip_length": count(1),
    "clip_shift": Rule(low=0, high=1, what="a fraction of the crop side"),
    "clip_scale": Rule(low=0, high=1, high_open=True, what="a relative zoom"),
    "clip_rotation_deg": Rule(low=0, high=180, what="an angle in degrees"),
}
# (lower, upper) knob pairs of one range.
_KNOB_RANGES = (
    ("extent_min", "extent_max"),
    ("thickness_min", "thickness_max"),
    ("occluder_size_min", "occluder_size_max"),
    ("clutter_min", "clutter_max"),
    ("contrast_min", "contrast_max"),
    ("truncation_min", "truncation_max"),
)


@dataclass(frozen=True)
class FamilyPrior:
    """Uniform ranges (degrees) of one pose family's angles; abduction is away from the midline,
    flexion is forward (elbows bend forward, knees backward by ``knee_flex``)."""

    torso_pitch: tuple[float, float] = (-5, 10)  # forward lean of the upper body
    torso_roll: tuple[float, float] = (-6, 6)  # sideways lean
    head_pitch: tuple[float, float] = (-15, 15)
    head_roll: tuple[float, float] = (-12, 12)
    arm_abd: tuple[float, float] = (3, 30)
    arm_flex: tuple[float, float] = (-15, 20)
    elbow_abd: tuple[float, float] = (-25, 10)  # forearm abduction relative to the upper arm
    elbow_flex: tuple[float, float] = (0, 45)
    leg_abd: tuple[float, float] = (0, 12)
    leg_flex: tuple[float, float] = (-8, 10)
    knee_abd: tuple[float, float] = (-5, 5)
    knee_flex: tuple[float, float] = (0, 15)
    yaw: tuple[float, float] = (0, 40)  # |yaw| from frontal, random sign
    back_view: bool = True  # may be seen from behind (yaw + 180) with back_view_prob
    image_roll: tuple[float, float] = (0, 0)  # |in-plane rotation| of the family, random sign
    gait: bool = False  # walking: legs and arms swing in anti-phase


# Hand-set priors; lying and inverted differ from standing in limb angles, not only in roll.
FAMILY_PRIORS: dict[str, FamilyPrior] = {
    "standing": FamilyPrior(),
    "walking": FamilyPrior(
        torso_pitch=(0, 12),
        arm_abd=(3, 15),
        elbow_abd=(-10, 5),
        elbow_flex=(10, 50),
        leg_abd=(0, 6),
        leg_flex=(15, 35),  # stride amplitude
        yaw=(55, 125),
        back_view=False,
        gait=True,
    ),
    "arms_overhead": FamilyPrior(
        arm_abd=(135, 185),
        arm_flex=(-20, 30),
        elbow_abd=(0, 70),
        elbow_flex=(0, 30),
        leg_abd=(0, 22),
    ),
    "crouching": FamilyPrior(
        torso_pitch=(15, 45),
        arm_abd=(5, 40),
        arm_flex=(20, 80),
        elbow_flex=(10, 90),
        leg_abd=(15, 45),
        leg_flex=(70, 110),
        knee_flex=(100, 150),
        yaw=(0, 180),
        back_view=False,
    ),
    "sitting": FamilyPrior(
        torso_pitch=(-15, 10),
        arm_abd=(0, 25),
        arm_flex=(10, 60),
        elbow_flex=(30, 90),
        leg_abd=(0, 15),
        leg_flex=(75, 100),
        knee_flex=(70, 100),
        yaw=(30, 120),
        back_view=False,
    ),
    "lying": FamilyPrior(
        arm_abd=(0, 120),
        arm_flex=(-20, 40),
        elbow_flex=(0, 60),
        leg_abd=(0, 30),
        leg_flex=(-10, 30),
        knee_flex=(0, 60),
        image_roll=(70, 110),
    ),
    "inverted": FamilyPrior(
        torso_pitch=(-10, 10),
        arm_abd=(150, 185),
        arm_flex=(-20, 20),
        elbow_abd=(-10, 10),
        elbow_flex=(0, 20),
        leg_abd=(0, 35),
        leg_flex=(-30, 30),
        knee_flex=(0, 40),
        image_roll=(155, 205),
    ),
}


@dataclass
class Shape:
    """A convex polygon in crop pixels, drawn in list order; ``part`` is a PART_NAMES index or
    OCCLUDER; ``depth`` is the camera-facing coordinate used for shading (units of H)."""

    poly: np.ndarray  # (V, 2) float64
    part: int
    depth: float = 0.0
    role: str = ""  # appearance slot: skin, shirt, pants, hair, face, shoe, occluder


@dataclass
class Scene:
    """Everything the labels depend on for one person: joints, drawing list, labels."""

    joints: np.ndarray  # (16, 2) float32 crop pixels
    visibility: np.ndarray  # (16,) int8
    head_box: np.ndarray  # (4,) float32 x1, y1, x2, y2
    family: int
    yaw: float  # degrees; cos(yaw) > 0 is frontal
    shapes: list[Shape]
    sleeve_short: bool
    shorts: bool


@dataclass
class PoseSet:
    """Labels of N synthetic people (what :func:`sample_poses` returns)."""

    joints: np.ndarray  # (N, 16, 2) float32
    visibility: np.ndarray  # (N, 16) int8
    head_boxes: np.ndarray  # (N, 4) float32
    family: np.ndarray  # (N,) int16
    yaw: np.ndarray  # (N,) float32 degrees
    index: np.ndarray  # (N,) int64: the stream index start + i
    family_names: tuple[str, ...] = FAMILY_NAMES


@dataclass
class SyntheticSet(PoseSet):
    """Rendered images plus labels; ``parts`` (N,S,S) int8 = top body part per pixel, -1 none."""

    images: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0, 3), np.uint8))
    parts: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.images)


# ----------------------------------------------------------------------------------------------
# Pose sampling (3D forward kinematics, orthographic projection)


def _rot_x(deg: float) -> np.ndarray:
    """Pitch: positive tips the body's up axis (-y) toward its front (+z)."""
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[1, 0, 0], [0, c, s], [0, -s, c]])


def _rot_z(deg: float) -> np.ndarray:
    """Roll: positive tips the up axis (-y) toward the person's left (+x)."""
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _rot_y(deg: float) -> np.ndarray:
    """Yaw: turns the person's front (+z) toward the image's +x."""
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _limb_dir(side: int, abd: float, flex: float) -> np.ndarray:
    """Unit vector of a limb hanging down (+y), abducted toward ``side`` (+1 left) and flexed
    forward (+z); body frame x = person's left, y = down, z = forward."""
    a, f = math.radians(abd), math.radians(flex)
    return np.array([side * math.sin(a) * math.cos(f), math.cos(a) * math.cos(f), math.sin(f)])


class _Draw:
    """Draws for pose sampling from pre-drawn buffers (one rng call per buffer: fast and
    deterministic); a range draw is uniform plus Gaussian jitter."""

    def __init__(self, rng: np.random.Generator, jitter: float, size: int = 64):
        self.rng, self.jitter, self.size = rng, jitter, size
        self._refill()

    def _refill(self) -> None:
        self.u = self.rng.random(self.size).tolist()
        self.g = self.rng.standard_normal(self.size).tolist()
        self.i = 0

    def _next(self) -> tuple[float, float]:
        if self.i == self.size:
            self._refill()
        self.i += 1
        return self.u[self.i - 1], self.g[self.i - 1]

    def __call__(self, rng_range: tuple[float, float]) -> float:
        u, g = self._next()
        lo, hi = rng_range
        return lo + (hi - lo) * u + self.jitter * g

    def uniform(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * self._next()[0]

    def normal(self, sd: float) -> float:
        return sd * self._next()[1]

    def sign(self) -> float:
        return 1.0 if self._next()[0] < 0.5 else -1.0

    def signed(self, rng_range: tuple[float, float]) -> float:
        """A magnitude from the range with a random sign."""
        return self(rng_range) * self.sign()


def _pose_3d(prior: FamilyPrior, draw: _Draw, lengths: dict[str, float]) -> np.ndarray:
    """Joint positions (16, 3) in body units from a family prior (pelvis at the origin)."""
    p = np.zeros((16, 3))
    torso = _rot_z(draw(prior.torso_roll)) @ _rot_x(draw(prior.torso_pitch))
    up = np.array([0.0, -1.0, 0.0])
    p[_J["thorax"]] = torso @ up * lengths["torso"]
    head = torso @ _rot_z(draw(prior.head_roll)) @ _rot_x(draw(prior.head_pitch))
    p[_J["upper_neck"]] = p[_J["thorax"]] + head @ up * lengths["neck"]
    p[_J["head_top"]] = p[_J["upper_neck"]] + head @ up * lengths["head"]

    leg_flex = {1: draw(prior.leg_flex), -1: draw(prior.leg_flex)}
    arm_flex = {1: draw(prior.arm_flex), -1: draw(prior.arm_flex)}
    knee_flex = {1: draw(prior.knee_flex), -1: draw(prior.knee_flex)}
    if prior.gait:  # one leg forward, the other back with a bent knee; arms swing opposite
        stride, lead = leg_flex[1], int(draw.sign())
        leg_flex = {lead: stride, -lead: -stride * draw.uniform(0.6, 1.0)}
        knee_flex = {lead: draw.uniform(0, 20), -lead: draw.uniform(20, 65)}
        arm_flex = {s: -0.8 * leg_flex[s] + draw.normal(8) for s in (1, -1)}

    for side, prefix in ((-1, "r_"), (1, "l_")):
        shoulder = p[_J["thorax"]] + torso @ np.array([side * lengths["shoulder"], 0.01, 0.0])
        abd = draw(prior.arm_abd)
        upper = torso @ _limb_dir(side, abd, arm_flex[side])
        fore_abd, fore_flex = abd + draw(prior.elbow_abd), arm_flex[side] + draw(prior.elbow_flex)
        fore = torso @ _limb_dir(side, fore_abd, fore_flex)
        p[_J[prefix + "shoulder"]] = shoulder
        p[_J[prefix + "elbow"]] = shoulder + upper * lengths["upper_arm"]
        p[_J[prefix + "wrist"]] = p[_J[prefix + "elbow"]] + fore * lengths["forearm"]

        hip = np.array([side * lengths["hip"], 0.0, 0.0])
        abd = draw(prior.leg_abd)
        thigh = _limb_dir(side, abd, leg_flex[side])
        shin = _limb_dir(side, abd + draw(prior.knee_abd), leg_flex[side] - knee_flex[side])
        p[_J[prefix + "hip"]] = hip
        p[_J[prefix + "knee"]] = hip + thigh * lengths["thigh"]
        p[_J[prefix + "ankle"]] = p[_J[prefix + "knee"]] + shin * lengths["shin"]
    return p


def _capsule_polys(a: np.ndarray, b: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Convex polygons (K, 2*_CAPSULE_ARC, 2) of capsules from a to b with radius r."""
    d = b - a
    length = np.linalg.norm(d, axis=1, keepdims=True)
    u = np.where(length > 1e-9, d / np.maximum(length, 1e-9), np.array([[1.0, 0.0]]))
    n = np.stack([-u[:, 1], u[:, 0]], axis=1)
    rr = r[:, None, None]
    arc = rr * (_ARC_COS * u[:, None] + _ARC_SIN * n[:, None])
    cap_b, cap_a = b[:, None] + arc, a[:, None] - arc
    return np.concatenate([cap_b, cap_a], axis=1)


def _ellipse_poly(centre: np.ndarray, axis_u: np.ndarray, a: float, b: float) -> np.ndarray:
    """24-vertex polygon of an ellipse with semi-axis a along unit vector axis_u, b across."""
    n = np.array([-axis_u[1], axis_u[0]])
    return centre + (a * _RING24_COS) * axis_u + (b * _RING24_SIN) * n


def _rounded_quad(corners: np.ndarray, r: float) -> np.ndarray:
    """Convex hull of discs of radius r around the corners (the torso outline)."""
    pts = (corners[:, None, :] + _DISC8[None] * r).reshape(-1, 2).astype(np.float32)
    return cv2.convexHull(pts)[:, 0, :].astype(np.float64)


_LIMBS = (  # (part, joint a, joint b, radius key, appearance role)
    ("neck", "thorax", "upper_neck", "neck", "skin"),
    ("r_upper_arm", "r_shoulder", "r_elbow", "upper_arm", "shirt"),
    ("r_forearm", "r_elbow", "r_wrist", "forearm", "sleeve"),  # skin for short sleeves
    ("l_upper_arm", "l_shoulder", "l_elbow", "upper_arm", "shirt"),
    ("l_forearm", "l_elbow", "l_wrist", "forearm", "sleeve"),
    ("r_thigh", "r_hip", "r_knee", "thigh", "pants"),
    ("r_shin", "r_knee", "r_ankle", "shin", "leg"),  # skin for shorts
    ("l_thigh", "l_hip", "l_knee", "thigh", "pants"),
    ("l_shin", "l_knee", "l_ankle", "shin", "leg"),
    # Hands and feet extend the forearm/shin parts; their far ends are extra points 16-19.
    ("r_forearm", "r_wrist", 16, "hand", "skin"),
    ("l_forearm", "l_wrist", 17, "hand", "skin"),
    ("r_shin", "r_ankle", 18, "foot", "shoe"),
    ("l_shin", "l_ankle", 19, "foot", "shoe"),
)


def _point_index(name: str | int) -> int:
    return name if isinstance(name, int) else _J[name]


_LIMB_A = np.array([_point_index(a) for _, a, _, _, _ in _LIMBS])
_LIMB_B = np.array([_point_index(b) for _, _, b, _, _ in _LIMBS])
_LIMB_R = np.array([RADIUS[k] for _, _, _, k, _ in _LIMBS])
_LIMB_PART = [PART_INDEX[p] for p, _, _, _, _ in _LIMBS]
# Draw-order tie breaks (units of H): arms in front of a frontal torso, thighs behind it,
# lower segments after upper ones (elbows and knees show both), hands/feet after their limb.
_BIAS = {"neck": 0.002, "upper_arm": 0.004, "forearm": 0.006, "hand": 0.007}
_BIAS.update({"thigh": -0.006, "shin": -0.004, "foot": -0.003})
_LIMB_BIAS = np.array([_BIAS[k] for _, _, _, k, _ in _LIMBS])
_TORSO_CORNERS = [_J["r_shoulder"], _J["l_shoulder"], _J["l_hip"], _J["r_hip"]]


def _extremities(p3: np.ndarray, lengths: dict[str, float]) -> np.ndarray:
    """Ends of the hands (along the forearm) and feet (forward, slightly down): (4, 3)."""
    fore = p3[[_J["r_wrist"], _J["l_wrist"]]] - p3[[_J["r_elbow"], _J["l_elbow"]]]
    fore /= np.maximum(np.linalg.norm(fore, axis=1, keepdims=True), 1e-6)
    hands = p3[[_J["r_wrist"], _J["l_wrist"]]] + fore * lengths["hand"]
    feet = p3[[_J["r_ankle"], _J["l_ankle"]]] + np.array([0.0, 0.02, lengths["foot"]])
    return np.concatenate([hands, feet])


def _body_shapes(
    p3: np.ndarray, yaw: float, roll: float, thick: float, lengths: dict[str, float]
) -> tuple[np.ndarray, list[Shape], np.ndarray]:
    """Project the 3D joints and build depth-sorted body shapes in body units (y down).

    Returns the 2D joints (16, 2), the shapes, and the head ellipse polygon (for the head box).
    """
    c, s = math.cos(math.radians(roll)), math.sin(math.radians(roll))
    rot2 = np.array([[c, -s], [s, c]])
    yaw_m = _rot_y(yaw)
    cam = np.concatenate([p3, _extremities(p3, lengths)]) @ yaw_m.T
    xy, z = cam[:, :2] @ rot2.T, cam[:, 2]

    items: list[tuple[float, int, Shape]] = []  # (depth key, insertion order, shape)
    torso_z = float(z[_TORSO_CORNERS].mean())
    torso = _rounded_quad(xy[_TORSO_CORNERS], RADIUS["torso"] * thick)
    items.append((torso_z, 0, Shape(torso, PART_INDEX["torso"], torso_z, "shirt")))
    polys = _capsule_polys(xy[_LIMB_A], xy[_LIMB_B], _LIMB_R * thick)
    depth = ((z[_LIMB_A] + z[_LIMB_B]) / 2).tolist()
    key = (np.array(depth) + _LIMB_BIAS).tolist()
    key[0] = max(key[0], torso_z + _BIAS["neck"])  # the neck always emerges over the torso
    for k, (_, _, _, _, role) in enumerate(_LIMBS):
        items.append((key[k], len(items), Shape(polys[k], _LIMB_PART[k], depth[k], role)))

    # Head: ellipse from upper neck to head top (slightly larger so both joints lie inside),
    # hair over the whole head and a face patch toward the facing direction when visible.
    neck_xy, top_xy = xy[_J["upper_neck"]], xy[_J["head_top"]]
    axis = top_xy - neck_xy
    alen = math.hypot(axis[0], axis[1])
    axis_u = axis / alen if alen > 1e-6 else np.array([0.0, -1.0])
    half_w = RADIUS["head_half_width"] * thick**0.3
    semi_a = max(0.54 * alen, half_w * 1.05)
    centre = (neck_xy + top_xy) / 2
    head_poly = _ellipse_poly(centre, axis_u, semi_a, half_w)
    head_z = float(z[_J["upper_neck"]])
    head, head_key = PART_INDEX["head"], max(head_z, torso_z) + 0.003  # head over torso and neck
    items.append((head_key, len(items), Shape(head_poly, head, head_z, "hair")))
    facing = math.cos(math.radians(yaw))
    if facing > -0.25:  # some of the face shows, shifted toward where the person faces
        width = half_w * (0.55 + 0.25 * max(facing, 0.0))
        side_u = np.array([-axis_u[1], axis_u[0]])
        fwd = rot2 @ yaw_m[:2, 2]  # projected facing direction
        face_c = centre - axis_u * semi_a * 0.18 + side_u * float(fwd @ side_u) * half_w * 0.45
        face = _ellipse_poly(face_c, axis_u, semi_a * 0.68, width)
        items.append((head_key + 0.0001, len(items), Shape(face, head, head_z, "face")))

    items.sort(key=lambda it: (it[0], it[1]))
    return xy[:16], [it[2] for it in items], head_poly


def _pad_polys(shapes: list[Shape]) -> np.ndarray:
    """Stack polygons to (K, _VMAX, 2), padding with the last vertex (degenerate edges)."""
    out = np.empty((len(shapes), _VMAX, 2))
    for k, sh in enumerate(shapes):
        v = len(sh.poly)
        out[k, :v] = sh.poly
        out[k, v:] = sh.poly[-1]
    return out


def points_in_polys(points: np.ndarray, polys: np.ndarray) -> np.ndarray:
    """(P, K) bool: point p inside convex polygon k (either winding; boundary counts as inside)."""
    px, py = polys[..., 0], polys[..., 1]  # (K, V)
    ex = np.concatenate([px[:, 1:], px[:, :1]], axis=1) - px
    ey = np.concatenate([py[:, 1:], py[:, :1]], axis=1) - py
    sign = np.where((px * (py + ey) - py * (px + ex)).sum(1) >= 0, 1.0, -1.0)[:, None]
    ex, ey = ex * sign, ey * sign
    qx, qy = points[:, 0, None, None], points[:, 1, None, None]  # (P, 1, 1)
    cross = ex * (qy - py) - ey * (qx - px)  # (P, K, V)
    return (cross >= -1e-9).all(axis=2)


# _INCIDENT_TABLE[j, part + 1] is True when part (or -1 = occluder/nothing) is incident to j.
_INCIDENT_TABLE = np.zeros((len(MPII_JOINTS), len(PART_NAMES) + 1), bool)
for _j, _parts in enumerate(JOINT_PARTS):
    _INCIDENT_TABLE[_j, [p + 1 for p in _parts]] = True


def visibility_from_shapes(joints: np.ndarray, shapes: list[Shape], size: int) -> np.ndarray:
    """Visibility (16,) int8: -1 outside the crop, 1 if the front-most shape covering the joint
    is incident to it, else 0."""
    inside = points_in_polys(joints, _pad_polys(shapes))  # (16, K)
    parts = np.array([sh.part for sh in shapes] + [OCCLUDER])
    k = len(shapes)
    top = np.where(inside.any(1), k - 1 - np.argmax(inside[:, ::-1], axis=1), k)
    vis = _INCIDENT_TABLE[np.arange(len(joints)), parts[top] + 1].astype(np.int8)
    outside = np.any((joints < -0.5) | (joints > size - 0.5), axis=1)
    vis[outside] = -1
    return vis


def _segment_lengths(rng: np.random.Generator, jitter: float) -> dict[str, float]:
    """Per-person segment lengths (units of H), each scaled by U(1 - jitter, 1 + jitter)."""
    scale = rng.uniform(1 - jitter, 1 + jitter, len(SEGMENT))
    return {k: v * float(f) for (k, v), f in zip(SEGMENT.items(), scale, strict=True)}


def _sample_yaw(prior: FamilyPrior, rng: np.random.Generator, cfg: SyntheticConfig) -> float:
    """Yaw in degrees: the family's |yaw| range with a random sign, maybe seen from behind."""
    yaw = float(rng.uniform(*prior.yaw)) * (1.0 if rng.random() < 0.5 else -1.0)
    if prior.back_view and rng.random() < cfg.back_view_prob:
        yaw += 180.0
    return (yaw + 180.0) % 360.0 - 180.0


def _occluders(rng: np.random.Generator, joints: np.ndarray, cfg: SyntheticConfig) -> list[Shape]:
    """External occluders (rectangles, ellipses, convex blobs) each centred near a random joint."""
    if rng.random() >= cfg.occluder_prob:
        return []
    s = cfg.size
    inside = np.flatnonzero(np.all((joints >= 0) & (joints <= s - 1), axis=1))
    if len(inside) == 0:
        return []
    shapes = []
    for _ in range(int(rng.integers(1, cfg.occluder_max + 1))):
        target = joints[rng.choice(inside)]
        size = rng.uniform(cfg.occluder_size_min, cfg.occluder_size_max) * s
        centre = target + rng.uniform(-0.3, 0.3, 2) * size
        shapes.append(Shape(_random_convex(rng, centre, size), OCCLUDER, 1.0, "occluder"))
    return shapes


def _random_convex(rng: np.random.Generator, centre: np.ndarray, size: float) -> np.ndarray:
    """A random rectangle, ellipse or convex blob of about ``size`` across."""
    kind = rng.integers(3)
    angle = rng.uniform(0, math.pi)
    u = np.array([math.cos(angle), math.sin(angle)])
    half = size / 2 * rng.uniform(0.5, 1.0, 2)
    if kind == 0:
        n = np.array([-u[1], u[0]])
        signs = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]])
        return centre + signs[:, :1] * half[0] * u + signs[:, 1:] * half[1] * n
    if kind == 1:
        return _ellipse_poly(centre, u, half[0], half[1])
    pts = centre + rng.normal(0, size / 3, (7, 2))
    return cv2.convexHull(pts.astype(np.float32))[:, 0, :].astype(np.float64)


def _place(
    xy: np.ndarray, shapes: list[Shape], rng: np.random.Generator, cfg: SyntheticConfig
) -> tuple[float, np.ndarray]:
    """Scale and offset mapping body units to crop pixels (person fills the crop, maybe cut)."""
    pts = np.concatenate([sh.poly for sh in shapes] + [xy])
    lo, hi = pts.min(0), pts.max(0)
    extent = float(rng.uniform(cfg.extent_min, cfg.extent_max))
    scale = extent * cfg.size / max(float((hi - lo).max()), 1e-6)
    box = (hi - lo) * scale
    slack = np.maximum(cfg.size - box, 0.0)
    corner = rng.uniform(0, 1, 2) * slack - (box - cfg.size).clip(0) / 2
    if rng.random() < cfg.truncation_prob:
        axis, direction = int(rng.integers(2)), 1.0 if rng.random() < 0.5 else -1.0
        push = rng.uniform(cfg.truncation_min, cfg.truncation_max) * box[axis]
        corner[axis] = (cfg.size - box[axis] + push) if direction > 0 else -push
    offset = corner - 0.5 - lo * scale  # crop covers [-0.5, S - 0.5]
    return scale, offset


def _head_box(head_poly: np.ndarray) -> np.ndarray:
    """Axis-aligned box of the head ellipse (MPII's head rectangle: head top to upper neck)."""
    return np.concatenate([head_poly.min(0), head_poly.max(0)]).astype(np.float32)


def _octaves(longest: int) -> tuple[np.ndarray, np.ndarray]:
    """Clip lengths (longest, longest // 2, ..., 1) and how many clips of each (1, 2, 4, ...)."""
    sizes = [longest]
    while sizes[-1] > 1:
        sizes.append(sizes[-1] // 2)
    return np.array(sizes, dtype=np.int64), 2 ** np.arange(len(sizes), dtype=np.int64)


def clip_of(index: int, cfg: SyntheticConfig) -> int:
    """The clip that person ``index`` belongs to (its frames share one scene; see clip_profile).

    ``long_tail`` repeats one block of octaves (one clip of clip_length frames, two of half that,
    ..., 2^k single frames) along the index axis, so any index maps to its clip in O(octaves).
    """
    if cfg.clip_profile == "equal" or cfg.clip_length == 1:
        return index // cfg.clip_length
    sizes, counts = _octaves(cfg.clip_length)
    frames = np.cumsum(sizes * counts)
    block, offset = divmod(index, int(frames[-1]))
    octave = int(np.searchsorted(frames, offset, side="right"))
    first_frame = int(frames[octave - 1]) if octave else 0
    first_clip = int(counts[:octave].sum())
    return block * int(counts.sum()) + first_clip + (offset - first_frame) // int(sizes[octave])


def sample_scene(seed: int, index: int, cfg: SyntheticConfig) -> Scene:
    """Pose, placement, occluders and labels of person ``index`` (no pixels drawn).

    With ``clip_length > 1`` the frames of one clip (:func:`clip_of`) share the clip's scene and each frame moves
    the person slightly (:func:`_camera_jitter`).
    """
    scene = _sample_clip_scene(seed, clip_of(index, cfg), cfg)
    if cfg.clip_length > 1:
        scene = _camera_jitter(scene, np.random.default_rng([seed, index, 2]), cfg)
    return scene


def _camera_jitter(scene: Scene, rng: np.random.Generator, cfg: SyntheticConfig) -> Scene:
    """Move the person (and its occluders) a little: rotate, zoom and shift about the crop centre."""
    c = (cfg.size - 1) / 2
    angle = math.radians(rng.uniform(-cfg.clip_rotation_deg, cfg.clip_rotation_deg))
    zoom = rng.uniform(1 - cfg.clip_scale, 1 + cfg.clip_scale)
    shift = rng.uniform(-cfg.clip_shift, cfg.clip_shift, 2) * cfg.size
    rot = zoom * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])

    def move(points: np.ndarray) -> np.ndarray:
        return (points - c) @ rot.T + c + shift

    shapes = [Shape(move(sh.poly), sh.part, sh.depth, sh.role) for sh in scene.shapes]
    joints = move(scene.joints.astype(np.float64))
    box = scene.head_box.reshape(2, 2).astype(np.float64)
    centre, half = move(box.mean(0, keepdims=True))[0], (box[1] - box[0]) / 2 * zoom
    head_box = np.concatenate([centre - half, centre + half]).astype(np.float32)  # size ~ zoom only
    return dataclasses.replace(
        scene,
        joints=joints.astype(np.float32),
        visibility=visibility_from_shapes(joints, shapes, cfg.size),
        head_box=head_box,
        shapes=shapes,
    )


def _sample_clip_scene(seed: int, clip: int, cfg: SyntheticConfig) -> Scene:
    """The scene every frame of clip ``clip`` starts from (for clip_length 1: the person itself)."""
    rng = np.random.default_rng([seed, clip, 0])
    family = int(np.searchsorted(cfg.family_cdf(), rng.random(), side="right"))
    family = min(family, len(FAMILY_NAMES) - 1)
    prior = FAMILY_PRIORS[FAMILY_NAMES[family]]
    draw = _Draw(rng, cfg.angle_jitter_deg)
    lengths = _segment_lengths(rng, cfg.limb_jitter)
    p3 = _pose_3d(prior, draw, lengths)
    yaw = _sample_yaw(prior, rng, cfg)
    roll = draw.signed(prior.image_roll) if prior.image_roll[1] > 0 else 0.0
    roll += float(rng.uniform(-cfg.rotation_deg, cfg.rotation_deg))
    thick = float(rng.uniform(cfg.thickness_min, cfg.thickness_max))
    xy, shapes, head_poly = _body_shapes(p3, yaw, roll, thick, lengths)

    scale, offset = _place(xy, shapes, rng, cfg)
    joints = (xy * scale + offset).astype(np.float32)
    for sh in shapes:
        sh.poly = sh.poly * scale + offset
    head_box = _head_box(head_poly * scale + offset)
    shapes += _occluders(rng, joints, cfg)
    visibility = visibility_from_shapes(joints.astype(np.float64), shapes, cfg.size)
    return Scene(
        joints=joints,
        visibility=visibility,
        head_box=head_box,
        family=family,
        yaw=yaw,
        shapes=shapes,
        sleeve_short=bool(rng.random() < 0.5),
        shorts=bool(rng.random() < 0.3),
    )


def sample_poses(n: int, seed: int, cfg: SyntheticConfig, start: int = 0) -> PoseSet:
    """Labels of persons start..start+n-1 exactly as :func:`render_synthetic` gives them, ~10x
    faster because nothing is drawn."""
    cfg.validate()
    scenes = [sample_scene(seed, start + i, cfg) for i in range(n)]
    return _labels(scenes, start)


def _labels(scenes: list[Scene], start: int) -> PoseSet:
    """Stack per-scene labels into a PoseSet."""
    n = len(scenes)
    return PoseSet(
        joints=np.stack([s.joints for s in scenes]) if n else np.zeros((0, 16, 2), np.float32),
        visibility=np.stack([s.visibility for s in scenes]) if n else np.zeros((0, 16), np.int8),
        head_boxes=np.stack([s.head_box for s in scenes]) if n else np.zeros((0, 4), np.float32),
        family=np.array([s.family for s in scenes], np.int16),
        yaw=np.array([s.yaw for s in scenes], np.float32),
        index=np.arange(start, start + n, dtype=np.int64),
    )


# ----------------------------------------------------------------------------------------------
# Drawing


def _random_colour(
    rng: np.random.Generator, sat_min: float = 0.0, sat_max: float = 1.0
) -> np.ndarray:
    """An RGB colour (float 0-255) from a random hue, saturation in [sat_min, sat_max] and
    value >= 0.12."""
    h, sat, v = rng.random(3)
    rgb = colorsys.hsv_to_rgb(h, sat_min + (sat_max - sat_min) * sat, 0.12 + 0.88 * v)
    return np.array(rgb) * 255.0


def _to_fixed(poly: np.ndarray, ss: int) -> np.ndarray:
    """Crop-pixel polygon -> int32 fixed-point vertices on the ss-times canvas."""
    return np.round((poly * ss + (ss - 1) / 2) * (1 << _SHIFT)).astype(np.int32)


def _background(rng: np.random.Generator, side: int) -> np.ndarray:
    """Gradient between random corner colours plus low-frequency blotches, uint8 (side, side, 3).

    Built on a 32x32 grid and upsampled bilinearly: smooth anyway, and ~20x cheaper than
    synthesising at full size.
    """
    base = _random_colour(rng, 0.0, 0.6)
    corners = np.stack([base * 0.6 + _random_colour(rng, 0.0, 0.7) * 0.4 for _ in range(4)])
    corners = corners.reshape(2, 2, 3)
    small = cv2.resize(corners.astype(np.float32), (32, 32), interpolation=cv2.INTER_LINEAR)
    grid = int(rng.integers(3, 7))
    blotch = rng.normal(0, rng.uniform(5, 35), (grid, grid, 3)).astype(np.float32)
    small += cv2.resize(blotch, (32, 32), interpolation=cv2.INTER_CUBIC)
    small = np.clip(small, 0, 255).astype(np.uint8)
    return cv2.resize(small, (side, side), interpolation=cv2.INTER_LINEAR)


class _Texture:
    """A garment pattern in canvas coordinates: stripes, or blotches; evaluated per window."""

    def __init__(self, rng: np.random.Generator, colour: np.ndarray, side: int):
        other = np.clip(colour * rng.uniform(0.35, 0.8) + rng.uniform(-40, 40, 3), 0, 255)
        self.colour, self.other = colour.astype(np.uint8), other.astype(np.uint8)
        self.blotch = None
        if rng.random() < 0.6:  # stripes of period 3-8 % of the crop
            angle = rng.uniform(0, math.pi)
            period = side * rng.uniform(0.03, 0.08)
            self.cos, self.sin = math.cos(angle) / period, math.sin(angle) / period
        else:
            grid = int(rng.integers(6, 14))
            small = rng.random((grid, grid)).astype(np.float32)
            self.blotch = cv2.resize(small, (side, side), interpolation=cv2.INTER_LINEAR) > 0.5

    def patch(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """RGB uint8 pattern of the canvas window [y0:y1, x0:x1]."""
        if self.blotch is not None:
            mask = self.blotch[y0:y1, x0:x1]
        else:
            xs = np.arange(x0, x1, dtype=np.float32) * self.cos
            ys = np.arange(y0, y1, dtype=np.float32) * self.sin
            mask = ((xs[None, :] + ys[:, None]) % 1.0) < 0.5
        return np.where(mask[..., None], self.colour, self.other)


def _clutter(canvas: np.ndarray, rng: np.random.Generator, cfg: SyntheticConfig) -> None:
    """Background shapes: limb-like capsule bars (skin/cloth coloured), blobs, boxes, outlines."""
    s, ss = cfg.size, cfg.supersample
    for _ in range(int(rng.integers(cfg.clutter_min, cfg.clutter_max + 1))):
        centre = rng.uniform(-0.1, 1.1, 2) * s
        colour = None
        if rng.random() < cfg.distractor_prob:  # a bar of limb length and thickness
            length = rng.uniform(0.15, 0.45) * s
            angle = rng.uniform(0, 2 * math.pi)
            d = np.array([math.cos(angle), math.sin(angle)]) * length / 2
            r = np.array([rng.uniform(0.025, 0.06) * s])
            poly = _capsule_polys((centre - d)[None], (centre + d)[None], r)[0]
            if rng.random() < 0.5:
                colour = SKIN_TONES[rng.integers(len(SKIN_TONES))]
        else:
            poly = _random_convex(rng, centre, rng.uniform(0.1, 0.5) * s)
        if colour is None:
            colour = _random_colour(rng)
        pts, c = _to_fixed(poly, ss), colour.tolist()
        if rng.random() < 0.2:  # outline only
            cv2.polylines(canvas, [pts], True, c, ss, cv2.LINE_AA, _SHIFT)
        else:
            cv2.fillConvexPoly(canvas, pts, c, cv2.LINE_AA, _SHIFT)


@dataclass
class _Look:
    """Per-person appearance: a colour (and optional texture) per role."""

    colours: dict[str, np.ndarray]
    textures: dict[str, _Texture]


def _person_look(rng: np.random.Generator, scene: Scene, side: int, cfg: SyntheticConfig) -> _Look:
    """Skin, hair, garment and shoe colours; sleeves and trouser legs follow the scene."""
    skin = SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.9, 1.05)
    hair = HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))] * rng.uniform(0.8, 1.2)
    colours = {
        "skin": skin,
        "face": skin,
        "hair": hair,
        "shirt": _random_colour(rng, 0.15),
        "pants": _random_colour(rng, 0.05),
        "shoe": _random_colour(rng) * 0.5,
        "occluder": _random_colour(rng),
    }
    colours = {k: np.clip(v, 0, 255) for k, v in colours.items()}
    colours["sleeve"] = colours["skin"] if scene.sleeve_short else colours["shirt"]
    colours["leg"] = colours["skin"] if scene.shorts else colours["pants"]
    textures = {}
    for role, covers in (("shirt", "sleeve"), ("pants", "leg")):
        if rng.random() < cfg.texture_prob:
            textures[role] = _Texture(rng, colours[role], side)
            if colours[covers] is colours[role]:
                textures[covers] = textures[role]
    return _Look(colours, textures)


def _draw_textured(canvas: np.ndarray, pts: np.ndarray, texture: _Texture) -> None:
    """Paint ``texture`` into ``canvas`` inside a fixed-point polygon (its bounding box only)."""
    side = canvas.shape[0]
    x0, y0 = np.maximum((pts.min(0) >> _SHIFT) - 1, 0).tolist()
    x1, y1 = np.minimum((pts.max(0) >> _SHIFT) + 2, side).tolist()
    if x1 <= x0 or y1 <= y0:
        return
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    offset = np.array([x0, y0], np.int32) << _SHIFT
    cv2.fillConvexPoly(mask, pts - offset, 1, cv2.LINE_8, _SHIFT)
    np.copyto(canvas[y0:y1, x0:x1], texture.patch(x0, y0, x1, y1), where=mask[..., None] > 0)


def _draw_person(canvas: np.ndarray, scene: Scene, look: _Look, ss: int) -> None:
    """Body parts and occluders in depth order; nearer parts slightly brighter (depth cue)."""
    for sh in scene.shapes:
        pts = _to_fixed(sh.poly, ss)
        tex = look.textures.get(sh.role)
        if tex is not None:
            _draw_textured(canvas, pts, tex)
            continue
        shade = 1.0 if sh.part == OCCLUDER else min(max(1.0 + 1.2 * sh.depth, 0.75), 1.1)
        colour = [min(255.0, v * shade) for v in look.colours[sh.role].tolist()]
        cv2.fillConvexPoly(canvas, pts, colour, cv2.LINE_AA, _SHIFT)


def draw_parts(scene: Scene, size: int) -> np.ndarray:
    """(S, S) int8 map of the front-most body part per pixel (-1 background or occluder)."""
    parts = np.full((size, size), OCCLUDER, np.int8)
    for sh in scene.shapes:
        pts = np.round(sh.poly * (1 << _SHIFT)).astype(np.int32)
        cv2.fillConvexPoly(parts, pts, int(sh.part), cv2.LINE_8, _SHIFT)
    return parts


def _photometric(img: np.ndarray, rng: np.random.Generator, cfg: SyntheticConfig) -> np.ndarray:
    """Blur, contrast/brightness (a lookup table) and pixel noise at the output size; uint8.

    The noise is triangular (sum of two uniform bytes) scaled to the drawn sigma: close to
    Gaussian and ~10x cheaper than numpy's normal sampler here.
    """
    if rng.random() < cfg.blur_prob:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, max(cfg.blur_sigma_max, 0.3)))
    c = rng.uniform(cfg.contrast_min, cfg.contrast_max)
    b = rng.uniform(-cfg.brightness_max, cfg.brightness_max)
    lut = np.clip(np.arange(256) * c + (b + 127.5 * (1 - c)) + 0.5, 0, 255).astype(np.uint8)
    img = cv2.LUT(img, lut)
    sigma = rng.uniform(0, cfg.noise_sigma_max)
    if sigma > 0.0:
        n = img.size
        u = np.frombuffer(rng.bytes(2 * n), np.uint8).astype(np.float32)
        # u1 + u2 - 255 has standard deviation 255 / sqrt(6) ~ 104.1 (uniform bytes).
        noise = (u[:n] + u[n:] - 255.0) * (sigma / 104.1)
        img = cv2.add(img, noise.reshape(img.shape), dtype=cv2.CV_8U)
    return img


def render_scene(scene: Scene, seed: int, index: int, cfg: SyntheticConfig) -> np.ndarray:
    """The RGB uint8 (S, S, 3) image of a sampled scene."""
    rng = np.random.default_rng([seed, clip_of(index, cfg), 1])
    side = cfg.size * cfg.supersample
    canvas = _background(rng, side)
    _clutter(canvas, rng, cfg)
    _draw_person(canvas, scene, _person_look(rng, scene, side, cfg), cfg.supersample)
    if cfg.supersample > 1:
        canvas = cv2.resize(canvas, (cfg.size, cfg.size), interpolation=cv2.INTER_AREA)
    return _photometric(canvas, rng, cfg)


# ----------------------------------------------------------------------------------------------
# Sets, workers, splits


_Chunk = tuple[np.ndarray, PoseSet, "np.ndarray | None"]  # images, labels, parts of one chunk


def _render_chunk(args: tuple[int, int, int, SyntheticConfig, bool]) -> _Chunk:
    """Images, labels and optional part maps of persons start..start+n-1 (one process)."""
    n, seed, start, cfg, return_parts = args
    s = cfg.size
    images = np.empty((n, s, s, 3), np.uint8)
    parts = np.empty((n, s, s), np.int8) if return_parts else None
    scenes = []
    for i in range(n):
        scene = sample_scene(seed, start + i, cfg)
        images[i] = render_scene(scene, seed, start + i, cfg)
        if parts is not None:
            parts[i] = draw_parts(scene, s)
        scenes.append(scene)
    return images, _labels(scenes, start), parts


def _worker_init() -> None:
    """One OpenCV thread per worker process (the pool supplies the parallelism)."""
    cv2.setNumThreads(1)


def render_synthetic(
    n: int,
    seed: int,
    cfg: SyntheticConfig,
    start: int = 0,
    workers: int = 1,
    return_parts: bool = False,
    chunk: int = 256,
) -> SyntheticSet:
    """Render persons start..start+n-1 of stream ``seed``; bytes do not depend on ``workers``.

    ``workers > 1`` renders chunks in a spawned process pool (spawn, not fork, so a parent that
    already runs torch threads is safe; a calling script needs the ``if __name__ ==
    "__main__":`` guard). Chunks are copied into preallocated arrays as they arrive, so peak
    memory is about the output plus a few chunks (10,000 images at 128 px are 492 MB).
    """
    cfg.validate()
    s = cfg.size
    images = np.empty((n, s, s, 3), np.uint8)
    parts = np.empty((n, s, s), np.int8) if return_parts else None
    jobs = [(min(chunk, n - k), seed, start + k, cfg, return_parts) for k in range(0, n, chunk)]
    labels: list[PoseSet] = [_labels([], start)]

    def collect(results: Iterable[_Chunk]) -> None:
        """Copy chunk outputs in order into the preallocated arrays."""
        pos = 0
        for chunk_images, chunk_labels, chunk_parts in results:
            images[pos : pos + len(chunk_images)] = chunk_images
            if parts is not None:
                parts[pos : pos + len(chunk_images)] = chunk_parts
            labels.append(chunk_labels)
            pos += len(chunk_images)

    if workers > 1 and len(jobs) > 1:
        ctx = mp.get_context("spawn")
        with ctx.Pool(min(workers, len(jobs)), initializer=_worker_init) as pool:
            collect(pool.imap(_render_chunk, jobs, chunksize=1))
    else:
        collect(_render_chunk(job) for job in jobs)
    return SyntheticSet(
        joints=np.concatenate([lab.joints for lab in labels]),
        visibility=np.concatenate([lab.visibility for lab in labels]),
        head_boxes=np.concatenate([lab.head_boxes for lab in labels]),
        family=np.concatenate([lab.family for lab in labels]),
        yaw=np.concatenate([lab.yaw for lab in labels]),
        index=np.concatenate([lab.index for lab in labels]),
        images=images,
        parts=parts,
    )


# Seed-stream scheme of named splits: split ``name`` renders stream indices
# SPLIT_OFFSETS[name] + 0, 1, ... of the same seed, so splits never share a person as long as each
# is shorter than 10^9, and growing one split never changes another.
SPLIT_OFFSETS: dict[str, int] = {"train": 0, "val": 1_000_000_000, "test": 2_000_000_000}


def render_split(
    split: str,
    n: int,
    seed: int,
    cfg: SyntheticConfig,
    start: int = 0,
    workers: int = 1,
    return_parts: bool = False,
) -> SyntheticSet:
    """Persons start..start+n-1 of a named split (see SPLIT_OFFSETS)."""
    if split not in SPLIT_OFFSETS:
        raise AlposeError(f"unknown split '{split}'; known: {', '.join(SPLIT_OFFSETS)}")
    if start + n > 1_000_000_000:
        raise AlposeError("a synthetic split holds at most 10^9 persons")
    if split != "train" and cfg.clip_length > 1:
        cfg = dataclasses.replace(cfg, clip_length=1)  # evaluation persons stay independent
    return render_synthetic(n, seed, cfg, SPLIT_OFFSETS[split] + start, workers, return_parts)
