"""Settings: `[tool.pitfall-guard]` in the nearest pyproject.toml, then command-line overrides.

Selection works like ruff's: `select`, `extend-select` and `ignore` take codes or prefixes
(`PG1` is every gradient rule, `ALL` every rule); for a code, the most specific matching entry
wins, and `ignore` wins a tie.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pitfall_guard.static.discovery import matches_any
from pitfall_guard.static.versions import TorchTarget, from_setting

SECTION = "pitfall-guard"
DEFAULT_SELECT = ("ALL",)
_LIST_KEYS = ("select", "extend-select", "ignore", "exclude", "disable-plugins")
_KNOWN_KEYS = (*_LIST_KEYS, "per-file-ignores", "preview", "torch-version")


class ConfigError(Exception):
    """A setting that cannot be used; the message names the key and the file."""


@dataclass(frozen=True)
class Config:
    root: Path = field(default_factory=Path.cwd)
    source: Path | None = None
    select: tuple[str, ...] = DEFAULT_SELECT
    extend_select: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    per_file_ignores: tuple[tuple[str, tuple[str, ...]], ...] = ()
    disable_plugins: tuple[str, ...] = ()
    preview: bool = False
    torch_version: TorchTarget | None = None

    def with_overrides(
        self,
        *,
        select: Sequence[str] | None = None,
        extend_select: Sequence[str] = (),
        ignore: Sequence[str] = (),
        preview: bool = False,
        torch_version: str | None = None,
    ) -> Config:
        """Command-line settings: `--select` replaces, the others add or override."""
        return replace(
            self,
            select=tuple(select) if select is not None else self.select,
            extend_select=(*self.extend_select, *extend_select),
            ignore=(*self.ignore, *ignore),
            preview=self.preview or preview,
            torch_version=(
                _torch_target(torch_version, "--torch-version")
                if torch_version is not None
                else self.torch_version
            ),
        )

    def is_enabled(self, code: str, path: Path | None = None, *, preview: bool = False) -> bool:
        """Whether `code` is selected (for `path`, with its per-file ignores).

        A preview rule (`preview=True`) is outside the default selection, as in ruff: it runs
        when its exact code is selected, or with `preview = true` for any matching selector.
        """
        ignore: Iterable[str] = self.ignore
        if path is not None:
            ignore = [*ignore, *self._ignored_for(path)]
        select = (*self.select, *self.extend_select)
        if preview and not self.preview:
            select = tuple(entry for entry in select if entry == code)
        return _selected(code, select, ignore)

    def _ignored_for(self, path: Path) -> list[str]:
        return [
            code
            for pattern, codes in self.per_file_ignores
            if matches_any(path, [pattern], self.root)
            for code in codes
        ]

    def validate_codes(self, known: Iterable[str]) -> None:
        """Every code or prefix in the settings must match a registered code."""
        known = sorted(known)
        entries = [
            ("select", self.select),
            ("extend-select", self.extend_select),
            ("ignore", self.ignore),
            *((f"per-file-ignores.{pattern!r}", codes) for pattern, codes in self.per_file_ignores),
        ]
        for key, codes in entries:
            for code in codes:
                if code != "ALL" and not any(k.startswith(code) for k in known):
                    where = f" in {self.source}" if self.source else ""
                    raise ConfigError(
                        f"{key}{where}: unknown rule code or prefix {code!r} "
                        f"(known codes: {', '.join(known)}; `pitfall-guard rules` lists them)"
                    )


def _specificity(code: str, entries: Iterable[str]) -> int:
    best = -1
    for entry in entries:
        if entry == "ALL":
            best = max(best, 0)
        elif code.startswith(entry):
            best = max(best, len(entry))
    return best


def _selected(code: str, select: Iterable[str], ignore: Iterable[str]) -> bool:
    chosen = _specificity(code, select)
    return chosen >= 0 and chosen > _specificity(code, ignore)


def find_pyproject(start: Path) -> Path | None:
    """The nearest pyproject.toml, from `start` upwards, that has a [tool.pitfall-guard] table."""
    for directory in (start, *start.parents):
        candidate = directory / "pyproject.toml"
        if candidate.is_file() and SECTION in _read_toml(candidate).get("tool", {}):
            return candidate
    return None


def load_config(start: Path | None = None, path: Path | None = None) -> Config:
    """The settings for a run started in `start` (default: the working directory)."""
    start = (start or Path.cwd()).resolve()
    source = path if path is not None else find_pyproject(start)
    if source is None:
        return Config(root=start)
    table = _read_toml(source).get("tool", {}).get(SECTION, {})
    return _parse_table(table, source)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML ({error})") from error
    except OSError as error:
        raise ConfigError(f"{path}: cannot read it ({error})") from error


def _parse_table(table: Any, source: Path) -> Config:
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: [tool.{SECTION}] must be a table")
    unknown = sorted(set(table) - set(_KNOWN_KEYS))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key {unknown[0]!r} in [tool.{SECTION}] "
            f"(known keys: {', '.join(_KNOWN_KEYS)})"
        )
    lists = {key: _string_list(table, key, source) for key in _LIST_KEYS if key in table}
    per_file = table.get("per-file-ignores", {})
    if not isinstance(per_file, dict):
        raise ConfigError(f"{source}: per-file-ignores must be a table of glob = [codes]")
    per_file_ignores = tuple(
        (pattern, _string_list(per_file, pattern, source, key=f"per-file-ignores.{pattern!r}"))
        for pattern in per_file
    )
    preview = table.get("preview", False)
    if not isinstance(preview, bool):
        raise ConfigError(f"{source}: preview must be true or false, got {preview!r}")
    torch_version = table.get("torch-version")
    if torch_version is not None and not isinstance(torch_version, str):
        raise ConfigError(f'{source}: torch-version must be a string such as "2.6"')
    return Config(
        root=source.parent.resolve(),
        preview=preview,
        torch_version=(
            None if torch_version is None else _torch_target(torch_version, str(source))
        ),
        source=source,
        select=lists.get("select", DEFAULT_SELECT),
        extend_select=lists.get("extend-select", ()),
        ignore=lists.get("ignore", ()),
        exclude=lists.get("exclude", ()),
        per_file_ignores=per_file_ignores,
        disable_plugins=lists.get("disable-plugins", ()),
    )


def _torch_target(text: str, where: str) -> TorchTarget:
    try:
        return from_setting(text, where)
    except ValueError as error:
        raise ConfigError(f"{where}: {error}") from error


def _string_list(
    table: dict[str, Any], name: str, source: Path, key: str | None = None
) -> tuple[str, ...]:
    value = table[name]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"{source}: {key or name} must be a list of strings, got {value!r}")
    return tuple(value)
