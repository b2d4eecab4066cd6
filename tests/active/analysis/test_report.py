"""alpose report / inspect: diagnostics equal direct scipy/numpy computations on a smoke run, the
gallery draws the true skeleton at the stored joints, and the HTML page loads in headless Chromium."""

import csv
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.runs import alpose, smoke
from scipy.stats import spearmanr

ACQUIRERS = ("coreset", "multipeak", "random")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """One smoke experiment: random, core-set and multi-peak entropy, seed 0, cycles 0-2."""
    runs = tmp_path_factory.mktemp("report-runs")
    data = tmp_path_factory.mktemp("report-data")
    r = alpose(*smoke(runs, data, "acquirers=[random,coreset,multipeak]", "seeds=[0]"))
    assert r.returncode == 0, r.stderr
    return runs / "smoke"


@pytest.fixture(scope="module")
def opened(run_dir):
    from active.analysis.cell_diagnostics import open_run

    return open_run(run_dir, device="cpu")


def _picks(run_dir, acq, cycle):
    rec = np.load(run_dir / acq / "seed_0" / "selections" / f"cycle_{cycle}.npy")
    return rec["index"].astype(np.int64), rec["score"].astype(np.float64)


def _direct_errors(run, checkpoint, rows):
    """Mean normalised joint error of ``rows`` under ``checkpoint``, computed without the module."""
    from hourglass.evaluate import predict_coords
    from hourglass.factories import build_model

    model = build_model(run.cfg.model, run.data.num_joints, run.data.image_size)
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True)["model"])
    tc = run.train_cfg
    pred = predict_coords(model, run.data, rows, loss=tc.loss, decode_method=tc.decode)
    gt, vis = run.data.joints[rows], run.data.visibility[rows]
    dist = np.linalg.norm(pred - gt, axis=-1) / run.data.normaliser[rows][:, None]
    return np.array([d[v >= 0].mean() for d, v in zip(dist, vis, strict=True)])


def test_spearman_and_hit_rate_equal_direct_computations(run_dir, opened):
    from active.acquirers.base import AcquisitionContext
    from active.acquirers.multipeak import MultiPeakAcquirer
    from active.analysis.cell_diagnostics import diagnose
    from hourglass.factories import build_model

    initial = np.array(json.loads((run_dir / "_initial/seed_0/state.json").read_text())["labelled"])
    pool = opened.data.indices("train")
    for cycle in (1, 2):
        picks, stored = _picks(run_dir, "multipeak", cycle)
        labelled = (
            initial if cycle == 1 else np.union1d(initial, _picks(run_dir, "multipeak", 1)[0])
        )
        offered = np.setdiff1d(pool, labelled)
        ckpt = (
            run_dir / "_initial/seed_0/checkpoints/cycle_0.pt"
            if cycle == 1
            else run_dir / f"multipeak/seed_0/checkpoints/cycle_{cycle - 1}.pt"
        )
        errors = _direct_errors(opened, ckpt, offered)
        model = build_model(opened.cfg.model, opened.data.num_joints, opened.data.image_size)
        model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True)["model"])
        ctx = AcquisitionContext(
            model, opened.data, labelled, offered, np.random.default_rng(0),
            loss=opened.train_cfg.loss, progress=False,
        )  # fmt: skip
        scores = MultiPeakAcquirer().scores(ctx, offered)
        k = len(picks)
        assert set(offered[np.argsort(-scores, kind="stable")[:k]]) == set(picks)

        cell = diagnose(opened, "multipeak", 0, cycle)
        r = cell.row
        assert r.pool == len(offered) and r.picked == k and r.ranked
        assert r.spearman_pool == pytest.approx(spearmanr(scores, errors).statistic, abs=1e-9)
        pick_err = errors[np.searchsorted(offered, picks)]
        assert r.spearman_picks == pytest.approx(spearmanr(stored, pick_err).statistic, abs=1e-9)
        top = set(offered[np.argsort(-errors, kind="stable")[:k]])
        assert r.hit_rate == pytest.approx(len(top & set(picks)) / k)
        assert r.error_lift == pytest.approx(pick_err.mean() / errors.mean())
        assert r.rescore_max_diff < 1e-5
        assert np.allclose(cell.error[np.searchsorted(cell.rows, offered)], errors, atol=1e-9)
        assert set(cell.rows[cell.role == "selected"]) == set(picks)
        assert set(cell.rows[cell.role == "labelled"]) == set(labelled)

        if cycle == 1:  # same model as cycle 1's shared pass: the cached pass serves these
            coreset = diagnose(opened, "coreset", 0, 1)  # no per-row scores: picks only
            assert not coreset.row.ranked and np.isnan(coreset.row.spearman_pool)
            c_picks, c_stored = _picks(run_dir, "coreset", 1)
            c_err = errors[np.searchsorted(offered, c_picks)]
            want = spearmanr(c_stored, c_err).statistic
            assert coreset.row.spearman_picks == pytest.approx(want, abs=1e-9)
            rand = diagnose(opened, "random", 0, 1)
            assert np.isnan(rand.row.spearman_picks)  # zeros: no ranking to correlate
            assert rand.row.mean_error_pool == pytest.approx(errors.mean())


def test_overlap_equals_set_arithmetic(run_dir):
    from active.analysis.run_diagnostics import overlap_matrix, overlap_rows

    rows = overlap_rows(run_dir)
    assert {(r.cycle, r.acquirer_a, r.acquirer_b) for r in rows} == {
        (c, a, b) for c in (1, 2) for a, b in (ACQUIRERS[:2], ACQUIRERS[::2], ACQUIRERS[1:])
    }
    for r in rows:
        pa, pb = (
            _picks(run_dir, r.acquirer_a, r.cycle)[0],
            _picks(run_dir, r.acquirer_b, r.cycle)[0],
        )
        inter, union = np.intersect1d(pa, pb).size, np.union1d(pa, pb).size
        assert r.common == inter and r.jaccard_picks == pytest.approx(inter / union)
        if r.cycle == 2:  # after the last cycle, state.json holds the final labelled set
            la, lb = (
                json.loads((run_dir / a / "seed_0/state.json").read_text())["labelled"]
                for a in (r.acquirer_a, r.acquirer_b)
            )
            j = np.intersect1d(la, lb).size / np.union1d(la, lb).size
            assert r.jaccard_labelled == pytest.approx(j)
    m = overlap_matrix(rows, ACQUIRERS, cycle=1)
    assert np.allclose(m, m.T) and np.all(np.diag(m) == 1)
    first = next(
        r for r in rows if r.cycle == 1 and r.acquirer_a == "coreset" and r.acquirer_b == "random"
    )
    assert m[0, 2] == pytest.approx(first.jaccard_picks)


def test_joint_gain_families_and_timing_match_the_run_files(run_dir, opened):
    from active.analysis.run_diagnostics import family_rows, joint_gain_rows, timing_rows

    with open(run_dir / "coreset/seed_0/metrics.csv", newline="") as f:
        table = {int(r["cycle"]): r for r in csv.DictReader(f)}
    gains = {(g.cycle, g.joint): g for g in joint_gain_rows(run_dir, ["coreset"])}
    for joint in ("head_top", "l_wrist"):
        for c in (1, 2):
            want = float(table[c][f"standard_{joint}"]) - float(table[c - 1][f"standard_{joint}"])
            assert gains[(c, joint)].gain == pytest.approx(want)
    assert np.isnan(gains[(0, "head_top")].gain)
    data = opened.data
    fam = [
        f for f in family_rows(run_dir, data.family, data.family_names, opened.pool) if f.cycle == 1
    ]
    for acq in ACQUIRERS:
        counts = np.bincount(
            data.family[_picks(run_dir, acq, 1)[0]], minlength=len(data.family_names)
        )
        assert [f.picked for f in fam if f.acquirer == acq] == counts.tolist()
    times = {(t.acquirer, t.cycle): t for t in timing_rows(run_dir)}
    assert times[("coreset", 2)].acquisition_seconds == pytest.approx(
        float(table[2]["acquisition_seconds"])
    )


def test_gallery_draws_the_true_skeleton_at_the_stored_joints(opened):
    from active.analysis.figures import PRED_COLOUR, TRUE_COLOUR, GalleryGroup, render_gallery

    data = opened.data
    rows = opened.pool[:5]
    pred = data.joints[rows][:, ::-1] + 3.0  # deliberately wrong predictions
    groups = [
        GalleryGroup("top", rows[:3], pred[:3], ["a", "b", "c"]),
        GalleryGroup("bottom", rows[3:], pred[3:], ["d", "e"]),
    ]
    g = render_gallery(data, groups, tile=128, cols=3)
    assert g.scale == 2 and g.rows == rows.tolist()
    checked = 0
    for t, row in enumerate(rows):
        for xy, v in zip(data.joints[row], data.visibility[row], strict=True):
            if v != 1 or not (xy >= 0).all() or not (xy < data.image_size).all():
                continue
            x, y = np.round(g.to_pixel(t, xy)).astype(int)
            assert tuple(g.image[y, x]) == TRUE_COLOUR, (t, xy)
            checked += 1
    assert checked >= 40
    # the true skeleton is drawn on top; the prediction shows where it is not covered
    assert (g.image == PRED_COLOUR).all(-1).sum() > 100
    # nothing drawn without joints: the tile is the model crop, upscaled
    plain = render_gallery(data, [GalleryGroup("x", rows[:1], pred[:1], [""])], tile=128, cols=1)
    ox, oy = plain.origins[0]
    assert (plain.image[oy : oy + 128, ox : ox + 128] == TRUE_COLOUR).all(-1).sum() > 50


def test_preview_draws_lsp_links_for_14_joints():
    from hourglass.preview import draw_skeleton

    joints = np.zeros((14, 2))
    joints[13] = (50, 10)  # head_top
    joints[12] = (50, 30)  # neck
    joints[8], joints[9] = (30, 40), (70, 40)  # r_shoulder, l_shoulder
    for j, xy in zip(
        (0, 1, 2, 3, 4, 5, 6, 7, 10, 11),
        [
            (40, 95),
            (40, 80),
            (42, 65),
            (58, 65),
            (60, 80),
            (60, 95),
            (20, 70),
            (25, 55),
            (75, 55),
            (80, 70),
        ],
        strict=True,
    ):
        joints[j] = xy
    out = draw_skeleton(np.zeros((100, 100, 3), np.uint8), joints, np.ones(14, np.int8), radius=2)
    assert out[20, 50].any()  # head_top - neck
    assert out[35, 40].any()  # neck - r_shoulder
    assert not out[40, 50].any()  # no shoulder-to-shoulder line (MPII's head link in LSP indices)


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


def _browser(tmp, *args):
    exe = _chromium()
    if exe is None:
        pytest.skip("no Chromium installed (.ci/run installs Debian's chromium where it can)")
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp / 'profile'}", "--virtual-time-budget=10000",
    ]  # fmt: skip
    r = subprocess.run([exe, *flags, *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


PROBE = (
    "<script>window.addEventListener('load', () => {const b = document.body;"
    "b.dataset.imgs = [...document.images].map(i => i.complete ? i.naturalWidth : -1).join(',');"
    "b.dataset.rows = document.querySelectorAll('#results-table tbody tr').length;"
    "b.dataset.scores = document.querySelectorAll('#scores-table tbody tr').length;});</script>"
)


def test_report_is_one_offline_page_that_loads_in_chromium(run_dir, cli, tmp_path):
    out = tmp_path / "report.html"
    status, stdout, err = cli("report", run_dir, "--out", out, "--device", "cpu", "--tiles", "4")
    assert status == 0, err
    page = out.read_text(encoding="utf-8")
    n_img = page.count("<img ")
    assert n_img >= 3 * len(ACQUIRERS) + 3  # gallery, scatter, PCA per acquirer; curves, overlap
    assert "http://" not in page and "https://" not in page and "<link" not in page
    assert page.count('src="data:image/png;base64,') == n_img
    diag = tmp_path / "report_diagnostics"  # beside the page: the run folder may be read-only
    with open(diag / "scores.csv", newline="") as f:
        scores = list(csv.DictReader(f))
    assert sorted(r["acquirer"] for r in scores) == list(ACQUIRERS)
    assert (diag / "samples" / "multipeak_seed0_cycle1.csv").is_file()

    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = _browser(tmp_path, "--dump-dom", probe.as_uri())
    body = dom[dom.index("<body") : dom.index(">", dom.index("<body"))]
    widths = [int(w) for w in body.split('data-imgs="')[1].split('"')[0].split(",")]
    assert len(widths) == n_img and min(widths) > 0, widths  # every picture decoded
    assert int(body.split('data-rows="')[1].split('"')[0]) == len(ACQUIRERS)
    assert int(body.split('data-scores="')[1].split('"')[0]) == len(ACQUIRERS)

    shot = tmp_path / "report.png"
    _browser(
        tmp_path,
        "--hide-scrollbars",
        "--window-size=1200,1600",
        f"--screenshot={shot}",
        out.as_uri(),
    )
    import cv2

    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (1600, 1200) and img.std() > 10


def test_inspect_prints_the_cell_and_refuses_cycle_0(run_dir, opened, cli):
    from active.analysis.cell_diagnostics import diagnose

    args = ("--acquirer", "multipeak", "--seed", 0, "--cycle", 1, "--device", "cpu")
    status, out, err = cli("inspect", run_dir, *args, "--no-rescore")
    assert status == 0, err
    row = diagnose(opened, "multipeak", 0, 1).row
    assert f"picks only:   {row.spearman_picks:.3f}" in out
    assert f"lift {row.error_lift:.2f}" in out
    assert "coreset" in out and "random" in out and "standing" in out
    status, _, err = cli("inspect", run_dir, "--acquirer", "multipeak", "--seed", 0, "--cycle", 0)
    assert status == 2 and err.startswith("error:") and "cycle 0" in err
