"""eval_hub.py's command line and the typed settings it builds, so eval_hub.py and ladder.py (which
checks a ladder's --eval_args and names the results files it looks for before anything trains)
parse the same options the same way.

`add_eval_arguments` declares the flags, each defaulting from its Settings dataclass field
(`AlgorithmicSettings`, `NeedleSettings`, `PerplexitySettings`); `eval_settings` checks the
parsed values (one-line ConfigError) and builds `unified.evals.hub.EvalSettings` directly;
`results_names` names the files a call would write without loading anything. Model options are
`--set KEY=VALUE` (repeatable; `--override KEY=VALUE` and `--K N` = `--set K=N` are hidden
aliases), the output folder `--output_dir` (`--out_dir` is a hidden alias), the absolute needle
lengths `--needle_lengths` (`--context_lengths` is a hidden alias).
"""
from __future__ import annotations

import argparse
from typing import Any

from unified.data.tasks import resolve_tasks
from unified.devices import check_device
from unified.errors import ConfigError
from unified.evals.algorithmic import AlgorithmicSettings, parse_ood_grid
from unified.evals.hub import SUITES, EvalSettings, check_override_names, resolve_suite, suite_eval_options
from unified.evals.needle import NeedleSettings
from unified.evals.perplexity import PerplexitySettings
from unified.evals.results import options_tag, results_name
from unified.models.optioncheck import parse_overrides
from unified.ops.precision import MATMUL_PRECISIONS

PPL_PREFIXES = ("bos", "eos")


class _NumberList(argparse.Action):
    """Numbers separated by commas or spaces, over one or more words (so `--depths 0,0.5,1` and
    `--depths 0 0.5 1` both work), stored as one flat tuple."""

    def __init__(self, *args: Any, kind: type = float, **kwargs: Any):
        self.kind = kind
        super().__init__(*args, nargs="+", **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        try:
            numbers = tuple(self.kind(x) for v in values for x in v.replace(",", " ").split())
        except ValueError:
            raise argparse.ArgumentError(self, f"expected {self.kind.__name__}s separated by commas, "
                                               f"got {' '.join(values)!r}") from None
        setattr(namespace, self.dest, numbers)


class _SetAlias(argparse.Action):
    """`--K N` appends "K=N" to the `--set` list (a hidden alias of `--set K=N`)."""

    def __init__(self, *args: Any, key: str, **kwargs: Any):
        self.key = key
        super().__init__(*args, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, [*(getattr(namespace, self.dest) or []), f"{self.key}={values}"])


def add_eval_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add eval_hub.py's options to `p` (returned): suite, checkpoint, output folder, model
    options, each suite's grid (defaults from its Settings dataclass) and the runtime."""
    a, nd, pd = AlgorithmicSettings(), NeedleSettings(), PerplexitySettings()
    hidden = argparse.SUPPRESS
    p.add_argument("--checkpoint", default=None, help="path to a .pt checkpoint (default: newest runs/*/best_model.pt)")
    p.add_argument("--suite", default="algorithmic", help=f"one of {', '.join([*SUITES, 'all'])}")
    p.add_argument("--output_dir", default=None, help="where results go (default: the checkpoint's folder)")
    p.add_argument("--out_dir", dest="output_dir", default=None, help=hidden)
    p.add_argument("--set", dest="model_overrides", action="append", metavar="KEY=VALUE",
                   help="change an evaluation-time model option (e.g. n_loops=8, K=8), repeatable")
    p.add_argument("--override", dest="model_overrides", action="append", help=hidden)
    p.add_argument("--K", dest="model_overrides", action=_SetAlias, key="K", type=int, help=hidden)
    p.add_argument("--tasks", nargs="*", default=None, help="algorithmic tasks (default all)")
    p.add_argument("--limit", type=int, default=a.limit,
                   help="examples per algorithmic grid cell; also caps the needle samples per cell "
                        "when --needle_samples is not given")
    p.add_argument("--ood", nargs="+", default=None, metavar="TASK=V1,V2",
                   help="algorithmic: OOD values of the named tasks instead of their defaults, e.g. "
                        "--ood parity=16,32,64,128 addition=5,6")
    p.add_argument("--seed", type=int, default=a.seed, help="which held-out examples are drawn")
    p.add_argument("--batch_size", type=int, default=a.batch_size)
    p.add_argument("--needle_lengths", action=_NumberList, kind=int, default=nd.context_lengths, metavar="N",
                   help="needle: absolute prompt lengths in tokens, e.g. 1024,2048,4096 (default: "
                        "--needle_factors x the checkpoint's training seq_len)")
    p.add_argument("--context_lengths", dest="needle_lengths", action=_NumberList, kind=int, help=hidden)
    p.add_argument("--needle_factors", action=_NumberList, kind=float, default=tuple(nd.length_factors), metavar="F",
                   help="needle: prompt lengths as multiples of the checkpoint's training seq_len")
    p.add_argument("--depths", action=_NumberList, kind=float, default=tuple(nd.depths), metavar="D",
                   help="needle: needle depths in [0, 1]")
    p.add_argument("--needle_samples", type=int, default=None,
                   help=f"needle: prompts per (length, depth) cell (default {nd.samples}, at most --limit)")
    p.add_argument("--text_file", default=pd.text_file,
                   help="perplexity: held-out UTF-8 text (default: the validation split of the run's language data)")
    p.add_argument("--ppl_dataset", default=pd.dataset,
                   help="perplexity: validation split of an HF dataset named as for train.py --lang_dataset "
                        "(tinystories, wikitext103, openwebtext, minipile, hf:<repo>[:<config>]); "
                        "needs the network or the HF cache")
    p.add_argument("--ppl_max_tokens", type=int, default=pd.max_tokens,
                   help="perplexity: score at most this many tokens of the text (0 = all)")
    p.add_argument("--ppl_prefix", choices=PPL_PREFIXES, default=pd.prefix,
                   help="perplexity: token each window's first token is conditioned on (training puts EOS, "
                        "not BOS, before language documents)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    p.add_argument("--quiet", action="store_true", help="no progress bars (they are off anyway when stderr is no terminal)")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads for torch (0 = torch's default). Decoding small models is fastest on one "
                        "thread, and extra threads slow it down badly when the cores are shared")
    p.add_argument("--matmul_precision", default="auto", choices=MATMUL_PRECISIONS,
                   help="float32 matmul path; auto: the fast oneDNN path ('medium') where its error vs float64 "
                        "is float32-level, else 'highest'; cached decoding steps always use 'highest' on CPU")
    p.add_argument("--tokenizer", default=None, help="must match the checkpoint's (default: the checkpoint's)")
    return p


def eval_settings(args: argparse.Namespace) -> EvalSettings:
    """The typed settings of parsed `args`, every name and value checked first (one-line
    ConfigError for an unknown suite, task, device or model option, a nonsense count or grid),
    before any checkpoint or data is read. Whether the checkpoint's variant can change a model
    option is checked once it is loaded (`unified.evals.hub.check_overrides`)."""
    resolve_suite(args.suite)
    for flag in ("limit", "batch_size", "needle_samples"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ConfigError(f"--{flag} must be >= 1, got {value}")
    if args.seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {args.seed}")
    if args.threads < 0:
        raise ConfigError(f"--threads must be >= 0 (0 = torch's default), got {args.threads}")
    if args.ppl_max_tokens is not None and args.ppl_max_tokens < 0:
        raise ConfigError(f"--ppl_max_tokens must be >= 0 (0 = all), got {args.ppl_max_tokens}")
    check_device(args.device)
    tasks = [t for item in (args.tasks or []) for t in item.split(",") if t] or None
    algorithmic = AlgorithmicSettings(limit=args.limit, seed=args.seed, batch_size=args.batch_size,
                                      ood_grid=parse_ood_grid(args.ood, resolve_tasks(tasks)))
    samples = args.needle_samples if args.needle_samples is not None else min(NeedleSettings().samples, args.limit)
    needle = NeedleSettings(context_lengths=args.needle_lengths, depths=args.depths, samples=samples, seed=args.seed,
                            batch_size=args.batch_size, length_factors=args.needle_factors)
    needle.validate()
    perplexity = PerplexitySettings(text_file=args.text_file, dataset=args.ppl_dataset,
                                    max_tokens=args.ppl_max_tokens or None, batch_size=args.batch_size,
                                    prefix=args.ppl_prefix)
    perplexity.validate()
    overrides = parse_overrides(args.model_overrides)
    check_override_names(overrides)
    return EvalSettings(overrides=overrides, tasks=tasks, algorithmic=algorithmic,
                        needle=needle, perplexity=perplexity, output_dir=args.output_dir)


def results_names(args: argparse.Namespace) -> dict[str, str]:
    """The results file each suite of parsed eval_hub.py `args` writes, e.g. {"algorithmic":
    "results_algorithmic@limit=10.json"} ("all" adds results_all), without loading anything (the
    ladder's "already evaluated?" check). Bad options raise the same one-line errors as the CLI."""
    settings = eval_settings(args)
    names = resolve_suite(args.suite)
    if args.suite == "all":
        names = [*names, "all"]
    return {name: results_name(name, options_tag(suite_eval_options(settings, name))) for name in names}
