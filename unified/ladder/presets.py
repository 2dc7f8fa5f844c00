"""Ladder presets: published findings written down as runnable, checkable experiments.

A preset is one TOML file in `presets/` (`python ladder.py --preset NAME`, `--list_presets`):
the citation and the published claim, the rows (a name, a variant and its model options), the
train.py and eval_hub.py arguments of its CPU default scale and of other scales (`--model_size`), an
optional learning-rate grid, and the expected outcome as machine-checkable criteria. After the
ladder has trained and evaluated every row, `unified.ladder.reproduction` writes `reproduction.md` and a
figure: published vs measured, each criterion met / not met / not shown with its interval, and
the chance floor of each cell.

File layout (every key is checked; unknown keys are errors naming the accepted ones):

    name = "chomsky-parity"          title, citation, url, claim, note: text
    scale = "pico"                   CPU default size;  seeds = [0];  minutes = 20 (CPU default, measured)
    lr_grid = [3e-4, 1e-3]           optional (see unified.ladder.tuning);  select_on = "val_loss" | "val_exact_match"
    figure = { kind = "ood", task = "parity" }     kind: ood | state | criteria
    [train]  alg_tasks = "parity" ...              train.py options (flag = value)
    [eval]   suite = "algorithmic", tasks = ["parity"], ood = ["parity=12,16,32,64"] ...
    [scales.nano]  train = {...}, eval = {...}     merged over [train] / [eval] for --model_size nano
    [[rows]]  name = "hrnn", variant = "hrnn", options = {...}, train = {...}, published = "~100%"
    [[criteria]]  row = "hrnn", metric = "ood_em/parity/*", op = ">=", value = 0.95, text = "...",
                  published = "...", (or vs = "baseline", k = 1.0, delta = 0.0), column = "..."

A criterion's `metric` names a metric of `unified.compare.runs.run_metrics` (or of `cell_metrics`:
`iid_em/<task>/d<k>` per training difficulty); a pattern with `*` (or a list of names and
patterns) is checked at every matching cell. With `value` it is absolute (the row's mean and 95%
t-interval over seeds against the threshold); with `vs` (another row) and/or `vs_metric` (another
cell) it is the Welch contrast mean(row) - k mean(vs) - delta against 0, as in compare.py's
verdicts.
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from unified.errors import ConfigError, UnknownNameError

PRESETS_DIR = Path(__file__).resolve().parents[2] / "presets"
OPS = (">=", ">", "<=", "<")
FIGURES = ("ood", "state", "criteria")
SELECT_ON = ("val_loss", "val_exact_match")
LADDER_OWNED = ("variant", "model_size", "seed", "output_dir", "resume")  # train.py options the ladder sets
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class Row:
    """One line of the ladder: `name` (its folder), a variant and its model options (--set)."""

    name: str
    variant: str
    options: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)  # extra train.py options of this row
    published: str = ""  # what the paper reports for this row (shown in the report)

    def train_args(self) -> list[str]:
        """train.py arguments of this row: its own options, then --set KEY=VALUE per model option."""
        sets = [a for k, v in self.options.items() for a in ("--set", f"{k}={_toml_text(v)}")]
        return flags(self.train) + sets


@dataclass
class PresetCriterion:
    """An expected outcome. Absolute (`value`): mean(row) op value; relative (`vs` and/or
    `vs_metric`): mean(row, metric) - k mean(vs, vs_metric) - delta op 0, where `vs` defaults to
    the row itself and `vs_metric` to `metric`. `metric` may be a list of names or patterns."""

    row: str
    metric: str | list[str]
    op: str
    text: str
    value: float | None = None
    vs: str | None = None
    vs_metric: str | None = None
    k: float = 1.0
    delta: float = 0.0
    published: str = ""
    column: str = ""  # column of the hypotheses table (relsm-hypotheses); "" = not in that table

    @property
    def higher(self) -> bool:
        """Whether larger measured values are on the success side."""
        return self.op.startswith(">")


@dataclass
class Preset:
    """A parsed, validated preset file."""

    name: str
    title: str
    citation: str
    claim: str
    rows: list[Row]
    criteria: list[PresetCriterion]
    scale: str = "pico"
    seeds: list[int] = field(default_factory=lambda: [0])
    url: str = ""
    note: str = ""
    minutes: float | None = None  # measured CPU-default time for one seed (2 cores)
    lr_grid: list[float] = field(default_factory=list)
    select_on: str = "val_loss"
    figure: dict[str, Any] = field(default_factory=lambda: {"kind": "criteria"})
    train: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] = field(default_factory=dict)
    scales: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    path: Path | None = None

    def row(self, name: str) -> Row:
        """The row called `name`."""
        return next(r for r in self.rows if r.name == name)

    def train_options(self, size: str) -> dict[str, Any]:
        """[train] with the [scales.<size>] train options merged over it."""
        return {**self.train, **self.scales.get(size, {}).get("train", {})}

    def eval_options(self, size: str) -> dict[str, Any]:
        """[eval] with the [scales.<size>] eval options merged over it (suite included)."""
        return {**self.eval, **self.scales.get(size, {}).get("eval", {})}

    def suite(self, size: str) -> str:
        """The eval_hub.py suite of this preset at `size`."""
        return str(self.eval_options(size).get("suite", "algorithmic"))

    def train_args(self, size: str, without: tuple[str, ...] = ()) -> list[str]:
        """train.py arguments shared by every row at `size`, leaving out the options `without`
        (the ladder drops the preset's `lr` when an --lr_grid sets the rates)."""
        return flags({k: v for k, v in self.train_options(size).items() if k not in without})

    def eval_args(self, size: str) -> list[str]:
        """eval_hub.py arguments (without --suite) at `size`."""
        return flags({k: v for k, v in self.eval_options(size).items() if k != "suite"})


def _toml_text(v: Any) -> str:
    """A TOML value as command-line text (booleans as true/false, as `--set` parses them)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def flags(options: dict[str, Any]) -> list[str]:
    """{"max_steps": 10, "compile": true, "tasks": ["a", "b"]} -> --max_steps 10 --compile --tasks a b
    (false booleans are left out)."""
    out: list[str] = []
    for key, value in options.items():
        flag = f"--{key}"
        if isinstance(value, bool):
            out += [flag] if value else []
        elif isinstance(value, list):
            out += [flag, *(_toml_text(v) for v in value)]
        else:
            out += [flag, _toml_text(value)]
    return out


def _check_keys(where: str, data: dict[str, Any], cls: type, extra: tuple[str, ...] = ()) -> None:
    accepted = sorted({f.name for f in fields(cls)} - {"path"} | set(extra))
    for key in data:
        if key not in accepted:
            raise ConfigError(f"{where}: unknown key {key!r}; accepted: {', '.join(accepted)}")


def _table(where: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a table, got {type(value).__name__}")
    return value


def parse_preset(data: dict[str, Any], path: Path | None = None) -> Preset:
    """Check a preset's TOML data and build the `Preset`; every mistake is one ConfigError line
    naming the file, the key and what is accepted."""
    from unified.models.config import SCALES
    from unified.models import resolve_variant

    where = str(path.name if path else data.get("name", "preset"))
    _check_keys(where, data, Preset)
    for key in ("name", "title", "citation", "claim", "rows", "criteria"):
        if key not in data:
            raise ConfigError(f"{where}: missing key {key!r}")
    rows = []
    for i, r in enumerate(data["rows"]):
        _check_keys(f"{where} rows[{i}]", _table(f"{where} rows[{i}]", r), Row)
        if not _NAME.match(str(r.get("name", ""))):
            raise ConfigError(f"{where} rows[{i}]: name must be letters, digits, '_', '.', '-', got {r.get('name')!r}")
        row = Row(**r)
        row.variant = resolve_variant(row.variant)
        for key in ("options", "train"):
            _table(f"{where} row {row.name} {key}", getattr(row, key))
        rows.append(row)
    names = [r.name for r in rows]
    if not rows or len(set(names)) != len(names):
        raise ConfigError(f"{where}: rows must be non-empty with distinct names, got {names}")
    criteria = []
    for i, c in enumerate(data["criteria"]):
        label = f"{where} criteria[{i}]"
        _check_keys(label, _table(label, c), PresetCriterion)
        for key in ("row", "metric", "op", "text"):
            if key not in c:
                raise ConfigError(f"{label}: missing key {key!r}")
        crit = PresetCriterion(**c)
        if crit.op not in OPS:
            raise ConfigError(f"{label}: op {crit.op!r} is not one of {', '.join(OPS)}")
        for ref in (crit.row, crit.vs):
            if ref is not None and ref not in names:
                raise UnknownNameError(f"row in {label}", ref, names)
        if (crit.value is None) == (crit.vs is None and crit.vs_metric is None):
            raise ConfigError(f"{label}: give exactly one of value (absolute threshold) or vs / vs_metric "
                              f"(another row or cell)")
        if crit.vs_metric is not None and isinstance(crit.metric, list):
            raise ConfigError(f"{label}: vs_metric needs a single metric, not a list")
        criteria.append(crit)
    kw = {k: v for k, v in data.items() if k not in ("rows", "criteria")}
    preset = Preset(**kw, rows=rows, criteria=criteria, path=path)
    if preset.scale not in SCALES:
        raise UnknownNameError(f"scale in {where}", preset.scale, SCALES)
    for size, entry in _table(f"{where} scales", preset.scales).items():
        if size not in SCALES:
            raise UnknownNameError(f"scale in {where} [scales]", size, SCALES)
        for key in _table(f"{where} scales.{size}", entry):
            if key not in ("train", "eval"):
                raise ConfigError(f"{where} scales.{size}: unknown key {key!r}; accepted: eval, train")
    if not preset.seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in preset.seeds):
        raise ConfigError(f"{where}: seeds must be a non-empty list of integers, got {preset.seeds!r}")
    if not all(isinstance(x, (int, float)) and x > 0 for x in preset.lr_grid):
        raise ConfigError(f"{where}: lr_grid must be positive numbers, got {preset.lr_grid!r}")
    if preset.select_on not in SELECT_ON:
        raise ConfigError(f"{where}: select_on {preset.select_on!r} is not one of {', '.join(SELECT_ON)}")
    if _table(f"{where} figure", preset.figure).get("kind", "criteria") not in FIGURES:
        raise ConfigError(f"{where}: figure kind {preset.figure.get('kind')!r} is not one of {', '.join(FIGURES)}")
    for key in ("train", "eval"):
        _table(f"{where} {key}", getattr(preset, key))
    trains = [("[train]", preset.train), *((f"scales.{k}", v.get("train", {})) for k, v in preset.scales.items()),
              *((f"row {r.name}", r.train) for r in rows)]
    for label, options in trains:
        owned = sorted(set(options) & set(LADDER_OWNED))
        if owned:
            raise ConfigError(f"{where} {label}: {owned[0]!r} is set by the ladder for every run; remove it")
    if "alg_tasks" in preset.train:  # tasks must exist before anything trains
        from unified.data.tasks import resolve_tasks

        resolve_tasks(str(preset.train["alg_tasks"]))
    return preset


def preset_names(directory: Path = PRESETS_DIR) -> list[str]:
    """Names of the preset files in `directory`, sorted."""
    return sorted(p.stem for p in directory.glob("*.toml"))


def load_preset(name: str, directory: Path = PRESETS_DIR) -> Preset:
    """The preset called `name` (a file `presets/<name>.toml`, or a path to a .toml file)."""
    path = Path(name) if name.endswith(".toml") else directory / f"{name}.toml"
    if not path.is_file():
        raise UnknownNameError("preset", name, preset_names(directory))
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"preset file {path} is not valid TOML: {exc}") from None
    preset = parse_preset(data, path)
    if preset.name != path.stem:
        raise ConfigError(f"preset file {path.name} declares name {preset.name!r}; the name must equal the file name")
    return preset


def list_presets_text(directory: Path = PRESETS_DIR) -> str:
    """One paragraph per preset for `ladder.py --list_presets`: name, title, citation, rows, the
    CPU default and its time."""
    out = []
    for name in preset_names(directory):
        p = load_preset(name, directory)
        time = f", ~{p.minutes:g} min on 2 CPU cores per seed" if p.minutes else ""
        out.append(f"{p.name}: {p.title}\n    {p.citation}\n    rows: {', '.join(r.name for r in p.rows)}; "
                   f"default --model_size {p.scale}, seeds {','.join(map(str, p.seeds))}{time}"
                   + (f"; lr grid {','.join(f'{x:g}' for x in p.lr_grid)}" if p.lr_grid else ""))
    return "\n".join(out)
