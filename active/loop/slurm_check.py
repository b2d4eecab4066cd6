"""A SLURM sweep's resource request against what the cluster has, before anything is submitted.

``alpose run -m hydra/launcher=slurm`` asks for ``hydra.launcher.*`` per job (a partition, GPUs,
CPUs, memory, nodes). A request that no node of the partition can meet is either refused by
``sbatch`` with a terse message (``Invalid generic resource (gres) specification``) or, worse,
accepted and left PENDING forever, so that the sweep never returns. :func:`refusal` compares the
request with ``sinfo``'s node list (one line per node and partition, :data:`SINFO_COMMAND`) and
says which key to change. Only fixed capacities are compared, never node states: a drained node
comes back, a missing GPU does not.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hourglass.errors import AlposeError

SINFO_FORMAT = "%P|%N|%c|%m|%G"  # partition (default marked *), node, CPUs, memory in MB, gres
SINFO_COMMAND = ["sinfo", "--noheader", "--Node", f"--format={SINFO_FORMAT}"]
KEY = "hydra.launcher"


@dataclass(frozen=True)
class Node:
    """One node of one partition, as ``sinfo --Node`` lists it."""

    partition: str
    default: bool  # the partition jobs go to without --partition
    name: str
    cpus: int
    memory_mb: int
    gpus: dict[str, int]  # GPU type ("" when untyped) -> count

    def gpu_count(self, kind: str = "") -> int:
        return self.gpus.get(kind, 0) if kind else sum(self.gpus.values())


@dataclass(frozen=True)
class Request:
    """What one job asks for per node, and the launcher key each amount comes from."""

    partition: str | None
    nodes: int
    cpus: int  # cpus_per_task x tasks_per_node
    memory_mb: int | None
    gpus: int
    gpu_kind: str
    gpu_key: str  # gpus_per_node, gres or gpus_per_task: the key to change
    gpu_value: str  # that key's value as given
    cpus_per_task: int
    tasks_per_node: int


def parse_gres(gres: str) -> dict[str, int]:
    """GPUs in an sinfo gres field: ``gpu:a100:4(S:0-1),mps:100`` -> ``{"a100": 4}``."""
    gpus: dict[str, int] = {}
    for entry in re.sub(r"\([^)]*\)", "", gres).split(","):
        parts = entry.strip().split(":")
        if parts[0] != "gpu":
            continue
        count = 1
        if len(parts) > 1 and parts[-1].isdigit():
            count, parts = int(parts[-1]), parts[:-1]
        kind = ":".join(parts[1:])
        gpus[kind] = gpus.get(kind, 0) + count
    return gpus


def parse_sinfo(text: str) -> list[Node]:
    """The nodes in ``sinfo --noheader --Node --format='%P|%N|%c|%m|%G'`` output."""
    nodes = []
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 5:
            continue
        partition, name, cpus, memory, gres = (f.strip() for f in fields)
        nodes.append(
            Node(
                partition=partition.rstrip("*"),
                default=partition.endswith("*"),
                name=name,
                cpus=_leading_int(cpus),
                memory_mb=_leading_int(memory),
                gpus=parse_gres(gres),
            )
        )
    return nodes


def request_of(params: Mapping[str, Any]) -> Request:
    """The per-node request in the launcher's parameters (``hydra.launcher``, resolved)."""
    tasks = int(params.get("tasks_per_node") or 1)
    cpus_per_task = int(params.get("cpus_per_task") or 1)
    gpus, kind, key = 0, "", "gpus_per_node"
    per_node = params.get("gpus_per_node")
    if per_node:
        kind, gpus = _typed_count(str(per_node))
    gres = parse_gres(str(params.get("gres") or ""))
    if sum(gres.values()) > gpus:
        (kind, gpus), key = next(iter(gres.items())), "gres"
    per_task = params.get("gpus_per_task")
    if per_task and _typed_count(str(per_task))[1] * tasks > gpus:
        kind, count = _typed_count(str(per_task))
        gpus, key = count * tasks, "gpus_per_task"
    value = params.get(key)
    mem_gb = params.get("mem_gb")
    return Request(
        partition=params.get("partition") or None,
        nodes=int(params.get("nodes") or 1),
        cpus=cpus_per_task * tasks,
        memory_mb=int(float(mem_gb) * 1024) if mem_gb else None,
        gpus=gpus,
        gpu_kind=kind,
        gpu_key=key,
        gpu_value=str(value if value is not None else 0),
        cpus_per_task=cpus_per_task,
        tasks_per_node=tasks,
    )


def refusal(request: Request, nodes: Sequence[Node]) -> str | None:
    """Why no node of the requested partition can run the job, and which key to change; None if
    some node can (the text of one ``error:`` line, without the prefix)."""
    partitions = sorted({n.partition for n in nodes})
    listed = ", ".join(partitions) or "none"
    if not nodes:
        return "sinfo lists no SLURM nodes; check that this machine belongs to a running cluster"
    if request.partition is None:
        part = [n for n in nodes if n.default]
        if not part:
            return f"SLURM has no default partition; set {KEY}.partition to one of: {listed}"
        name = part[0].partition
    else:
        name = request.partition
        part = [n for n in nodes if n.partition == name]
        if not part:
            return (
                f"SLURM has no partition '{name}' (partitions: {listed}); "
                f"set {KEY}.partition to one of them"
            )
    where = f"the nodes of partition '{name}'"
    most_gpus = max(n.gpu_count(request.gpu_kind) for n in part)
    if request.gpus > most_gpus:
        what = _plural(request.gpus, f"{request.gpu_kind} GPU" if request.gpu_kind else "GPU")
        fix = (
            f"set {KEY}.{request.gpu_key}=0 (the jobs then train on the CPU)"
            if most_gpus == 0
            else f"set {KEY}.{request.gpu_key} to at most {most_gpus}"
        )
        return (
            f"{KEY}.{request.gpu_key}={request.gpu_value} asks for {what} per "
            f"node, but {where} have at most {most_gpus}; {fix}, or choose a partition with "
            f"GPUs ({KEY}.partition)"
        )
    most_cpus = max(n.cpus for n in part)
    if request.cpus > most_cpus:
        per_task = f" x {request.tasks_per_node} tasks" if request.tasks_per_node > 1 else ""
        return (
            f"{KEY}.cpus_per_task={request.cpus_per_task}{per_task} asks for {request.cpus} CPUs "
            f"per node, but {where} have at most {most_cpus}; set {KEY}.cpus_per_task to at most "
            f"{max(1, most_cpus // request.tasks_per_node)}"
        )
    most_mb = max(n.memory_mb for n in part)
    if request.memory_mb is not None and request.memory_mb > most_mb:
        return (
            f"{KEY}.mem_gb={request.memory_mb / 1024:g} asks for {request.memory_mb} MB per node, "
            f"but {where} have at most {most_mb} MB; set {KEY}.mem_gb to at most "
            f"{most_mb // 1024}"
        )
    fit = [
        n
        for n in part
        if n.gpu_count(request.gpu_kind) >= request.gpus
        and n.cpus >= request.cpus
        and (request.memory_mb is None or n.memory_mb >= request.memory_mb)
    ]
    if not fit:
        memory = "the default memory" if request.memory_mb is None else f"{request.memory_mb} MB"
        return (
            f"no node of partition '{name}' has {_plural(request.gpus, 'GPU')}, "
            f"{_plural(request.cpus, 'CPU')} and {memory} at once; "
            f"lower {KEY}.gpus_per_node, {KEY}.cpus_per_task or {KEY}.mem_gb"
        )
    if request.nodes > len({n.name for n in fit}):
        count = len({n.name for n in fit})
        return (
            f"{KEY}.nodes={request.nodes} asks for {request.nodes} nodes, but partition '{name}' "
            f"has {count} that can run the job; set {KEY}.nodes to at most {count}"
        )
    return None


def check(params: Mapping[str, Any], sinfo_text: str) -> None:
    """Raise an :class:`AlposeError` (one line) when the cluster cannot meet ``params``."""
    reason = refusal(request_of(params), parse_sinfo(sinfo_text))
    if reason is not None:
        raise AlposeError(reason)


def read_sinfo(timeout_s: float = 60) -> str:
    """``sinfo``'s node list on this machine; an :class:`AlposeError` when it cannot be read."""
    if shutil.which("sinfo") is None:
        raise AlposeError(
            "hydra/launcher=slurm needs the SLURM commands (sinfo, sbatch) but sinfo is not on "
            "PATH; run the sweep on a SLURM login node, or use hydra/launcher=joblib on this machine"
        )
    try:
        done = subprocess.run(
            SINFO_COMMAND, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        raise AlposeError(
            f"sinfo did not answer within {timeout_s:g} s; check that slurmctld is running"
        ) from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise AlposeError(f"sinfo failed ({last}); check that slurmctld is running")
    return done.stdout


def _typed_count(value: str) -> tuple[str, int]:
    """``"2"`` -> ``("", 2)``, ``"a100:2"`` -> ``("a100", 2)``, ``"gpu:a100:2"`` too."""
    parts = value.strip().split(":")
    if parts[0] == "gpu":
        parts = parts[1:]
    if parts and parts[-1].isdigit():
        return ":".join(parts[:-1]), int(parts[-1])
    return ":".join(parts), 1


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _leading_int(text: str) -> int:
    """The number at the start of an sinfo field (``"2"``, ``"24105"``, ``"2+"``); 0 if none."""
    match = re.match(r"\d+", text)
    return int(match.group(0)) if match else 0
