"""How many distinct clips each acquirer's final labelled set came from (synthetic clip pools).

``python scripts/clip_spread.py runs/quickstart`` prints, per acquirer, the range over seeds of
the distinct clips among the last cycle's labelled persons and of the mean size of the clip a
label came from. A redundant pool rewards spreading labels over clips; this measures the spread.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from hourglass.datasets.synthetic import SPLIT_OFFSETS, SyntheticConfig, clip_of


def spread(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """acquirer -> [(distinct clips, mean clip size of a label)] over its seeds."""
    cfg = OmegaConf.load(run_dir / "config.yaml")
    gen = SyntheticConfig(**OmegaConf.to_container(cfg.dataset.generator, resolve=True))
    pool = int(cfg.dataset.splits.train)
    clips = np.array([clip_of(SPLIT_OFFSETS["train"] + i, gen) for i in range(pool)])
    sizes = np.bincount(clips)
    out: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for state in sorted(run_dir.glob("*/seed_*/state.json")):
        acquirer = state.parent.parent.name
        if acquirer.startswith("_"):
            continue
        labelled = np.asarray(json.loads(state.read_text())["labelled"], dtype=np.int64)
        own = clips[labelled]
        out[acquirer].append((len(np.unique(own)), float(sizes[own].mean())))
    return dict(out)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python scripts/clip_spread.py RUN_DIR", file=sys.stderr)
        return 2
    for acquirer, rows in sorted(spread(Path(argv[0])).items()):
        n = [r[0] for r in rows]
        size = [r[1] for r in rows]
        print(
            f"{acquirer}: {min(n)}-{max(n)} distinct clips over {len(rows)} seeds; "
            f"mean clip size of a label {min(size):.0f}-{max(size):.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
