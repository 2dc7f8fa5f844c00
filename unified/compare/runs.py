"""Reading run folders for compare.py: every file as read, damaged or mistyped parts as notes.

A run folder holds the docs/design.md#contract-5 files (config.json, summary.json, metrics.jsonl) and the
`results_<suite>.json` files of contract 4. Results computed with evaluation-time options
(`results_<suite>@<tag>.json`, see `unified.evals.results.options_tag`) are read as separate
`Run`s of the same folder, labelled `<variant>@<tag>`, so they are grouped apart from the
as-trained results. Nothing here raises on file contents: a file that is missing, unreadable,
not JSON, or holds values of the wrong type becomes a note, and the values that can be used are.
`run_metrics` is the one place that knows the summary and results keys.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import unified
from unified.errors import DataError
from unified.evals.hub import SUITES
from unified.evals.lm_eval.results import lm_eval_metrics
from unified.evals.results import GRID_VERSION, parse_results_name
from unified.train.runlog import read_metrics

SUITE_NAMES = tuple(SUITES)  # the registry of unified.evals.hub
SET_ASIDE = ".incomplete"  # ladder.py renames runs that stopped before a checkpoint to seed<k>.incomplete[N]


def _read_json(path: Path, notes: list[str]) -> dict[str, Any] | None:
    """The JSON object in `path`; None (and a note) when it is missing, unreadable or not an object."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        notes.append(f"{path.name} is unreadable ({type(exc).__name__}); ignored")
        return None
    if not isinstance(data, dict):
        notes.append(f"{path.name} does not hold a JSON object; ignored")
        return None
    return data


def obj(x: Any) -> dict[str, Any]:
    """`x` when it is a dict, else {} (a mistyped field reads as absent)."""
    return x if isinstance(x, dict) else {}


def _num(x: Any) -> float | None:
    """x as a finite float, else None (results files write non-finite numbers as null)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


def _text(x: Any) -> str | None:
    return x if isinstance(x, str) and x else None


def current_version() -> str:
    """The evaluation version results are compared at: grid version and harness version."""
    return f"grid {GRID_VERSION}, harness {unified.__version__}"


@dataclass
class Run:
    """One run folder (or one set of its results evaluated with non-default options, `eval_tag`):
    its files as read (missing ones None / empty) and notes on what was missing or damaged."""

    path: Path
    variant: str
    size: str
    seed: int | None
    overrides: dict[str, Any]
    config: dict[str, Any] | None
    summary: dict[str, Any] | None
    metrics: list[dict[str, Any]]
    results: dict[str, dict[str, Any]]
    meta: dict[str, dict[str, Any]]  # suite -> its results file's meta
    notes: list[str] = field(default_factory=list)
    eval_tag: str = ""  # "" = as trained; else the options tag of results_<suite>@<tag>.json
    eval_options: dict[str, Any] = field(default_factory=dict)
    eval_version: str = ""  # "grid G, harness H" of its results ("" without results)

    @property
    def label(self) -> str:
        """Group label: the variant, its model overrides, "@<eval tag>" for results evaluated with
        non-default options, and "{<version>}" for results of another grid/harness version."""
        text = self.variant
        if self.overrides:
            text += f"[{','.join(f'{k}={v}' for k, v in sorted(self.overrides.items()))}]"
        if self.eval_tag:
            text += f"@{self.eval_tag}"
        if self.eval_version and self.eval_version != current_version():
            text += f" {{{self.eval_version}}}"
        return text


def is_run_dir(path: Path) -> bool:
    """A run folder holds config.json, summary.json or a results file."""
    return path.is_dir() and ((path / "config.json").is_file() or (path / "summary.json").is_file()
                              or any(path.glob("results_*.json")))


def find_runs(paths: Sequence[str | Path]) -> list[Path]:
    """Run folders named by `paths`: each path is a run folder or a folder searched recursively
    for run folders (`comparison` and set-aside `*.incomplete*` folders are skipped). A path that
    does not exist, or holds no run, is a DataError."""
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise DataError(f"run folder {str(p)!r} does not exist; give run folders (with config.json / "
                            f"summary.json) or a folder that contains them")
        if is_run_dir(p):
            runs = [p]
        else:
            runs = sorted(d for d in p.rglob("*") if is_run_dir(d) and not any(
                part == "comparison" or SET_ASIDE in part for part in d.relative_to(p).parts))
        if not runs:
            raise DataError(f"{str(p)!r} holds no run folder (none with config.json, summary.json or results_*.json)")
        found += [r for r in runs if r.resolve() not in {f.resolve() for f in found}]
    return found


def _read_results(path: Path, tag: str, best: Any, notes: list[str]) -> tuple[dict, dict]:
    """Payloads and metas per suite of the results files with eval tag `tag` in `path`."""
    results: dict[str, dict[str, Any]] = {}
    metas: dict[str, dict[str, Any]] = {}
    suffix = f"@{tag}" if tag else ""
    combined = _read_json(path / f"results_all{suffix}.json", notes) or {}
    for suite in SUITE_NAMES:
        name = f"results_{suite}{suffix}.json"
        data = _read_json(path / name, notes) or {}
        payload = data.get(suite)
        if payload is None and isinstance(combined.get("all"), dict):
            payload, data = combined["all"].get(suite), combined
        if not isinstance(payload, dict):
            if not tag:
                notes.append(f"no {name} (suite not evaluated)" if payload is None
                             else f"{name}: '{suite}' is not a JSON object; ignored")
            continue
        results[suite] = payload
        metas[suite] = obj(data.get("meta"))
        if suite == "perplexity" and payload.get("available") is False:
            notes.append(f"{name}: perplexity not measured: {_text(payload.get('reason')) or 'no reason given'}")
        step = metas[suite].get("train_step")
        if best is not None and step is not None and step != best:
            notes.append(f"{name} evaluated a checkpoint of step {step}, but the run's best_model.pt "
                         f"is from step {best}: stale results, re-run eval_hub.py")
    return results, metas


def _version(metas: dict[str, dict[str, Any]], notes: list[str]) -> str:
    versions = sorted({f"grid {m.get('grid_version', '?')}, harness {m.get('harness_version', '?')}"
                       for m in metas.values()})
    if len(versions) > 1:
        notes.append(f"its suites were evaluated under different versions ({'; '.join(versions)})")
    return " + ".join(versions)


def run_size(config: dict[str, Any], notes: list[str]) -> str:
    """A run's model size, read one way: `model_size` of its config.json (the resolved training
    config; summary.json, the checkpoint and the results meta only repeat it); "unknown", with a
    note, when config.json has none."""
    size = config.get("model_size")
    if _text(size):
        return size
    notes.append("size unknown (config.json has no model_size)")
    return "unknown"


def load_runs(path: str | Path) -> list[Run]:
    """Read one run folder: the as-trained Run, then one Run per eval tag of its
    `results_<suite>@<tag>.json` files. Every missing, unreadable or mistyped file or field
    becomes a note, never an error."""
    path = Path(path)
    notes: list[str] = []
    config = _read_json(path / "config.json", notes)
    summary = _read_json(path / "summary.json", notes)
    skipped: list[str] = []
    try:
        metrics = read_metrics(path / "metrics.jsonl", skipped)
    except OSError as exc:
        metrics = []
        notes.append(f"metrics.jsonl is unreadable ({type(exc).__name__}); ignored")
    if skipped:
        notes.append(f"metrics.jsonl: {len(skipped)} damaged line(s) skipped ({skipped[0]}"
                     + (", ..." if len(skipped) > 1 else "") + ")")
    for name, data in (("config.json", config), ("summary.json", summary)):
        if data is None and not any(n.startswith(name) for n in notes):
            notes.append(f"no {name}" + (" (run unfinished or crashed)" if name == "summary.json" else ""))
    if not metrics and not skipped:
        notes.append("no metrics.jsonl records")
    best = obj(summary).get("best_step")
    results, metas = _read_results(path, "", best, notes)
    if lm_eval := lm_eval_metrics(path, best, notes):  # RUN/lm_eval/results_*.json (unified.evals.lm_eval.adapter)
        results["lm_eval"] = lm_eval
    meta = next(iter(metas.values()), {})
    cfg, summ = obj(config), obj(summary)
    model = obj(cfg.get("model"))
    if "model" in cfg and not isinstance(cfg.get("model"), dict):
        notes.append("config.json: 'model' is not an object; ignored")
    variant = next((v for v in (cfg.get("variant"), summ.get("variant"), model.get("variant"), meta.get("variant"))
                    if _text(v)), "unknown")
    size = run_size(cfg, notes)
    seed = cfg.get("seed", summ.get("seed"))
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        notes.append(f"seed {seed!r} is not an integer; treated as unknown")
        seed = None
    if variant == "unknown":
        notes.append("variant unknown (no config.json, summary.json or results meta)")
    raw_overrides = cfg.get("model_overrides") or {}
    if not isinstance(raw_overrides, dict):
        notes.append("config.json: 'model_overrides' is not an object; ignored")
    overrides = {str(k): v for k, v in obj(raw_overrides).items() if k != "max_seq_len"}
    version = _version(metas, notes)
    runs = [Run(path, variant, size, seed, overrides, config, summary, metrics, results, metas, notes,
                eval_version=version)]
    tags = sorted({parsed[1] for p in path.glob("results_*@*.json")
                   if (parsed := parse_results_name(p.name)) and parsed[1] and parsed[0] in (*SUITE_NAMES, "all")})
    for tag in tags:
        tag_notes: list[str] = []
        t_results, t_metas = _read_results(path, tag, best, tag_notes)
        if not t_results:
            notes += [f"@{tag}: {n}" for n in tag_notes]
            continue
        options = obj(next(iter(t_metas.values())).get("eval_options"))
        runs.append(Run(path, variant, size, seed, overrides, config, summary, metrics, t_results, t_metas,
                        tag_notes, eval_tag=tag, eval_options=options, eval_version=_version(t_metas, tag_notes)))
    return runs


def load_run(path: str | Path) -> Run:
    """The as-trained Run of one run folder (see `load_runs` for the eval-option ones)."""
    return load_runs(path)[0]


def companion(metric: str, what: str) -> str:
    """The name of an exact-match metric's companion: companion("ood_em/parity/16", "floor") is
    "ood_floor/parity/16" (what: floor, se or n)."""
    head, sep, rest = metric.partition("/")
    return head.replace("_em", f"_{what}") + sep + rest


def run_metrics(run: Run) -> dict[str, float]:
    """Every number compared, flat: the one place that knows the summary / results keys.

    Accuracies are fractions in [0, 1]. Keys: params, trainable_params, frozen_params,
    flops_per_token, state_size, tokens, wall_time_s, tokens_per_s, s_per_mtok (wall seconds per
    million training tokens), final_loss, best_val_loss, iid_em, ood_em, iid_em/<task>,
    ood_em/<task>/<length>, each exact match with its companions (`companion`): iid_floor...
    (the chance floor), iid_se... (the run's own standard error), iid_n/... (distinct examples
    of a cell); mean_steps, mean_steps_answer, needle_acc,
    needle_acc/<length>, needle/<length>/<depth>, bits_per_byte, token_perplexity,
    word_perplexity, val_lang_bpb, lm_eval/<task>/<metric> (lm-eval's results, see
    `unified.evals.lm_eval.results`)."""
    s, out = obj(run.summary), {}
    model = obj(obj(run.config).get("model"))
    for key in ("params", "trainable_params", "frozen_params"):
        out[key] = _num(s.get(key, model.get(key)))
    for key in ("flops_per_token", "state_size", "tokens", "wall_time_s", "tokens_per_s", "final_loss", "best_val_loss"):
        out[key] = _num(s.get(key))
    if out["tokens"] and out["wall_time_s"] is not None:
        out["s_per_mtok"] = out["wall_time_s"] / out["tokens"] * 1e6
    vals = [r for r in run.metrics if r.get("kind") == "val"]
    if vals:
        out["val_lang_bpb"] = _num(vals[-1].get("val_lang_bpb"))
    alg = obj(run.results.get("algorithmic"))
    if alg:
        out["iid_em"], out["ood_em"] = _num(alg.get("exact_match")), _num(alg.get("ood_exact_match"))
        out["iid_se"], out["ood_se"] = _num(alg.get("exact_match_stderr")), _num(alg.get("ood_exact_match_stderr"))
        out["iid_floor"], out["ood_floor"] = _num(alg.get("floor")), _num(alg.get("ood_floor"))
        out["mean_steps"] = _num(alg.get("mean_steps"))
        out["mean_steps_answer"] = _num(alg.get("mean_steps_answer"))
        for task, entry in obj(alg.get("tasks")).items():
            cells = [(f"iid_em/{task}", obj(obj(entry).get("iid")))]
            cells += [(f"ood_em/{task}/{length}", obj(cell)) for length, cell in obj(obj(entry).get("ood")).items()]
            for key, cell in cells:
                out[key] = _num(cell.get("exact_match"))
                out[companion(key, "floor")] = _num(cell.get("floor"))
                out[companion(key, "se")] = _num(cell.get("exact_match_stderr"))
                out[companion(key, "n")] = _num(cell.get("n_distinct"))
    train = [r for r in run.metrics if r.get("kind") == "train" and "mean_steps" in r]
    if out.get("mean_steps") is None and train:
        out["mean_steps"] = _num(train[-1]["mean_steps"])
    needle = obj(run.results.get("needle"))
    if needle:
        out["needle_acc"] = _num(needle.get("accuracy"))
        for length, entry in obj(needle.get("lengths")).items():
            out[f"needle_acc/{length}"] = _num(obj(entry).get("accuracy"))
            for depth, cell in obj(obj(entry).get("depths")).items():
                out[f"needle/{length}/{depth}"] = _num(obj(cell).get("accuracy"))
    ppl = obj(run.results.get("perplexity"))
    if ppl and ppl.get("available", True):
        out["bits_per_byte"] = _num(ppl.get("bits_per_byte"))
        out["token_perplexity"] = _num(ppl.get("token_perplexity", ppl.get("perplexity")))
        out["word_perplexity"] = _num(ppl.get("word_perplexity"))
    out.update(obj(run.results.get("lm_eval")))  # lm_eval/<task>/<metric> (unified.evals.lm_eval.results)
    return {k: v for k, v in out.items() if v is not None}
