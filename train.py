"""Train one variant at one scale: python train.py --model_size nano --variant act

Thin wrapper: parses arguments (`unified.train.flags`) into `unified.train.config.TrainConfig`
and calls `unified.train.trainer.train`.
Several GPUs (or CPU processes): torchrun --nproc_per_node=N train.py ... (docs/reliability.md).
"""
from __future__ import annotations

import argparse

from unified.cli import ArgumentParser, parse_overrides, run_cli
from unified.text.textcache import set_offline_if_unreachable
from unified.train.config import TrainConfig
from unified.train.flags import add_train_arguments
from unified.train.trainer import train


def build_parser() -> ArgumentParser:
    """train.py's parser: the options of `unified.train.flags.add_train_arguments`."""
    return add_train_arguments(ArgumentParser(
        description="Train a variant of the ablation ladder on the split curriculum. Several GPUs or processes: "
                    "torchrun --nproc_per_node=N train.py ... (--batch_size is per process)."))


def given_options(argv: list[str] | None) -> set[str]:
    """TrainConfig fields set explicitly on the command line (on --resume the others take the
    stored run's values): the parse of `argv` with every default suppressed."""
    probe = build_parser()
    for action in probe._actions:
        action.default = argparse.SUPPRESS
    given = set(vars(probe.parse_args(argv)))
    return {"model_overrides" if name == "overrides" else name for name in given}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    set_offline_if_unreachable()
    kw = {k: v for k, v in vars(args).items() if k != "overrides"}
    cfg = TrainConfig(**kw, model_overrides=parse_overrides(args.overrides))
    summary = train(cfg, given=given_options(argv))
    if summary:
        out = summary["output_dir"]
        print(f"done: {summary['steps']} steps, {summary['tokens']:,} tokens in {summary['wall_time_s']:.0f}s, "
              f"loss {summary['first_loss']:.3f} -> {summary['final_loss']:.3f}, best val loss "
              f"{summary['best_val_loss']:.4f} at step {summary['best_step']}")
        extra = " tokenizer.json" if summary["tokenizer"].startswith("bpe:") else ""
        extra += " curriculum.png" if args.use_task_curriculum else ""
        print(f"outputs in {out}: best_model.pt last.pt metrics.jsonl summary.json loss.png accuracy.png{extra}")
    return 0


if __name__ == "__main__":
    run_cli(main)
