"""The versioned record schema: loading it, turning it into Arrow / ``datasets`` types,
and checking records against it.

Schemas live in ``schemas/<kind>-v<N>.yaml`` (shipped inside the wheel as
``maple_data/_schemas``): ``record`` (one task item with its media: what annotation,
review, benchmarks and training exchange) and ``media`` (one video's extracted signals,
the output of ``maple-data extract``). Records are plain dicts in *storage form*: images and audio
are ``{"bytes": ..., "path": None}`` structs, as ``datasets`` stores them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml

from maple_data import rmt

SCHEMA_NAME = "maple-record"
CURRENT_VERSION = 1
SUPPORTED_VERSIONS = {"record": (1,), "media": (1,)}  # per schema kind
AUDIO_SAMPLE_RATE = 16_000  # Hz, mono: every record's audio
METADATA_VERSION_KEY = b"maple.schema_version"
METADATA_NAME_KEY = b"maple.schema"

_SCALARS = {"string", "int32", "int64", "float32", "float64", "bool"}
_MEDIA_MAGIC = {
    "image": (b"\xff\xd8\xff", b"\x89PNG"),
    "audio": (b"fLaC", b"RIFF"),
}


def schema_dir() -> Path:
    """Folder holding the schema files: inside the wheel, or the repo's ``schemas/``."""
    packaged = Path(__file__).parent / "_schemas"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parent.parent / "schemas"


@dataclass(frozen=True)
class FieldSpec:
    """One field of the schema (recursively, for lists and structs)."""

    name: str
    type: str
    required: bool = False
    doc: str = ""
    enum: tuple[str, ...] | None = None
    tag: bool = False
    item: FieldSpec | None = None
    fields: tuple[FieldSpec, ...] = ()

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], name: str | None = None) -> FieldSpec:
        kind = raw["type"]
        if kind not in _SCALARS | {"image", "audio", "list", "struct"}:
            raise ValueError(f"schema field {raw.get('name', name)!r}: unknown type {kind!r}")
        return cls(
            name=raw.get("name", name or "item"),
            type=kind,
            required=bool(raw.get("required", False)),
            doc=str(raw.get("doc", "")),
            enum=tuple(raw["enum"]) if "enum" in raw else None,
            tag=bool(raw.get("tag", False)),
            item=cls.from_dict(raw["item"], "item") if kind == "list" else None,
            fields=tuple(cls.from_dict(f) for f in raw.get("fields", ())) if kind == "struct" else (),
        )

    def feature(self) -> Any:
        """The ``datasets`` feature type for this field."""
        from datasets import Audio, Image, List, Value

        if self.type in _SCALARS:
            return Value(self.type)
        if self.type == "image":
            return Image()
        if self.type == "audio":
            # decode=False: datasets>=4 decodes audio through torchcodec (needs system
            # FFmpeg); bytes stay bytes until the user casts to Audio() themselves.
            return Audio(sampling_rate=AUDIO_SAMPLE_RATE, decode=False)
        if self.type == "list":
            assert self.item is not None
            return List(self.item.feature())
        return {f.name: f.feature() for f in self.fields}

    def type_text(self) -> str:
        """Short human-readable type, e.g. ``list<struct>``."""
        if self.type == "list":
            assert self.item is not None
            return f"list<{self.item.type_text()}>"
        if self.enum:
            return f"{self.type} ({', '.join(self.enum)})"
        if self.tag:
            return "string (RMT)"
        return self.type


@dataclass(frozen=True)
class Problem:
    """One way a record breaks the schema: the dotted field path and what was expected."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


@dataclass(frozen=True)
class RecordSchema:
    """A loaded schema version."""

    name: str
    version: int
    fields: tuple[FieldSpec, ...]
    _by_name: dict[str, FieldSpec] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_name.update({f.name: f for f in self.fields})

    @property
    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]

    def __getitem__(self, name: str) -> FieldSpec:
        return self._by_name[name]

    @property
    def features(self) -> Any:
        """``datasets.Features`` of a record."""
        from datasets import Features

        return Features({f.name: f.feature() for f in self.fields})

    @property
    def arrow_schema(self) -> pa.Schema:
        """Arrow schema with ``datasets`` feature metadata and the maple schema version."""
        base = self.features.arrow_schema
        metadata = dict(base.metadata or {})
        metadata[METADATA_NAME_KEY] = self.name.encode()
        metadata[METADATA_VERSION_KEY] = str(self.version).encode()
        return base.with_metadata(metadata)

    def empty_record(self, **values: Any) -> dict[str, Any]:
        """A record with every field null, then ``values`` filled in."""
        unknown = set(values) - set(self._by_name)
        if unknown:
            raise KeyError(f"not fields of {self.name} v{self.version}: {sorted(unknown)}")
        record: dict[str, Any] = dict.fromkeys(self.field_names)
        record.update(values)
        return record

    def validate(self, record: Mapping[str, Any]) -> list[Problem]:
        """All problems of one record: field types, enums, tags, then cross-field rules."""
        problems: list[Problem] = []
        unknown = sorted(set(record) - set(self._by_name))
        problems += [Problem(name, "not a field of the schema") for name in unknown]
        for spec in self.fields:
            _check_value(spec, record.get(spec.name), spec.name, problems)
        if not problems:
            problems += _cross_field_problems(record)
        return problems

    def check_arrow_schema(self, schema: pa.Schema) -> list[Problem]:
        """Differences between a shard's Arrow schema and this one (fields and metadata)."""
        problems: list[Problem] = []
        expected = self.arrow_schema
        for f in expected:
            idx = schema.get_field_index(f.name)
            if idx < 0:
                problems.append(Problem(f.name, "column missing from the shard"))
            elif not schema.field(idx).type.equals(f.type):
                problems.append(
                    Problem(f.name, f"column type is {schema.field(idx).type}, expected {f.type}")
                )
        for name in schema.names:
            if expected.get_field_index(name) < 0:
                problems.append(Problem(name, "column is not a field of the schema"))
        return problems


def _type_error(spec: FieldSpec, value: Any) -> str:
    return f"expected {spec.type_text()}, got {type(value).__name__} {_short(value)}"


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_value(spec: FieldSpec, value: Any, path: str, problems: list[Problem]) -> None:
    if value is None:
        if spec.required:
            problems.append(Problem(path, f"required, got null (expected {spec.type_text()})"))
        return
    kind = spec.type
    if kind == "string":
        if not isinstance(value, str):
            problems.append(Problem(path, _type_error(spec, value)))
        elif spec.enum is not None and value not in spec.enum:
            problems.append(Problem(path, f"expected one of {', '.join(spec.enum)}, got {value!r}"))
        elif spec.tag and not rmt.is_rmt(value):
            problems.append(Problem(path, f"expected one of {', '.join(rmt.TAGS)}, got {value!r}"))
    elif kind in ("int32", "int64"):
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(Problem(path, _type_error(spec, value)))
        elif kind == "int32" and not -(2**31) <= value < 2**31:
            problems.append(Problem(path, f"{value} does not fit in int32"))
    elif kind in ("float32", "float64"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(Problem(path, _type_error(spec, value)))
        elif not math.isfinite(value):
            problems.append(Problem(path, f"expected a finite number, got {value}"))
    elif kind == "bool":
        if not isinstance(value, bool):
            problems.append(Problem(path, _type_error(spec, value)))
    elif kind in ("image", "audio"):
        _check_media(spec, value, path, problems)
    elif kind == "list":
        if not isinstance(value, (list, tuple)):
            problems.append(Problem(path, _type_error(spec, value)))
            return
        assert spec.item is not None
        for i, item in enumerate(value):
            _check_value(spec.item, item, f"{path}[{i}]", problems)
    else:  # struct
        if not isinstance(value, Mapping):
            problems.append(Problem(path, _type_error(spec, value)))
            return
        known = {f.name for f in spec.fields}
        for extra in sorted(set(value) - known):
            problems.append(Problem(f"{path}.{extra}", "not a field of the schema"))
        for sub in spec.fields:
            _check_value(sub, value.get(sub.name), f"{path}.{sub.name}", problems)


def _check_media(spec: FieldSpec, value: Any, path: str, problems: list[Problem]) -> None:
    what = "JPEG/PNG" if spec.type == "image" else "FLAC/WAV"
    if not isinstance(value, Mapping) or "bytes" not in value:
        problems.append(Problem(path, f"expected a {{bytes, path}} struct of {what} data, got {_short(value)}"))
        return
    data = value["bytes"]
    if not isinstance(data, (bytes, bytearray, memoryview)) or not bytes(data[:4]).startswith(
        _MEDIA_MAGIC[spec.type]
    ):
        problems.append(Problem(f"{path}.bytes", f"expected {what} bytes, got {_short(bytes(data[:8]) if isinstance(data, (bytes, bytearray)) else data)}"))


def _cross_field_problems(record: Mapping[str, Any]) -> list[Problem]:
    """Rules that span several fields (run only when every field has the right type)."""
    problems: list[Problem] = []
    task, options, answer = record.get("task"), record.get("options"), record.get("answer")
    if task == "qa":
        if not options or len(options) < 2:
            problems.append(Problem("options", "a qa item needs at least 2 options"))
        elif len(set(options)) != len(options):
            problems.append(Problem("options", f"options repeat: {list(options)}"))
        elif answer is not None and answer not in options:
            problems.append(Problem("answer", f"{answer!r} is not one of the options {list(options)}"))
    elif task == "caption" and options is not None:
        problems.append(Problem("options", "a caption item has no options (expected null)"))
    if "question" in record and not (record.get("question") or "").strip():
        problems.append(Problem("question", "empty question"))
    frames, stamps = record.get("frames"), record.get("frame_timestamps")
    if frames is not None and (stamps is None or len(stamps) != len(frames)):
        problems.append(
            Problem("frame_timestamps", f"expected {len(frames)} timestamps (one per frame), got "
                    f"{'null' if stamps is None else len(stamps)}")
        )
    if stamps and any(b < a for a, b in zip(stamps, stamps[1:])):
        problems.append(Problem("frame_timestamps", "timestamps are not in time order"))
    for i, cue in enumerate(record.get("subtitles") or ()):
        if cue["end"] < cue["start"] or cue["start"] < 0:
            problems.append(Problem(f"subtitles[{i}]", f"bad cue times {cue['start']}..{cue['end']}"))
    required, given, cond = record.get("rmt"), record.get("input_modalities"), record.get("condition")
    if cond is not None:
        if required is None or given is None:
            problems.append(Problem("condition", "set, but rmt or input_modalities is null"))
        elif cond != rmt.condition(required, given).value:
            problems.append(
                Problem("condition", f"is {cond!r}, but rmt {required} given {given} is "
                        f"{rmt.condition(required, given).value!r}")
            )
    ablation = record.get("ablation")
    if ablation is not None:
        subsets = [r["subset"] for r in ablation["results"]]
        if len(set(subsets)) != len(subsets):
            problems.append(Problem("ablation.results", f"subsets repeat: {subsets}"))
        for i, result in enumerate(ablation["results"]):
            acc = result["accuracy"]
            if acc is not None and not 0.0 <= acc <= 1.0:
                problems.append(Problem(f"ablation.results[{i}].accuracy", f"expected 0..1, got {acc}"))
    return problems


@cache
def load_schema(version: int = CURRENT_VERSION, kind: str = "record") -> RecordSchema:
    """Load ``schemas/<kind>-v<version>.yaml`` (kind ``record`` or ``media``).

    Raises:
        ValueError: for a kind or version this maple does not know.
    """
    if kind not in SUPPORTED_VERSIONS:
        raise ValueError(f"unknown schema kind {kind!r}; known: {', '.join(SUPPORTED_VERSIONS)}")
    if version not in SUPPORTED_VERSIONS[kind]:
        raise ValueError(
            f"{kind} schema version {version} is not supported by this maple "
            f"(supported: {', '.join(map(str, SUPPORTED_VERSIONS[kind]))}); upgrade maple"
        )
    raw = yaml.safe_load((schema_dir() / f"{kind}-v{version}.yaml").read_text(encoding="utf-8"))
    return RecordSchema(
        name=raw["name"],
        version=int(raw["version"]),
        fields=tuple(FieldSpec.from_dict(f) for f in raw["fields"]),
    )


def schema_version_of(schema: pa.Schema) -> int | None:
    """The maple schema version stored in an Arrow schema's metadata, if any."""
    raw = (schema.metadata or {}).get(METADATA_VERSION_KEY)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        return None


def field_table(schema: RecordSchema | None = None) -> list[tuple[str, str, str, str]]:
    """Rows ``(field, type, required, doc)`` flattening structs, for docs and ``--help``."""
    schema = schema or load_schema()
    rows: list[tuple[str, str, str, str]] = []

    def walk(spec: FieldSpec, prefix: str) -> None:
        rows.append((prefix + spec.name, spec.type_text(), "yes" if spec.required else "", spec.doc))
        inner = spec.item if spec.type == "list" and spec.item and spec.item.type == "struct" else spec
        for sub in inner.fields:
            walk(sub, prefix + spec.name + ("[]." if inner is not spec else "."))

    for spec in schema.fields:
        walk(spec, "")
    return rows


def schema_markdown() -> str:
    """``docs/schema.md``: the field tables of the current schemas."""
    lines = ["# maple schemas", "",
             "Generated by `maple-data schema --markdown` from `schemas/*.yaml`; a test keeps it in sync.", ""]
    for kind, what in (("record", "one task item (QA or caption) about one video, with its media: what "
                                  "annotation, review, benchmarks and training exchange"),
                       ("media", "one video's extracted signals, written by `maple-data extract`")):
        spec = load_schema(kind=kind)
        lines += [f"## {spec.name} v{spec.version} (`schemas/{kind}-v{spec.version}.yaml`)", "",
                  f"One row = {what}.", "", "| field | type | required | meaning |", "|---|---|---|---|"]
        lines += [f"| `{f}` | {t} | {r} | {d} |" for f, t, r, d in field_table(spec)]
        lines.append("")
    return "\n".join(lines)
