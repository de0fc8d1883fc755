"""`Guard`: run training code under PyTorch's hooks and report the pitfalls it really hits.

    with Guard(max_steps=100) as guard:
        train()
    guard.assert_clean()

The guard asks every plugin for its runtime monitors, installs the hooks they need, removes
every hook on exit (also when the code raises), and attributes each event to the user's line.
Importing this module does not import torch; entering a guard does.
"""

from __future__ import annotations

import contextlib
import io
import sys
import traceback
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, ClassVar, TypeVar

from pitfall_guard.config import Config, load_config
from pitfall_guard.findings import Finding, Location, Severity
from pitfall_guard.plugins import Plugins, load_plugins
from pitfall_guard.report.base import RunSummary
from pitfall_guard.report.text import ConciseReporter
from pitfall_guard.runtime import attribution, distributed
from pitfall_guard.runtime.attribution import Site
from pitfall_guard.runtime.collector import INTERNAL_ERROR, FindingCollector
from pitfall_guard.runtime.hooks import EventDispatcher, MaxStepsReached
from pitfall_guard.runtime.monitor import RuntimeListener, RuntimeMonitor
from pitfall_guard.runtime.patch import replace

if TYPE_CHECKING:
    import torch

ListenerT = TypeVar("ListenerT", bound=RuntimeListener)
DEFAULT_CHECK_EVERY = 10


@dataclass(frozen=True)
class Watched:
    """What a guard saw: optimizer steps, the model's forward passes (and how many of them
    evaluated: in eval mode or with gradients off), and the ranks of a distributed run."""

    steps: int = 0
    forwards: int = 0
    evaluations: int = 0
    ranks: int = 1
    # DataLoader passes that `max_steps` ended early or left empty (a bounded run).
    cut_passes: int = 0
    # Processes the code started (not DataLoader workers): what runs there is not watched.
    processes: int = 0

    @property
    def anything(self) -> bool:
        return bool(self.steps or self.forwards)

    def describe(self) -> str:
        parts = [
            _count(self.steps, "optimizer step"),
            _count(self.forwards, "forward pass", "forward passes")
            + (f" ({self.evaluations} evaluating)" if self.evaluations else ""),
        ]
        if self.ranks > 1:
            parts.append(f"on {self.ranks} ranks")
        return ", ".join(parts)


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


_COMPILE_HOOKS_WARNING = r"Using `torch.compile\(module\)` when there are global hooks"


class GuardError(RuntimeError):
    """The guard was used in a way it cannot work (say, two guards active at once)."""


class Guard(contextlib.ContextDecorator):
    """A context manager (and decorator) that watches the training code it wraps.

    `select`/`extend_select`/`ignore` narrow the configured codes (`[tool.pitfall-guard]` of
    the nearest pyproject.toml, or `config`). `max_steps` makes a short run that still
    evaluates (`pitfall_guard.runtime.bounds`): each pass over a training DataLoader ends after
    `max_steps` optimizer steps, evaluation passes after `max_eval_batches` batches (default
    `max_steps`), training loaders yield nothing after `max_epochs` epochs, and `max_steps`
    steps outside any DataLoader stop the code cleanly: the `with` block ends there and
    `stopped` is True. Values that live on the device (the loss, update sizes) are read every
    `check_every` steps and at exit, never once per step.
    """

    _active: ClassVar[Guard | None] = None

    def __init__(
        self,
        *,
        select: Sequence[str] | None = None,
        extend_select: Sequence[str] = (),
        ignore: Sequence[str] = (),
        config: Config | None = None,
        plugins: Plugins | None = None,
        monitors: Sequence[type[RuntimeMonitor]] | None = None,
        max_steps: int | None = None,
        max_epochs: int = 2,
        max_eval_batches: int | None = None,
        check_every: int = DEFAULT_CHECK_EVERY,
    ) -> None:
        if check_every < 1:
            raise ValueError(f"check_every must be at least 1, got {check_every}")
        base = config if config is not None else load_config()
        self.config = base.with_overrides(select=select, extend_select=extend_select, ignore=ignore)
        self.plugins = plugins or load_plugins(tuple(sorted(self.config.disable_plugins)))
        self.config.validate_codes(self.plugins.codes)
        available = self.plugins.runtime_monitors if monitors is None else monitors
        self.monitor_types = [m for m in available if self.config.is_enabled(m.code)]
        self.max_steps = max_steps
        self.max_epochs = max_epochs
        self.max_eval_batches = max_eval_batches
        self.check_every = check_every
        self.stopped = False
        self.ranks: distributed.RankInfo | None = None
        self._collector = FindingCollector(self.config)
        self._dispatcher: EventDispatcher | None = None
        self._services: dict[type[RuntimeListener], RuntimeListener] = {}
        self._monitors: list[RuntimeMonitor] = []
        self._on_exit: contextlib.ExitStack | None = None
        self._finished = False
        self._watched = Watched()
        self._processes_started = 0

    # -- what users read -----------------------------------------------------------------------

    @property
    def active(self) -> bool:
        return self._dispatcher is not None

    @property
    def steps(self) -> int:
        """Optimizer steps seen so far."""
        return self.watched.steps

    @property
    def watched(self) -> Watched:
        """What the guard has seen so far (or saw, once closed)."""
        dispatcher = self._dispatcher
        if dispatcher is None:
            return self._watched
        ranks = self.ranks.world_size if self.ranks is not None else 1
        cut = dispatcher.bounds.cut_passes if dispatcher.bounds is not None else 0
        return Watched(
            dispatcher.steps,
            dispatcher.forwards,
            dispatcher.evaluations,
            ranks,
            cut,
            self._processes_started,
        )

    @property
    def findings(self) -> list[Finding]:
        """The findings so far, sorted; while active, values on the device are read first."""
        if self._dispatcher is not None:
            self._dispatcher.read_device_state(final=False)
        return self._collector.findings()

    @property
    def is_reporting_rank(self) -> bool:
        """False on the ranks other than 0 of a distributed run: rank 0 reports for all."""
        return self.ranks is None or self.ranks.rank == 0

    def assert_clean(self) -> None:
        """Raise AssertionError listing the findings, if there are any."""
        findings = self.findings
        if findings:
            raise AssertionError(describe_findings(findings))

    # -- entering and leaving ------------------------------------------------------------------

    def __enter__(self) -> Guard:
        if Guard._active is not None:
            raise GuardError("a pitfall-guard Guard is already active; guards do not nest")
        import torch  # noqa: F401  # the monitors' hooks need it; fail here if it is missing

        self._collector = FindingCollector(self.config)
        self._processes_started = 0
        self._services = {}
        self._monitors = []
        self.stopped = False
        self.ranks = None
        self._finished = False
        for monitor_type in self.monitor_types:
            try:
                self._monitors.append(monitor_type(self))
            except Exception as error:
                self._internal_error(monitor_type, error)
        listeners: list[RuntimeListener] = [*self._services.values(), *self._monitors]
        self._dispatcher = EventDispatcher(
            listeners,
            on_failure=self._listener_failed,
            check_every=self.check_every,
            max_steps=self.max_steps,
            max_epochs=self.max_epochs,
            max_eval_batches=self.max_eval_batches,
        )
        Guard._active = self
        self._dispatcher.boundary = sys._getframe(1)
        try:
            self._dispatcher.install()
            self._on_exit = contextlib.ExitStack()
            # torch.compile warns that global hooks fire for its OptimizedModule too: those are
            # the guard's, which watch the compiled module from outside on purpose.
            self._on_exit.enter_context(warnings.catch_warnings())
            self._on_exit.enter_context(self._counting_processes())
            warnings.filterwarnings("ignore", message=_COMPILE_HOOKS_WARNING)
            self._on_exit.enter_context(distributed.gather_before_teardown(self))
        except BaseException:
            self._close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if self._dispatcher is None:
            return False  # already closed (the pytest marker closes the fixture's guard)
        self._dispatcher.release_stop()  # the script is over: its lines may not raise again
        stopped = isinstance(exc, MaxStepsReached)
        completed = exc is None or (isinstance(exc, SystemExit) and not exc.code)
        try:
            self.finish(completed, gather=completed or stopped)
        finally:
            self._close()
        if stopped:
            self.stopped = True
            return True
        return False

    @contextlib.contextmanager
    def _counting_processes(self) -> Iterator[None]:
        """Counts the processes the guarded code starts (Hogwild training, a worker pool):
        the verdict says that what they run is not watched. DataLoader workers are not
        counted: they only load data."""
        from multiprocessing.process import BaseProcess

        original = BaseProcess.start
        guard = self

        def start(process: BaseProcess) -> None:
            target = getattr(process, "_target", None)
            if not str(getattr(target, "__module__", "")).startswith("torch.utils.data"):
                guard._processes_started += 1
            original(process)

        restore = replace(BaseProcess, "start", start)
        try:
            yield
        finally:
            restore()

    def close(self) -> None:
        """Leave the guard now, as a clean exit would (a no-op when it is not active)."""
        self.__exit__(None, None, None)

    def finish(self, completed: bool, gather: bool = True) -> None:
        """Read the device state a last time, settle pending events, and (when every rank can
        be expected to get there too: not after a crash) gather the findings of all ranks."""
        if self._dispatcher is None or self._finished:
            return
        self._finished = True
        self._dispatcher.read_device_state(final=True)
        self._dispatcher.finish(completed)
        if gather:
            distributed.gather_findings(self)

    def _close(self) -> None:
        self._watched = self.watched  # kept for after the guard
        dispatcher, self._dispatcher = self._dispatcher, None
        try:
            if dispatcher is not None:
                dispatcher.release_stop()
                dispatcher.uninstall()
            if self._on_exit is not None:
                self._on_exit.close()
                self._on_exit = None
        finally:
            Guard._active = None

    # -- what monitors use ---------------------------------------------------------------------

    @property
    def model(self) -> torch.nn.Module | None:
        """The model whose forward pass is running (None between forward passes)."""
        return None if self._dispatcher is None else self._dispatcher.model

    def service(self, service_type: type[ListenerT]) -> ListenerT:
        """The one instance of a listener shared by several monitors (created on first use,
        while the monitors are created)."""
        service = self._services.get(service_type)
        if service is None:
            if self._dispatcher is not None:
                raise GuardError(f"{service_type.__name__} is asked for after the guard started")
            service = self._services[service_type] = service_type(self)
        assert isinstance(service, service_type)
        return service

    def optimizer_site(self, optimizer: torch.optim.Optimizer) -> Site | None:
        """The line that built `optimizer`, when it was built under this guard."""
        return None if self._dispatcher is None else self._dispatcher.optimizer_sites.get(optimizer)

    @property
    def stepping(self) -> bool:
        """Whether an optimizer step is running (the closure of `step(closure)`, say)."""
        return self._dispatcher is not None and self._dispatcher.stepping is not None

    def user_site(self) -> Site | None:
        """The user's line that is running now."""
        return attribution.user_site(skip=2)

    def report(
        self,
        monitor: RuntimeMonitor,
        message: str,
        *,
        site: Site | None = None,
        hint: str | None = None,
        count: int = 1,
    ) -> None:
        if self._dispatcher is None:
            return  # a late event (say, a graph freed after the guard exited)
        if site is None:
            site = attribution.user_site(skip=2)
        location = site.location() if site is not None else Location("<unknown>", 1)
        self._collector.add(
            monitor.code,
            monitor.name,
            message,
            location,
            severity=monitor.severity,
            hint=hint if hint is not None else monitor.hint,
            count=count,
        )

    def explain(self, error: BaseException, text: str) -> None:
        """Add `text` to the message of an error the user's code is raising."""
        note = f"pitfall-guard: {text}"
        if note not in getattr(error, "__notes__", ()):
            error.add_note(note)

    def _listener_failed(self, listener: RuntimeListener, error: BaseException) -> None:
        self._internal_error(type(listener), error)

    def _internal_error(self, owner: type, error: BaseException) -> None:
        frames = traceback.extract_tb(error.__traceback__)
        where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
        code, name = INTERNAL_ERROR
        self._collector.add(
            code,
            name,
            f"runtime monitor {owner.__module__}.{owner.__qualname__} crashed and was "
            f"switched off: {type(error).__name__}: {error}{where}",
            Location("<pitfall-guard>", 1),
            severity=Severity.ERROR,
            hint="report it to the monitor's authors; meanwhile --ignore its code",
        )

    def _replace_findings(self, findings: Sequence[Finding]) -> None:
        self._collector.replace_all(findings)


def describe_findings(findings: Sequence[Finding]) -> str:
    """The findings, one line each (the concise format), with a count line."""
    buffer = io.StringIO()
    ConciseReporter(buffer).report(findings, RunSummary(files_checked=1))
    return buffer.getvalue().rstrip("\n")
