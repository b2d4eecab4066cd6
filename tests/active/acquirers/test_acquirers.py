"""Acquirers: random and core-set (against a brute-force k-center), through a real context, and the registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from active.acquirers import coreset
from active.acquirers.base import AcquisitionContext
from active.acquirers.coreset import CoreSetAcquirer, k_center_greedy
from active.acquirers.random import RandomAcquirer
from active.acquirers.registry import acquirer_config, build_acquirer, known_acquirers
from hourglass.errors import AlposeError
from hourglass.model import StackedHourglass


def brute_force_k_center(pool: np.ndarray, centres: np.ndarray, k: int) -> tuple[list[int], list]:
    """Reference k-center greedy from full distance matrices (ties: lowest position)."""
    to_pool = np.linalg.norm(pool[:, None] - pool[None], axis=-1)
    if len(centres):
        min_dist = np.linalg.norm(pool[:, None] - centres[None], axis=-1).min(axis=1)
    else:
        min_dist = np.full(len(pool), np.inf)
    picks, scores = [], []
    for _ in range(k):
        p = int(np.argmax(min_dist))
        picks.append(p)
        scores.append(min_dist[p])
        min_dist = np.minimum(min_dist, to_pool[p])
        min_dist[picks] = -np.inf
    return picks, scores


def random_points(seed: int, n: int, d: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


@pytest.mark.parametrize(
    ("u", "l", "d", "k", "chunk"),
    [
        (30, 5, 4, 10, 2),
        (50, 50, 8, 20, 3),
        (40, 0, 3, 5, 4),
        (25, 7, 2, 25, 100),
        (60, 13, 16, 1, 1),
    ],
)
def test_k_center_greedy_matches_brute_force(u, l, d, k, chunk):
    pool, centres = random_points(u, u, d), random_points(100 + l, l, d)
    picks, scores = k_center_greedy(torch.from_numpy(pool), torch.from_numpy(centres), k, chunk)
    ref_picks, ref_scores = brute_force_k_center(pool, centres, k)
    assert picks.tolist() == ref_picks
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-6)
    assert np.all(np.diff(scores) <= 1e-9)  # k-center scores never grow


def test_k_center_greedy_duplicates_and_ties_pick_each_row_once():
    pool = np.repeat(random_points(1, 4, 3), 3, axis=0)  # every point three times
    picks, _ = k_center_greedy(torch.from_numpy(pool), torch.from_numpy(pool[:1]), len(pool), 2)
    assert sorted(picks.tolist()) == list(range(len(pool)))
    assert picks.tolist() == brute_force_k_center(pool, pool[:1], len(pool))[0]


def test_k_center_greedy_never_builds_a_pool_by_labelled_matrix(monkeypatch):
    u, l, chunk = 40, 50, 3
    pool, centres = random_points(2, u, 6), random_points(3, l, 6)
    shapes: list[tuple[int, int]] = []
    real = coreset.squared_distances

    def recording(x, y):
        shapes.append((x.shape[0], y.shape[0]))
        return real(x, y)

    monkeypatch.setattr(coreset, "squared_distances", recording)
    picks, _ = k_center_greedy(torch.from_numpy(pool), torch.from_numpy(centres), 8, chunk)
    assert picks.tolist() == brute_force_k_center(pool, centres, 8)[0]
    assert sum(n for _, n in shapes) == l  # every labelled point was seen ...
    assert max(n for _, n in shapes) <= chunk  # ... but never more than a chunk at a time


def test_k_center_greedy_rejects_bad_input():
    pool = torch.zeros(5, 3)
    with pytest.raises(ValueError, match="outside"):
        k_center_greedy(pool, torch.zeros(2, 3), 6)
    with pytest.raises(ValueError, match="must be"):
        k_center_greedy(pool, torch.zeros(2, 4), 1)


def pool_context(seed: int, data=None, model=None, n_lab: int = 20, n_unlab: int = 200):
    """A context with a scattered labelled/unlabelled split of rows 0..n_lab+n_unlab."""
    rows = np.random.default_rng(99).permutation(n_lab + n_unlab)
    return AcquisitionContext(
        model=model if model is not None else torch.nn.Identity(),
        data=data,
        labelled=np.sort(rows[:n_lab]),
        unlabelled=np.sort(rows[n_lab:]),
        rng=np.random.default_rng(seed),
        progress=False,
    )


def test_random_is_deterministic_by_seed_and_picks_from_unlabelled():
    acq = RandomAcquirer()
    a = acq.select(pool_context(5), 30)
    assert len(a) == 30 and len(set(a.tolist())) == 30
    assert set(a.tolist()) <= set(pool_context(5).unlabelled.tolist())
    assert acq.last_scores.shape == (30,)
    assert np.array_equal(a, RandomAcquirer().select(pool_context(5), 30))
    assert not np.array_equal(a, RandomAcquirer().select(pool_context(6), 30))


def test_random_takes_what_is_left_when_k_exceeds_the_pool():
    ctx = pool_context(0, n_unlab=7)
    assert sorted(RandomAcquirer().select(ctx, 10).tolist()) == ctx.unlabelled.tolist()


@pytest.fixture(scope="module")
def tiny_model() -> StackedHourglass:
    torch.manual_seed(0)
    return StackedHourglass(1, 16, 2, 16)


@pytest.mark.parametrize(
    "make",
    [
        RandomAcquirer,
        lambda: CoreSetAcquirer(batch_size=32, chunk=7),
        lambda: CoreSetAcquirer(chunk=7, features="multiscale"),
    ],
)
def test_acquirers_on_a_real_context(tiny_cache, tiny_model, make):
    k = 12
    picks = make().select(pool_context(1, tiny_cache, tiny_model), k)
    ctx = pool_context(1, tiny_cache, tiny_model)
    assert len(picks) == k and len(set(picks.tolist())) == k
    assert set(picks.tolist()) <= set(ctx.unlabelled.tolist())
    acq = make()
    assert np.array_equal(acq.select(ctx, k), picks)  # deterministic
    assert acq.last_scores.shape == (k,)


def test_coreset_on_a_real_context_is_k_center_of_the_embedding(tiny_cache, tiny_model):
    ctx = pool_context(1, tiny_cache, tiny_model)
    acq = CoreSetAcquirer(chunk=5)
    picks = acq.select(ctx, 10)
    emb = ctx.infer(np.concatenate([ctx.unlabelled, ctx.labelled]), embedding=True).embedding
    pool, centres = emb[: len(ctx.unlabelled)].double(), emb[len(ctx.unlabelled) :].double()
    ref, ref_scores = brute_force_k_center(pool.numpy(), centres.numpy(), 10)
    assert picks.tolist() == ctx.unlabelled[ref].tolist()
    np.testing.assert_allclose(acq.last_scores, ref_scores, rtol=1e-4)
    assert np.all(acq.last_scores > 0)


def test_registry_lists_and_builds_the_shipped_acquirers():
    names = known_acquirers()
    assert {"random", "coreset"} <= set(names)
    for name in names:
        cfg = acquirer_config(name)
        assert cfg.name == name and cfg._target_
        assert callable(build_acquirer(cfg).select)
    assert isinstance(build_acquirer("coreset"), CoreSetAcquirer)
    assert build_acquirer(acquirer_config("coreset")).chunk == 4096


def test_registry_unknown_name_lists_the_known_ones():
    with pytest.raises(AlposeError, match="unknown acquirer 'nope'; known: ") as err:
        acquirer_config("nope")
    assert all(name in str(err.value) for name in known_acquirers())


def test_registry_target_override_and_interpolation():
    cfg = OmegaConf.create(
        {
            "chunk": 11,
            "acquirer": {"name": "coreset", "_target_": "active.acquirers.random.RandomAcquirer"},
            "other": {
                "name": "coreset",
                "_target_": CoreSetAcquirer.__module__ + ".CoreSetAcquirer",
            },
        }
    )
    cfg.other.chunk = "${chunk}"
    assert isinstance(build_acquirer(cfg.acquirer), RandomAcquirer)
    assert build_acquirer(cfg.other).chunk == 11


@pytest.mark.parametrize(
    ("node", "needle"),
    [
        ({"name": "x", "_target_": "no.such.Class"}, "no.such.Class"),
        ({"name": "x"}, "no _target_"),
        ({"_target_": "collections.OrderedDict"}, "collections.OrderedDict has no select"),
        ({"_target_": "active.acquirers.random.RandomAcquirer", "bogus": 1}, "bogus"),
    ],
)
def test_registry_bad_configs_are_one_line_errors(node, needle):
    with pytest.raises(AlposeError, match=needle) as err:
        build_acquirer(node)
    assert "\n" not in str(err.value)


def test_pooled_pyramid_is_the_mean_of_each_scale(tiny_cache, tiny_model):
    ctx = pool_context(1, tiny_cache, tiny_model)
    rows = ctx.unlabelled[:5]
    got = ctx.infer(rows, embedding=True, pyramid=True)
    assert got.pyramid.shape == (5, 16 * 3)  # depth 2: two low3 maps and the full-resolution output
    tiny_model.eval()
    with torch.no_grad():
        x = torch.from_numpy(tiny_cache.images[rows]).permute(0, 3, 1, 2).float() / 256
        out = tiny_model(x)
    expected = torch.cat([p.mean(dim=(2, 3)) for p in out.pyramid], 1)
    torch.testing.assert_close(got.pyramid, expected, rtol=1e-4, atol=1e-5)


def test_multiscale_coreset_differs_from_the_anchor_embedding_and_rejects_typos(
    tiny_cache, tiny_model
):
    ctx = pool_context(3, tiny_cache, tiny_model)
    anchor = CoreSetAcquirer().select(ctx, 15)
    multi = CoreSetAcquirer(features="multiscale").select(ctx, 15)
    assert not np.array_equal(anchor, multi)
    with pytest.raises(ValueError, match="multiscale"):
        CoreSetAcquirer(features="pyramids")
