"""bench/gpu_check.py: its CPU dry run (`--device cpu --tiny`) runs every section of the GPU check
through the same code (gloo instead of NCCL; the fused section through mamba-ssm's real wrappers
with emulated launches when the kernel sources are fetched), and its verdicts and bad inputs."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import kernel_emulation as ke
from helpers import ROOT

sys.path.insert(0, str(ROOT / "bench"))
from gpu_report import markdown, verdicts  # noqa: E402

from unified.models import variant_names  # noqa: E402


def _run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def test_cpu_tiny_dry_run_passes(tmp_path: Path) -> None:
    """The whole check on CPU: exit 0, every variant's properties and 20 bf16 steps pass, every
    variant has speed numbers, train.py ran under torchrun (kernel backends in its summary) and
    the DDP probe took its steps on gloo; the report and its JSON are written where asked."""
    emulate = ke.missing_sources() is None
    out = tmp_path / "gpu.md"
    p = _run("--device", "cpu", "--tiny", "--out", str(out), *(["--emulate_kernels"] if emulate else []))
    assert p.returncode == 0, p.stdout + p.stderr[-3000:]
    res = json.loads(out.with_suffix(".json").read_text())
    assert "0 failed" in p.stdout and out.read_text().startswith("# GPU check")
    names = variant_names()
    assert set(res["properties"]) == set(names) and set(res["speed"]) == set(names)
    for name in names:
        props = res["properties"][name]
        assert props["ok"] and props["train_bf16"]["steps"] == 20, (name, props)
        assert props["fp32"]["causal_rel"] == 0.0, name
        assert res["speed"][name]["train_tok_s"] > 0 and res["speed"][name]["decode_b32_tok_s"] > 0
    assert "compiled" in res["speed"]["baseline"]
    tr = res["torchrun"]
    assert tr["train"]["ok"] and tr["train"]["summary"]["kernels"] == {"ssm_scan": "torch-chunked", "conv1d": "torch"}
    assert tr["ddp_probe"]["backend"] == "gloo" and len(tr["ddp_probe"]["losses"]) == 3
    if emulate:
        for variant in ("ssm", "ssm_mem"):
            fused = res["fused"][variant]
            assert fused["ok"] and fused["paths"]["fused"]["backends"]["ssm_scan"] == "mamba_ssm"
            assert 0 < fused["rel_diff"]["decode"] <= 0.05
    else:
        assert res["fused"]["ok"] is None and "skipped" in res["fused"]
    assert all(v is not False for v in res["verdicts"].values())


def test_verdicts_and_report_name_a_failure() -> None:
    """A failed or crashed check is counted as failed and named in the report; skipped is neither."""
    results = {"env": {"device": "cuda", "torch": "x", "cuda": "12", "packages": {}, "kernels": {}, "tiny": False,
                       "emulated_kernels": False},
               "wall_s": 1.0, "peak": {"bf16_gflops": 1.0},
               "properties": {"ssm": {"ok": False, "error": "RuntimeError: boom"}},
               "fused": {"ok": False, "skipped": "mamba_ssm does not import here"},
               "speed": {"rsm": {"ok": None, "skipped": "time budget"}},
               "torchrun": {"train": {"ok": True, "summary": {}}, "ddp_probe": {"ok": True}}}
    v = verdicts(results)
    assert v == {"properties/ssm": False, "fused": False, "speed/rsm": None, "torchrun/train": True,
                 "torchrun/ddp_probe": True}
    md = markdown(results)
    assert "2 failed" in md and "properties/ssm" in md and "RuntimeError: boom" in md and "time budget" in md


@pytest.mark.parametrize("args, message", [
    (["--device", "cpu"], "needs --tiny"),
    (["--device", "cpu", "--tiny", "--variants", "nope"], "unknown variant"),
    (["--device", "tpu", "--tiny"], "--device must be"),
])
def test_bad_arguments_are_one_line_errors(args: list[str], message: str, tmp_path: Path) -> None:
    """Bad arguments: exit 2, one `error:` line, nothing written."""
    p = _run(*args, "--out", str(tmp_path / "r.md"), timeout=120)
    assert p.returncode == 2 and p.stderr.startswith("error:") and message in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and not (tmp_path / "r.md").exists()
