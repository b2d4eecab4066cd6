"""MPII Human Pose: the official ``RELEASE`` .mat (scipy) or Newell's ``annot/{train,valid}.h5``.

Persons as the anchor reads them (docs/anchor.md 1.1): training images only, the ``single_person``
rectangles, one sample per person with ``annopoints``; a missing ``is_visible`` counts as visible;
the PCKh normaliser is the full head-box diagonal. Validation is Newell's split: ``paper``
protocol puts every selected person of the 2,729 validation images there (the anchor's per-image
rule); ``standard`` uses exactly Newell's 2,958 persons (``resources/``). The all-16-joints filter
(paper) is optional. MPII files use 1-based (MATLAB) pixels; everything here is 0-based.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io

from hourglass.datasets.cache import SPLIT_NAMES, open_for_reading
from hourglass.datasets.records import PersonTable
from hourglass.errors import AlposeError
from hourglass.joints import MPII_JOINTS

RESOURCES = Path(__file__).parent / "resources"
RELEASE_NAME = "mpii_human_pose_v1_u12_1.mat"
TRAIN, VAL = SPLIT_NAMES.index("train"), SPLIT_NAMES.index("val")


@dataclass
class MpiiRects:
    """Every annotated rectangle (person with ``annopoints``) of an annotation file."""

    image: list[str]  # image file name per rectangle ("" when the file has no names)
    image_index: np.ndarray  # (N,) 0-based annolist index
    person: np.ndarray  # (N,) 0-based annorect index
    joints: np.ndarray  # (N,16,2) 0-based pixels
    visibility: np.ndarray  # (N,16) 1 / 0 / -1
    head_diagonal: np.ndarray  # (N,) full head-box diagonal
    is_train: np.ndarray  # (N,) bool, from img_train (True when the file has none)
    single: np.ndarray  # (N,) bool, listed in single_person (True when the file has none)

    def __len__(self) -> int:
        return len(self.image)


def newell_validation() -> tuple[list[str], list[tuple[int, int]]]:
    """Newell's validation persons: image names (one per person) and (annolist, annorect) pairs."""
    with open(RESOURCES / "mpii_newell_valid_persons.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return [r["image"] for r in rows], [
        (int(r["annolist_index"]), int(r["person_index"])) for r in rows
    ]


def _seq(x) -> list:
    """A MATLAB struct array / cell as a list (scipy squeezes 1-element arrays to scalars)."""
    if x is None:
        return []
    if isinstance(x, np.ndarray):
        return list(x.ravel())
    return [x]


def _flag(value) -> int:
    """MPII ``is_visible``: empty (head, neck) counts as visible, as in the anchor."""
    arr = np.asarray(value).ravel()
    if arr.size == 0:
        return 1
    v = arr[0]
    return int(str(v).strip() == "1") if isinstance(v, str | np.str_) else int(v == 1)


def _parse_rect(rect) -> tuple[np.ndarray, np.ndarray, float] | None:
    """(joints (16,2), visibility (16,), head diagonal) of one annorect, None without annopoints."""
    points = getattr(rect, "annopoints", None)
    pts = _seq(getattr(points, "point", None)) if points is not None else []
    if not pts or not all(hasattr(rect, k) for k in ("x1", "y1", "x2", "y2")):
        return None
    joints = np.zeros((16, 2))
    vis = np.full(16, -1, np.int8)
    for p in pts:
        j = int(np.asarray(p.id).ravel()[0])
        joints[j] = float(np.asarray(p.x).ravel()[0]) - 1, float(np.asarray(p.y).ravel()[0]) - 1
        vis[j] = _flag(getattr(p, "is_visible", []))
    box = [float(np.asarray(getattr(rect, k)).ravel()[0]) for k in ("x1", "y1", "x2", "y2")]
    return joints, vis, float(np.hypot(box[2] - box[0], box[3] - box[1]))


def read_mat(path: str | Path) -> MpiiRects:
    """Every annotated rectangle of the official ``RELEASE`` .mat, or of a file whose top level is
    an ``annolist`` of the same layout (e.g. Tompson's ``detections.mat``)."""
    path = Path(path)
    try:
        mat = scipy.io.loadmat(path, struct_as_record=False, squeeze_me=True)
    except Exception as err:  # scipy raises several types for a bad file
        raise AlposeError(
            f"cannot read the MPII annotation {path} ({type(err).__name__}: {err}); "
            f"download {RELEASE_NAME} again"
        ) from None
    if "RELEASE" in mat:
        release = mat["RELEASE"]
        annolist = _seq(release.annolist)
        img_train = np.asarray(release.img_train).ravel().astype(bool)
        single = [set(int(i) - 1 for i in _seq(s)) for s in _seq(release.single_person)]
    elif "annolist" in mat:
        annolist = _seq(mat["annolist"])
        img_train, single = None, None
    else:
        raise AlposeError(f"{path} has no RELEASE struct (not the MPII {RELEASE_NAME})")
    out: dict[str, list] = {k: [] for k in MpiiRects.__dataclass_fields__}
    for i, entry in enumerate(annolist):
        image = getattr(entry, "image", None)
        name = str(getattr(image, "name", "")) if image is not None else ""
        for p, rect in enumerate(_seq(getattr(entry, "annorect", None))):
            parsed = _parse_rect(rect)
            if parsed is None:
                continue
            out["image"].append(name)
            out["image_index"].append(i)
            out["person"].append(p)
            out["joints"].append(parsed[0])
            out["visibility"].append(parsed[1])
            out["head_diagonal"].append(parsed[2])
            out["is_train"].append(True if img_train is None else bool(img_train[i]))
            out["single"].append(True if single is None else p in single[i])
    n = len(out["image"])
    return MpiiRects(
        image=out["image"],
        image_index=np.asarray(out["image_index"], np.int64),
        person=np.asarray(out["person"], np.int64),
        joints=np.asarray(out["joints"], np.float64).reshape(n, 16, 2),
        visibility=np.asarray(out["visibility"], np.int8).reshape(n, 16),
        head_diagonal=np.asarray(out["head_diagonal"], np.float64),
        is_train=np.asarray(out["is_train"], bool),
        single=np.asarray(out["single"], bool),
    )


def read_h5(path: str | Path) -> MpiiRects:
    """Newell's ``annot/<split>.h5`` (part, visible, normalize = 0.6 x head diagonal, index, person).

    Missing joints are (0, 0) in ``part``; ``visible`` is 0 for occluded and missing alike.
    """

    path = Path(path)
    try:
        with open_for_reading(path) as f:
            part = f["part"][...].astype(np.float64)
            visible = f["visible"][...]
            diag = f["normalize"][...].astype(np.float64) / 0.6
            index, person = f["index"][...].astype(np.int64), f["person"][...].astype(np.int64)
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in f["imgname"][...]]
    except (OSError, KeyError) as err:
        raise AlposeError(f"cannot read Newell annotation {path} ({err})") from None
    missing = np.all(part == 0, axis=-1)
    vis = np.where(missing, -1, (visible > 0).astype(np.int8)).astype(np.int8)
    return MpiiRects(
        image=names,
        image_index=index,
        person=person,
        joints=part - 1,
        visibility=vis,
        head_diagonal=diag,
        is_train=np.ones(len(names), bool),
        single=np.ones(len(names), bool),
    )


def select_persons(
    rects: MpiiRects,
    protocol: str = "paper",
    all_joints: bool = True,
    valid: tuple[list[str], list[tuple[int, int]]] | None = None,
    is_newell_valid: np.ndarray | None = None,
) -> PersonTable:
    """Training pool and validation persons of ``protocol`` (``paper`` or ``standard``).

    paper: single_person persons of training images; those in Newell's validation images are
    validation. standard: validation = exactly Newell's persons (``is_newell_valid`` marks them
    where the rows carry no annolist indices, as in ``annot/valid.h5``); the pool = single_person
    persons of the other training images. ``all_joints`` keeps persons with all 16 annotated.
    """
    if protocol not in ("paper", "standard"):
        raise AlposeError(f"MPII protocol must be 'paper' or 'standard', got '{protocol}'")
    names, pairs = valid or newell_validation()
    valid_images = set(names)
    in_valid_image = np.array([n in valid_images for n in rects.image], bool)
    if is_newell_valid is None:
        wanted = set(pairs)
        is_newell_valid = np.array(
            [(i, p) in wanted for i, p in zip(rects.image_index, rects.person, strict=True)]
        )
    candidate = rects.is_train & rects.single
    if protocol == "paper":
        keep = candidate
        is_val = in_valid_image
    else:
        is_val = is_newell_valid
        keep = (candidate & ~in_valid_image) | is_val
    info = {"rectangles": len(rects), "selected": int(keep.sum())}
    if all_joints:
        keep = keep & np.all(rects.visibility >= 0, axis=1)
    info.update(
        {"all_joints": all_joints, "protocol": protocol, "train": int((keep & ~is_val).sum())}
    )
    info["val"] = int((keep & is_val).sum())
    rows = np.flatnonzero(keep)
    return PersonTable(
        image=[f"images/{rects.image[i]}" for i in rows],
        joints=rects.joints[rows],
        visibility=rects.visibility[rows],
        normaliser=rects.head_diagonal[rows],
        split=np.where(is_val[rows], VAL, TRAIN).astype(np.uint8),
        source_index=rects.image_index[rows] * 1000 + rects.person[rows],
        dataset="mpii",
        joint_names=MPII_JOINTS,
        normaliser_kind="head_diagonal",
        info=info,
    )


def annotation_source(root: Path, annotation: str | None = None) -> list[Path]:
    """The annotation file(s) under ``root``: the RELEASE .mat, else ``annot/{train,valid}.h5``."""
    if annotation:
        path = Path(annotation) if Path(annotation).is_absolute() else root / annotation
        return [path]
    for path in (root / RELEASE_NAME, root / "annot" / RELEASE_NAME):
        if path.is_file():
            return [path]
    h5 = [root / "annot" / "train.h5", root / "annot" / "valid.h5"]
    if all(p.is_file() for p in h5):
        return h5
    raise AlposeError(
        f"wrong MPII layout in {root}: expected {RELEASE_NAME} (or annot/train.h5 and "
        "annot/valid.h5) and images/; see data/README.md"
    )


def read_mpii(
    root: str | Path,
    protocol: str = "paper",
    all_joints: bool = True,
    annotation: str | None = None,
) -> PersonTable:
    """The persons of an MPII folder (``root/images/*.jpg`` plus one annotation source)."""
    root = Path(root)
    if not root.is_dir():
        raise AlposeError(
            f"MPII root {root} does not exist; download MPII there (alpose prepare mpii "
            f"--root {root} --download) or pass --root"
        )
    sources = annotation_source(root, annotation)
    if sources[0].suffix == ".mat":
        table = select_persons(read_mat(sources[0]), protocol, all_joints)
    else:  # Newell's h5 pair: train rows, then his validation rows
        train, val = read_h5(sources[0]), read_h5(sources[1])
        rects = MpiiRects(
            image=train.image + val.image,
            **{
                k: np.concatenate([getattr(train, k), getattr(val, k)])
                for k in MpiiRects.__dataclass_fields__
                if k != "image"
            },
        )
        newell = np.r_[np.zeros(len(train), bool), np.ones(len(val), bool)]
        table = select_persons(rects, protocol, all_joints, is_newell_valid=newell)
        table.info["note"] = "annot/*.h5 source: single_person is not known; every row counts"
    table.info["sources"] = [str(p) for p in sources]
    return table
