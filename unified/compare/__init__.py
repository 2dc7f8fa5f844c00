"""The compare layer: what compare.py and ladder.py report about a set of finished runs.

`unified.compare.comparison.compare(paths, baseline)` reads every run folder (`runs.py`: the
files of docs/design.md#contract-5 plus the results files of #contract-4, damaged files as notes), flattens
each run into named metrics (`runs.run_metrics`, the one place that knows the results keys),
groups seeds and judges each group against its baseline (`verdicts.py`, with the statistics of
`stats.py`). `report.write_report` writes the tables (`tables.py`), figures (`figures.py`) and
generated samples (`samples.py`) as comparison.md / .csv, runs.csv and report.html.

This is the top library layer below the ladder's presets (`unified.ladder`): it reads what the
train and evals layers wrote and is imported by none of them.
"""
