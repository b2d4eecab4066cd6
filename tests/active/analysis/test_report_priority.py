"""The report reads an acquirer's priority from the order it stored its picks in (most wanted
first), not from an attribute: a plug-in that picks the lowest score first gets the same
diagnostics as its mirror image that picks the highest of the negated score."""

from __future__ import annotations

import numpy as np
from helpers.runs import alpose, smoke

from active.analysis import cell_diagnostics

PLUGINS = {
    "lowest": "tests.helpers.order_acquirers.LowestPeakFirst",
    "negated": "tests.helpers.order_acquirers.HighestNegatedPeakFirst",
}


def test_a_lowest_first_plugin_has_the_sign_of_its_mirror_image(tmp_path, data_dir):
    rows = {}
    for name, target in PLUGINS.items():
        runs = tmp_path / name
        args = smoke(runs, data_dir, "acquirers=[]", "seeds=[0]", f"acquirer._target_={target}")
        r = alpose(*args, f"acquirer.name={name}")
        assert r.returncode == 0, r.stderr
        run = cell_diagnostics.open_run(runs / "smoke", data_dir, "cpu")
        cell = cell_diagnostics.diagnose(run, name, 0, 1)
        rows[name] = cell
    low, neg = rows["lowest"], rows["negated"]
    np.testing.assert_array_equal(low.picks, neg.picks)  # the same rows, in the same order
    assert np.isfinite(low.row.spearman_pool) and low.row.spearman_pool != 0
    assert low.row.spearman_pool == neg.row.spearman_pool
    assert low.row.spearman_picks == neg.row.spearman_picks
    np.testing.assert_allclose(low.pick_priority, neg.pick_priority)
    assert np.all(np.diff(low.pick_priority) <= 0)  # the first pick has the highest priority
