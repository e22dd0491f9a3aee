"""Name -> function registries, so configs select algorithms by name (as in verl).

A registry knows its names, and each function's user-settable keyword options with their
types, before the functions themselves are imported: the built-ins are *declared* in
:mod:`maple_rl.algorithms.catalog` (which imports no torch), so a recipe is validated
without loading torch, and :meth:`Registry.get` imports the ``provider`` module that
registers them on first use. A registered function must take exactly the options declared
for it (checked when it registers, so the two cannot drift); a new function that nothing
declared is declared by registering it, its options read from its signature.
"""

from __future__ import annotations

import importlib
import inspect
import typing
from collections.abc import Callable, Mapping
from typing import Any, Generic, Literal, TypeVar

from maple_rl.errors import ConfigError, UnknownName

F = TypeVar("F", bound=Callable)


class Registry(Generic[F]):
    """A named table of functions of one kind (advantage estimators, loss aggregations...).

    ``declared``: name -> {option: type} of the built-ins (a ``Literal`` or ``float``/``int``/
    ``bool``/``str``); ``provider``: the module whose import registers them; ``supplied``:
    keyword options the trainer fills in itself (never set in a recipe)."""

    def __init__(self, kind: str, *, provider: str | None = None,
                 declared: Mapping[str, Mapping[str, Any]] | None = None, supplied: tuple[str, ...] = ()) -> None:
        self.kind, self.provider, self.supplied = kind, provider, supplied
        self._declared = {name: dict(options) for name, options in (declared or {}).items()}
        self._table: dict[str, F] = {}

    def register(self, name: str) -> Callable[[F], F]:
        def add(fn: F) -> F:
            if name in self._table:
                raise ConfigError(f"{self.kind} {name!r} is already registered")
            options = self._options_of(fn)
            if name in self._declared and self._declared[name] != options:
                raise ConfigError(f"{self.kind} {name!r}: the function takes the options {options}, "
                                  f"its declaration says {self._declared[name]}")
            self._declared[name] = options
            self._table[name] = fn
            return fn

        return add

    def _options_of(self, fn: Callable) -> dict[str, Any]:
        """``fn``'s keyword-only options a user sets, with their annotated types."""
        params = [p for p in inspect.signature(fn).parameters.values()
                  if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in self.supplied]
        hints = typing.get_type_hints(fn) if params else {}
        return {p.name: hints.get(p.name, Any) for p in params}

    def get(self, name: str) -> F:
        if name not in self._table and name in self._declared and self.provider:
            importlib.import_module(self.provider)  # registers the declared built-ins
        try:
            return self._table[name]
        except KeyError:
            raise UnknownName(f"unknown {self.kind} {name!r}; choose one of {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        """Declared and registered names (torch-free for the built-ins)."""
        return list(self._declared)

    def options(self, name: str) -> dict[str, Any]:
        """``{option: type}`` a recipe may set for ``name``."""
        if name not in self._declared:
            raise UnknownName(f"unknown {self.kind} {name!r}; choose one of {', '.join(self.names())}")
        return dict(self._declared[name])

    def check_options(self, name: str, options: Mapping[str, Any], key: str) -> None:
        """``ConfigError("KEY.OPTION: ...")`` unless every option is one ``name`` takes, with
        a value its type allows (a ``Literal`` member; a number for ``float``)."""
        settable = self.options(name)
        for option, value in options.items():
            if option not in settable:
                raise ConfigError(f"{key}.{option}: not an option of {self.kind} {name!r} "
                                  f"(its options: {', '.join(settable) or 'none'})")
            kind = settable[option]
            if typing.get_origin(kind) is Literal and value not in typing.get_args(kind):
                raise ConfigError(f"{key}.{option}: not one of {list(typing.get_args(kind))}, got {value!r}")
            if kind is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ConfigError(f"{key}.{option}: expected a number, got {value!r}")

    def __contains__(self, name: object) -> bool:
        return name in self._declared
