"""Train and evaluate a ladder of variants over seeds, then compare them:

    python ladder.py --model_size micro --variants baseline,shared_loop,act --seeds 0,1,2 -- --max_steps 2000

Every (variant, seed) trains with `train.py` (a subprocess, so one crashing run does not stop the
others) into runs/<size>/<variant>/seed<k>/ and is evaluated with `eval_hub.py`; the ladder ends
by writing the comparison into runs/<size>/comparison/. Re-running the same command skips
finished runs (summary.json present), resumes interrupted ones (last.pt without summary.json)
and evaluates only what lacks results. Options after `--` go to train.py unchanged.

Presets (`--preset NAME`, `--list_presets`; files in presets/, see unified/ladder/presets.py) set the
rows, options, budgets and expected outcome of a published finding; they run into
runs/<preset>/<scale>/<row>/seed<k>/ and end with reproduction.md and a figure there.
`--lr_grid 3e-4,1e-3,3e-3` trains every row at every rate (<row>/lr<rate>/seed<k>/), selects one
rate per row on the validation split (unified/ladder/tuning.py) and evaluates only the selected runs.
"""
from __future__ import annotations

import argparse
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from unified.cli import ArgumentParser, Terminated, run_cli
from unified.compare.runs import SET_ASIDE
from unified.errors import ConfigError, UnknownNameError
from unified.evals.flags import add_eval_arguments, eval_settings, results_names
from unified.evals.hub import SUITES, resolve_suite
from unified.ladder.presets import Row, list_presets_text, load_preset
from unified.ladder.tuning import lr_dirname, parse_lr_grid, select_lr, selection_markdown
from unified.models import resolve_variant
from unified.models.config import SCALES
from unified.models.optioncheck import check_number

ROOT = Path(__file__).resolve().parent
LADDER_OWNED = ("--variant", "--model_size", "--seed", "--output_dir", "--resume")
EVAL_OWNED = ("--checkpoint", "--suite", "--output_dir", "--out_dir")


@dataclass
class Planned:
    """One (variant, seed) of the ladder and what it needs: "skip", "resume" or "train". `row`
    names its folder (the variant, or a preset row), `extra` holds the row's own train.py
    options, `lr` its rate of an --lr_grid."""

    variant: str
    seed: int
    out: Path
    action: str
    row: str = ""
    extra: list[str] = field(default_factory=list)
    lr: float | None = None

    @property
    def name(self) -> str:
        """"<row>[/lr<rate>]/seed<k>", as printed."""
        return "/".join([self.row or self.variant, *([lr_dirname(self.lr)] if self.lr else []), f"seed{self.seed}"])


def plan_run(out: Path) -> str:
    """"skip" when the run finished (summary.json), "resume" when it was interrupted after a
    checkpoint (last.pt), "restart" when it stopped before its first checkpoint, else "train"."""
    if (out / "summary.json").is_file():
        return "skip"
    if (out / "last.pt").is_file():
        return "resume"
    if (out / "config.json").is_file():
        return "restart"
    return "train"


def parse_list(text: str, flag: str) -> list[str]:
    """Comma-separated items, blanks dropped; an empty list is an error."""
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items:
        raise ConfigError(f"{flag} is empty; give a comma-separated list")
    return items


def build_parser() -> ArgumentParser:
    p = ArgumentParser(description="Train + evaluate variants x seeds into runs/<size>/<variant>/seed<k>/, then compare.",
                       epilog="Options after -- go to train.py, e.g. -- --max_steps 150 --batch_size 8")
    p.add_argument("--model_size", default=None,
                   help=f"model size, one of {', '.join(SCALES)} (default micro, or the preset's CPU scale)")
    p.add_argument("--size", "--scale", dest="model_size", default=None, help=argparse.SUPPRESS)
    p.add_argument("--variants", default=None, help="comma-separated variants (default "
                   "baseline,shared_loop; with --preset the preset's rows)")
    p.add_argument("--seeds", default=None, help="comma-separated integer seeds (default 0, or the preset's)")
    p.add_argument("--output_dir", default="runs", help="root folder of the ladder's runs")
    p.add_argument("--runs_dir", dest="output_dir", default="runs", help=argparse.SUPPRESS)
    p.add_argument("--set", dest="model_overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="model option of every run, passed to train.py (e.g. --set n_loops=4), repeatable")
    p.add_argument("--suite", default=None, help=f"eval_hub.py suite for every run ({', '.join([*SUITES, 'all'])}; "
                   "default all, or the preset's)")
    p.add_argument("--preset", default=None, help="run a preset (presets/NAME.toml): a published finding with its "
                   "rows, budgets and expected outcome; ends with reproduction.md")
    p.add_argument("--list_presets", action="store_true", help="list the presets and exit")
    p.add_argument("--lr_grid", default=None, help="comma-separated learning rates: train every (row, seed) at each, "
                   "select per row on the validation split, evaluate the selected ones (e.g. 3e-4,1e-3,3e-3)")
    p.add_argument("--eval_args", default="", help="extra eval_hub.py options as one string, written with = "
                   "(e.g. --eval_args=\"--limit 20 --needle_lengths 256,512\")")
    p.add_argument("--no_eval", action="store_true", help="train only (compare what is there)")
    p.add_argument("--print_commands", action="store_true",
                   help="print one self-contained train+eval command line per (variant, seed) that still needs work, "
                        "for a scheduler (e.g. a SLURM array), and exit; a later plain ladder.py call compares")
    return p


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """(ladder options, train.py options): everything after the first `--` goes to train.py."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def check_train_args(variants: list[str], size: str, train_args: list[str]) -> None:
    """Fail before any training when train.py would reject its options: parse them with
    train.py's own options (`unified.train.flags`) (bad flag -> its one-line error, exit 2), check the values with
    `unified.train.resolve.resolve` (which checks the --set model options against the variant)."""
    from unified.train.flags import add_train_arguments, config_from_args
    from unified.train.resolve import resolve

    for variant in variants:
        parser = add_train_arguments(ArgumentParser(prog="train.py"))
        resolve(config_from_args(parser.parse_args(["--variant", variant, "--model_size", size, *train_args])))


def split_eval_args(text: str) -> list[str]:
    """--eval_args as a list of options (shell quoting rules); unbalanced quotes are a ConfigError."""
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise ConfigError(f"--eval_args {text!r} cannot be split into options ({exc})") from None


def parse_eval_args(suite: str, eval_args: list[str]) -> argparse.Namespace:
    """eval_hub.py's options `--suite suite *eval_args`, parsed with its own parser
    (`unified.evals.flags`; a typo -> its one-line error, exit 2)."""
    return add_eval_arguments(ArgumentParser(prog="eval_hub.py")).parse_args(["--suite", suite, *eval_args])


def check_eval_args(suite: str, eval_args: list[str]) -> None:
    """Fail before any training when eval_hub.py would reject --eval_args: its own parser and
    option checks run on them (a typo or bad value -> its one-line error, exit 2)."""
    owned = [a.split("=", 1)[0] for a in eval_args if a.split("=", 1)[0] in EVAL_OWNED]
    if owned:
        raise ConfigError(f"--eval_args: {owned[0]} is set by the ladder; remove it (use --suite / --output_dir)")
    eval_settings(parse_eval_args(suite, eval_args))


def _run(cmd: list[str]) -> int:
    """Run one train.py / eval_hub.py child and return its exit status. The child has its own
    process group, so a terminal's Ctrl-C reaches the ladder only, which forwards it: SIGINT or
    SIGTERM to the ladder is passed on to the child, and the ladder waits for the child's cleanup
    (lock released, temporary files removed) before it stops too."""
    print("$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    proc = subprocess.Popen(cmd, process_group=0)
    try:
        return proc.wait()
    except BaseException as exc:
        _stop_child(proc, signal.SIGINT if isinstance(exc, KeyboardInterrupt) else signal.SIGTERM)
        raise


def _stop_child(proc: subprocess.Popen, sig: int) -> None:
    """Send `sig` to the child and wait for it; further signals meanwhile are forwarded too."""
    while True:
        try:
            if proc.poll() is None:
                proc.send_signal(sig)
            proc.wait()
            return
        except (KeyboardInterrupt, Terminated):
            continue


def execute(p: Planned, size: str, train_args: list[str], suites: list[str], suite_arg: str,
            eval_args: list[str], failed: list[str]) -> None:
    """Train (or resume / restart) one planned run when it needs it, then evaluate the suites it
    lacks; failures are appended to `failed` (the other runs go on)."""
    name = p.name
    trained = p.action != "skip"
    if p.action == "restart":  # stopped before its first checkpoint: keep it aside, start again
        aside = p.out.with_name(p.out.name + SET_ASIDE)
        k = 2
        while aside.exists():
            aside, k = p.out.with_name(f"{p.out.name}{SET_ASIDE}{k}"), k + 1
        p.out.rename(aside)
        print(f"{name}: stopped before its first checkpoint; moved to {aside} and starting again")
    if trained:
        if _run(train_command(p, size, train_args)) != 0:
            failed.append(f"{name} (training)")
            return
        p.action = "skip"  # trained now: a later pass (the --lr_grid evaluation) only evaluates it
    else:
        print(f"{name}: finished already (summary.json); not retrained")
    if trained and not suites and any(p.out.glob("results_*.json")):
        print(f"{name}: note: its results_*.json predate this training (--no_eval); compare flags them as stale")
    missing = missing_suites(p, suites, eval_args, trained)
    if not missing:
        return
    if not (p.out / "best_model.pt").is_file():
        failed.append(f"{name} (no best_model.pt to evaluate)")
        return
    # one eval_hub.py call when every suite is due (one model load), else one per missing suite
    for suite in ([suite_arg] if missing == suites else missing):
        if _run(eval_command(p, suite, eval_args)) != 0:
            failed.append(f"{name} (eval {suite})")


def train_command(p: Planned, size: str, train_args: list[str]) -> list[str]:
    """The train.py command of a planned run (with --resume when it was interrupted)."""
    return [sys.executable, str(ROOT / "train.py"), "--variant", p.variant, "--model_size", size,
            "--seed", str(p.seed), "--output_dir", str(p.out), *(["--resume"] if p.action == "resume" else []),
            *train_args, *p.extra]


def eval_command(p: Planned, suite: str, eval_args: list[str]) -> list[str]:
    """The eval_hub.py command that evaluates a planned run's best_model.pt into its folder."""
    return [sys.executable, str(ROOT / "eval_hub.py"), "--checkpoint", str(p.out / "best_model.pt"),
            "--suite", suite, "--output_dir", str(p.out), *eval_args]


def missing_suites(p: Planned, suites: list[str], eval_args: list[str], trained: bool) -> list[str]:
    """The suites a run still needs: all of them after (re)training, else those whose results
    file (named by the eval options: results_<suite>[@<tag>].json) is absent."""
    return [s for s in suites if trained or not (p.out / results_names(parse_eval_args(s, eval_args))[s]).is_file()]


def command_lines(plan: list[Planned], size: str, train_args: list[str], suites: list[str], suite_arg: str,
                  eval_args: list[str]) -> list[str]:
    """One self-contained shell line per planned run that still needs work (absolute paths, so
    any working directory and any node of a shared file system will do): train.py (with --resume
    when interrupted, after moving aside a run that stopped before its first checkpoint) and
    then eval_hub.py, joined with &&. Runs with nothing left to do get no line."""
    lines = []
    for p in plan:
        p = Planned(p.variant, p.seed, p.out.resolve(), p.action, p.row, p.extra, p.lr)
        trained = p.action != "skip"
        missing = missing_suites(p, suites, eval_args, trained)
        parts = []
        if p.action == "restart":
            parts.append(["mv", str(p.out), f"{p.out}{SET_ASIDE}.{int(time.time())}"])
            p.action = "train"
        if trained:
            parts.append(train_command(p, size, train_args))
        if missing:
            parts += [eval_command(p, s, eval_args) for s in ([suite_arg] if missing == suites else missing)]
        if parts:
            lines.append(" && ".join(shlex.join(c) for c in parts))
    return lines


def main(argv: list[str] | None = None) -> int:
    t_start = time.time()
    argv = list(sys.argv[1:] if argv is None else argv)
    own, user_train_args = split_argv(argv)
    args = build_parser().parse_args(own)
    if args.list_presets:
        print(list_presets_text())
        return 0
    preset = load_preset(args.preset) if args.preset else None
    if preset and args.variants:
        raise ConfigError(f"--variants cannot be combined with --preset (its rows are "
                          f"{', '.join(r.name for r in preset.rows)}); drop --variants")
    size = args.model_size or (preset.scale if preset else "micro")
    if size not in SCALES:
        raise UnknownNameError("model size", size, SCALES)
    if preset:
        rows = preset.rows
    else:
        variants = list(dict.fromkeys(resolve_variant(v) for v in parse_list(args.variants or "baseline,shared_loop",
                                                                              "--variants")))
        rows = [Row(v, v) for v in variants]
    try:
        seeds = (list(dict.fromkeys(int(s) for s in parse_list(args.seeds, "--seeds"))) if args.seeds
                 else list(preset.seeds) if preset else [0])
    except ValueError:
        raise ConfigError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    for seed in seeds:
        check_number("--seeds", seed, 0, 2**32 - 1, integer=True)
    grid = parse_lr_grid(args.lr_grid) if args.lr_grid else list(preset.lr_grid) if preset else []
    suite_arg = args.suite or (preset.suite(size) if preset else "all")
    suites = [] if args.no_eval else resolve_suite(suite_arg)
    train_args = [*(preset.train_args(size, without=("lr",) if grid else ()) if preset else []),
                  *(a for kv in args.model_overrides for a in ("--set", kv)), *user_train_args]
    for flag in train_args:
        if flag.split("=", 1)[0] in LADDER_OWNED:
            raise ConfigError(f"{flag.split('=', 1)[0]} is set by the ladder; remove it from the train.py options "
                              f"(use --variants / --model_size / --seeds / --output_dir)")
        if grid and flag.split("=", 1)[0] == "--lr":
            raise ConfigError("--lr and --lr_grid both set the learning rate; give one of them")
    for row in rows:
        check_train_args([row.variant], size, [*train_args, *row.train_args()])
    eval_args = [*(preset.eval_args(size) if preset else []), *split_eval_args(args.eval_args)]
    if suites:  # eval_hub.py's own checks of --eval_args, before anything trains
        check_eval_args(suites[0], eval_args)
    size_dir = Path(args.output_dir) / (preset.name if preset else "") / size
    plan = []
    for row in rows:
        for lr in grid or [None]:
            for s in seeds:
                out = size_dir / row.name / (lr_dirname(lr) if lr else "") / f"seed{s}"
                extra = [*row.train_args(), *(["--lr", f"{lr:g}"] if lr else [])]
                plan.append(Planned(row.variant, s, out, plan_run(out), row.name, extra, lr))
    if args.print_commands:  # for a scheduler: commands on stdout, one per line; the rest on stderr
        if grid:
            raise ConfigError("--print_commands with --lr_grid: the rate is selected after every run trains; "
                              "print the commands of the selected rate with --lr instead")
        lines = command_lines(plan, size, train_args, suites, suite_arg, eval_args)
        print("\n".join(lines) if lines else "", end="\n" if lines else "")
        print(f"{len(lines)} command lines ({len(plan) - len(lines)} runs need nothing); then run this ladder.py "
              f"command without --print_commands to compare (it resumes or evaluates whatever is unfinished)",
              file=sys.stderr)
        return 0
    what = f"preset {preset.name}: " if preset else ""
    print(f"ladder: {what}{size} x {', '.join(r.name for r in rows)} x seeds {', '.join(map(str, seeds))}"
          + (f" x lr {', '.join(f'{x:g}' for x in grid)}" if grid else "") + ": "
          + ", ".join(f"{sum(p.action == a for p in plan)} to {a}" for a in ("train", "resume", "restart", "skip")
                      if any(p.action == a for p in plan)), flush=True)
    failed: list[str] = []
    selection, trained = [], []
    if grid:  # train everything, select on validation only, then evaluate the selected runs
        for p in plan:
            execute(p, size, train_args, [], suite_arg, eval_args, failed)
        metric = preset.select_on if preset else "val_loss"
        selection = [select_lr(r.name, {lr: [p.out for p in plan if p.row == r.name and p.lr == lr] for lr in grid},
                               metric) for r in rows]
        chosen = {c.row: c.chosen for c in selection}
        print(selection_markdown(selection))
        trained = [p.out for p in plan]
        plan = [p for p in plan if p.lr == chosen[p.row]]
        for p in plan:
            p.action = plan_run(p.out)
    for k, p in enumerate(plan, 1):  # children draw their own bars; the ladder says where it is
        print(f"[{k}/{len(plan)}] {p.name}: {p.action}", flush=True)
        execute(p, size, train_args, suites, suite_arg, eval_args, failed)
    from unified.compare.comparison import compare
    from unified.compare.runs import is_run_dir
    from unified.compare.report import write_report

    done = [p.out for p in plan if is_run_dir(p.out)]
    out = size_dir / "comparison"
    if done:
        comp = compare(done)
        write_report(comp, out)
        for v in comp.verdicts:
            print(f"  {v.group.name} vs {v.baseline.name}: {v.overall} ({v.text})")
        print(f"comparison of {len(done)} runs in {out}: report.html comparison.md comparison.csv")
    if selection and not preset:
        out.mkdir(parents=True, exist_ok=True)
        (out / "lr_selection.md").write_text(selection_markdown(selection), encoding="utf-8")
    if preset:
        from unified.ladder.reproduction import groups_for, write_reproduction

        groups = groups_for(preset, {r.name: [p.out for p in plan if p.row == r.name] for r in rows}, size)
        command = "python ladder.py " + shlex.join(argv)
        md, verdict = write_reproduction(preset, groups, size_dir, size=size, command=command,
                                         elapsed_s=time.time() - t_start, selection=selection, failed=failed,
                                         trained=trained)
        print(f"{preset.name}: {verdict}; report in {md} (+ reproduction.png, reproduction.json)")
    if failed:
        print(f"failed: {'; '.join(failed)} (re-run the same command to retry)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    run_cli(main)
