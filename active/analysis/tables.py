"""Tables and plots of an experiment: ``table.md``, ``table.tex``, ``table.csv``, ``auc.csv``, ``curves.png``.

File formats (all written atomically):

* ``table.csv``: exactly ``acquirer,labelled,metric,mean,std,n,p_value``, one row per
  (acquirer, budget). ``metric`` is the metrics.csv column (``pckh_standard``/``pckh_paper``);
  ``std`` is the sample std over seeds (ddof=1); ``n`` is the number of seeds, except for
  ``p_value`` which uses the seeds shared with the reference; an empty cell is nan (no p for the
  reference itself, nor where a test is impossible).
* ``auc.csv``: the area under the learning curve kept apart so that ``labelled`` stays an
  integer column: ``acquirer,metric,first_budget,last_budget,mean,std,n,p_value`` with the same
  paired test on the per-seed AUCs.
* ``table.md`` / ``table.tex``: rows = acquirers, columns = budgets then AUC, cells
  "mean ± sd (p)", p < α in bold, a footnote with the test, its direction, α, n and the power
  caveat. For a paper experiment (``config.yaml``: ``dataset.name`` in {mpii, lsp} and
  ``protocol.name == paper``) a "paper" row under each acquirer gives the published numbers
  (``results/paper_tables.csv``).
* ``curves.png``: mean ± σ band per acquirer over the budget, the reference dashed.
"""

from __future__ import annotations

import csv
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from omegaconf import OmegaConf

from active.analysis import stats
from active.loop.run_files import budget_schedule
from hourglass.errors import AlposeError
from hourglass.io import atomic_path

# `alpose table --metric` name -> metrics.csv column; the reference when none is named.
METRIC_FLAGS = {"standard": "pckh_standard", "paper": "pckh_paper"}
DEFAULT_REFERENCE = "random"

REPO = Path(__file__).resolve().parents[2]
PAPER_TABLES = REPO / "results" / "paper_tables.csv"
PAPER_DATASETS = ("mpii", "lsp")
PAPER_SOURCE = "EGL++ (WACV 2022) tables"
# Our acquirer names -> the method names of paper_tables.csv.
PAPER_NAMES: dict[str, str] = {
    "random": "random",
    "coreset": "coreset",
    "core_set": "coreset",
    "kcenter": "coreset",
    "multipeak": "multipeak",
    "multipeak_entropy": "multipeak",
    "mpe": "multipeak",
    "learning_loss": "learning_loss",
    "learningloss": "learning_loss",
    "ll": "learning_loss",
    "egl_pp": "egl_pp",
    "eglpp": "egl_pp",
    "egl": "egl_pp",
}
METRIC_LABELS: dict[str, str] = {
    "pckh_standard": "standard PCKh@0.5 (%)",
    "pckh_paper": "paper (lenient) PCKh (%)",
}
TABLE_CSV_COLUMNS = ("acquirer", "labelled", "metric", "mean", "std", "n", "p_value")
AUC_CSV_COLUMNS = (
    "acquirer",
    "metric",
    "first_budget",
    "last_budget",
    "mean",
    "std",
    "n",
    "p_value",
)
DASH = "–"


# --------------------------------------------------------------------------------------------
# The experiment's config and the paper's numbers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExperimentInfo:
    """What the table needs from ``RUN_DIR/config.yaml`` (all optional; missing file = defaults)."""

    name: str
    dataset: str | None = None
    protocol: str | None = None
    budgets: tuple[int, ...] | None = None
    seeds: tuple[int, ...] | None = None
    acquirers: tuple[str, ...] | None = None
    reference: str | None = None  # the run config's `table.reference` (the paper runs: egl_pp)
    alternative: str | None = None  # and `table.alternative`

    @property
    def is_paper(self) -> bool:
        """True for the paper experiments, whose published numbers stand beside ours."""
        return self.dataset in PAPER_DATASETS and self.protocol == "paper"


def _select(cfg, keys: tuple[str, ...]):
    """First of ``keys`` present in ``cfg`` (dotted paths), resolved; None when none is."""
    for key in keys:
        value = OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
        if value is not None:
            return OmegaConf.to_object(value) if OmegaConf.is_config(value) else value
    return None


def _names(value) -> tuple[str, ...] | None:
    """Acquirer names from a list of names or of ``{name: ...}`` mappings."""
    if not isinstance(value, list):
        return None
    names = [v.get("name") if isinstance(v, dict) else v for v in value]
    return tuple(str(n) for n in names if n is not None) or None


def _ints(value) -> tuple[int, ...] | None:
    """A list of integers, or None when ``value`` is not one."""
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return tuple(value)
    return None


def _budgets(cfg) -> tuple[int, ...] | None:
    """The budget schedule a stored run config describes (the runner's own rule)."""
    keys = ("budgets", "initial", "per_cycle", "cycles")
    listed, initial, per_cycle, cycles = (_select(cfg, (k,)) for k in keys)
    schedule = budget_schedule(_ints(listed), initial, per_cycle, cycles)
    return tuple(schedule) if schedule else None


def _acquirers(cfg) -> tuple[str, ...] | None:
    """Names of ``acquirer_configs`` (what `alpose run` stores), else the ``acquirers`` list."""
    stored = _select(cfg, ("acquirer_configs",))
    if isinstance(stored, dict) and stored:
        return tuple(str(k) for k in stored)
    return _names(_select(cfg, ("acquirers",)))


def read_experiment_info(run_dir: str | Path) -> ExperimentInfo:
    """Read the few settings the reports use from ``RUN_DIR/config.yaml`` when it exists."""
    run_dir = Path(run_dir)
    name = run_dir.resolve().name
    path = run_dir / "config.yaml"
    if not path.is_file():
        return ExperimentInfo(name)

    try:
        cfg = OmegaConf.load(path)
    except Exception as err:  # a broken config must not hide the results
        raise AlposeError(f"cannot read {path}: {err}") from err
    dataset, protocol = _select(cfg, ("dataset.name",)), _select(cfg, ("protocol.name",))
    return ExperimentInfo(
        name=str(_select(cfg, ("experiment.name", "name")) or name),
        dataset=str(dataset) if dataset is not None else None,
        protocol=str(protocol) if protocol is not None else None,
        budgets=_budgets(cfg),
        seeds=_ints(_select(cfg, ("seeds",))),
        acquirers=_acquirers(cfg),
        reference=_optional_str(_select(cfg, ("table.reference",))),
        alternative=_optional_str(_select(cfg, ("table.alternative",))),
    )


def _optional_str(value: object) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True)
class PaperCell:
    """One published number: mean ± std over 5 runs and p vs EGL++ (nan for EGL++ itself)."""

    mean: float
    std: float
    p: float


def load_paper_numbers(
    dataset: str, acquirers: tuple[str, ...], path: Path = PAPER_TABLES
) -> dict[str, dict[int, PaperCell]]:
    """Published cells per our acquirer name and budget (images = labelled persons)."""
    if not path.is_file():
        return {}
    by_method: dict[str, dict[int, PaperCell]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row["dataset"] == dataset:
                cell = PaperCell(
                    float(row["mean"]), float(row["std"]), stats.to_float(row["p_value_vs_egl_pp"])
                )
                by_method.setdefault(row["acquirer"], {})[int(row["images"])] = cell
    return {a: by_method[PAPER_NAMES[a]] for a in acquirers if PAPER_NAMES.get(a) in by_method}


# --------------------------------------------------------------------------------------------
# The assembled table
# --------------------------------------------------------------------------------------------


@dataclass
class Table:
    """Everything the writers print: summaries, tests, AUCs, settings and the paper's numbers."""

    info: ExperimentInfo
    metric: str
    alpha: float
    summary: stats.Summary
    tests: stats.PairedTests
    auc: stats.CurveAUC
    auc_tests: stats.PairedTests
    paper: dict[str, dict[int, PaperCell]] = field(default_factory=dict)
    cost: stats.CycleCost | None = None

    @property
    def acquirers(self) -> tuple[str, ...]:
        return self.summary.acquirers

    @property
    def budgets(self) -> list[int]:
        return [int(b) for b in self.summary.budgets]

    @property
    def n_seeds(self) -> int:
        """The largest number of seeds of any cell (the n of a complete experiment)."""
        return int(self.summary.n.max())


def build_table(
    cube: stats.Cube,
    info: ExperimentInfo,
    reference: str,
    alternative: stats.Alternative,
    alpha: float,
    cost: stats.CycleCost | None = None,
) -> Table:
    """Run the statistics for one metric and attach the paper's numbers for paper experiments."""
    auc = stats.learning_curve_auc(cube)
    paper = load_paper_numbers(info.dataset, cube.acquirers) if info.is_paper else {}
    return Table(
        info=info,
        metric=cube.metric,
        alpha=alpha,
        summary=stats.summarise(cube),
        tests=stats.paired_tests(cube, reference, alternative),
        auc=auc,
        auc_tests=stats.auc_tests(auc, reference, alternative),
        paper=paper,
        cost=cost,
    )


# --------------------------------------------------------------------------------------------
# Cells and footnote (shared by markdown and LaTeX)
# --------------------------------------------------------------------------------------------


def format_p(p: float) -> str:
    """p with three decimals, "<0.001" below that, a dash when untestable."""
    if not np.isfinite(p):
        return DASH
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def significant(p: float, alpha: float) -> bool:
    """True where a p-value is below α (nan never is)."""
    return bool(np.isfinite(p) and p < alpha)


@dataclass(frozen=True)
class Cell:
    """One printed cell: text and whether it is bold (p < α)."""

    text: str
    bold: bool = False


def _cell(mean: float, std: float, n: int, p: float | None, n_full: int, alpha: float) -> Cell:
    """ "mean ± sd (p)" with "[n=k]" where fewer seeds than the experiment has; p None = reference."""
    if n == 0:
        return Cell("")
    sd = f"{std:.2f}" if np.isfinite(std) else DASH
    text = f"{mean:.2f} ± {sd}"
    if p is not None:
        text += f" ({format_p(p)})"
    if n < n_full:
        text += f" [n={n}]"
    return Cell(text, p is not None and significant(p, alpha))


def _paper_cell(cell: PaperCell | None, alpha: float) -> Cell:
    """A published number, with its p-value where there is one."""
    if cell is None:
        return Cell("")
    text = f"{cell.mean:.2f} ± {cell.std:.2f}"
    if np.isfinite(cell.p):
        text += f" ({format_p(cell.p)})"
    return Cell(text, significant(cell.p, alpha))


def _budget_span(table: Table) -> str:
    """ "first–last" budgets of the AUC."""
    return f"{table.budgets[0]}–{table.budgets[-1]}" if table.budgets else ""


def _row_order(table: Table) -> list[tuple[int, str]]:
    """(index, acquirer) with the reference first, the others in sorted order."""
    ref = table.tests.reference
    rows = list(enumerate(table.acquirers))
    return sorted(rows, key=lambda item: (item[1] != ref, item[1]))


def table_rows(table: Table) -> list[tuple[str, list[Cell]]]:
    """(row label, cells for every budget then AUC); a paper row follows each acquirer that has one."""
    rows = []
    ref = table.tests.reference
    s, t, a, at = table.summary, table.tests, table.auc, table.auc_tests
    for i, acq in _row_order(table):
        is_ref = acq == ref
        cells = [
            _cell(
                s.mean[i, j],
                s.std[i, j],
                s.n[i, j],
                None if is_ref else t.p[i, j],
                table.n_seeds,
                table.alpha,
            )
            for j in range(len(table.budgets))
        ]
        cells.append(
            _cell(
                a.mean[i], a.std[i], a.n[i], None if is_ref else at.p[i], table.n_seeds, table.alpha
            )
        )
        rows.append((f"{acq} (reference)" if is_ref else acq, cells))
        if acq in table.paper:
            published = [_paper_cell(table.paper[acq].get(b), table.alpha) for b in table.budgets]
            rows.append(("↳ paper", [*published, Cell("")]))
    return rows


def _hypothesis(table: Table) -> str:
    """H1 in words."""
    ref = table.tests.reference
    if table.tests.alternative == "reference-better":
        return f"H1: {ref} is better than the acquirer"
    return f"H1: the acquirer is better than {ref}"


def footnote(table: Table) -> list[str]:
    """The footnote sentences: test, direction, α, n, AUC, power, paper source."""
    sd = table.tests.sd_diff
    finite = sd[np.isfinite(sd) & (sd > 0)]
    median_sd = float(np.median(finite)) if finite.size else None
    lines = [
        f"Cells: mean ± sd over seeds (sample sd, ddof = 1), n = {table.n_seeds} seeds unless "
        "marked [n=k]; in brackets the p-value of a one-tailed paired t-test (Student, df = pairs − 1, "
        f"pairs = seeds present for both) against {table.tests.reference}, {_hypothesis(table)}. "
        f"Bold: p < α = {table.alpha:g}. {DASH}: no test possible (fewer than 2 pairs, or the same "
        "result in every seed, as at the shared initial cycle).",
        f"AUC: area under each seed's learning curve (trapezoid over budgets {_budget_span(table)}, "
        "divided by the span, so it reads as a mean score); seeds missing a budget are left out.",
        stats.power_caveat(table.n_seeds, table.alpha, median_sd),
    ]
    if table.paper:
        lines.append(
            f"Paper rows: published mean ± σ over 5 runs and p (one-tailed paired t-test, H1: EGL++ "
            f"is better, α = 0.1) from the {PAPER_SOURCE} (results/paper_tables.csv). They use the "
            "lenient paper PCKh (compare with --metric paper) and possibly an older pipeline: "
            "read them as indicative."
        )
    return lines


def metric_label(table: Table) -> str:
    """What the metric column means for this dataset (LSP-family sets score PCK@0.2 by torso)."""
    if (table.info.dataset or "").startswith("lsp") and table.metric == "pckh_standard":
        return "standard PCK@0.2 (%)"
    return METRIC_LABELS.get(table.metric, table.metric)


def _title(table: Table) -> str:
    """Experiment name, metric and direction."""
    label = metric_label(table)
    return f"{table.info.name}: {label}, mean ± sd over seeds (p vs {table.tests.reference})"


# --------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------


def render_markdown(table: Table) -> str:
    """The readable table: rows = acquirers, columns = budgets and AUC, p < α in bold."""

    def md(cell: Cell) -> str:
        return f"**{cell.text}**" if cell.bold and cell.text else cell.text

    header = ["acquirer", *map(str, table.budgets), f"AUC ({_budget_span(table)})"]
    lines = [f"### {_title(table)}", ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|:--" + "|--:" * (len(header) - 1) + "|")
    for label, cells in table_rows(table):
        lines.append("| " + " | ".join([label, *map(md, cells)]) + " |")
    lines.append("")
    lines += [f"{i}. {text}" for i, text in enumerate(footnote(table), 1)]
    return "\n".join(lines + cost_lines(table)) + "\n"


def cost_lines(table: Table) -> list[str]:
    """A small markdown table of seconds per acquisition cycle per acquirer (if known)."""
    cost = table.cost
    if cost is None or not cost.acquirers:
        return []
    lines = [
        "",
        "Seconds per acquisition cycle (wall time of one process, mean over seeds and cycles ≥ 1):",
        "",
        "| acquirer | acquisition | training |",
        "|:--|--:|--:|",
    ]
    for i, acq in enumerate(cost.acquirers):
        lines.append(f"| {acq} | {cost.acquire[i]:.1f} | {cost.train[i]:.1f} |")
    return lines


TEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "_": r"\_",
    "%": r"\%",
    "&": r"\&",
    "#": r"\#",
    "$": r"\$",
    "{": r"\{",
    "}": r"\}",
}
TEX_SYMBOLS = {
    "σ\\_d": r"$\sigma_d$",
    "±": r"$\pm$",
    "–": "--",
    "−": "$-$",
    "α": r"$\alpha$",
    "σ": r"$\sigma$",
    "≥": r"$\geq$",
    "≈": r"$\approx$",
    "↳": r"$\hookrightarrow$",
    "<": r"$<$",
}


def tex_escape(text: str) -> str:
    """Escape LaTeX specials, then spell the few Unicode symbols we print as math."""
    out = "".join(TEX_SPECIAL.get(ch, ch) for ch in text).replace("--", "-{}-")
    for symbol, tex in TEX_SYMBOLS.items():
        out = out.replace(symbol, tex)
    return out


def render_latex(table: Table) -> str:
    """The same table for a paper: booktabs, ``\\textbf`` where p < α, footnote below."""

    def tex(cell: Cell) -> str:
        body = tex_escape(cell.text)
        return rf"\textbf{{{body}}}" if cell.bold and cell.text else body

    header = ["Acquirer", *map(str, table.budgets), f"AUC ({_budget_span(table)})"]
    lines = [
        "% written by `alpose table`; needs \\usepackage{booktabs}",
        r"\begin{table}[t]",
        r"\centering",
        r"\scriptsize",
        r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}",
        r"\toprule",
        " & ".join(tex_escape(h) for h in header) + r" \\",
        r"\midrule",
    ]
    for label, cells in table_rows(table):
        lines.append(" & ".join([tex_escape(label), *map(tex, cells)]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{tex_escape(_title(table))}}}"]
    lines += [r"\par\smallskip", r"\begin{minipage}{\linewidth}\footnotesize"]
    lines += [tex_escape(text) + r"\par" for text in footnote(table)]
    lines += [r"\end{minipage}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def _csv_number(x: float) -> str:
    """Float text with 12 significant digits (round-trip noise trimmed); nan as an empty cell."""
    return f"{float(x):.12g}" if np.isfinite(x) else ""


def render_table_csv(table: Table) -> str:
    """``acquirer,labelled,metric,mean,std,n,p_value``: one row per (acquirer, budget)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(TABLE_CSV_COLUMNS)
    s, t = table.summary, table.tests
    for i, acq in enumerate(table.acquirers):
        for j, budget in enumerate(table.budgets):
            if s.n[i, j]:
                writer.writerow(
                    [
                        acq,
                        budget,
                        table.metric,
                        _csv_number(s.mean[i, j]),
                        _csv_number(s.std[i, j]),
                        int(s.n[i, j]),
                        _csv_number(t.p[i, j]),
                    ]
                )
    return buf.getvalue()


def render_auc_csv(table: Table) -> str:
    """``acquirer,metric,first_budget,last_budget,mean,std,n,p_value``: one row per acquirer."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(AUC_CSV_COLUMNS)
    a, t = table.auc, table.auc_tests
    first, last = (table.budgets[0], table.budgets[-1]) if table.budgets else ("", "")
    for i, acq in enumerate(table.acquirers):
        writer.writerow(
            [
                acq,
                table.metric,
                first,
                last,
                _csv_number(a.mean[i]),
                _csv_number(a.std[i]),
                int(a.n[i]),
                _csv_number(t.p[i]),
            ]
        )
    return buf.getvalue()


def write_text(path: Path, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def plot_curves(table: Table, path: Path) -> None:
    """``curves.png``: mean ± σ band per acquirer over the budget, reference dashed, paper dots."""
    fig = Figure(figsize=(7, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x = np.array(table.budgets, dtype=float)
    s = table.summary
    for i, acq in enumerate(table.acquirers):
        ok = s.n[i] > 0
        is_ref = acq == table.tests.reference
        (line,) = ax.plot(
            x[ok],
            s.mean[i, ok],
            "--" if is_ref else "-",
            marker="o",
            ms=3,
            label=acq + (" (reference)" if is_ref else ""),
        )
        band = ok & np.isfinite(s.std[i])
        ax.fill_between(
            x[band],
            (s.mean[i] - s.std[i])[band],
            (s.mean[i] + s.std[i])[band],
            color=line.get_color(),
            alpha=0.18,
            lw=0,
        )
        if acq in table.paper:
            pts = sorted(table.paper[acq].items())
            ax.errorbar(
                [b for b, _ in pts],
                [c.mean for _, c in pts],
                yerr=[c.std for _, c in pts],
                fmt="s",
                mfc="none",
                color=line.get_color(),
                ms=4,
                capsize=2,
            )
    ax.set_xlabel("labelled persons (budget)")
    ax.set_ylabel(metric_label(table))
    title = f"{table.info.name}: mean ± σ over seeds"
    ax.set_title(title + (" (squares: published)" if table.paper else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def write_reports(table: Table, out_dir: str | Path) -> list[Path]:
    """Write every report file into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    files = {
        "table.md": render_markdown(table),
        "table.tex": render_latex(table),
        "table.csv": render_table_csv(table),
        "auc.csv": render_auc_csv(table),
    }
    for name, text in files.items():
        write_text(out_dir / name, text)
    plot_curves(table, out_dir / "curves.png")
    return [out_dir / name for name in [*files, "curves.png"]]


def pick_reference(acquirers: tuple[str, ...], requested: str | None) -> str:
    """The requested reference, else random, else the first acquirer; AlposeError if unknown."""
    if requested is None:
        return DEFAULT_REFERENCE if DEFAULT_REFERENCE in acquirers else acquirers[0]
    if requested not in acquirers:
        raise AlposeError(
            f"unknown reference acquirer '{requested}'; acquirers found: {', '.join(acquirers)}"
        )
    return requested


def draw_run_curves(run_dir: Path, out: Path) -> bool:
    """``curves.png`` of every result under ``run_dir`` so far; False when there is none yet."""
    try:
        results = stats.load_results(run_dir)
    except AlposeError:
        return False
    cube = stats.to_cube(results, "pckh_standard")
    reference = "random" if "random" in cube.acquirers else cube.acquirers[0]
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # one seed: no spread, no test
        table = build_table(cube, read_experiment_info(run_dir), reference, "beats-reference", 0.1)
        plot_curves(table, out)
    return True
