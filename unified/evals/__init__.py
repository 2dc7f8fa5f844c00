"""The evals layer: what eval_hub.py, sample.py and lm-eval run on a finished checkpoint.

    hub.py          loading a checkpoint for evaluation, the suite registry, running suites
    algorithmic.py  exact match per task on the IID / OOD-length grid
    needle.py       needle-in-a-haystack retrieval over lengths x depths
    perplexity.py   token / byte / word perplexity of held-out text
    results.py      the results_<suite>[@tag].json files (docs/design.md#contract-4)
    sample_text.py  text sampling with stop strings (sample.py, lm-eval's generate_until, reports)
    lm_eval/        the lm-evaluation-harness adapter and its results reader

Scoring shared with the trainer lives below, in `unified.data.scoring`; this layer builds on
models, text, data and train (checkpoints) and never imports `unified.compare`.
"""
