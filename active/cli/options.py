"""Flags that several commands share."""

from __future__ import annotations

import argparse


def add_pool_pass_flags(parser: argparse.ArgumentParser) -> None:
    """Flags shared by ``report`` and ``inspect``: data folder, device, re-scoring."""
    parser.add_argument("--data-dir", help="dataset folder (default: the run's paths.data)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, ...")
    parser.add_argument(
        "--no-rescore",
        action="store_true",
        help="do not re-run the acquirers' scores over the pool (Spearman on the picks only)",
    )
