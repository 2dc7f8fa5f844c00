"""Train one variant at one scale: python train.py --model_size nano --variant act

Thin wrapper: parses arguments (`unified.train.flags`, derived from `unified.train.config.TrainConfig`)
into a TrainConfig and calls `unified.train.trainer.train`, which resolves it before any data is read.
`--config FILE` takes options from a file (a run's config.json reruns it); flags override it.
Several GPUs (or CPU processes): torchrun --nproc_per_node=N train.py ... (docs/reliability.md).
"""
from __future__ import annotations

from unified.cli import ArgumentParser, run_cli
from unified.text.textcache import set_offline_if_unreachable
from unified.train.flags import add_train_arguments, config_from_args, given_options
from unified.train.resolve import resolve
from unified.train.trainer import train


def build_parser() -> ArgumentParser:
    """train.py's parser: the options of `unified.train.flags.add_train_arguments`."""
    return add_train_arguments(ArgumentParser(
        description="Train a variant of the ablation ladder on the split curriculum. Several GPUs or processes: "
                    "torchrun --nproc_per_node=N train.py ... (--batch_size is per process)."))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    resolve(cfg)  # every name and value checked before the network probe, any data or any model
    set_offline_if_unreachable()
    summary = train(cfg, given=given_options(args))
    if summary:
        out = summary["output_dir"]
        print(f"done: {summary['steps']} steps, {summary['tokens']:,} tokens in {summary['wall_time_s']:.0f}s, "
              f"loss {summary['first_loss']:.3f} -> {summary['final_loss']:.3f}, best val loss "
              f"{summary['best_val_loss']:.4f} at step {summary['best_step']}")
        extra = " tokenizer.json" if summary["tokenizer"].startswith("bpe:") else ""
        extra += " curriculum.png" if cfg.use_task_curriculum else ""
        print(f"outputs in {out}: best_model.pt last.pt metrics.jsonl summary.json loss.png accuracy.png{extra}")
    return 0


if __name__ == "__main__":
    run_cli(main)
