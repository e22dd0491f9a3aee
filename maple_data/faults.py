"""A located fault in an input or output file: which file, which row, which field, why."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Fault:
    """One problem found in a file. ``row`` is 1-based (a line, or a record index + 1)."""

    file: str
    row: int | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = self.file + (f":{self.row}" if self.row is not None else "")
        return f"{where} [{self.field or '-'}] {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
