"""Real datasets from their ``dataset`` config: identity (cache name), sources, prepare.

``configs/dataset/{mpii,lsp,lspet_mini}.yaml`` hold the settings. The cache file is named by a
hash of the settings that shape its bytes (not the folder it was read from); the cache itself
records a hash of its sources, so a changed folder is rebuilt and an unchanged one is skipped.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from hourglass.config import config_dir, load_group
from hourglass.datasets import lsp, mpii
from hourglass.datasets.crops import CropSpec
from hourglass.datasets.real_cache import build_real_cache, source_hash, stored_hash
from hourglass.errors import AlposeError

REAL_DATASETS = ("mpii", "lsp", "lspet_mini")
# Settings that change a real cache's bytes, per dataset (besides the crop settings).
IDENTITY_KEYS = {
    "mpii": ("protocol", "all_joints", "annotation"),
    "lsp": ("joint_order", "lspet_count", "with_lspet"),
    "lspet_mini": ("joint_order", "lspet_count", "lspet_test"),
}


def resolve(path: str | Path | None) -> Path | None:
    """A configured folder: absolute, else relative to the working directory if it exists there,
    else relative to the checkout (so a path like ``../lspet`` works from any directory)."""
    if path is None or str(path) in ("", "None", "null"):
        return None
    path = Path(str(path)).expanduser()
    if path.is_absolute() or path.exists():
        return path

    beside = config_dir().parent / path
    return beside if beside.exists() else path


def crop_spec(c: dict) -> CropSpec:
    """The :class:`CropSpec` of a real dataset config."""
    crop = c.get("crop") or {}
    return CropSpec(
        size=int(c["size"]),
        store_size=int(c.get("store_size") or round(c["size"] * 2 / 1.75)),
        train_scale=tuple(float(v) for v in crop.get("train", (1.5, 2.0))),
        eval_scale=float(crop.get("eval", 1.75)),
        store_scale=float(crop.get("store_scale", 2.0)),
    )


def identity(c: dict) -> dict[str, Any]:
    """Everything that determines a real cache's bytes (except the sources themselves)."""
    name = c["name"]
    if name not in REAL_DATASETS:
        raise AlposeError(f"'{name}' is not a real dataset ({', '.join(REAL_DATASETS)})")
    keys = {k: c.get(k) for k in IDENTITY_KEYS[name] if k != "with_lspet"}
    if name == "lsp":
        keys["with_lspet"] = c.get("lspet") not in (None, "", "None", "null")
    return {"name": name, **keys, "crop": crop_spec(c).as_dict(), "format": 2}


def cache_file(c: dict, data_dir: str | Path) -> Path:
    """``<data>/<name>-<size>px-<hash>.h5`` of a real dataset config."""
    ident = identity(c)
    digest = hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:8]
    return Path(data_dir) / f"{c['name']}-{c['size']}px-{digest}.h5"


def prepare_hint(c: dict) -> str:
    """The command that creates this config's cache."""
    parts = [f"alpose prepare {c['name']}", f"--root {c.get('root')}"]
    if c["name"] == "lsp" and identity(c)["with_lspet"]:
        parts.append(f"--lspet {c.get('lspet')}")

    default = OmegaConf.to_container(load_group("dataset", c["name"]), resolve=True)
    for key in (*IDENTITY_KEYS[c["name"]], "size", "store_size"):
        if key != "with_lspet" and c.get(key) != default.get(key):
            parts.append(f"--set {key}={json.dumps(c.get(key))}")
    return " ".join(parts)


def read_table(c: dict):
    """(PersonTable, photo root, annotation files, photo folders) of a real dataset config."""
    name, root = c["name"], resolve(c.get("root"))
    if name == "mpii":
        if root is None or not root.is_dir():
            raise AlposeError(
                f"MPII root {root} does not exist; download MPII there (`alpose prepare mpii "
                f"--root {root} --download`) or point --root at it"
            )
        sources = mpii.annotation_source(root, c.get("annotation"))
        if not (root / "images").is_dir():
            raise AlposeError(f"wrong MPII layout in {root}: no images/ folder; see data/README.md")
        table = mpii.read_mpii(
            root,
            str(c.get("protocol", "paper")),
            bool(c.get("all_joints", True)),
            c.get("annotation"),
        )
        return table, root, sources, [root / "images"]
    if name == "lsp":
        lspet = resolve(c.get("lspet"))
        table = lsp.read_lsp(
            root, lspet, lspet_count=c.get("lspet_count"), joint_order=c.get("joint_order", "lsp")
        )
        folders = [p for p in (root, lspet) if p is not None]
        return table, root, [p / "joints.mat" for p in folders], [p / "images" for p in folders]
    table = lsp.read_lsp(
        None,
        root,
        lspet_count=c.get("lspet_count"),
        lspet_test=int(c.get("lspet_test", 0)),
        joint_order=c.get("joint_order", "lsp"),
    )
    table.dataset = "lspet_mini"
    return table, root, [root / "joints.mat"], [root / "images"]


def check_sources(c: dict) -> None:
    """Fail with one clear line before any work when a configured folder is missing or wrong."""
    name, root = c["name"], resolve(c.get("root"))
    folders = [("LSPET" if name == "lspet_mini" else name.upper(), root)]
    if name == "lsp" and c.get("lspet") not in (None, "", "None", "null"):
        folders.append(("LSPET", resolve(c.get("lspet"))))
    for what, folder in folders:
        if folder is None or not folder.is_dir():
            raise AlposeError(
                f"{what} root {folder} does not exist; download it there (`alpose prepare "
                f"{name} --download`) or point at your copy: --root/--lspet for `alpose prepare`, "
                f"dataset.root=/dataset.lspet= for `alpose run` and `alpose train`"
            )


def prepare(
    c: dict,
    data_dir: str | Path,
    *,
    workers: int = 2,
    force: bool = False,
    progress: bool = True,
    out: Path | None = None,
) -> str:
    """Build (or skip, when up to date) the cache of a real dataset config; returns a summary."""
    check_sources(c)
    path = out or cache_file(c, data_dir)
    table, root, annotations, folders = read_table(c)
    ident = identity(c)
    digest = source_hash(annotations, folders, ident)
    if path.is_file() and not force and stored_hash(path) == digest:
        return f"cache up to date: {path} (sources and settings unchanged; nothing to do)"
    sizes = ", ".join(f"{k} {v}" for k, v in table.info.items() if isinstance(v, int))
    print(f"{c['name']}: {len(table)} persons after filtering ({sizes})")
    report = build_real_cache(
        table,
        root,
        path,
        crop_spec(c),
        provenance={"source_hash": digest, "settings": ident, "root": str(root)},
        workers=workers,
        max_bad_fraction=float(c.get("max_bad_fraction", 0.01)),
        progress=progress,
    )
    counts = ", ".join(f"{n} {s}" for s, n in report.counts.items() if n)
    return (
        f"wrote {path}: {report.persons} persons ({counts}) from {report.photos} photos, "
        f"{len(report.bad)} skipped, in {report.seconds:.1f} s"
    )
