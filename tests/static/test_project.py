"""The project around a checked file: imports resolved to the files they name."""

from __future__ import annotations

from pathlib import Path

from pitfall_guard.static.project import ProjectView, resolve_module, summarize


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


NETS = """
from torch import nn
import torch.nn as tnn
class Plain(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 2)
class Dropping(tnn.Module):
    def __init__(self):
        super().__init__()
        self.drop = nn.Dropout(0.1)
class Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(4, 4, num_layers=2, dropout=0.2)
class Child(Dropping):
    pass
class NotAModule:
    dropout = 0.5
"""


def test_imports_resolve_next_to_the_file_its_parents_src_and_packages(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    _write(
        tmp_path,
        {
            "models/nets.py": NETS,
            "models/__init__.py": "from .nets import Dropping as Exported\n",
            "src/shared/utils.py": "",
            "scripts/deep/train.py": "",
        },
    )
    script = tmp_path / "scripts" / "deep" / "train.py"
    assert resolve_module(script, "models.nets") == tmp_path / "models" / "nets.py"
    assert resolve_module(script, "models") == tmp_path / "models" / "__init__.py"
    assert resolve_module(script, "shared.utils") == tmp_path / "src" / "shared" / "utils.py"
    assert resolve_module(tmp_path / "models" / "nets.py", "", level=1) == (
        tmp_path / "models" / "__init__.py"
    )
    assert resolve_module(script, "torch.nn") is None


def test_classes_are_summarized_with_their_layers_and_bases(tmp_path: Path) -> None:
    _write(tmp_path, {"nets.py": NETS, "models/__init__.py": "from .nets import Child\n",
                      "models/nets.py": NETS, "train.py": ""})  # fmt: skip
    view = ProjectView(tmp_path / "train.py")
    assert view.module_class("nets.Plain") is not None
    assert not view.shows_mode_layers("nets.Plain")
    assert view.shows_mode_layers("nets.Dropping")
    assert view.shows_mode_layers("nets.Recurrent")
    assert view.shows_mode_layers("nets.Child")  # inherited
    assert view.module_class("nets.NotAModule") is None
    assert not view.shows_mode_layers("nets.NotAModule")
    assert view.shows_mode_layers("models.Child")  # re-exported by a package
    assert view.module_class("nets.Missing") is None


def test_a_file_that_does_not_parse_has_no_summary(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("class (:\n")
    assert summarize(tmp_path / "broken.py") is None


def test_functions_are_summarized_with_the_methods_they_call(tmp_path: Path) -> None:
    _write(tmp_path, {"utils.py": "def freeze(m):\n    m.eval()\n    m.requires_grad_(False)\n",
                      "train.py": ""})  # fmt: skip
    summary = ProjectView(tmp_path / "train.py").function("utils.freeze")
    assert summary is not None and {"eval", "requires_grad_"} <= summary.methods
    assert ProjectView(tmp_path / "train.py").function("utils.missing") is None


HELPERS = """
from .inner import reshuffle
def direct(loader, epoch):
    loader.sampler.set_epoch(epoch)
def through_own(loader, epoch):
    direct(loader, epoch)
def through_other_file(loader, epoch):
    reshuffle(loader, epoch)
def to_a_library(trainer, loader):
    trainer.fit(loader)
def never(model, loader):
    for x, y in enumerate(loader):
        model(x)
def through_never(model, loader):
    never(model, loader)
"""


def test_may_call_follows_helpers_through_the_project(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/helpers.py": HELPERS,
            "pkg/inner.py": "def reshuffle(loader, e):\n    loader.sampler.set_epoch(e)\n",
            "pkg/train.py": "",
        },
    )
    view = ProjectView(tmp_path / "pkg" / "train.py")
    set_epoch = frozenset({"set_epoch"})
    calls = {
        name: view.may_call(f"helpers.{name}", 1, set_epoch)
        for name in (
            "direct",
            "through_own",
            "through_other_file",
            "to_a_library",
            "never",
            "through_never",
            "missing",
        )
    }
    assert calls == {
        "direct": True,
        "through_own": True,
        "through_other_file": True,
        "to_a_library": True,  # a method of some object may well
        "never": False,
        "through_never": False,
        "missing": True,  # not read: it may
    }
    assert view.may_call("nowhere.helper", 0, set_epoch)


def test_a_testing_folder_holds_test_code() -> None:
    import libcst as cst
    from libcst.metadata import MetadataWrapper

    from pitfall_guard.static.facts import Facts
    from pitfall_guard.static.rule import FileContext

    module = cst.parse_module("")

    def context(path: str) -> FileContext:
        return FileContext(path, "", module, MetadataWrapper(module), Facts.build(module))

    assert context("captum/testing/helpers/common.py").is_test_module
    assert context("tests/unit/test_x.py").is_test_module
    assert not context("src/training/loop.py").is_test_module
