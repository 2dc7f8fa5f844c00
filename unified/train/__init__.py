"""The train layer: one training run from a `TrainConfig` to its run folder.

    config.py       `TrainConfig` (sections, each option declared once), the learning-rate schedule
    flags.py        train.py's flags derived from it, `--config FILE`, `config_from_args`
    resolve.py      `resolve` (checks and defaults before any I/O), the run folder, device settings
    trainer.py      the loop (`Trainer`, `train`)
    validation.py   the validation / checkpoint steps and the held-out language loss
    checkpoint.py   atomic writes, checkpoints and their load checks, writable-folder check
    resume.py       what --resume restores and which options may change
    distributed.py  torchrun / DDP helpers       runlock.py   one writer per run folder
    runlog.py       metrics.jsonl                tracking.py  TensorBoard / W&B mirrors
    plots.py        loss.png, accuracy.png, curriculum.png

It builds on `unified.models`, `unified.ops`, `unified.text` and `unified.data`, and never imports
`unified.evals` or `unified.compare`.
"""
