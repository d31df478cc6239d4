"""Data-parallel set-up from the launcher's environment: ``torchrun`` or ``srun`` (SLURM).

* torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``.
* ``srun`` (one task per GPU) sets ``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID`` and
  ``SLURM_JOB_NODELIST``; the master is the first host of the node list, the port
  ``CTSAM_MASTER_PORT`` or ``MASTER_PORT`` or 29500 + (job id mod 1000).
* Neither: a single process (world size 1), no process group.

Backend: NCCL on CUDA, gloo on CPU. Each rank uses ``cuda:LOCAL_RANK`` when GPUs are present.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    launcher: str = "none"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def first_host(nodelist: str) -> str:
    """First host name of a SLURM node list: ``gpu[03-05,07],cpu1`` -> ``gpu03``."""
    nodelist = nodelist.strip()
    m = re.match(r"^([^,\[]+)(?:\[([^\]]+)\])?", nodelist)
    if not m:
        raise ValueError(f"cannot parse SLURM node list {nodelist!r}")
    prefix, ranges = m.group(1), m.group(2)
    if not ranges:
        return prefix
    first = ranges.split(",")[0].split("-")[0]
    return prefix + first


def detect(env: dict | None = None) -> DistInfo:
    """The process's place in the job, from ``env`` (default ``os.environ``)."""
    env = dict(os.environ if env is None else env)
    if "RANK" in env and "WORLD_SIZE" in env:
        return DistInfo(
            rank=int(env["RANK"]),
            world_size=int(env["WORLD_SIZE"]),
            local_rank=int(env.get("LOCAL_RANK", 0)),
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=int(env.get("MASTER_PORT", 29500)),
            launcher="torchrun",
        )
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        port = (
            env.get("CTSAM_MASTER_PORT")
            or env.get("MASTER_PORT")
            or str(29500 + int(env.get("SLURM_JOB_ID", "0")) % 1000)
        )
        addr = env.get("MASTER_ADDR") or first_host(
            env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or "127.0.0.1"
        )
        return DistInfo(
            rank=int(env["SLURM_PROCID"]),
            world_size=int(env["SLURM_NTASKS"]),
            local_rank=int(env.get("SLURM_LOCALID", 0)),
            master_addr=addr,
            master_port=int(port),
            launcher="slurm",
        )
    return DistInfo()


def init(info: DistInfo, *, device_type: str) -> None:
    """Start the process group (no-op for a single process)."""
    if not info.enabled:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        return
    os.environ.setdefault("MASTER_ADDR", info.master_addr)
    os.environ.setdefault("MASTER_PORT", str(info.master_port))
    backend = "nccl" if device_type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)
    log.info(
        "rank %d/%d (local %d) joined via %s, backend %s, master %s:%s",
        info.rank,
        info.world_size,
        info.local_rank,
        info.launcher,
        backend,
        os.environ["MASTER_ADDR"],
        os.environ["MASTER_PORT"],
    )


def barrier(info: DistInfo) -> None:
    if info.enabled:
        import torch.distributed as dist

        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
