"""Plugins: a user's own modules, imported before maple reads its settings, so what they
register by name (an advantage estimator, a reward, a proposal rule, an inference backend)
can be chosen in a recipe or on the command line (``plugins: [my_module]`` in a training
recipe, ``--plugin`` on ``maple-data annotate``). docs/architecture.md, "Extending"."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Iterable
from pathlib import Path

from maple_data.errors import MapleError


class PluginError(MapleError, ImportError):
    """A plugin that cannot be imported; the message names it and says why."""


def import_plugins(modules: Iterable[str]) -> None:
    """Import each plugin once: a module name (on ``sys.path``) or a ``.py`` file. Importing
    it registers what it defines (``@ADVANTAGE_ESTIMATORS.register(...)``, ``@REWARDS.register(...)``)."""
    for name in modules:
        try:
            if name.endswith(".py"):
                _import_file(Path(name).resolve())
            else:
                importlib.import_module(name)
        except (ImportError, OSError, SyntaxError, MapleError) as exc:
            raise PluginError(f"plugin {name} cannot be imported: {exc}") from exc


def _import_file(path: Path) -> None:
    key = f"maple_plugin_{hashlib.sha1(str(path).encode()).hexdigest()[:12]}"
    if key in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(key, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"not a Python file: {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[key]
        raise
