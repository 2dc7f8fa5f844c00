"""Every comparison figure at 1, 2 and 10 groups (and one or two task panels): drawn, of a sane
size, with no text (titles, labels, legends) outside the saved image and no panel over another."""
from __future__ import annotations

from pathlib import Path

import matplotlib
import pytest
from matplotlib.figure import Figure
from PIL import Image

import test_compare
from test_compare import fake_run
from unified.compare.comparison import compare
from unified.compare.figures import FIGURES
from unified.compare.report import write_report
from unified.models import variant_names

MAX_PIXELS = 8000  # per side: a figure that grows without bound with the group count is a bug too


def _overflow(fig: Figure, bbox_inches=None) -> list[str]:
    """Sides on which drawn artists (titles, tick labels, legends ...) leave the canvas that
    savefig writes (figure.get_tightbbox: the box bbox_inches="tight" would crop to)."""
    if bbox_inches == "tight":  # the saved image is grown to hold every artist
        return []
    fig.canvas.draw()
    tight, page = fig.get_tightbbox(fig.canvas.get_renderer()), fig.bbox_inches
    eps = 0.02  # inches
    sides = {"left": tight.x0 < page.x0 - eps, "bottom": tight.y0 < page.y0 - eps,
             "right": tight.x1 > page.x1 + eps, "top": tight.y1 > page.y1 + eps}
    return [side for side, out in sides.items() if out]


def _overlapping_panels(fig: Figure) -> list[tuple[int, int]]:
    """Pairs of drawn panels whose boxes, labels and titles included, overlap each other."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [ax.get_tightbbox(renderer) for ax in fig.axes if ax.get_visible() and ax.axison]
    shrink = 2  # pixels: touching is not overlapping
    return [(i, j) for i in range(len(boxes)) for j in range(i + 1, len(boxes))
            if min(boxes[i].x1, boxes[j].x1) - max(boxes[i].x0, boxes[j].x0) > shrink
            and min(boxes[i].y1, boxes[j].y1) - max(boxes[i].y0, boxes[j].y0) > shrink]


@pytest.mark.parametrize("n_groups,tasks", [(1, ("parity",)), (2, ("parity",)), (2, ("parity", "copy")),
                                            (10, ("parity", "copy"))])
def test_every_figure_is_drawn_whole(tmp_path: Path, monkeypatch, n_groups: int, tasks: tuple[str, ...]) -> None:
    monkeypatch.setattr(test_compare, "TASKS", tasks)
    for i, variant in enumerate(variant_names()[:n_groups]):
        for seed in (0, 1):
            fake_run(tmp_path, variant, seed, iid=0.2 + 0.05 * i + 0.01 * seed, ood=0.1 + 0.02 * i, bpb=2.0 + i / 10)
    clipped: dict[str, list[str]] = {}
    overlaps: dict[str, list[tuple[int, int]]] = {}
    real_savefig = Figure.savefig

    def checking_savefig(fig, fname, *args, **kwargs):
        clipped[Path(str(fname)).name] = _overflow(fig, kwargs.get("bbox_inches"))
        overlaps[Path(str(fname)).name] = _overlapping_panels(fig)
        return real_savefig(fig, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", checking_savefig)
    comp = compare([tmp_path])
    assert len(comp.groups) == n_groups
    out = tmp_path / "comparison"
    written = write_report(comp, out)
    for name, _, _ in FIGURES:
        assert name in written, f"{name} not drawn at {n_groups} groups"
        assert clipped.get(name) == [], f"{name} at {n_groups} groups, {len(tasks)} tasks: cut on {clipped.get(name)}"
        assert overlaps.get(name) == [], f"{name} at {n_groups} groups: panels {overlaps.get(name)} overlap"
        with Image.open(out / name) as im:
            assert 200 <= min(im.size) and max(im.size) <= MAX_PIXELS, (name, im.size)
    matplotlib.pyplot.close("all")
