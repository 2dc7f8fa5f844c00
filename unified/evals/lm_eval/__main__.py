"""`python -m unified.evals.lm_eval --model_args checkpoint=RUN/best_model.pt --tasks ...`: lm-eval's
own CLI with model `unified` registered (importing `unified.evals.lm_eval.adapter` registers it);
see that module for the options and defaults."""
from __future__ import annotations

import sys
from pathlib import Path

from lm_eval.__main__ import cli_evaluate

from unified.cli import run_cli
from unified.errors import CheckpointError, ConfigError
from unified.evals.lm_eval.adapter import default_output_path, model_args_of


def main(argv: list[str] | None = None) -> int:
    """lm-eval's CLI with model `unified` registered, `--model unified` implied and the results
    written to RUN/lm_eval/results_<date>.json unless --output_path is given."""
    args = list(sys.argv[1:] if argv is None else argv)
    flags = {a.split("=", 1)[0] for a in args}
    if args and args[0] in ("ls", "validate"):  # lm-eval's other subcommands pass through
        sys.argv = ["lm_eval", *args]
        cli_evaluate()
        return 0
    if args and args[0] == "run":
        args = args[1:]
    if "--model" not in flags:
        args = ["--model", "unified", *args]
    model = next((v for a, v in zip(args, args[1:] + [""]) if a == "--model"),
                 next((a.split("=", 1)[1] for a in args if a.startswith("--model=")), ""))
    if model == "unified":  # fail before lm-eval loads its tasks
        ckpt = model_args_of(args).get("checkpoint")
        if not ckpt:
            raise ConfigError("--model_args needs checkpoint=RUN/best_model.pt (a unified checkpoint)")
        if not Path(str(ckpt)).is_file():
            raise CheckpointError(f"checkpoint {str(ckpt)!r} does not exist")
    if "--output_path" not in flags and "-o" not in flags and default_output_path(args):
        args += ["--output_path", default_output_path(args)]
    sys.argv = ["lm_eval", "run", *args]
    cli_evaluate()
    return 0


if __name__ == "__main__":
    run_cli(main)
