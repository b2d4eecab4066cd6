"""Where an experiment's results live, and the columns of ``metrics.csv``.

Paths are a fixed function of (experiment, acquirer, seed), never timestamps, so parallel jobs
never collide and a second run of the same command resumes instead of starting over::

    <runs>/<experiment>/config.yaml                      the experiment's resolved config
    <runs>/<experiment>/<acquirer>/seed_<s>/metrics.csv  one row per finished cycle
                                          /state.json    resume point (last finished cycle, labelled set)
                                          /selections/cycle_<c>.npy   picked indices and their scores
                                          /checkpoints/cycle_<c>.pt   weights-only state dicts
    <runs>/<experiment>/_initial/seed_<s>/               cycle 0 (the initial set), shared by every acquirer
"""

from __future__ import annotations

from pathlib import Path

from hourglass.joints import MPII_JOINTS

INITIAL = "_initial"  # pseudo-acquirer folder holding each seed's shared first cycle

# metrics.csv: the fixed leading columns, then per-joint PCKh in both conventions.
METRIC_COLUMNS: tuple[str, ...] = (
    "cycle",  # 0 = trained on the initial set
    "labelled",  # persons labelled when this cycle's model was trained (the budget)
    "pckh_standard",  # standard PCKh@0.5 Mean (14 joints, MPII) / PCK@0.2 Total (LSP), percent
    "pckh_paper",  # the anchor's lenient PCKh Mean (16 joints), percent
    "epochs",
    "best_epoch",
    "train_seconds",
    "acquisition_seconds",  # time to pick the images that joined the labelled set for this cycle
)


def joint_columns(joint_names: tuple[str, ...] = MPII_JOINTS) -> list[str]:
    """Per-joint columns: ``standard_<joint>`` then ``paper_<joint>``."""
    return [f"standard_{j}" for j in joint_names] + [f"paper_{j}" for j in joint_names]


def experiment_dir(runs: str | Path, experiment: str) -> Path:
    return Path(runs) / experiment


def seed_dir(runs: str | Path, experiment: str, acquirer: str, seed: int) -> Path:
    return experiment_dir(runs, experiment) / acquirer / f"seed_{seed}"


def budget_schedule(
    budgets: list[int] | None, initial: int | None, per_cycle: int | None, cycles: int | None
) -> list[int] | None:
    """Labelled persons per cycle: ``budgets`` when listed, else ``initial + i * per_cycle`` for
    i = 0..``cycles`` (configs/run.yaml); None when the config says neither."""
    if budgets:
        return [int(b) for b in budgets]
    if all(isinstance(v, int) for v in (initial, per_cycle, cycles)):
        return [initial + i * per_cycle for i in range(cycles + 1)]
    return None
