"""Under torchrun every rank runs its own guard; rank 0 reports the findings of all of them.

The findings are gathered with `gather_object` while the process group still exists: just
before the script calls `destroy_process_group()` (scripts call it in a `finally`, which the
--max-steps stop passes through), or at the guard's exit when the script never destroys it.
A crashed rank does not gather: the others may be stuck in a collective, and waiting for them
would hang the run instead of reporting it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pitfall_guard.findings import Finding
from pitfall_guard.runtime.hooks import MaxStepsReached

if TYPE_CHECKING:
    from pitfall_guard.runtime.guard import Guard


@dataclass(frozen=True)
class RankInfo:
    rank: int
    world_size: int


def _world() -> RankInfo | None:
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        return None
    world_size = dist.get_world_size()
    return RankInfo(dist.get_rank(), world_size) if world_size > 1 else None


@contextlib.contextmanager
def gather_before_teardown(guard: Guard) -> Iterator[None]:
    """While active, `destroy_process_group()` first finishes the guard (which gathers)."""
    import torch.distributed as dist

    if not dist.is_available():
        yield
        return
    from torch.distributed import distributed_c10d

    original = distributed_c10d.destroy_process_group

    def destroy_process_group(group: Any = None) -> None:
        error = sys.exc_info()[1]  # set while a `finally` runs because of an exception
        if group is None and (error is None or isinstance(error, MaxStepsReached)):
            guard.finish(completed=error is None, gather=True)
        original(group)

    owners = [dist, distributed_c10d]
    for owner in owners:
        owner.destroy_process_group = destroy_process_group  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for owner in owners:
            owner.destroy_process_group = original  # type: ignore[attr-defined]


def gather_findings(guard: Guard) -> None:
    """Send this rank's findings to rank 0, which then holds the merged findings of all ranks."""
    world = _world()
    if world is None or guard.ranks is not None:
        return
    import torch.distributed as dist

    guard.ranks = world
    local = guard._collector.findings()
    gathered: list[Any] | None = [None] * world.world_size if world.rank == 0 else None
    dist.gather_object(local, gathered, dst=0)
    if gathered is not None:
        guard._replace_findings(merge_ranks(gathered))


def merge_ranks(per_rank: Sequence[Sequence[Finding] | None]) -> list[Finding]:
    """One finding per (code, path, line): counts summed, the ranks that saw it named."""
    merged: dict[tuple[str, str, int], tuple[Finding, list[int]]] = {}
    for rank, findings in enumerate(per_rank):
        for finding in findings or ():
            key = (finding.code, finding.path, finding.line)
            known = merged.get(key)
            if known is None:
                merged[key] = (finding, [rank])
            else:
                first, ranks = known
                ranks.append(rank)
                merged[key] = (dataclasses.replace(first, count=first.count + finding.count), ranks)
    return sorted(
        (
            dataclasses.replace(
                finding,
                message=f"{finding.message} [{_ranks_label(ranks)}]",
                extra={**finding.extra, "ranks": ranks},
            )
            for finding, ranks in merged.values()
        ),
        key=Finding.sort_key,
    )


def _ranks_label(ranks: Sequence[int]) -> str:
    if len(ranks) == 1:
        return f"rank {ranks[0]}"
    return f"ranks {', '.join(str(rank) for rank in ranks)}"
