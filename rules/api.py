"""PG6xx: API use that is deprecated, unsafe, or skips what PyTorch does for you."""

from __future__ import annotations

import re

import libcst as cst

from pitfall_guard.findings import Edit, Fix, Maturity, Severity
from pitfall_guard.static.facts import CallSite, Facts
from pitfall_guard.static.names import dotted_name, last_part
from pitfall_guard.static.rule import StaticRule
from pitfall_guard.static.versions import format_version

# Weights enums whose names do not follow from the builder's name by the general rule.
_WEIGHTS_NAMES = {
    "alexnet": "AlexNet",
    "googlenet": "GoogLeNet",
    "inception_v3": "Inception_V3",
    "mobilenet_v2": "MobileNet_V2",
    "mobilenet_v3_small": "MobileNet_V3_Small",
    "mobilenet_v3_large": "MobileNet_V3_Large",
    "squeezenet1_0": "SqueezeNet1_0",
    "squeezenet1_1": "SqueezeNet1_1",
    "resnext50_32x4d": "ResNeXt50_32X4D",
    "resnext101_32x8d": "ResNeXt101_32X8D",
    "wide_resnet50_2": "Wide_ResNet50_2",
    "wide_resnet101_2": "Wide_ResNet101_2",
    "shufflenet_v2_x1_0": "ShuffleNet_V2_X1_0",
}
_GENERAL_FAMILIES = {
    "resnet": "ResNet",
    "vgg": "VGG",
    "densenet": "DenseNet",
    "efficientnet_": "EfficientNet_",
    "convnext_": "ConvNeXt_",
    "vit_": "ViT_",
    "regnet_": "RegNet_",
    "swin_": "Swin_",
}


def weights_enum(builder: str) -> str | None:
    """`ResNet18_Weights` for `resnet18`, following torchvision's naming; None if unsure."""
    if builder in _WEIGHTS_NAMES:
        return _WEIGHTS_NAMES[builder] + "_Weights"
    for prefix, family in _GENERAL_FAMILIES.items():
        if builder.startswith(prefix):
            rest = builder[len(prefix) :]
            if not re.fullmatch(r"[a-z0-9_]+", rest):
                return None
            if family in ("VGG",):
                return family + rest.upper() + "_Weights"
            parts = [
                p.upper() if p[:1].isalpha() and len(p) <= 2 else p.capitalize()
                for p in rest.split("_")
            ]
            return family + "_".join(parts) + "_Weights"
    return None


class PretrainedDeprecated(StaticRule):
    """
    ## What it catches
    torchvision model builders called with `pretrained=` (or `pretrained_backbone=`).

    Projects on torchvision older than 0.13 (from the `torch-version`, or the project's
    torchvision pin), which has no `weights=` yet, are left alone.

    ## Why it matters
    `pretrained` is deprecated since torchvision 0.13: every call warns, the argument may be
    removed in a future release, and `pretrained=True` hides which weights are loaded (the
    enum names them, with their accuracy and preprocessing).

    ## Example
    ```python
    resnet = torchvision.models.resnet18(pretrained=True)
    ```

    ## Fix
    Name the weights: `resnet18(weights=ResNet18_Weights.DEFAULT)` (or
    `ResNet18_Weights.IMAGENET1K_V1`, exactly what `pretrained=True` loaded), and
    `weights=None` for `pretrained=False`. The automatic fix writes `.DEFAULT`, which can be
    newer weights than `pretrained=True` gave, so it is marked unsafe.
    """

    code = "PG601"
    name = "torchvision-pretrained-deprecated"
    summary = "torchvision's pretrained= argument is deprecated: use weights="
    severity = Severity.WARNING
    hint = "use weights=<Model>_Weights.DEFAULT (or weights=None)"

    VALID = (
        """
import torchvision
from torchvision.models import resnet18, ResNet18_Weights
model = resnet18(weights=ResNet18_Weights.DEFAULT)
other = torchvision.models.vgg16(weights=None)
""",
        # torch 1.8 goes with torchvision 0.9, which only has pretrained=
        """
# pitfall-guard: torch-version=1.8
import torchvision
resnet = torchvision.models.resnet18(pretrained=True)
""",
    )
    INVALID = (
        """
import torchvision
resnet = torchvision.models.resnet18(pretrained=True)  # expect: PG601
from torchvision import models
vgg = models.vgg16_bn(pretrained=False)  # expect: PG601
# builders looked up by name
chosen = models.__dict__[args.arch](pretrained=True)  # expect: PG601
backbone = getattr(torchvision.models, name)(pretrained=is_main_process())  # expect: PG601
""",
    )

    def leave_Module(self, original_node: cst.Module) -> None:
        torchvision = self.context.torch.torchvision_version()
        if torchvision is not None and torchvision < _WEIGHTS_ADDED:
            return  # there is no weights= to move to
        for site in self.facts.calls:
            qualified = self.facts.qualified_name(site.node.func) or ""
            if not qualified.startswith("torchvision.models.") and not self._looked_up(site):
                continue
            for arg in site.node.args:
                if arg.keyword is not None and arg.keyword.value in (
                    "pretrained",
                    "pretrained_backbone",
                ):
                    self.report(
                        arg,
                        f"{arg.keyword.value}= is deprecated since torchvision 0.13: it still "
                        "works but warns, and hides which weights are loaded",
                        fix=self._fix(site, arg),
                    )

    def _looked_up(self, site: CallSite) -> bool:
        """`models.__dict__[args.arch](...)`, `getattr(torchvision.models, name)(...)`."""
        func = site.node.func
        if (
            isinstance(func, cst.Subscript)
            and isinstance(func.value, cst.Attribute)
            and func.value.attr.value == "__dict__"
        ):
            return self.facts.qualified_name(func.value.value) == "torchvision.models"
        if isinstance(func, cst.Call) and dotted_name(func.func) == "getattr" and func.args:
            return self.facts.qualified_name(func.args[0].value) == "torchvision.models"
        return False

    def _fix(self, site: CallSite, arg: cst.Arg) -> Fix | None:
        assert arg.keyword is not None
        keyword = "weights" if arg.keyword.value == "pretrained" else "weights_backbone"
        if isinstance(arg.value, cst.Name) and arg.value.value == "False":
            replacement, safe = f"{keyword}=None", True
        else:
            func = dotted_name(site.node.func) or ""
            builder = last_part(func)
            enum = weights_enum(builder)
            if enum is None or keyword != "weights" or "." not in func:
                return None
            module = func.rsplit(".", 1)[0]
            replacement, safe = f"{keyword}={module}.{enum}.DEFAULT", False
        span = self.context.position(arg)
        end = self.context.position(arg.value).end
        edit = Edit(span.start.line, span.start.column + 1, end.line, end.column + 1, replacement)
        return Fix(f"use {replacement}", (edit,), safe=safe)


_WEIGHTS_ADDED = (0, 13)


class DataParallelUsed(StaticRule):
    """
    ## What it catches
    `nn.DataParallel(model)`.

    ## Why it matters
    DataParallel runs one process that copies the model to every GPU on every step and
    gathers outputs on the first one: it is slower than one GPU in many setups, unbalances
    memory, and PyTorch recommends against it. DistributedDataParallel is faster even on a
    single machine.

    ## Example
    ```python
    model = nn.DataParallel(model)
    ```

    ## Fix
    Use `torch.nn.parallel.DistributedDataParallel` with one process per GPU, started with
    `torchrun --nproc_per_node=N train.py`, and a `DistributedSampler` for the data.
    """

    code = "PG602"
    name = "data-parallel"
    maturity = Maturity.PREVIEW
    maturity_reason = (
        "a recommendation, not a bug: DataParallel trains correctly, and on the triaged "
        "public corpus none of its 27 findings was a change a maintainer would take "
        "(8 wrong, 19 debatable)"
    )
    summary = "nn.DataParallel is slower than DistributedDataParallel and discouraged"
    severity = Severity.WARNING
    hint = "use DistributedDataParallel, one process per GPU, started with torchrun"

    VALID = (
        """
from torch.nn.parallel import DistributedDataParallel as DDP
model = DDP(model, device_ids=[local_rank])
""",
    )
    INVALID = (
        """
import torch.nn as nn
model = nn.DataParallel(model)  # expect: PG602
""",
    )

    def leave_Module(self, original_node: cst.Module) -> None:
        for site in self.facts.calls:
            if self.facts.qualified_name(site.node.func) in (
                "torch.nn.DataParallel",
                "torch.nn.parallel.DataParallel",
                "torch.nn.parallel.data_parallel.DataParallel",
            ):
                self.report(
                    site.node,
                    "nn.DataParallel copies the model to every GPU each step and is slower than "
                    "DistributedDataParallel",
                )


class UnsafeTorchLoad(StaticRule):
    """
    ## What it catches
    `torch.load(...)` calls that unpickle arbitrary objects on the torch the project runs:
    `weights_only=False` or a `pickle_module=` anywhere, and a call without `weights_only`
    when the project supports torch older than 2.6 (where `False` was the default). The torch
    version is the `torch-version` setting, else the lowest one the project's own pins allow
    (pyproject.toml, requirements files), else the installed one.

    On torch 2.6 and newer `weights_only=True` is the default: a call without it is safe
    there, and is reported only as a hint when the project pins no torch (it may run on
    older releases). A file that allow-lists classes with `torch.serialization.safe_globals`
    or `add_safe_globals` relies on the weights-only unpickler and is left alone, and so is a
    load of what the same code saved to an in-memory buffer (objects sent between the
    processes of one job); tests that opt out to read back their own checkpoints too.

    ## Why it matters
    Unpickling runs whatever code the file names: loading a checkpoint someone else made
    can run any code on your machine. Code that relies on the default also behaves
    differently across versions (since 2.6 a full pickled model no longer loads).

    ## Example
    ```python
    state = torch.load("model.pt")  # the project pins torch>=1.13
    ```

    ## Fix
    Save `state_dict()`s and load them with `torch.load(path, weights_only=True)`; allow-list
    your own classes with `torch.serialization.safe_globals([...])` where needed.
    """

    code = "PG603"
    name = "unsafe-torch-load"
    summary = "torch.load that unpickles arbitrary objects on the project's torch"
    severity = Severity.WARNING
    hint = "pass weights_only=True (and save state_dict()s)"

    VALID = (
        # a module cloned through an in-memory buffer
        """
import io
import torch
def clone(module):
    with io.BytesIO() as buffer:
        torch.save(module, buffer)
        buffer.seek(0)
        return torch.load(buffer, weights_only=False)
""",
        """
import torch
state = torch.load("model.pt", map_location="cpu", weights_only=True)
""",
        """
# pitfall-guard: torch-version=2.6
import torch
state = torch.load("model.pt", map_location="cpu")
""",
        """
import torch
with torch.serialization.safe_globals([Net]):
    model = torch.load("model.pt")
""",
        """
import torch
def load(path, **kwargs):
    return torch.load(path, **kwargs)
""",
        # objects sent between the processes of one job, through memory
        """
import io
import torch
def broadcast(obj, src=0):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = send(buffer.getbuffer(), src)
    buffer = io.BytesIO(data)
    return torch.load(buffer)
""",
    )
    INVALID = (
        """
# pitfall-guard: torch-version=2.4
import torch
state = torch.load("model.pt")  # expect: PG603
model.load_state_dict(torch.load(path, map_location=device))  # expect: PG603
""",
        """
# pitfall-guard: torch-version=2.6
import torch
import dill
trusted = torch.load("full_model.pt", weights_only=False)  # expect: PG603
other = torch.load("model.pt", pickle_module=dill)  # expect: PG603
""",
        # before torch 1.13 there is no weights_only to pass: no fix, a different advice
        """
# pitfall-guard: torch-version=1.2
import torch
net.load_state_dict(torch.load("weights.pth"))  # expect: PG603
""",
    )

    def leave_Module(self, original_node: cst.Module) -> None:
        allow_lists = any(
            last_part(self.facts.qualified_name(site.node.func) or "")
            in ("safe_globals", "add_safe_globals")
            for site in self.facts.calls
        )
        for site in self.facts.calls:
            call = site.node
            if self.facts.qualified_name(call.func) != "torch.load" or not call.args:
                continue
            keywords = {arg.keyword.value: arg for arg in call.args if arg.keyword is not None}
            weights_only = keywords.get("weights_only")
            if _round_trip(self.facts, call):
                continue  # reads back what this code just wrote with torch.save
            if weights_only is not None and _is_false(weights_only.value):
                self._report_opt_out(weights_only, "weights_only=False")
            elif "pickle_module" in keywords:
                self._report_opt_out(keywords["pickle_module"], "pickle_module=")
            elif weights_only is None and not allow_lists and not any(a.star for a in call.args):
                self._report_default(site)

    def _report_opt_out(self, node: cst.CSTNode, what: str) -> None:
        if self.context.is_test_module:
            return  # a test loads the checkpoint it has just written
        self.report(
            node,
            f"torch.load with {what} unpickles arbitrary objects: a checkpoint file can run "
            "code on this machine",
            hint="load only files you made; save state_dict()s and load them with "
            "weights_only=True",
        )

    def _report_default(self, site: CallSite) -> None:
        torch = self.context.torch
        new_enough = torch.torch_at_least(_WEIGHTS_ONLY_DEFAULT)
        if new_enough and torch.pinned:
            return  # the default is already weights_only=True on every torch it supports
        call = site.node
        end = self.context.position(call.args[-1].value).end
        edit = Edit(end.line, end.column + 1, end.line, end.column + 1, ", weights_only=True")
        # Only tensors can go into load_state_dict: there the flag cannot break the load.
        fix = Fix("add weights_only=True", (edit,), safe=_feeds_load_state_dict(self.facts, call))
        if new_enough is False:
            assert torch.torch is not None
            if torch.torch < _WEIGHTS_ONLY_ADDED:
                self.report(
                    call,
                    f"torch.load unpickles arbitrary objects on torch "
                    f"{format_version(torch.torch)} ({torch.source}), which has no "
                    "weights_only yet: a checkpoint file can run code on this machine",
                    hint="load only files you trust, or move to torch>=1.13 and pass "
                    "weights_only=True",
                )
                return
            self.report(
                call,
                f"torch.load without weights_only=True unpickles arbitrary objects on torch "
                f"{format_version(torch.torch)} ({torch.source}): a checkpoint file can run "
                "code on this machine",
                fix=fix,
            )
            return
        self.report(
            call,
            "torch.load without weights_only=True is safe only from torch 2.6 on, where it "
            f"is the default; older torch unpickles arbitrary objects, and {torch.source}",
            severity=Severity.HINT,
            hint="pass weights_only=True, or pin torch>=2.6 (or set torch-version)",
            fix=fix,
        )


_WEIGHTS_ONLY_ADDED = (1, 13)
_WEIGHTS_ONLY_DEFAULT = (2, 6)


def _round_trip(facts: Facts, load: cst.Call) -> bool:
    """`torch.load(buffer)` of an in-memory `io.BytesIO` the file also hands to `torch.save`:
    objects sent between the processes of one job, not a file from elsewhere."""
    source = dotted_name(load.args[0].value)
    if source is None or not any(
        isinstance(value, cst.Call) and facts.qualified_name(value.func) == "io.BytesIO"
        for value in facts.assignments.get(source, [])
    ):
        return False
    return any(
        facts.qualified_name(site.node.func) == "torch.save"
        and any(dotted_name(arg.value) == source for arg in site.node.args[1:2])
        for site in facts.calls
    )


def _feeds_load_state_dict(facts: Facts, load: cst.Call) -> bool:
    """`model.load_state_dict(torch.load(path))`: what is loaded can only be tensors."""
    for site in facts.calls:
        func = site.node.func
        if (
            isinstance(func, cst.Attribute)
            and func.attr.value == "load_state_dict"
            and any(arg.value is load for arg in site.node.args)
        ):
            return True
    return False


def _is_false(node: cst.BaseExpression) -> bool:
    return isinstance(node, cst.Name) and node.value == "False"


class ForwardCalledDirectly(StaticRule):
    """
    ## What it catches
    `model.forward(x)` called directly on a module. `.forward` of what is not a module call
    is left alone: an imported module (a compiled C++/CUDA extension, `turtle`), what
    `torch.utils.cpp_extension.load` returns, and `RemoteModule`, whose API is `.forward`.

    ## Why it matters
    Calling the module, `model(x)`, runs its hooks (forward pre/post hooks, hooks that
    DistributedDataParallel, FSDP, torch.compile, quantization and profilers rely on);
    `.forward(x)` skips them, so those features silently do nothing.

    ## Example
    ```python
    outputs = model.forward(images)
    ```

    ## Fix
    Call the module: `outputs = model(images)`. (`super().forward(x)` inside a subclass's
    forward is fine.)
    """

    code = "PG604"
    name = "forward-called-directly"
    summary = "model.forward(x) skips the module's hooks: call model(x)"
    severity = Severity.WARNING
    hint = "call the module itself: model(x)"

    VALID = (
        # a plain class's own forward() (not an nn.Module)
        """
import torch
class PriorBox(object):
    def __init__(self, cfg):
        self.cfg = cfg
    def forward(self):
        return torch.zeros(8732, 4)
priorbox = PriorBox(cfg)
priors = priorbox.forward()
""",
        """
import torch
outputs = model(images)
class Child(Base):
    def forward(self, x):
        return super().forward(x) + self.forward_features(x)
""",
        """
import turtle
import torch
import mysigmoid_cuda
from torch.distributed.nn import RemoteModule
turtle.forward(150)
y = mysigmoid_cuda.forward(torch.randn(3))
remote = RemoteModule("worker1/cpu", torch.nn.Linear, args=(4, 2))
z = remote.forward(torch.randn(1, 4))
""",
    )
    INVALID = (
        """
import torch
outputs = model.forward(images)  # expect: PG604
""",
    )

    def leave_Module(self, original_node: cst.Module) -> None:
        plain_functions = self.facts.extension_receivers
        for site in self.facts.calls:
            func = site.node.func
            if not isinstance(func, cst.Attribute) or func.attr.value != "forward":
                continue
            receiver = func.value
            if isinstance(receiver, cst.Call) or dotted_name(receiver) in (None, "self"):
                continue
            if dotted_name(receiver) in plain_functions or self._plain_object(receiver):
                continue
            start = self.context.position(func.dot).start
            end = self.context.position(func.attr).end
            edit = Edit(start.line, start.column + 1, end.line, end.column + 1, "")
            self.report(
                site.node,
                f"{dotted_name(receiver)}.forward(...) skips the module's hooks "
                "(DDP, torch.compile, profilers, your own hooks)",
                hint=f"call {dotted_name(receiver)}(...) instead",
                fix=Fix("call the module instead of .forward", (edit,), safe=False),
            )

    def _plain_object(self, receiver: cst.BaseExpression) -> bool:
        """An instance of a class with no base but `object` (`PriorBox(cfg).forward()`), of
        this file or another file of the project: `forward` is its own method."""
        facts = self.facts
        constructor = facts.constructors.get(dotted_name(receiver) or "")
        values = [constructor] if constructor is not None else []
        values += facts.assignments.get(dotted_name(receiver) or "", [])
        for value in values:
            if not isinstance(value, cst.Call):
                continue
            made_by = facts.qualified_name(value.func) or ""
            info = facts.classes.get(made_by)
            if info is not None and all(base in ("", "object") for base in info.bases):
                return True
            project = facts.project
            if project is not None and any(
                project.is_plain_class(*origin)
                for origin in facts.imports.project_origins(value.func)
            ):
                return True
        return False


STATIC_RULES: tuple[type[StaticRule], ...] = (
    PretrainedDeprecated,
    DataParallelUsed,
    UnsafeTorchLoad,
    ForwardCalledDirectly,
)
