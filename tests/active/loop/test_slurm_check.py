"""The pre-submit check of a SLURM sweep's request, on sinfo text (no cluster needed): what it
reads from ``sinfo --Node``, and each request it refuses with the key to change."""

import pytest

from active.loop import slurm_check
from active.loop.slurm_check import check, parse_gres, parse_sinfo, refusal, request_of
from hourglass.errors import AlposeError

# one CPU node (the default partition) and two GPU nodes of different sizes
SINFO = """\
debug*|vm|2|24105|(null)
gpu|g1|32|257000|gpu:a100:4(S:0-1)
gpu|g2|64|515000|gpu:a100:8(S:0-1),mps:200
"""
NODES = parse_sinfo(SINFO)
CPU_JOB = {"gpus_per_node": 0, "cpus_per_task": 1, "mem_gb": 2, "nodes": 1, "tasks_per_node": 1}
DEFAULTS = {"gpus_per_node": 1, "cpus_per_task": 8, "mem_gb": 48, "partition": None, "nodes": 1}


def why(params):
    return refusal(request_of(params), NODES)


def test_sinfo_lines_become_nodes():
    vm, g1, g2 = NODES
    assert (vm.partition, vm.default, vm.name, vm.cpus, vm.memory_mb, vm.gpus) == (
        "debug",
        True,
        "vm",
        2,
        24105,
        {},
    )
    assert (g1.partition, g1.default, g1.cpus, g1.gpus) == ("gpu", False, 32, {"a100": 4})
    assert g2.gpu_count() == 8 and g2.gpu_count("a100") == 8 and g2.gpu_count("v100") == 0
    assert parse_sinfo("garbage\n\n") == []


@pytest.mark.parametrize(
    ("gres", "gpus"),
    [
        ("(null)", {}),
        ("gpu:2", {"": 2}),
        ("gpu:a100:4(S:0-1)", {"a100": 4}),
        ("gpu:a100:2(S:0),gpu:v100:1(S:1)", {"a100": 2, "v100": 1}),
        ("mps:100,gpu:tesla:1", {"tesla": 1}),
        ("gpu", {"": 1}),
    ],
)
def test_gres_fields(gres, gpus):
    assert parse_gres(gres) == gpus


def test_requests_the_cluster_can_meet_pass():
    assert why(CPU_JOB) is None
    assert why({**CPU_JOB, "partition": "debug", "cpus_per_task": 2}) is None
    assert why({**DEFAULTS, "partition": "gpu"}) is None
    assert why({**DEFAULTS, "partition": "gpu", "gpus_per_node": 8, "mem_gb": 500}) is None
    assert why({**CPU_JOB, "partition": "gpu", "gres": "gpu:a100:4"}) is None
    assert why({**CPU_JOB, "mem_gb": None}) is None  # the cluster's default memory per CPU
    check(CPU_JOB, SINFO)  # no exception


def test_a_missing_partition_names_the_ones_there():
    assert why({**CPU_JOB, "partition": "long"}) == (
        "SLURM has no partition 'long' (partitions: debug, gpu); "
        "set hydra.launcher.partition to one of them"
    )
    no_default = parse_sinfo("gpu|g1|32|257000|gpu:4\n")
    assert refusal(request_of(CPU_JOB), no_default) == (
        "SLURM has no default partition; set hydra.launcher.partition to one of: gpu"
    )


def test_gpus_on_a_cpu_partition_say_to_ask_for_none():
    assert why(DEFAULTS) == (
        "hydra.launcher.gpus_per_node=1 asks for 1 GPU per node, but the nodes of partition "
        "'debug' have at most 0; set hydra.launcher.gpus_per_node=0 (the jobs then train on the "
        "CPU), or choose a partition with GPUs (hydra.launcher.partition)"
    )


def test_more_gpus_than_any_node_has_names_the_key_they_came_from():
    assert why({**DEFAULTS, "partition": "gpu", "gpus_per_node": 16}).startswith(
        "hydra.launcher.gpus_per_node=16 asks for 16 GPUs per node, but the nodes of partition "
        "'gpu' have at most 8; set hydra.launcher.gpus_per_node to at most 8"
    )
    assert why({**CPU_JOB, "partition": "gpu", "gres": "gpu:a100:9"}).startswith(
        "hydra.launcher.gres=gpu:a100:9 asks for 9 a100 GPUs per node"
    )
    assert why({**CPU_JOB, "partition": "gpu", "gpus_per_node": "v100:1"}).startswith(
        "hydra.launcher.gpus_per_node=v100:1 asks for 1 v100 GPU per node, but the nodes of "
        "partition 'gpu' have at most 0"
    )
    per_task = {**CPU_JOB, "partition": "gpu", "gpus_per_task": 3, "tasks_per_node": 3}
    assert why(per_task).startswith("hydra.launcher.gpus_per_task=3 asks for 9 GPUs per node")


def test_too_many_cpus_or_too_much_memory():
    assert why({**CPU_JOB, "cpus_per_task": 8}) == (
        "hydra.launcher.cpus_per_task=8 asks for 8 CPUs per node, but the nodes of partition "
        "'debug' have at most 2; set hydra.launcher.cpus_per_task to at most 2"
    )
    assert why({**CPU_JOB, "cpus_per_task": 1, "tasks_per_node": 4}).startswith(
        "hydra.launcher.cpus_per_task=1 x 4 tasks asks for 4 CPUs per node"
    )
    assert why({**CPU_JOB, "mem_gb": 48}) == (
        "hydra.launcher.mem_gb=48 asks for 49152 MB per node, but the nodes of partition 'debug' "
        "have at most 24105 MB; set hydra.launcher.mem_gb to at most 23"
    )


def test_no_single_node_with_everything_at_once():
    mixed = parse_sinfo("p*|big_cpu|64|8000|(null)\np*|big_gpu|4|8000|gpu:2\n")
    request = request_of({"gpus_per_node": 2, "cpus_per_task": 64, "mem_gb": 4})
    assert refusal(request, mixed) == (
        "no node of partition 'p' has 2 GPUs, 64 CPUs and 4096 MB at once; lower "
        "hydra.launcher.gpus_per_node, hydra.launcher.cpus_per_task or hydra.launcher.mem_gb"
    )


def test_more_nodes_than_the_partition_has():
    assert why({**DEFAULTS, "partition": "gpu", "nodes": 3}) == (
        "hydra.launcher.nodes=3 asks for 3 nodes, but partition 'gpu' has 2 that can run the "
        "job; set hydra.launcher.nodes to at most 2"
    )


def test_check_raises_one_alpose_error_line():
    with pytest.raises(AlposeError) as err:
        check(DEFAULTS, SINFO)
    assert "\n" not in str(err.value) and "hydra.launcher.gpus_per_node=0" in str(err.value)
    with pytest.raises(AlposeError, match="sinfo lists no SLURM nodes"):
        check(CPU_JOB, "")


def test_without_sinfo_the_sweep_is_refused_in_one_line(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(AlposeError) as err:
        slurm_check.read_sinfo()
    assert str(err.value).startswith("hydra/launcher=slurm needs the SLURM commands")
    assert "hydra/launcher=joblib" in str(err.value)
