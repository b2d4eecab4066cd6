"""Rewrite the smoke experiment's golden numbers (``tests/golden/smoke.csv``), or check them.

Run it after a deliberate change to the numbers (training, data, an acquirer), and commit the
file in the same commit: ``.venv/bin/python scripts/golden.py``. It runs the smoke experiment
under portable numerics in a temporary folder and writes one row per
(acquirer, seed, cycle) cell: PCKh, best epoch, hashes of the picked images and of the weights.

``--check`` compares instead of writing and names the first differing cell (exit 1), e.g. on an
emulated CPU of another vendor and level (``qemu-x86_64 -cpu Haswell-v4 .venv/bin/python
scripts/golden.py --check``, about 3 minutes).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from hourglass import numerics

numerics.apply("portable")  # before torch loads

import torch  # noqa: E402

from active.analysis.fingerprint import (  # noqa: E402
    fingerprint,
    first_difference,
    read_csv,
    write_csv,
)
from active.cli.main import main as alpose  # noqa: E402

GOLDEN = Path(__file__).resolve().parents[1] / "tests" / "golden" / "smoke.csv"
OVERRIDES = ["experiment=smoke", "jobs=1", "progress=false"]  # the golden run's command line


def run_smoke(folder: Path) -> list[dict[str, str]]:
    """Run the smoke experiment under ``folder`` and return its fingerprint."""
    status = alpose(["run", *OVERRIDES, f"paths.runs={folder}/runs", f"paths.data={folder}/data"])
    if status:
        raise SystemExit(f"the smoke experiment failed (exit {status})")
    return fingerprint(folder / "runs" / "smoke")


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="alpose-golden-") as folder:
        rows = run_smoke(Path(folder))
    if argv == ["--check"]:
        diff = first_difference(read_csv(GOLDEN), rows)
        kernels = torch.backends.cpu.get_cpu_capability()
        print(f"{kernels} kernels: " + ("identical to the golden file" if diff is None else diff))
        return 0 if diff is None else 1
    write_csv(rows, GOLDEN)
    print(f"wrote {len(rows)} cells to {GOLDEN}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
