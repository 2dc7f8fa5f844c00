"""unified: an ablation ladder and evaluation harness for small language-model architectures.

The package is layered like the pipeline; each layer imports only itself and the layers before it
(tests/test_layering.py checks it), lowest first:

    core -> ops -> models -> text -> data -> train -> evals -> compare -> ladder

    core      errors.py, progress.py, devices.py: used by every layer
    ops       sequence-mixing kernels, each with a naive reference (ssd, signed, linear, tanh scans)
    models    LanguageModel base + registry, config, layers, decoding, one module per family
    text      tokenizers, documents, corpora, the token cache, the procedural story grammar
    data      tasks, held-out splits, curricula, batches, scoring
    train     TrainConfig, the trainer, validation, checkpoints, resume, run logs
    evals     eval_hub's suites and results files, text sampling, the lm-eval adapter
    compare   reading runs, statistics, verdicts, tables, figures, the report
    ladder    presets, their reproduction reports and learning-rate tuning

`unified/cli.py` is the CLIs' helper module: only the CLI scripts (train.py, eval_hub.py,
compare.py, ladder.py, sample.py, bench/*.py) and the packages' `__main__` modules import it.
"""

__version__ = "0.1.0"
