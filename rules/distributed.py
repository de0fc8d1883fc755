"""PG7xx: distributed training."""

from __future__ import annotations

import re

import libcst as cst

from pitfall_guard.findings import Severity
from pitfall_guard.static.names import dotted_name, last_part
from pitfall_guard.static.rule import StaticRule


class SamplerEpochNotSet(StaticRule):
    """
    ## What it catches
    A shuffling `DistributedSampler` of training data in a file that never calls
    `sampler.set_epoch(epoch)`, nor hands it (or its loader) to a function of another file
    of the project that does. A sampler handed to a function that may call `set_epoch` (one
    that cannot be read, or that passes it on to a library), and validation or test
    samplers, whose order changes no metric, are left alone.

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
val_sampler = DistributedSampler(val_set)
sampler2 = DistributedSampler(val_dataset, rank=rank, num_replicas=world_size)
""",
        # the training helper of another file receives the sampler
        """
import torch
from torch.utils.data.distributed import DistributedSampler
from utils import train
sampler = DistributedSampler(train_set)
loader = torch.utils.data.DataLoader(train_set, sampler=sampler)
train(model, loader, sampler, epochs=10)
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
        if self.context.is_test_module:
            return
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
            # Not kept under a name (returned, passed on): whoever receives it sets the epoch.
            sampler = self._name_of(site.node)
            dataset = dotted_name(site.node.args[0].value) if site.node.args else None
            if sampler is None or _EVALUATION_DATA.search(f"{sampler} {dataset or ''}"):
                continue
            helpers = self._helpers_handed(sampler)
            if helpers is None:
                continue
            read = f" (nor by {', '.join(helpers)}, which it is handed to)" if helpers else ""
            self.report(
                site.node,
                f"this DistributedSampler shuffles, but set_epoch() is never called{read}: "
                "every epoch sees the data in the same order",
            )

    def _name_of(self, call: cst.Call) -> str | None:
        """The name a call is assigned to, also as `x = Sampler(...) if ddp else None`."""
        for value, name in self.facts.assigned_to.items():
            if value is call or (
                isinstance(value, cst.IfExp) and call in (value.body, value.orelse)
            ):
                return name
        return None

    def _helpers_handed(self, sampler: str) -> list[str] | None:
        """The functions of other files the sampler, or a loader built on it, is handed to,
        when each was read and never calls set_epoch; None when one may call it."""
        helpers: list[str] = []
        carriers = {sampler}
        for site in self.facts.calls:
            if any(dotted_name(arg.value) == sampler for arg in site.node.args):
                loader = self.facts.assigned_to.get(site.node)
                if loader is not None:
                    carriers.add(loader)
        imports = self.facts.imports
        for site in self.facts.calls:
            callee = dotted_name(site.node.func)
            if callee is None or callee in self.facts.functions:
                continue
            head = callee.split(".", 1)[0]
            from_elsewhere = head in imports.origins() or (
                imports.star_import and "." not in callee
            )
            if not from_elsewhere or (imports.qualified_name(site.node.func) or "").startswith(
                "torch."
            ):
                continue
            if not any(dotted_name(arg.value) in carriers for arg in site.node.args):
                continue
            # A helper of the project that is read and never calls set_epoch does not count.
            origins = imports.project_origins(site.node.func)
            project = self.facts.project
            if (
                not origins
                or project is None
                or any(project.may_call(*origin, _SET_EPOCH) for origin in origins)
            ):
                return None
            if f"{callee}()" not in helpers:
                helpers.append(f"{callee}()")
        return helpers


_SET_EPOCH = frozenset({"set_epoch"})
_EVALUATION_DATA = re.compile(r"val|test|eval", re.IGNORECASE)


STATIC_RULES: tuple[type[StaticRule], ...] = (SamplerEpochNotSet,)
