"""Settings declared once: every `maple-data` option that sets a dataclass field has the
field's default (in the command line's spelling) and, unless the command words it its own
way, the field's help; every field of those dataclasses is on the command line or listed
here as not on it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
import typer

from maple_data.annotate.ablation import AblationSettings
from maple_data.annotate.proposal import ProposalConfig
from maple_data.bench.build import BenchSettings
from maple_data.cli import app
from maple_data.inputs.synth_settings import SynthConfig
from maple_data.media.extract_settings import ExtractSettings, FrameSpec
from maple_data.ray_runtime import Engine
from maple_data.settings import cli_option, field_default, field_help, setting


def csv(values: Any) -> str:
    return ",".join(str(v) for v in values)


def balance(balance_train: bool) -> str:
    return "train,test" if balance_train else "test"


STORED = "stored"  # the option defaults to None: the setting stored in the work folder (or found there) applies
Target = tuple[type, str] | tuple[type, str, Callable[[Any], Any] | str]

ENGINE = {"--workers": (Engine, "workers"), "--engine": (Engine, "name"), "--ray-address": (Engine, "ray_address")}
FIELD_OF: dict[str, dict[str, Target]] = {  # command -> option -> (class, field[, CLI spelling of the default])
    "extract": {
        "--frames": (FrameSpec, "count"), "--fps": (FrameSpec, "fps"), "--min-frames": (FrameSpec, "min_frames"),
        "--max-frames": (FrameSpec, "max_frames"), "--max-pixels": (FrameSpec, "max_pixels"),
        "--jpeg-quality": (FrameSpec, "jpeg_quality"), "--subs": (ExtractSettings, "subtitle_sources", csv),
        "--lang": (ExtractSettings, "languages", csv), "--asr": (ExtractSettings, "asr"),
        "--asr-model": (ExtractSettings, "asr_model"), "--asr-language": (ExtractSettings, "asr_language"), **ENGINE,
    },
    "annotate": {
        "--model": (AblationSettings, "model"), "--scoring": (AblationSettings, "scoring"),
        "--samples": (AblationSettings, "samples"), "--temperature": (AblationSettings, "temperature"),
        "--max-new-tokens": (AblationSettings, "max_new_tokens"), "--search": (AblationSettings, "search"),
        "--chunk": (AblationSettings, "chunk"), "--rule": (ProposalConfig, "rule"),
        "--prior": (ProposalConfig, "prior"), "--target": (ProposalConfig, "target"),
        "--tau": (ProposalConfig, "tau"), "--delta": (ProposalConfig, "delta"),
        "--min-samples": (ProposalConfig, "min_samples"), "--frames": (FrameSpec, "count", STORED), **ENGINE,
        "--actors": (Engine, "actors"), "--actor-gpus": (Engine, "actor_gpus"),
    },
    "propose": {option: (ProposalConfig, name, STORED) for option, name in
                [("--rule", "rule"), ("--prior", "prior"), ("--tau", "tau"), ("--delta", "delta"),
                 ("--min-samples", "min_samples")]},
    "synth": {f"--{f.name.replace('_', '-')}": (SynthConfig, f.name) for f in dataclasses.fields(SynthConfig)},
    "build-bench": {
        "--ratios": (BenchSettings, "ratios", csv), "--seed": (BenchSettings, "seed"),
        "--include-proposed": (BenchSettings, "include_proposed"),
        "--balance": (BenchSettings, "balance_train", balance),
        "--none-share": (BenchSettings, "none_share"), "--name": (BenchSettings, "name"),
        "--license": (BenchSettings, "license"), "--citation": (BenchSettings, "citation"),
    },
}
OWN_HELP = {  # options whose help words the value as that command takes it
    ("extract", "--subs"), ("extract", "--lang"), ("annotate", "--workers"), ("annotate", "--engine"),
    ("annotate", "--frames"), ("build-bench", "--balance"), ("build-bench", "--ratios"),
}
NOT_ON_THE_CLI = {
    AblationSettings: {"caption_metric", "proposal"},
    ProposalConfig: {"high", "high_concentration", "chance_concentration", "caption_chance", "contamination", "close"},
    ExtractSettings: {"frames"},
}
SAME_NAME_OTHER_SETTING = {("annotate", "--seed")}  # the backend's sampling seed, not a corpus or split seed


def options() -> dict[str, dict[str, Any]]:
    """``command -> long option name -> its click option``, from the app as it runs."""
    group = typer.main.get_command(app)
    return {name: {opt: p for p in command.params if p.param_type_name == "option" for opt in p.opts
                   if opt.startswith("--")} for name, command in group.commands.items()}


@pytest.mark.parametrize("command, option", [(c, o) for c, table in FIELD_OF.items() for o in table])
def test_the_option_has_the_default_and_help_of_the_field_it_sets(command, option):
    param = options()[command][option]
    cls, name, *spelling = FIELD_OF[command][option]
    field = {f.name: f for f in dataclasses.fields(cls)}[name]
    if spelling == [STORED]:
        assert param.default is None and not param.required
    elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
        assert param.required
    else:
        default = field_default(cls, name)
        assert param.default == (spelling[0](default) if spelling else default), f"{command} {option}"
    if (command, option) not in OWN_HELP:
        assert param.help.startswith(field_help(cls)[name]), f"{command} {option}: help not the field's"


def test_every_field_of_those_settings_is_on_the_command_line_or_listed_off_it():
    classes = {target[0] for table in FIELD_OF.values() for target in table.values()}
    set_here = {(target[0], target[1]) for table in FIELD_OF.values() for target in table.values()}
    for cls in classes:
        names = {f.name for f in dataclasses.fields(cls)}
        assert names - NOT_ON_THE_CLI.get(cls, set()) == {n for c, n in set_here if c is cls}, cls.__name__
        assert set(field_help(cls)) == names, f"{cls.__name__}: a field without help"


def test_no_unlisted_option_is_named_after_a_setting():
    classes = {target[0] for table in FIELD_OF.values() for target in table.values()}
    names = {f"--{f.name.replace('_', '-')}" for cls in classes for f in dataclasses.fields(cls)}
    for command, table in options().items():
        for option in sorted(set(table) & names - set(FIELD_OF.get(command, {}))):
            assert (command, option) in SAME_NAME_OTHER_SETTING, f"{command} {option} sets a field: list it above"


def test_cli_option_spells_sequences_and_requires_fields_without_default():
    @dataclasses.dataclass
    class Demo:
        name: str = setting(help="Required.")
        tags: tuple[str, ...] = setting(("a", "b"), help="Tags.")
        flag: bool = setting(False, help="A flag.")

    assert cli_option(Demo, "name").default is ...
    assert cli_option(Demo, "tags").default == "a,b"
    assert cli_option(Demo, "flag", spell=lambda on: "yes" if on else "no").default == "no"
    assert cli_option(Demo, "tags", help="Other words.").help == "Other words."
    with pytest.raises(KeyError, match="no setting"):
        cli_option(Demo, "missing")
