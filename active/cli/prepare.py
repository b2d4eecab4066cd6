"""``alpose prepare <dataset>``: write a dataset's HDF5 crop cache (and optionally a preview grid).

Defaults come from ``configs/dataset/<dataset>.yaml``; the flags override them, and the cache lands
exactly where ``alpose train dataset=<dataset> ...`` with the same settings looks for it.
Real sets: ``alpose prepare mpii --root data/mpii``, ``alpose prepare lsp --root data/lsp --lspet
data/lspet`` (``--download`` fetches them first), ``alpose prepare lspet_mini``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from hourglass.checks import check, count
from hourglass.config import load_group
from hourglass.datasets.cache import load_cache
from hourglass.datasets.lsp import to_mpii_order
from hourglass.datasets.real import prepare, resolve
from hourglass.datasets.registry import (
    cache_path,
    check_dataset_numbers,
    load_dataset,
    synthetic_identity,
)
from hourglass.datasets.synthetic_cache import check_memory, write_synthetic_cache
from hourglass.datasets.views import model_batch
from hourglass.errors import AlposeError
from hourglass.preview import preview_grid, save_png

REAL = ("mpii", "lsp", "lspet_mini")


def register(parser: argparse.ArgumentParser):
    """Add the flags; returns the function that runs the command."""
    parser.add_argument("dataset", choices=["synthetic", *REAL], help="which dataset to prepare")
    parser.add_argument("--root", help="real sets: the dataset folder (default: the config's)")
    parser.add_argument("--lspet", help="lsp: the LSP Extended folder (default: the config's)")
    parser.add_argument(
        "--download", action="store_true", help="real sets: fetch the official archives first"
    )
    parser.add_argument("--size", type=int, help="crop side in pixels (default: the config's)")
    parser.add_argument("--seed", type=int, help="generator seed")
    for split in ("train", "val", "test"):
        parser.add_argument(
            f"--{split}", type=int, metavar="N", help=f"persons in the {split} split"
        )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KNOB=VALUE",
        help="synthetic: a generator knob, e.g. --set occluder_prob=0.5; real sets: a dataset "
        "setting, e.g. --set protocol=standard (repeatable; values are JSON)",
    )
    parser.add_argument("--data-dir", default="data", help="where caches live (default: data)")
    parser.add_argument("--out", type=Path, help="write the cache here instead of its default path")
    parser.add_argument("--workers", type=int, default=2, help="rendering processes (default 2)")
    parser.add_argument(
        "--preview", type=Path, metavar="PNG", help="also draw a grid of samples with skeletons"
    )
    parser.add_argument(
        "--force", action="store_true", help="re-create the cache even if it exists"
    )
    return run


def _knob(text: str) -> tuple[str, object]:
    """Parse ``key=value`` with a JSON value (bare words stay strings)."""
    if "=" not in text:
        raise AlposeError(f"--set expects KNOB=VALUE, got '{text}'")
    key, raw = text.split("=", 1)
    try:
        return key.strip(), json.loads(raw)
    except json.JSONDecodeError:
        return key.strip(), raw


def dataset_config(args: argparse.Namespace) -> dict:
    """The dataset config these flags describe (the YAML defaults with overrides)."""
    cfg = OmegaConf.to_container(load_group("dataset", args.dataset), resolve=True)
    for key in ("size", "seed"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    for split in ("train", "val", "test"):
        if getattr(args, split) is not None:
            cfg["splits"][split] = getattr(args, split)
    cfg["generator"] = {**cfg.get("generator", {}), **dict(_knob(k) for k in args.set)}
    return cfg


def real_config(args: argparse.Namespace) -> dict:
    """A real dataset's config with the flags applied (``--root``, ``--lspet``, ``--size``, ``--set``);
    a bad number is refused in one line (``check_dataset_numbers``)."""
    cfg = OmegaConf.to_container(load_group("dataset", args.dataset), resolve=True)
    if args.root is not None:
        cfg["root"] = args.root
    if args.lspet is not None:
        cfg["lspet"] = args.lspet
    if args.size is not None:
        cfg["size"] = args.size
        cfg["store_size"] = round(args.size * 2 / 1.75)
    cfg.update(dict(_knob(k) for k in args.set))
    check_dataset_numbers(cfg)
    return cfg


def run_real(args: argparse.Namespace) -> int:
    """Download if asked, then build (or keep, when up to date) a real dataset's cache."""
    cfg = real_config(args)
    if args.download:
        from hourglass.datasets.download import (
            download_dataset,  # urllib and archives: only for --download
        )

        folders = [("lspet" if args.dataset == "lspet_mini" else args.dataset, cfg["root"])]
        if args.dataset == "lsp" and cfg.get("lspet"):
            folders.append(("lspet", cfg["lspet"]))
        for name, folder in folders:
            download_dataset(name, resolve(folder) or Path(folder))
    print(prepare(cfg, args.data_dir, workers=args.workers, force=args.force, out=args.out))
    if args.preview:
        cache = load_dataset(cfg, args.data_dir) if not args.out else None
        if cache is None:
            cache = load_cache(args.out)
        idx = np.arange(min(32, len(cache)))
        images, joints, vis = model_batch(cache, idx, None)
        if joints.shape[1] == 14:  # the preview draws MPII's skeleton
            joints, vis = to_mpii_order(joints, vis)
        save_png(args.preview, preview_grid(images, joints, vis))
        print(f"wrote preview {args.preview}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Render (if needed) and write the cache; draw the preview if asked."""
    check("--workers", args.workers, count(1, what="a number of processes"), "pass --workers N")
    if args.dataset in REAL:
        return run_real(args)
    for flag in ("root", "lspet"):
        if getattr(args, flag) is not None:
            raise AlposeError(f"--{flag} is for real datasets, not '{args.dataset}'")
    if args.download:
        raise AlposeError("--download is for real datasets; the synthetic set is rendered")

    cfg = dataset_config(args)
    identity = synthetic_identity(cfg)  # refuses a bad number or generator knob in one line
    path = args.out or cache_path(cfg, args.data_dir)
    if path.exists() and not args.force:
        print(f"cache already there: {path} (use --force to re-create it)")
        cache = load_cache(path) if args.preview else None
    else:
        persons = sum(identity["splits"].values())
        estimate = check_memory(identity)  # refused when it cannot fit
        print(f"rendering {persons:,} persons at {cfg['size']} px: {estimate}", flush=True)
        t0 = time.perf_counter()
        cache = write_synthetic_cache(cfg, path, workers=args.workers)
        seconds = time.perf_counter() - t0
        counts = ", ".join(f"{n} {s}" for s, n in cfg["splits"].items())
        print(f"wrote {path}: {len(cache)} crops ({counts}) of {cfg['size']} px in {seconds:.1f} s")
    if args.preview:
        idx = cache.indices("train")[:32]
        save_png(
            args.preview, preview_grid(cache.images[idx], cache.joints[idx], cache.visibility[idx])
        )
        print(f"wrote preview {args.preview}")
    return 0
