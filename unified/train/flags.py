"""train.py's command-line options, declared once here so train.py and ladder.py (which checks a
ladder's training options before anything trains) parse them with the same parser.

`add_train_arguments(parser)` adds every option to the given parser (the CLIs pass
`unified.cli.ArgumentParser`, whose errors are one line and exit 2); the defaults come from
`TrainConfig`.
"""
from __future__ import annotations

import argparse

from unified.models.config import SCALES
from unified.ops.precision import MATMUL_PRECISIONS
from unified.text.corpus import describe_sources
from unified.train.config import TrainConfig
from unified.train.tracking import REPORT_TO


def add_train_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add train.py's options (one per `TrainConfig` field; `--set` collects model overrides
    into `overrides`) to `p` and return it."""
    d = TrainConfig()
    p.add_argument("--variant", default=d.variant, help="baseline, shared_loop, latent, act, ssm, ssm_mem, "
                   "reservoir, liquid, hrnn, rsm")
    p.add_argument("--model_size", default=d.model_size, help=f"one of {', '.join(SCALES)}")
    p.add_argument("--output_dir", default=None, help="default runs/<size>_<variant> (a suffix is added if taken)")
    p.add_argument("--seed", type=int, default=d.seed, help="weights, data and dropout seed")
    p.add_argument("--tokenizer", default=d.tokenizer,
                   help="byte; bpe:N (byte-level BPE of N tokens trained on the language training text, saved "
                        "as tokenizer.json); or an HF tokenizer name / local path")
    p.add_argument("--batch_size", type=int, default=d.batch_size, help="sequences per micro-batch per process")
    p.add_argument("--seq_len", type=int, default=d.seq_len)
    p.add_argument("--grad_accum", type=int, default=d.grad_accum)
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default 1e-3 pico/micro, 6e-4 above)")
    p.add_argument("--min_lr_ratio", type=float, default=d.min_lr_ratio)
    p.add_argument("--weight_decay", type=float, default=d.weight_decay)
    p.add_argument("--warmup_steps", type=int, default=None, help="default 5%% of steps, at most 500")
    p.add_argument("--schedule", default=d.schedule, choices=["cosine", "wsd", "constant"])
    p.add_argument("--total_tokens", type=int, default=d.total_tokens, help="training budget in tokens")
    p.add_argument("--alg_tokens", type=int, default=None,
                   help="end of the algorithmic phase (default: half the run's tokens; all with --lang_dataset none)")
    p.add_argument("--max_steps", type=int, default=None, help="stop after this many optimizer steps")
    p.add_argument("--alg_tasks", default=d.alg_tasks, help="comma-separated task names, or all")
    p.add_argument("--lang_dataset", default=d.lang_dataset,
                   help=f"language phase data: {describe_sources()}. auto = TinyStories when cached or "
                        f"reachable, else the offline procedural story corpus; none = algorithmic phase only")
    p.add_argument("--lang_data", default=None, help="local .txt file or folder (same as --lang_dataset PATH)")
    p.add_argument("--lang_max_tokens", type=int, default=None,
                   help="cap on the training tokens taken from a hub dataset (cached separately)")
    p.add_argument("--lang_alg_fraction", type=float, default=d.lang_alg_fraction,
                   help="algorithmic share kept in the language phase")
    p.add_argument("--use_task_curriculum", action="store_true",
                   help="per-task competence curriculum: EMA of validation exact match moves each task's "
                        "difficulty and reweights sampling toward unmastered tasks")
    p.add_argument("--task_curriculum_strategy", default=d.task_curriculum_strategy, choices=["competence", "dag"],
                   help="dag: also unlock tasks in dependency order, replaying mastered ones")
    p.add_argument("--curriculum_cooldown", type=int, default=d.curriculum_cooldown,
                   help="steps between two difficulty changes of one task")
    p.add_argument("--curriculum_min_task_evals", type=int, default=d.curriculum_min_task_evals,
                   help="validations at a difficulty before the curriculum may change it")
    p.add_argument("--curriculum_jitter", type=float, default=d.curriculum_jitter,
                   help="share of a task's examples replayed at an easier difficulty")
    p.add_argument("--curriculum_replay", type=float, default=d.curriculum_replay,
                   help="dag: share of algorithmic rows given to mastered tasks")
    p.add_argument("--eval_every", type=int, default=d.eval_every, help="steps between validation + checkpoint")
    p.add_argument("--eval_samples", type=int, default=d.eval_samples, help="validation prompts per task")
    p.add_argument("--val_lang_tokens", type=int, default=d.val_lang_tokens,
                   help="held-out language tokens scored at each validation (val_lang_loss and its stderr)")
    p.add_argument("--log_every", type=int, default=d.log_every)
    p.add_argument("--grad_clip", type=float, default=d.grad_clip)
    p.add_argument("--dtype", default=d.dtype, choices=["fp32", "bf16", "fp16"], help="autocast precision")
    p.add_argument("--compile", action="store_true", help="torch.compile the training model")
    p.add_argument("--matmul_precision", default=d.matmul_precision, choices=MATMUL_PRECISIONS,
                   help="float32 matmul path; auto: the fast oneDNN path ('medium') where its error vs float64 "
                        "is float32-level, else 'highest' (see docs/performance.md)")
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:N")
    p.add_argument("--resume", action="store_true", help="continue the run in --output_dir from last.pt")
    p.add_argument("--report_to", default=d.report_to, choices=REPORT_TO,
                   help="also log metrics.jsonl's numbers to TensorBoard (event files in the run folder) or W&B "
                        "(optional package; offline unless logged in)")
    p.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE",
                   help="model option override, repeatable (e.g. --set n_loops=4 --set dropout=0.1)")
    p.add_argument("--debug_nan_step", type=int, default=None, help=argparse.SUPPRESS)
    return p
