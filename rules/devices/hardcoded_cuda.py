"""PG204 in the code: CUDA hard-coded where the script could run without a GPU."""

from __future__ import annotations

import re

import libcst as cst

from pitfall_guard.findings import Severity
from pitfall_guard.static.facts import Facts, Kind
from pitfall_guard.static.names import dotted_name, last_part
from pitfall_guard.static.rule import FileContext, StaticRule
from pitfall_guard.static.tensors import method_name, string_value

CUDA_STRING = re.compile(r"^cuda(:\d+)?$")


class HardcodedCuda(StaticRule):
    """
    ## What it catches
    `.cuda()`, `.to("cuda")`, `torch.device("cuda")` or `device="cuda"` that runs whether or
    not there is a GPU: outside every device switch. A switch is any `if`, conditional
    expression or decorator whose test is about the device (`torch.cuda.is_available()`,
    `if args.cuda:`, `if self.gpu_mode:`, `x.is_cuda`, `@pytest.mark.skipif(...cuda...)`), a
    function whose name says it is for the GPU (`def to_gpu`), or an early exit such as
    `if not torch.cuda.is_available(): sys.exit()`. A switch hard-coded to `True`
    (`USE_CUDA = True`) is reported once, where it is set. Code that is GPU-only by design
    (NCCL, `torch.cuda.set_device`, C++/CUDA extensions, CUDA events and streams, libraries
    such as TensorRT, Apex, Transformer Engine or Triton) and test modules, which pick devices
    with markers, are left alone.

    ## Why it matters
    The script only runs on a machine with an NVIDIA GPU: anywhere else (a laptop, a CI
    runner, a Mac) it stops with "Torch not compiled with CUDA enabled" or "no CUDA GPUs are
    available", although nothing in it needs a GPU. In a script that does pick its device,
    one forgotten `.cuda()` crashes the CPU path the switch promised.

    ## Example
    ```python
    model = Net().cuda()
    images = images.to("cuda")
    ```

    ## Fix
    Pick the device once and use it everywhere:
    ```python
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = Net().to(device)
    images = images.to(device)
    ```
    """

    code = "PG204"
    name = "hardcoded-cuda"
    summary = "CUDA hard-coded outside any device switch: the script cannot run without a GPU"
    severity = Severity.WARNING
    hint = 'device = torch.device("cuda" if torch.cuda.is_available() else "cpu")'

    VALID = (
        """
import torch
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
model = Net().to(device)
""",
        """
import torch
if torch.cuda.is_available():
    model = model.cuda()
""",
        """
import torch
with torch.autocast("cuda", enabled=False):
    pass
""",
        # the user's own switch, as an attribute, a flag or a conditional expression
        """
import torch
class GAN:
    def __init__(self, args):
        self.gpu_mode = args.gpu_mode
        self.G = Generator()
        if self.gpu_mode:
            self.G.cuda()
device = torch.device("cuda") if opt.use_gpu else torch.device("cpu")
x = x.cuda() if args.cuda else x
""",
        # GPU-only by design: an early exit, a decorator, a helper for the GPU
        """
import sys
import torch
if not torch.cuda.is_available():
    sys.exit("this benchmark needs a GPU")
x = torch.randn(3).cuda()
""",
        """
import torch
import unittest
class KernelTest(unittest.TestCase):
    @unittest.skipIf(not torch.cuda.is_available(), "needs CUDA")
    def check_kernel(self):
        torch.ones(2, device="cuda")
def to_gpu(tensor):
    return tensor.cuda()
""",
        """
import torch
from torch.utils.cpp_extension import load
sigmoid = load(name="sigmoid", sources=["sigmoid.cu"])
y = sigmoid.forward(torch.randn(8).cuda())
""",
        # a loss module's .cuda(), or a stateless module's, moves nothing
        """
import torch
from torch import nn
class GramMatrix(nn.Module):
    def forward(self, x):
        b, c, h, w = x.size()
        f = x.view(b, c, h * w)
        return torch.bmm(f, f.transpose(1, 2))
criterion = nn.CrossEntropyLoss().cuda()
mse = nn.MSELoss()
mse.cuda()
gram = GramMatrix().cuda()
""",
    )
    INVALID = (
        """
import torch
gpu_tensor = torch.randn(2, 3).cuda()  # expect: PG204
device = torch.device("cuda:0")  # expect: PG204
x = x.to("cuda")  # expect: PG204
y = torch.zeros(3, device="cuda")  # expect: PG204
""",
        # the file has a switch, but one move ignores it
        """
import torch
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
model = Net().to(device)
mask = make_mask(10).cuda()  # expect: PG204
""",
        """
import torch
USE_CUDA = True  # expect: PG204
if USE_CUDA:
    model = model.cuda()
""",
        # NCCL only on the distributed path: the single-process path must still run anywhere
        """
import torch
import torch.distributed as dist
if args.distributed:
    dist.init_process_group("nccl")
    torch.cuda.set_device(args.local_rank)
    device = torch.device("cuda", args.local_rank)
else:
    device = torch.device("cuda")  # expect: PG204
model = Net().cuda()  # expect: PG204
""",
    )

    def __init__(self, context: FileContext) -> None:
        super().__init__(context)
        self._guards: list[bool] = []
        self._scopes: list[bool] = [False]  # per function: an early exit made the rest GPU-only
        # The `if`s around the current node, each with whether we are in its `else`.
        self._ifs: list[tuple[cst.If, list[bool]]] = []
        # CUDA uses outside every switch, with the `if` bodies they sit in.
        self._unguarded: list[tuple[cst.CSTNode, tuple[cst.If, ...]]] = []
        # `if distributed: init_process_group("nccl")`: that branch is the GPU path.
        self._gpu_paths: set[cst.If] = set()
        self._hard_coded_switches: dict[str, cst.CSTNode] = {}
        self._switched = False
        self._gpu_only = False

    def _under_switch(self) -> bool:
        return any(self._guards) or any(self._scopes)

    def _in_bodies(self) -> tuple[cst.If, ...]:
        return tuple(node for node, in_else in self._ifs if not in_else[0])

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self._guards.append(
            bool(_DEVICE_WORDS.search(node.name.value))
            or any(_mentions_device(decorator.decorator) for decorator in node.decorators)
        )
        self._scopes.append(False)

    def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
        self._guards.pop()
        self._scopes.pop()

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self._guards.append(any(_mentions_device(d.decorator) for d in node.decorators))

    def leave_ClassDef(self, original_node: cst.ClassDef) -> None:
        self._guards.pop()

    def visit_If(self, node: cst.If) -> None:
        is_switch = _mentions_device(node.test)
        self._switched |= is_switch
        self._guards.append(is_switch)
        self._ifs.append((node, [False]))
        if is_switch:
            self._note_hard_coded_switch(node.test)

    def visit_Else(self, node: cst.Else) -> None:
        if self._ifs:
            self._ifs[-1][1][0] = True

    def leave_If(self, original_node: cst.If) -> None:
        is_switch = self._guards.pop()
        self._ifs.pop()
        if is_switch and _exits(original_node.body):
            self._scopes[-1] = True  # what follows runs only where there is a GPU

    def visit_IfExp(self, node: cst.IfExp) -> None:
        is_switch = _mentions_device(node.test)
        self._switched |= is_switch
        self._guards.append(is_switch)

    def leave_IfExp(self, original_node: cst.IfExp) -> None:
        self._guards.pop()

    def visit_Assert(self, node: cst.Assert) -> None:
        if _mentions_device(node.test):
            self._scopes[-1] = True

    def visit_Call(self, node: cst.Call) -> None:
        if self._gpu_only_call(node):
            bodies = self._in_bodies()
            if not self._ifs:
                self._gpu_only = True  # unconditionally: the whole file needs a GPU
            elif bodies:
                self._gpu_paths.add(bodies[-1])
        if self._under_switch():
            return
        place = _hardcoded_cuda(self.facts, node)
        if place is not None:
            self._unguarded.append((place, self._in_bodies()))

    def visit_Attribute(self, node: cst.Attribute) -> None:
        # `Tensor = torch.cuda.FloatTensor`: every tensor made with it lives on the GPU.
        if not self._under_switch() and _CUDA_TENSOR_TYPE.match(
            self.facts.qualified_name(node) or ""
        ):
            self._unguarded.append((node, self._in_bodies()))

    def _note_hard_coded_switch(self, test: cst.BaseExpression) -> None:
        if not isinstance(test, cst.Name):
            return
        values = self.facts.assignments.get(test.value, [])
        if len(values) == 1 and isinstance(values[0], cst.Name) and values[0].value == "True":
            self._hard_coded_switches.setdefault(test.value, values[0])

    def leave_Module(self, original_node: cst.Module) -> None:
        if self.context.is_test_module or self._gpu_only:
            return
        if _imports_cpp_extension(self.facts) or self.facts.extension_receivers:
            return
        if any(
            origin.split(".", 1)[0] in _GPU_ONLY_LIBRARIES
            for origin in self.facts.imports.origins().values()
        ):
            return
        for name, node in self._hard_coded_switches.items():
            self.report(
                node,
                f"the device switch '{name}' is hard-coded to True, so everything under it "
                "runs on CUDA even where there is no GPU",
                hint=f"{name} = torch.cuda.is_available()",
            )
        message = (
            "this ignores the file's own device switch: CUDA is hard-coded here, so the "
            "script still crashes on a machine without a GPU"
            if self._switched or self._gpu_paths
            else "CUDA is hard-coded here and nothing in the file checks for a GPU: the script "
            "cannot run on a machine without one"
        )
        for node, bodies in self._unguarded:
            if not self._gpu_paths.intersection(bodies):
                self.report(node, message)

    def _gpu_only_call(self, call: cst.Call) -> bool:
        """NCCL, `torch.cuda.set_device`, CUDA events: code meant for GPUs only (when it runs
        unconditionally; under `if distributed:` only that path needs a GPU)."""
        qualified = self.facts.qualified_name(call.func) or ""
        if qualified in _GPU_ONLY_CALLS:
            return True
        return last_part(qualified) == "init_process_group" and any(
            string_value(arg.value) == "nccl" for arg in call.args
        )


# Libraries that only run on NVIDIA GPUs: code built on them is GPU-only by design.
_GPU_ONLY_LIBRARIES = frozenset(
    {
        "transformer_engine",
        "msamp",
        "apex",
        "tensorrt",
        "torch_tensorrt",
        "pytorch_quantization",
        "pycuda",
        "cupy",
        "triton",
        "nvidia",
        "flash_attn",
    }
)
_CUDA_TENSOR_TYPE = re.compile(r"^torch\.cuda\.[A-Z]\w*Tensor$")
_DEVICE_WORDS = re.compile(r"cuda|gpu|device|is_available|accelerat|mps", re.IGNORECASE)
_GPU_ONLY_CALLS = frozenset(
    {
        "torch.cuda.set_device",
        "torch.cuda.Event",
        "torch.cuda.synchronize",
        "torch.cuda.Stream",
        "torch.cuda.nvtx.range_push",
    }
)


def _mentions_device(node: cst.CSTNode) -> bool:
    return bool(_DEVICE_WORDS.search(cst.Module([]).code_for_node(node)))


def _exits(body: cst.BaseSuite) -> bool:
    """Whether a block ends the function or the script: return, raise, sys.exit(), skip."""
    statements = body.body if isinstance(body, cst.IndentedBlock) else ()
    last = statements[-1] if statements else None
    if isinstance(body, cst.SimpleStatementSuite):
        small = body.body[-1] if body.body else None
    elif isinstance(last, cst.SimpleStatementLine) and last.body:
        small = last.body[-1]
    else:
        return False
    if isinstance(small, cst.Return | cst.Raise | cst.Continue):
        return True
    if isinstance(small, cst.Expr) and isinstance(small.value, cst.Call):
        return last_part(dotted_name(small.value.func) or "") in ("exit", "quit", "skip")
    return False


def _imports_cpp_extension(facts: Facts) -> bool:
    return any(
        (facts.qualified_name(site.node.func) or "").startswith("torch.utils.cpp_extension")
        for site in facts.calls
    ) or any("cpp_extension" in origin for origin in facts.imports.origins().values())


def _stateless_module(facts: Facts, node: cst.BaseExpression) -> bool:
    """`GramMatrix()` of `class GramMatrix(nn.Module)` with no `__init__`: no parameters."""
    if not isinstance(node, cst.Call):
        return False
    name = facts.qualified_name(node.func) or ""
    info = facts.classes.get(name)
    if info is None or info.bases != ["torch.nn.Module"]:
        return False
    return not any(
        isinstance(statement, cst.FunctionDef) and statement.name.value == "__init__"
        for statement in info.node.body.body
    )


def _hardcoded_cuda(facts: Facts, call: cst.Call) -> cst.CSTNode | None:
    method = method_name(call)
    if method == "cuda" and dotted_name(call.func) != "torch.cuda":
        assert isinstance(call.func, cst.Attribute)
        # A loss module, or a module class without state, holds no tensors: its .cuda() moves
        # nothing and works without a GPU.
        receiver = call.func.value
        stateless = facts.kind_of(receiver) is Kind.LOSS or _stateless_module(facts, receiver)
        return None if stateless else call
    placement = method == "to" or facts.qualified_name(call.func) == "torch.device"
    for index, arg in enumerate(call.args):
        keyword = arg.keyword.value if arg.keyword is not None else None
        is_device_arg = (placement and index == 0 and keyword is None) or keyword in (
            "device",
            "map_location",
        )
        value = string_value(arg.value)
        if is_device_arg and value is not None and CUDA_STRING.match(value):
            return arg.value
    return None
