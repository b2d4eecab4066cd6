"""Acquisition inference runs in fp32 whatever training's autocast, unless the acquirer's config
asks for bf16 (``amp: true``): bf16 ties heatmap peaks and moves embeddings and so changes picks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import hourglass.evaluate as evaluate
from active.acquirers.base import AcquisitionContext
from active.acquirers.coreset import CoreSetAcquirer
from active.acquirers.multipeak import MultiPeakAcquirer
from active.acquirers.registry import build_acquirer, inference_amp
from hourglass.model import StackedHourglass
from hourglass.train import TrainConfig


@pytest.fixture(scope="module")
def tiny(tiny_cache):
    torch.manual_seed(3)
    return tiny_cache, StackedHourglass(1, 16, 2, tiny_cache.num_joints)


def context(data, model, amp_train: bool, amp_acquirer: bool) -> AcquisitionContext:
    """The runner's context for a cycle trained with ``train.amp`` (and CPU bf16) as given."""
    cfg = dataclasses.replace(TrainConfig(), amp=amp_train, amp_cpu=amp_train, eval_batch_size=32)
    rows = data.indices("train")[:96]
    return AcquisitionContext.for_training(
        model,
        data,
        rows[:16],
        rows[16:],
        np.random.default_rng(0),
        torch.device("cpu"),
        cfg,
        amp=amp_acquirer,
    )


@pytest.mark.parametrize("acquirer", [MultiPeakAcquirer(anchor_bugs="fix"), CoreSetAcquirer()])
def test_scores_with_training_autocast_equal_fp32(tiny, acquirer):
    data, model = tiny
    fp32 = context(data, model, amp_train=False, amp_acquirer=False)
    trained_amp = context(data, model, amp_train=True, amp_acquirer=False)
    a = np.asarray(acquirer.select(fp32, 20))
    scores_a = acquirer.last_scores.copy()
    b = np.asarray(acquirer.select(trained_amp, 20))
    assert a.tolist() == b.tolist()
    np.testing.assert_array_equal(scores_a, acquirer.last_scores)


def test_an_acquirer_that_asks_for_bf16_gets_it(tiny):
    data, model = tiny
    fp32 = context(data, model, amp_train=False, amp_acquirer=False).infer(
        data.indices("train")[16:48], heatmaps=True, embedding=True
    )
    bf16 = context(data, model, amp_train=False, amp_acquirer=True).infer(
        data.indices("train")[16:48], heatmaps=True, embedding=True
    )
    assert not torch.equal(fp32.embedding, bf16.embedding)  # the knob does reach the model
    torch.testing.assert_close(fp32.embedding, bf16.embedding, rtol=0.1, atol=0.1)


def test_no_acquisition_inference_asks_for_autocast_unless_configured(tiny, monkeypatch):
    """On CUDA the old inference always autocast; record what every acquirer's pass asks for."""
    data, model = tiny
    asked: list[bool] = []
    real = evaluate.autocast

    def recording(device, enabled=True, cpu=False):
        asked.append(bool(enabled))
        return real(device, enabled, cpu)

    monkeypatch.setattr(evaluate, "autocast", recording)
    ctx = context(data, model, amp_train=True, amp_acquirer=False)
    ctx.infer(ctx.unlabelled[:40], heatmaps=True, embedding=True, pyramid=True)
    assert asked and not any(asked)
    asked.clear()
    context(data, model, amp_train=True, amp_acquirer=True).infer(
        ctx.unlabelled[:40], heatmaps=True
    )
    assert asked and all(asked)


def test_the_acquirer_config_key_amp():
    assert not inference_amp(build_acquirer("multipeak"))
    node = {"name": "multipeak", "_target_": "active.acquirers.multipeak.MultiPeakAcquirer"}
    assert inference_amp(build_acquirer({**node, "amp": True}))
    assert not inference_amp(build_acquirer({**node, "amp": False}))
