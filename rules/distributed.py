"""PG7xx: distributed training."""

from __future__ import annotations

import libcst as cst

from pitfall_guard.findings import Severity
from pitfall_guard.static.names import last_part
from pitfall_guard.static.rule import StaticRule


class SamplerEpochNotSet(StaticRule):
    """
    ## What it catches
    A shuffling `DistributedSampler` in a file that never calls `sampler.set_epoch(epoch)`.

    ## Why it matters
    The sampler seeds its shuffle with the epoch number. Without `set_epoch`, every epoch
    visits the data in exactly the same order on every rank, as if shuffling were off, which
    hurts convergence and generalisation without any warning.

    ## Example
    ```python
    sampler = DistributedSampler(train_set)
    loader = DataLoader(train_set, sampler=sampler)
    for epoch in range(epochs):
        for x, y in loader:
            ...
    ```

    ## Fix
    Call `sampler.set_epoch(epoch)` at the start of every epoch, before iterating the loader.
    """

    code = "PG701"
    name = "sampler-epoch-not-set"
    summary = "DistributedSampler without set_epoch(): the same order every epoch"
    severity = Severity.WARNING
    hint = "call sampler.set_epoch(epoch) at the start of each epoch"

    VALID = (
        """
from torch.utils.data.distributed import DistributedSampler
sampler = DistributedSampler(train_set)
for epoch in range(10):
    sampler.set_epoch(epoch)
""",
        """
from torch.utils.data import DistributedSampler
test_sampler = DistributedSampler(test_set, shuffle=False)
""",
    )
    INVALID = (
        """
import torch
from torch.utils.data.distributed import DistributedSampler
sampler = DistributedSampler(train_set, num_replicas=world_size, rank=rank)  # expect: PG701
loader = torch.utils.data.DataLoader(train_set, sampler=sampler)
for epoch in range(10):
    for x, y in loader:
        pass
""",
    )

    def leave_Module(self, original_node: cst.Module) -> None:
        calls = self.facts.calls
        if any(
            isinstance(s.node.func, cst.Attribute) and s.node.func.attr.value == "set_epoch"
            for s in calls
        ):
            return
        for site in calls:
            qualified = self.facts.qualified_name(site.node.func) or ""
            if last_part(qualified) != "DistributedSampler" or not qualified.startswith("torch."):
                continue
            if any(
                a.keyword is not None
                and a.keyword.value == "shuffle"
                and isinstance(a.value, cst.Name)
                and a.value.value == "False"
                for a in site.node.args
            ):
                continue
            self.report(
                site.node,
                "this DistributedSampler shuffles, but set_epoch() is never called: every "
                "epoch sees the data in the same order",
            )


STATIC_RULES: tuple[type[StaticRule], ...] = (SamplerEpochNotSet,)
