"""EleutherAI lm-evaluation-harness integration: `adapter.py` (every variant as lm-eval model
`unified`; needs the optional `lm-eval` package), `results.py` (reads the results files it writes,
for compare.py; no lm-eval needed) and `__main__.py` (`python -m unified.evals.lm_eval ...`).
This file imports neither, so reading results never imports lm-eval."""
