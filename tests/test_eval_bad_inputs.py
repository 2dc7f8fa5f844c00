"""eval_hub.py's bad inputs (issues 14 and 15): each exits 2 with one stderr line naming the
problem and what is accepted, no traceback, and leaves every earlier file (the as-trained
results above all) byte-for-byte and mtime-for-mtime as it was. Evaluation-time options that
change the model or the grid write results_<suite>@<tag>.json and never replace the as-trained file."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from cli_forkserver import ForkServer
from helpers import tiny_model
from unified.train.checkpoint import save_checkpoint

EARLIER = '{"meta": {"grid_version": "2"}, "algorithmic": {"exact_match": 0.25}}\n'


@pytest.fixture(scope="module")
def earlier(tmp_path_factory) -> Path:
    """Checkpoints of a shared_loop (n_loops overridable) and an act model (K), each folder with
    an as-trained results_algorithmic.json written earlier."""
    root = tmp_path_factory.mktemp("earlier")
    for variant in ("shared_loop", "act"):
        model = tiny_model(variant, vocab_size=259, max_seq_len=128)
        (root / variant).mkdir()
        save_checkpoint(root / variant / "best_model.pt", model, "byte",
                        train_config={"variant": variant, "seq_len": 64}, step=4)
        (root / variant / "results_algorithmic.json").write_text(EARLIER)
    return root


def _snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


C = ["--checkpoint", "shared_loop/best_model.pt"]
CASES = [
    # id, args, text the one stderr line must contain
    ("batch-size-0", [*C, "--batch_size", "0"], "--batch_size must be >= 1, got 0"),
    ("batch-size-negative", [*C, "--batch_size", "-1"], "--batch_size must be >= 1, got -1"),
    ("limit-0", [*C, "--limit", "0"], "--limit must be >= 1, got 0"),
    ("negative-seed", [*C, "--seed", "-3"], "--seed must be >= 0"),
    ("set-zero-loops", [*C, "--set", "n_loops=0"], "--set n_loops=0: must be an integer >= 1"),
    ("set-not-a-number", [*C, "--set", "n_loops=abc"], "--set n_loops='abc': must be an integer >= 1"),
    ("set-fraction", [*C, "--set", "n_loops=1.5"], "must be an integer >= 1"),
    ("set-unknown-key", [*C, "--set", "nope=3"], "--set nope: no variant can change 'nope' after training"),
    ("set-key-of-another-variant", [*C, "--set", "T=3"],
     "option 'T' cannot be changed after training for variant 'shared_loop'; changeable: n_loops"),
    ("set-not-key-value", [*C, "--set", "n_loops"], "is not KEY=VALUE"),
    ("override-alias-zero-loops", [*C, "--override", "n_loops=0"], "--set n_loops=0: must be an integer >= 1"),
    ("K-on-a-variant-without-K", [*C, "--K", "4"], "option 'K' cannot be changed after training"),
    ("K-zero", ["--checkpoint", "act/best_model.pt", "--K", "0"], "--set K=0: must be an integer >= 1"),
    ("K-not-an-integer", ["--checkpoint", "act/best_model.pt", "--K", "x"], "argument --K: invalid int value"),
    ("device-unknown", [*C, "--device", "tpu9"], "--device 'tpu9' is not a device; accepted: cpu, cuda, cuda:N, mps"),
    ("device-cuda-without-cuda", [*C, "--device", "cuda"], "CUDA is not available on this machine"),
    ("ood-unknown-task", [*C, "--ood", "nope=3"], "unknown task 'nope'"),
    ("ood-task-not-evaluated", [*C, "--tasks", "copy", "--ood", "parity=16"],
     "--ood names task 'parity', which is not evaluated"),
    ("ood-inside-train-range", [*C, "--ood", "parity=4,16"], "OOD values must be integers above the train range"),
    ("ood-not-integers", [*C, "--ood", "parity=a,b"], "values must be integers"),
    ("ood-no-values", [*C, "--ood", "parity"], "is not TASK=V1,V2"),
    ("needle-lengths-zero", [*C, "--suite", "needle", "--needle_lengths", "0"], "--needle_lengths must be positive"),
    ("needle-factors-negative", [*C, "--suite", "needle", "--needle_factors", "-1"], "--needle_factors must be positive"),
]


@pytest.mark.parametrize("args,needle", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_eval_input_exits_2_with_one_line(cli: ForkServer, earlier: Path, tmp_path: Path, args: list[str],
                                              needle: str) -> None:
    import torch

    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    work = tmp_path / "w"
    shutil.copytree(earlier, work)
    before = _snapshot(work)
    r = cli.run("eval_hub.py", *args, cwd=work)
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-1500:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], r.stderr[-1500:]
    assert _snapshot(work) == before  # nothing written, nothing changed


def test_eval_options_never_replace_the_as_trained_results(cli: ForkServer, earlier: Path, tmp_path: Path) -> None:
    work = tmp_path / "w"
    shutil.copytree(earlier, work)
    before = _snapshot(work)
    r = cli.run("eval_hub.py", *C, "--set", "n_loops=3", "--limit", "2", "--tasks", "parity,copy",
                "--ood", "parity=16,64", cwd=work)
    assert r.returncode == 0, r.stderr[-2000:]
    assert _snapshot(work)["shared_loop/results_algorithmic.json"] == before["shared_loop/results_algorithmic.json"]
    path = work / "shared_loop" / "results_algorithmic@limit=2,n_loops=3,ood=parity-16-64,tasks=copy-parity.json"
    res = json.loads(path.read_text())
    assert res["meta"]["eval_options"] == {"n_loops": 3, "limit": 2, "tasks": ["copy", "parity"],
                                           "ood": {"parity": [16, 64]}}
    assert res["meta"]["model_options"]["n_loops"] == 3
    assert set(res["algorithmic"]["tasks"]["parity"]["ood"]) == {"16", "64"}
    assert res["algorithmic"]["ood_grid"]["parity"] == [16, 64]
    # the same options again (in another order) name the same file; only leftover temp files would differ
    r = cli.run("eval_hub.py", *C, "--tasks", "copy", "parity", "--limit", "2", "--ood", "parity=64,16",
                "--override", "n_loops=3", cwd=work)
    assert r.returncode == 0, r.stderr[-2000:]
    names = sorted(p.name for p in (work / "shared_loop").iterdir())
    assert names == ["best_model.pt", "results_algorithmic.json", path.name]
