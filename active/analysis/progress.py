"""Progress of an experiment (``alpose status``): which (acquirer, seed, cycle) cells of an experiment are done, and
in which environment they were computed.

A cell is done when its row is in ``<acquirer>/seed_<s>/metrics.csv``. Expected cycles are
0..len(budgets)-1 when ``config.yaml`` lists budgets, else 0..the largest cycle seen anywhere;
expected seeds and acquirers come from ``config.yaml`` where it lists them, plus any found.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from active.analysis import stats, tables
from hourglass.environment import changes, summary
from hourglass.errors import AlposeError

DONE, MISSING = "#", "."


@dataclass(frozen=True)
class Progress:
    """Done cycles per (acquirer, seed) against the expected grid."""

    acquirers: tuple[str, ...]
    seeds: tuple[int, ...]
    cycles: tuple[int, ...]
    done: dict[tuple[str, int], set[int]]

    @property
    def expected(self) -> int:
        return len(self.acquirers) * len(self.seeds) * len(self.cycles)

    @property
    def finished(self) -> int:
        return sum(
            len(self.done.get((a, s), set()) & set(self.cycles))
            for a in self.acquirers
            for s in self.seeds
        )


def collect(run_dir: Path) -> Progress:
    """Read every metrics.csv's cycles and the expected grid from config.yaml or the results."""
    if not run_dir.is_dir():
        raise AlposeError(f"experiment folder not found: {run_dir} (run `alpose run` first)")
    done: dict[tuple[str, int], set[int]] = {}
    for acquirer, seed, path in stats.result_files(run_dir):
        done[(acquirer, seed)] = {int(float(r["cycle"])) for r in stats.read_metrics(path)}
    info = tables.read_experiment_info(run_dir)
    acquirers = sorted({a for a, _ in done} | set(info.acquirers or ()))
    seeds = sorted({s for _, s in done} | set(info.seeds or ()))
    seen = max((c for cycles in done.values() for c in cycles), default=-1)
    last = len(info.budgets) - 1 if info.budgets else seen
    cycles = tuple(range(max(last, seen) + 1))
    return Progress(tuple(acquirers), tuple(seeds), cycles, done)


def render(progress: Progress, run_dir: Path) -> str:
    """One line per (acquirer, seed): a mark per cycle, the count, the missing cycles."""
    p = progress
    if not p.expected:
        return f"{run_dir}: no finished cycles yet (run `alpose run` first)\n"
    width = max(len("acquirer"), *(len(a) for a in p.acquirers))
    lines = [
        f"{run_dir}: {len(p.acquirers)} acquirers x {len(p.seeds)} seeds x {len(p.cycles)} cycles "
        f"({p.cycles[0]}-{p.cycles[-1]}); {DONE} done, {MISSING} missing",
        f"{'acquirer':<{width}}  {'seed':>6}  cycles",
    ]
    for a in p.acquirers:
        for s in p.seeds:
            got = p.done.get((a, s), set())
            marks = "".join(DONE if c in got else MISSING for c in p.cycles)
            missing = [str(c) for c in p.cycles if c not in got]
            tail = f"  missing: {','.join(missing)}" if missing else ""
            lines.append(
                f"{a:<{width}}  {s:>6}  {marks}  {len(p.cycles) - len(missing)}/{len(p.cycles)}{tail}"
            )
    lines.append(
        f"done {p.finished} of {p.expected} (acquirer, seed, cycle) cells; {p.expected - p.finished} missing"
    )
    return "\n".join(lines) + "\n"


def environment_lines(run_dir: Path) -> list[str]:
    """What computed the cells (``environment`` in config.yaml) and what differed in earlier
    runs of the folder; a note where the folder predates the record."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return []
    stored = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    env = stored.get("environment")
    if not env:
        return ["environment: not recorded (made before alpose recorded it)"]
    lines = [f"environment: {summary(env)}"]
    history = stored.get("environment_history") or []
    for i, earlier in enumerate(history, 1):
        later = history[i] if i < len(history) else env
        lines.append(
            f"  resumed in another environment ({i}): {', '.join(changes(earlier, later))}"
        )
    return lines
