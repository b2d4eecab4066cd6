"""Result folders stored before a train key existed stay usable when the key is at its old value."""

from __future__ import annotations

from active.loop.run_config import ADDED_DEFAULTS, config_differences


def stored_and_new():
    stored = {"name": "x", "train": {"lr": 0.001, "augment": {"rotate": 30}}}
    new = {"name": "x", "train": {"lr": 0.001, "augment": {"rotate": 30}}}
    for key, value in ADDED_DEFAULTS.items():
        node = new
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return stored, new


def test_keys_missing_from_an_older_stored_config_count_at_their_old_default():
    stored, new = stored_and_new()
    assert config_differences(stored, new) == []


def test_a_new_key_away_from_its_old_default_is_named_and_a_free_one_is_not():
    stored, new = stored_and_new()
    new["train"]["compile"] = "default"
    new["train"]["augment"]["path"] = "batch"
    new["train"]["epoch_checkpoint"] = True  # crash-safety only: results are unchanged
    new["dataset"] = {"in_memory": False}  # memory only
    stored["dataset"] = {"in_memory": True}
    assert config_differences(stored, new) == ["train.augment.path", "train.compile"]
    new["train"]["lr"] = 0.002
    assert "train.lr" in config_differences(stored, new)


def test_moving_a_real_datasets_folder_keeps_its_results_but_another_crop_does_not():
    stored, new = stored_and_new()
    stored["dataset"] = {"name": "lspet_mini", "root": "/old/copy/lsp", "size": 128}
    new["dataset"] = {"name": "lspet_mini", "root": "data/lspet", "size": 128}
    assert config_differences(stored, new) == []
    new["dataset"]["size"] = 64
    assert config_differences(stored, new) == ["dataset.size"]


def test_acquirer_settings_override_one_named_acquirer_only():
    from omegaconf import OmegaConf

    from active.acquirers.registry import build_acquirer
    from active.loop.run_config import acquirer_configs

    cfg = OmegaConf.create(
        {
            "acquirers": ["random", "egl_pp"],
            "acquirer": {"_target_": None, "name": None},
            "acquirer_settings": {"egl_pp": {"pool_subsample": 300, "k": 7}, "coreset": {"x": 1}},
        }
    )
    configs = acquirer_configs(cfg)
    assert sorted(configs) == ["egl_pp", "random"]  # a setting for an absent acquirer adds nothing
    egl = build_acquirer(configs["egl_pp"])
    assert egl.k == 7 and egl.pool_subsample == 300
    assert getattr(build_acquirer(configs["random"]), "pool_subsample", None) is None


def test_augment_path_auto_counts_as_sample_on_a_cpu_and_batch_on_a_gpu(monkeypatch):
    import torch

    stored, new = stored_and_new()
    stored["train"]["augment"]["path"] = "sample"  # a run stored before `auto` was the default
    new["train"]["augment"]["path"] = "auto"
    new["train"]["prefetch"] = 2  # speed only
    new["device"] = "cpu"
    assert config_differences(stored, new) == []
    new["device"] = "cuda"  # auto = the device warp there: other numbers
    assert config_differences(stored, new) == ["train.augment.path"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    new["device"] = "auto"
    assert config_differences(stored, new) == ["train.augment.path"]
    new["train"]["deterministic"] = True
    assert config_differences(stored, new) == ["train.augment.path", "train.deterministic"]
