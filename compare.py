"""Compare runs: python compare.py runs/micro [--baseline runs/micro/baseline] [--output_dir DIR]

Thin wrapper over `unified.compare` (reading, grouping, CIs, verdicts) and `unified.compare.report`
(figures, comparison.md / .csv, report.html). Each RUN_DIR is a run folder or a folder holding
run folders (searched recursively).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from unified.cli import ArgumentParser, run_cli
from unified.compare.comparison import compare
from unified.progress import set_quiet
from unified.train.checkpoint import ensure_writable_dir


def build_parser() -> ArgumentParser:
    p = ArgumentParser(description="Tables, figures and verdicts across runs and seeds.")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                   help="run folders (config.json, summary.json, metrics.jsonl, results_*.json) or folders holding them")
    p.add_argument("--baseline", default=None, metavar="RUN_DIR",
                   help="the baseline run folder (or the folder of its seeds); default: the runs of variant "
                        "'baseline' of each size")
    p.add_argument("--output_dir", default=None, metavar="DIR",
                   help="output folder; when not given, comparison/ in the runs' common folder")
    p.add_argument("--out", dest="output_dir", default=None, help=argparse.SUPPRESS)
    p.add_argument("--no_samples", action="store_true",
                   help="leave out the report's Samples section (it loads each group's best_model.pt)")
    p.add_argument("--quiet", action="store_true", help="no progress bars (they are off anyway when stderr is no terminal)")
    return p


def default_out(run_paths: list[Path]) -> Path:
    """<the runs' common folder>/comparison (for a single run, beside it: its parent folder)."""
    from unified.compare.runs import is_run_dir

    common = Path(os.path.commonpath([str(p.resolve()) for p in run_paths]))
    return (common.parent if is_run_dir(common) else common) / "comparison"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    set_quiet(args.quiet)
    if args.output_dir:  # fail before reading any run
        ensure_writable_dir(args.output_dir, "--output_dir")
    comp = compare(args.run_dirs, baseline=args.baseline)
    from unified.compare.report import write_report

    out = Path(args.output_dir) if args.output_dir else default_out([r.path for r in comp.runs])
    ensure_writable_dir(out, "--output_dir")
    written = write_report(comp, out, samples=not args.no_samples)
    print(f"compared {len(comp.runs)} runs in {len(comp.groups)} groups")
    for v in comp.verdicts:
        print(f"  {v.group.name} vs {v.baseline.name}: {v.overall} ({v.text})")
    if comp.notes:
        print(f"  {len(comp.notes)} notes (missing files, unavailable suites ...): see comparison.md")
    print(f"outputs in {out}: {' '.join(sorted(written))}")
    return 0


if __name__ == "__main__":
    run_cli(main)
