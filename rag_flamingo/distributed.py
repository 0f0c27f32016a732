"""torchrun ranks, shared by ``build_index`` and the evaluation side.

Work unit ``u`` (an index shard, a query batch) belongs to rank ``u % world``; rank 0 waits for the
others at a gloo barrier, then merges.

Only the environment torchrun sets is read (RANK, WORLD_SIZE, LOCAL_RANK); a plain run is rank 0
of 1 and never touches torch.distributed.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def owns(self, shard: int) -> bool:
        return shard % self.world == self.rank


def setup(timeout_hours: float = 24.0) -> Ranks:
    """Read torchrun's environment; join a gloo group when there is more than one rank."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    ranks = Ranks(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        # gloo works on CPU and GPU hosts; only barriers travel through it. The timeout is long
        # because rank 0 may wait for the slowest rank's shards. One group per process, for every
        # step of it (a suite builds stores and evaluates in one process): joining again after a
        # teardown races with ranks still in the old group, so the group ends with the process.
        dist.init_process_group("gloo", timeout=timedelta(hours=timeout_hours))
        atexit.register(_destroy)
    # Share the cores between ranks instead of every rank using all of them.
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))  # (bitwise results depend on it)
    return ranks


def barrier(ranks: Ranks) -> None:
    if ranks.world > 1:
        dist.barrier()


def teardown(ranks: Ranks) -> None:
    """The end of one step: the ranks meet, the group stays for the process's next step (see `setup`)."""
    if ranks.world > 1 and dist.is_initialized():
        dist.barrier()


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def sum_over_ranks(ranks: Ranks, values: list[int]) -> list[int]:
    """Element-wise sum of ``values`` over all ranks (the values themselves on a single rank)."""
    if ranks.world == 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.int64)
    dist.all_reduce(tensor)
    return [int(v) for v in tensor.tolist()]
