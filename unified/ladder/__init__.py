"""The ladder layer: what ladder.py adds on top of compare.

    presets.py              preset files (presets/*.toml): rows, criteria, published results
    reproduction.py         a preset's reproduction.md / .json: each criterion judged on its cells
    reproduction_figure.py  the preset's figure
    tuning.py               --lr_grid: the learning rate chosen on validation loss

The top layer of the package: it builds on compare (statistics, verdicts) and everything below.
"""
