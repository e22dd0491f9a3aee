"""Settings declared once: a dataclass field carries its default and its help.

``setting(16, help="Frames per video.")`` is ``dataclasses.field`` with the help in its
metadata (as TRL's configs do); :func:`field_help` reads it back for ``recipe show`` and
documentation, and :func:`cli_option` makes the Typer option of a field, so a command
line's default and ``--help`` text come from the dataclass and cannot drift from it.
Imports neither torch nor typer at module level (recipe validation stays light).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

HELP = "help"


def setting(default: Any = dataclasses.MISSING, *, help: str, default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with its help text (``default`` or ``default_factory``, as ``field``)."""
    return dataclasses.field(default=default, default_factory=default_factory, metadata={HELP: help})


def _field(cls: type, name: str) -> dataclasses.Field:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if name not in fields:
        raise KeyError(f"{cls.__name__} has no setting {name!r}")
    return fields[name]


def field_help(cls: type) -> dict[str, str]:
    """``field name -> help`` of a settings dataclass (fields without help are left out)."""
    return {f.name: f.metadata[HELP] for f in dataclasses.fields(cls) if HELP in f.metadata}


def field_default(cls: type, name: str) -> Any:
    """The default of field ``name`` of dataclass ``cls`` (``default_factory()`` for factories)."""
    found = _field(cls, name)
    if found.default is not dataclasses.MISSING:
        return found.default
    if found.default_factory is not dataclasses.MISSING:
        return found.default_factory()
    raise KeyError(f"{cls.__name__}.{name} has no default")


def cli_option(cls: type, name: str, *param_decls: str, help: str | None = None,
               spell: Callable[[Any], Any] | None = None, **typer_kwargs: Any) -> Any:
    """The Typer option of setting ``cls.name``: its default and help come from the field
    (``help`` replaces the field's text where the command line spells the value differently,
    e.g. a comma-separated list). Use as a parameter's default: ``frames: int = cli_option(...)``.
    ``spell`` turns the field's default into the command line's spelling (default: a list or
    tuple joined with commas); a field without a default is a required option."""
    import typer

    default = _cli_default(cls, name, spell)
    text = help if help is not None else _field(cls, name).metadata.get(HELP)
    if text is None:
        raise KeyError(f"{cls.__name__}.{name} has no help text: declare it with setting(..., help=...)")
    return typer.Option(default, *param_decls, help=text, **typer_kwargs)


def _cli_default(cls: type, name: str, spell: Callable[[Any], Any] | None = None) -> Any:
    """Field ``cls.name``'s default as the command line spells it (``spell``, else a list
    or tuple joined with commas); ``...`` (required) for a field without a default."""
    found = _field(cls, name)
    if found.default is dataclasses.MISSING and found.default_factory is dataclasses.MISSING:
        return ...
    default = field_default(cls, name)
    if spell is not None:
        return spell(default)
    return ",".join(str(v) for v in default) if isinstance(default, (list, tuple)) else default
