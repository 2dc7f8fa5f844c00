"""train.py's command line, derived from `TrainConfig`'s declarations (`unified.train.config`),
so train.py and ladder.py (which checks a ladder's training options before anything trains)
parse them with the same parser and build the config the same way (`config_from_args`).

Every leaf of every section is one flag named by its flat name (`--lr`, `--seq_len`,
`--curriculum_patience`), with the help, default and accepted names of its declaration
(the names and ranges are checked by `unified.train.resolve.resolve`, for flags and files
alike). Model options are `--set KEY=VALUE` (repeatable); `--task_curriculum_strategy` is a
hidden alias of `--curriculum_strategy`. No dotted flags (`--optim.lr`): one flag per option;
the sections appear as groups in --help and as nested tables in a `--config` file.

`--config FILE` (JSON; YAML with pyyaml) holds options as flat names or nested by section
({"optim": {"lr": 1e-3}}); a run's own config.json is such a file (its run-record keys are
skipped; `--lang_dataset auto` takes the source that run used), so
`train.py --config RUN/config.json --output_dir NEW` reruns RUN. Flags given on the command line
override the file; an unknown key is a one-line error naming it and the accepted ones.

Parsed flags hold only what was given (defaults are `argparse.SUPPRESS`), which is also the set
of options `--resume` treats as given (`given_options`).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import typing
from pathlib import Path
from typing import Any

from unified.errors import ConfigError, UnknownNameError
from unified.models.optioncheck import parse_overrides
from unified.train.config import LEAVES, LEGACY_FLAT, SECTIONS, Leaf, TrainConfig

ALIASES = {"curriculum_strategy": ("--task_curriculum_strategy",)}  # hidden, older names
# keys of a run's config.json that record the run rather than set an option (skipped by --config)
RUN_RECORD_KEYS = ("total_steps", "tokens_per_step", "world_size", "language_source", "language", "tokenizer_name",
                   "procedural_bytes", "arguments", "history")


def add_train_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add train.py's options to `p` (one per `TrainConfig` leaf, grouped by section; `--set`
    collects model options, `--config` names an options file) and return it."""
    groups = {name: p.add_argument_group(f"{name} options", (cls.__doc__ or "").split("\n")[0])
              for name, cls in SECTIONS.items()}
    groups["curriculum"].description = "per-task curriculum (--use_task_curriculum): unified.data.task_curriculum"
    for leaf in LEAVES.values():
        if leaf.name == "model_overrides":
            groups[leaf.section].add_argument("--set", dest="model_overrides", action="append", metavar="KEY=VALUE",
                                              default=argparse.SUPPRESS, help=leaf.meta["help"])
            continue
        _add_leaf(groups[leaf.section], leaf)
    p.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                   help="options file (JSON, or YAML with pyyaml): flat names or nested by section; a run's "
                        "config.json reruns it; flags given here override the file")
    return p


def _add_leaf(group: Any, leaf: Leaf) -> None:
    meta, hint = leaf.meta, leaf.type
    text = meta.get("help", "")
    if leaf.default is not None and leaf.default is not False and leaf.default != "":
        text += f" (default: {leaf.default})"
    kw: dict[str, Any] = {"dest": leaf.name, "default": argparse.SUPPRESS,
                          "help": argparse.SUPPRESS if meta.get("hidden") else text}
    base = _base_type(hint)
    if base is bool:
        kw["action"] = "store_true"
    else:
        kw["type"] = base
        kw["metavar"] = "{" + ",".join(map(str, meta["choices"])) + "}" if meta.get("choices") else leaf.name.upper()
    group.add_argument(f"--{leaf.name}", **kw)
    for alias in ALIASES.get(leaf.name, ()):
        group.add_argument(alias, **{**kw, "help": argparse.SUPPRESS})


def _base_type(hint: Any) -> Any:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if typing.get_origin(hint) is not None and len(args) == 1 else hint


def given_options(namespace: argparse.Namespace) -> set[str]:
    """The flat names set on the command line or in its --config file (on --resume the others
    take the stored run's values)."""
    return set(_flat_given(namespace))


def config_from_args(namespace: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of a parsed command line: defaults, then the --config file, then the flags."""
    return TrainConfig.from_flat(_flat_given(namespace))


def _flat_given(namespace: argparse.Namespace) -> dict[str, Any]:
    given = dict(vars(namespace))
    path = given.pop("config", None)
    if "model_overrides" in given:
        given["model_overrides"] = parse_overrides(given["model_overrides"])
    return {**(read_config_file(path) if path else {}), **given}


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The options in a --config file as flat names (see the module docstring)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--config {str(path)!r} cannot be read ({type(exc).__name__})") from None
    data = _parse(path, text)
    if not isinstance(data, dict):
        raise ConfigError(f"--config {str(path)!r} does not hold a mapping of options")
    record = "history" in data or "arguments" in data  # a run's config.json: its "model" is the description
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key in RUN_RECORD_KEYS or (record and key == "model"):
            continue
        if key in SECTIONS and isinstance(value, dict):
            for sub, v in value.items():
                name = f"curriculum_{sub}" if key == "curriculum" else sub
                if name not in LEAVES or LEAVES[name].section != key:
                    accepted = [lf.field for lf in LEAVES.values() if lf.section == key]
                    raise UnknownNameError(f"option in section {key!r} of --config {str(path)!r}", sub, accepted)
                flat[name] = v
        elif key in LEAVES or key in LEGACY_FLAT:
            flat[key] = value
        else:
            raise UnknownNameError(f"option in --config {str(path)!r}", key, [*LEAVES, *SECTIONS])
    if record and flat.get("lang_dataset") == "auto" and not flat.get("lang_data") and data.get("language_source"):
        flat["lang_dataset"] = data["language_source"]  # what auto chose for that run
    return flat


def _parse(path: Path, text: str) -> Any:
    if path.suffix.lower() in (".yaml", ".yml"):
        if importlib.util.find_spec("yaml") is None:
            raise ConfigError(f"--config {str(path)!r}: YAML needs the pyyaml package (pip install pyyaml); "
                              f"or give a .json file")
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--config {str(path)!r} is not valid YAML ({str(exc).splitlines()[0]})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--config {str(path)!r} is not valid JSON ({exc.msg} at line {exc.lineno}); "
                          f"accepted: .json, or .yaml / .yml") from None
