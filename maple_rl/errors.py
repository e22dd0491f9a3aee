"""maple_rl's errors, under maple_data's one root :class:`~maple_data.errors.MapleError`
(what the command lines print as one line): a setting, a recipe or training data the user
can fix. Each mixes in the builtin it refines, so ``except ValueError`` keeps working."""

from __future__ import annotations

from maple_data.errors import FolderTaken, Interrupted, MapleError, MissingExtra

__all__ = ["ConfigError", "DataError", "FolderTaken", "Interrupted", "MapleError", "MissingExtra", "MissingFile",
           "TensorError", "UnknownName"]


class ConfigError(MapleError, ValueError):
    """A setting, an estimator option or a recipe that cannot run; the message names the key."""


class DataError(MapleError, ValueError):
    """Training or evaluation data that cannot be used (a shard, a benchmark config, a record)."""


class TensorError(MapleError, ValueError):
    """Tensors an algorithm function cannot take (shape, dtype or values); the message names the argument."""


class MissingFile(MapleError, FileNotFoundError):
    """A recipe, model file, checkpoint or data folder that is not there; the message names it."""


class UnknownName(ConfigError, KeyError):
    """A name no registry holds (an estimator, a loss aggregation, a KL estimator); the message lists the names."""

    __str__ = Exception.__str__  # the message as written, not KeyError's quoted repr
