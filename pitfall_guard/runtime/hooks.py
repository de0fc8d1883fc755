"""PyTorch's hooks, installed once per guard, turned into the events of `RuntimeListener`.

Global module forward pre/post hooks (module, model and loss events; always, as they count the
forward passes) and global optimizer step pre/post hooks (always: they count the steps); the
other hooks only when some listener needs them: per-parameter post-accumulate-grad hooks,
wrappers around `Optimizer.zero_grad`, `Module.zero_grad` and `Tensor.backward`. Every hook
and wrapper is removed by `uninstall`.
"""

from __future__ import annotations

import functools
import sys
import sysconfig
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

from pitfall_guard.runtime.attribution import Site, is_library_frame, user_site
from pitfall_guard.runtime.bounds import LoaderBounds
from pitfall_guard.runtime.functional import FunctionalLosses
from pitfall_guard.runtime.monitor import EVENTS, RuntimeListener
from pitfall_guard.runtime.patch import replace

if TYPE_CHECKING:
    import torch
    from torch.utils.hooks import RemovableHandle

Handler = Callable[..., None]
_SEEN_ERROR = "_pitfall_guard_seen"


class MaxStepsReached(BaseException):
    """Raised from the optimizer's step post-hook after --max-steps steps; the guard catches it.

    A BaseException, like KeyboardInterrupt, so that the script's `except Exception` does not
    swallow it, while its `finally` blocks still run.
    """

    def __init__(self, steps: int) -> None:
        super().__init__(f"stopped after {steps} optimizer steps")
        self.steps = steps


class _Stopper:
    """A trace function that raises MaxStepsReached at the next line of the user's code."""

    def __init__(self, steps: int, boundary: FrameType | None) -> None:
        self.steps = steps
        self.previous = sys.gettrace()
        self.frames: list[FrameType] = []
        frame: FrameType | None = sys._getframe(1)
        # Only the frames inside the guarded code: not the one that entered the guard.
        while frame is not None and frame is not boundary:
            if _is_script_code(frame):
                frame.f_trace = self
                self.frames.append(frame)
            frame = frame.f_back
        sys.settrace(self)

    def __call__(self, frame: FrameType, event: str, arg: object) -> _Stopper | None:
        if event == "line" and _is_script_code(frame):
            raise MaxStepsReached(self.steps)
        return self

    def release(self) -> None:
        sys.settrace(self.previous)
        for frame in self.frames:
            frame.f_trace = None
        self.frames.clear()


_NOT_SCRIPTS = tuple(
    {sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")}
)


def _is_script_code(frame: FrameType) -> bool:
    """The user's own code: not the standard library, an installed package or the guard."""
    filename = frame.f_code.co_filename
    return not (
        filename.startswith("<") or filename.startswith(_NOT_SCRIPTS) or is_library_frame(frame)
    )


def overrides(listener: RuntimeListener, event: str) -> bool:
    return getattr(type(listener), event) is not getattr(RuntimeListener, event)


def optimizer_params(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [param for group in optimizer.param_groups for param in group["params"]]


class EventDispatcher:
    """Installs the hooks, keeps the state they share (call depth, the model being called, step
    count) and calls the listeners. A listener that raises is handed to `on_failure` and removed.
    """

    def __init__(
        self,
        listeners: Sequence[RuntimeListener],
        *,
        on_failure: Callable[[RuntimeListener, BaseException], None],
        check_every: int = 10,
        max_steps: int | None = None,
        max_epochs: int = 2,
        max_eval_batches: int | None = None,
    ) -> None:
        self.listeners = list(listeners)
        self.on_failure = on_failure
        self.check_every = check_every
        self.max_steps = max_steps
        self.bounds = (
            None
            if max_steps is None
            else LoaderBounds(
                max_steps,
                max_epochs,
                max_eval_batches or max_steps,
                steps=lambda: self.steps,
                evaluating=self._evaluating,
                stop=self.stop,
            )
        )
        self.last_model: torch.nn.Module | None = None
        self._functional: FunctionalLosses | None = None
        self.optimizer_sites: weakref.WeakKeyDictionary[torch.optim.Optimizer, Site] = (
            weakref.WeakKeyDictionary()
        )
        self._loss_depth = 0  # inside a loss module's forward: its F.* call is not another
        self._weighted: weakref.WeakKeyDictionary[torch.nn.Module, bool] = (
            weakref.WeakKeyDictionary()
        )
        self.steps = 0
        # What was watched: the model's forward passes, those that evaluate (in eval mode or
        # with gradients off), and whether --max-steps has stopped the script.
        self.forwards = 0
        self.evaluations = 0
        self.stopping = False
        self._stopper: _Stopper | None = None
        # The frame that entered the guard: the stop never raises there or above.
        self.boundary: FrameType | None = None
        self.depth = 0
        self.model: torch.nn.Module | None = None
        self._model_depth = -1
        # The optimizer whose step is running.
        self.stepping: torch.optim.Optimizer | None = None
        self._thread = threading.get_ident()
        self._handles: list[RemovableHandle] = []
        self._restores: list[Callable[[], None]] = []
        self._hooked_params: dict[int, tuple[weakref.ref[torch.Tensor], list[RemovableHandle]]]
        self._hooked_params = {}
        self._hooked_owners: weakref.WeakSet[object] = weakref.WeakSet()
        self._route()

    # -- which listeners get which event -------------------------------------------------------

    def _route(self) -> None:
        routes: dict[str, tuple[Handler, ...]] = {
            event: tuple(
                getattr(listener, event)
                for listener in self.listeners
                if overrides(listener, event)
            )
            for event in EVENTS
        }
        self._model_call = routes["on_model_call"]
        self._model_return = routes["on_model_return"]
        self._module_call = routes["on_module_call"]
        self._module_return = routes["on_module_return"]
        self._module_error = routes["on_module_error"]
        self._loss_call = routes["on_loss_call"]
        self._loss_return = routes["on_loss_return"]
        self._grad_arriving = routes["on_grad_arriving"]
        self._grad_accumulated = routes["on_grad_accumulated"]
        self._grads_cleared = routes["on_grads_cleared"]
        self._step = routes["on_step"]
        self._step_done = routes["on_step_done"]
        self._backward = routes["on_backward"]
        self._read_device_state = routes["read_device_state"]
        self._finish = routes["finish"]

    def _emit(self, handlers: tuple[Handler, ...], *args: Any) -> None:
        for handler in handlers:
            try:
                handler(*args)
            except Exception as error:  # one broken monitor must not break the user's training
                self._fail(handler, error)

    def _fail(self, handler: Handler, error: BaseException) -> None:
        listener = getattr(handler, "__self__", None)
        if isinstance(listener, RuntimeListener) and listener in self.listeners:
            self.listeners.remove(listener)
            self._route()
            self.on_failure(listener, error)

    # -- install / uninstall -------------------------------------------------------------------

    def install(self) -> None:
        import torch
        from torch.nn.modules import module as module_hooks
        from torch.nn.modules.loss import _Loss
        from torch.nn.parallel import DataParallel, DistributedDataParallel
        from torch.optim import optimizer as optimizer_hooks

        self._loss_type = _Loss
        self._wrapper_types = (DataParallel, DistributedDataParallel)
        self._current_autograd_node = torch._C._current_autograd_node
        self._grad_enabled = torch.is_grad_enabled
        # dynamo reads it as True while it traces: the hooks then add nothing to the graph.
        self._compiling = torch.compiler.is_compiling
        self._transforming = torch._C._functorch.peek_interpreter_stack
        # Always: they count the forward passes the verdict reports, and stop the script.
        self._handles.append(module_hooks.register_module_forward_pre_hook(self._forward_pre))
        self._handles.append(
            module_hooks.register_module_forward_hook(self._forward_post, always_call=True)
        )
        self._wrap_optimizer_init(torch.optim.Optimizer)
        self._handles.append(optimizer_hooks.register_optimizer_step_pre_hook(self._step_pre))
        self._handles.append(optimizer_hooks.register_optimizer_step_post_hook(self._step_post))
        if self._grads_cleared or self._wants_params():
            self._wrap_zero_grad(torch.optim.Optimizer, optimizer_params)
            self._wrap_zero_grad(torch.nn.Module, lambda module: list(module.parameters()))
        if self._backward:
            self._wrap_backward(torch.Tensor)
        if self.bounds is not None:
            self.bounds.install()
        if self._loss_call or self._loss_return:
            self._functional = FunctionalLosses(self)
            self._functional.install()

    def _wants_params(self) -> bool:
        return bool(self._grad_arriving or self._grad_accumulated)

    def _wrap_zero_grad(self, owner: type, params_of: Callable[[Any], list[torch.Tensor]]) -> None:
        original = owner.__dict__["zero_grad"]
        dispatcher = self

        def zero_grad(self: Any, *args: Any, **kwargs: Any) -> Any:
            result = original(self, *args, **kwargs)
            params = params_of(self)
            if dispatcher._unhooked(self):
                dispatcher._hook_params(self, params)
            dispatcher._emit(dispatcher._grads_cleared, params)
            return result

        self._restores.append(replace(owner, "zero_grad", zero_grad))

    def _wrap_optimizer_init(self, optimizer_type: type) -> None:
        """Where each optimizer made under the guard is built: the line a learning-rate
        finding points at (the step is where it shows, the constructor where it is fixed)."""
        original = optimizer_type.__dict__["__init__"]
        sites = self.optimizer_sites

        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            original(self, *args, **kwargs)
            if self not in sites:  # the outermost constructor's line (a subclass calls super)
                site = user_site(skip=2)
                if site is not None:
                    sites[self] = site

        self._restores.append(replace(optimizer_type, "__init__", __init__))

    def _wrap_backward(self, tensor_type: type) -> None:
        original = tensor_type.__dict__["backward"]
        dispatcher = self

        def backward(self: Any, *args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() == dispatcher._thread and dispatcher._transforming() is None:
                dispatcher._emit(dispatcher._backward, self)
            return original(self, *args, **kwargs)

        self._restores.append(replace(tensor_type, "backward", backward))

    def uninstall(self) -> None:
        if self.bounds is not None:
            self.bounds.uninstall()
        if self._functional is not None:
            self._functional.uninstall()
            self._functional = None
        for handle in self._handles:
            handle.remove()
        for _, handles in self._hooked_params.values():
            for handle in handles:
                handle.remove()
        for restore in reversed(self._restores):
            restore()
        self._handles.clear()
        self._hooked_params.clear()
        self._restores.clear()

    def _unhooked(self, owner: object) -> bool:
        """Whether the parameters of `owner` (a model or an optimizer) still need hooks."""
        return self._wants_params() and owner not in self._hooked_owners

    def _hook_params(self, owner: object, params: Iterable[torch.Tensor]) -> None:
        """Hook the gradient accumulation of `owner`'s parameters."""
        self._hooked_owners.add(owner)
        for param in params:
            known = self._hooked_params.get(id(param))
            if not param.requires_grad or (known is not None and known[0]() is param):
                continue
            param_ref = weakref.ref(param)  # a hook holding the parameter would keep it alive
            handles = []
            if self._grad_arriving:
                arriving = functools.partial(self._arriving, param_ref)
                handles.append(param.register_hook(arriving))  # type: ignore[no-untyped-call]
            if self._grad_accumulated:
                handles.append(
                    param.register_post_accumulate_grad_hook(  # type: ignore[no-untyped-call]
                        self._accumulated
                    )
                )
            self._hooked_params[id(param)] = (param_ref, handles)

    # -- the hooks -----------------------------------------------------------------------------

    def _in_user_code(self) -> bool:
        """Whether a module call is the user's own, run eagerly: not inside a region
        torch.compile traces (dynamo reads is_compiling as True, so the hooks add nothing to
        its graph; the compiled module is watched from outside), not under torch.func
        transforms (the tensors are wrappers), not on another thread (DataParallel replicas),
        not a forward re-run inside a backward pass (activation checkpointing)."""
        return not (
            self._compiling()
            or self._transforming() is not None
            or threading.get_ident() != self._thread
            or self._current_autograd_node() is not None
        )

    def _forward_pre(self, module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        if not self._in_user_code():
            return
        if self.stopping:
            raise MaxStepsReached(self.steps)  # a bare `except:` caught the first one
        depth = self.depth
        self.depth = depth + 1
        is_loss = isinstance(module, self._loss_type)
        if self.model is None and not is_loss and not self._is_wrapper(module):
            self.model = module
            self._model_depth = depth
            if self._has_weights(module):  # not a transform of the data pipeline
                self.forwards += 1
                self.last_model = module
                if not module.training or not self._grad_enabled():
                    self.evaluations += 1
            if self._unhooked(module):
                self._hook_params(module, module.parameters())
            if self._model_call:
                self._emit(self._model_call, module, args)
        # The `if`s skip a call per module call when no listener wants the event.
        if self._module_call:
            self._emit(self._module_call, module, args)
        if is_loss:
            self._loss_depth += 1
            if self._loss_call:
                self._emit(self._loss_call, module, args)

    # -- losses computed with torch.nn.functional (runtime/functional.py) --------------------

    def watches_functional_loss(self) -> bool:
        return not self._loss_depth and self._in_user_code()

    def functional_loss_call(self, stand_in: torch.nn.Module, args: tuple[Any, ...]) -> None:
        if self._loss_call:
            self._emit(self._loss_call, stand_in, args)

    def functional_loss_return(
        self, stand_in: torch.nn.Module, args: tuple[Any, ...], output: Any
    ) -> None:
        if self._loss_return:
            self._emit(self._loss_return, stand_in, args, output)

    def _has_weights(self, module: torch.nn.Module) -> bool:
        known = self._weighted.get(module)
        if known is None:
            known = self._weighted[module] = next(module.parameters(), None) is not None
        return known

    def _is_wrapper(self, module: torch.nn.Module) -> bool:
        # FSDP by name: importing it costs most of a second, and most runs never use it.
        return isinstance(module, self._wrapper_types) or (
            type(module).__name__ == "FullyShardedDataParallel"
        )

    def _forward_post(self, module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if not self._in_user_code():
            return
        depth = self.depth - 1 if self.depth > 0 else 0
        self.depth = depth
        if self._loss_depth and isinstance(module, self._loss_type):
            self._loss_depth -= 1
        is_model = module is self.model and depth == self._model_depth
        if is_model or depth == 0:
            self.model = None
        if output is None:
            # With always_call, a forward that raised reaches this hook with no output while
            # the error is being handled.
            error = sys.exc_info()[1]
            if error is not None:
                if not getattr(error, _SEEN_ERROR, False):
                    setattr(error, _SEEN_ERROR, True)  # only the innermost module reports it
                    self._emit(self._module_error, module, args, error)
                return
        if self._module_return:
            self._emit(self._module_return, module, args, output)
        if self._loss_return and isinstance(module, self._loss_type):
            self._emit(self._loss_return, module, args, output)
        if is_model and self._model_return:
            self._emit(self._model_return, module, args, output)

    def _arriving(self, param_ref: weakref.ref[torch.Tensor], grad: torch.Tensor) -> None:
        # A tensor hook: runs before the gradient is added to `.grad` (on the engine's thread).
        param = param_ref()
        if param is not None:
            self._emit(self._grad_arriving, param)

    def _accumulated(self, param: torch.Tensor) -> None:
        # Runs on the autograd engine's thread (a device thread for CUDA tensors).
        self._emit(self._grad_accumulated, param)

    def _step_pre(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self.stopping:
            raise MaxStepsReached(self.steps)
        if self.stepping is not None and self.stepping is not optimizer:
            return  # a wrapper optimizer stepping its inner one is one step
        self.stepping = optimizer
        if self._unhooked(optimizer):
            self._hook_params(optimizer, optimizer_params(optimizer))
        self._emit(self._step, optimizer)

    def _step_post(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if optimizer is not self.stepping:
            return
        self.stepping = None
        self._emit(self._step_done, optimizer)
        self.steps += 1
        if self.steps % self.check_every == 0:
            self.read_device_state(final=False)
        if self.bounds is not None:
            self.bounds.step_done()

    def _evaluating(self) -> bool:
        model = self.last_model
        return not self._grad_enabled() or (model is not None and not model.training)

    def stop(self) -> None:
        """End the guarded code now. A bare `except:` in the script may catch the stop: it is
        raised again at the next line the script runs (through a trace function, only from
        then on) and at its next forward pass or step."""
        self.stopping = True
        self._stopper = _Stopper(self.steps, self.boundary)
        raise MaxStepsReached(self.steps)

    def release_stop(self) -> None:
        if self._stopper is not None:
            self._stopper.release()
            self._stopper = None

    def read_device_state(self, final: bool) -> None:
        self._emit(self._read_device_state, final)

    def finish(self, completed: bool) -> None:
        self._emit(self._finish, completed)
