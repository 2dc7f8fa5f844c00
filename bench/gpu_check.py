"""The GPU check: one command that checks and measures, on one CUDA GPU, everything the CPU test
suite cannot (issue 18), and writes bench/RESULTS_gpu.md / .json.

    python bench/gpu_check.py                           # CUDA; about 5-8 minutes
    python bench/gpu_check.py --device cpu --tiny       # the same code on CPU in about a minute

Sections (each records its result or its error; one failing section never stops the others):
  env         device, torch / triton / mamba_ssm / causal_conv1d versions, kernel backends
  peak        the matmul peak measured here (bench/measure.matmul_peak; bf16 is the MFU reference)
  properties  every variant, fp32 and bf16 autocast: causality and cache equivalence
              (unified/models/properties.py), then 20 bf16 training steps with finite losses
  fused       ssm and ssm_mem: fused kernels vs the PyTorch path (prefill + decoding logits under
              bf16 autocast, within bf16 tolerance) and the speed of each path
  speed       per variant at --model_size: training tokens/s and MFU vs the bf16 peak, cached decoding
              tokens/s at batch 1 and 32; --compile on vs off for --compile_variants
  torchrun    `torchrun --standalone --nproc_per_node=1 train.py ...` for a few steps, and a
              DDP probe on the NCCL backend (gloo on CPU) under the same launcher
Exit status 0 when every check passed, 1 when one failed (the report says which), 2 on bad
arguments. `--tiny` uses the unit tests' tiny models (tests/helpers.py); on CPU the fused section
runs mamba-ssm's real wrappers with emulated launches when `--emulate_kernels` is given (needs
`bash .ci/fetch_kernel_sources.sh`; forward only), and torch.compile uses the "eager" backend
(inductor's C++ build takes about a minute on CPU). Sections past --budget_s are skipped.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.metadata
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable
from unittest import mock

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

import measure  # noqa: E402
from gpu_report import markdown, verdicts  # noqa: E402
from unified.cli import ArgumentParser, run_cli  # noqa: E402
from unified.errors import ConfigError  # noqa: E402
from unified.models.properties import cache_diffs, causality_diffs  # noqa: E402
from unified.models.ssm import kernel_backends  # noqa: E402
from unified.ops import ssd_scan  # noqa: E402
from unified.train.checkpoint import ensure_writable_dir  # noqa: E402

from gpu_report import FUSED_TOL, TOL  # noqa: E402  (the tolerances, printed in the report)

FUSED_VARIANTS = ("ssm", "ssm_mem")
# Seconds a speed row needs before the deadline to start: the frozen reservoir's exact spectral
# radius and eigendecomposition (float64, CPU) take minutes at nano.
ROW_RESERVE_S = {"reservoir": 200.0}


def settings(args) -> dict[str, Any]:
    """Sizes and counts of every section: a real GPU run, or the tiny CPU run."""
    if args.tiny:
        return dict(props_len=40, cuts=(0, 7, 8, 15, 31, 38), fused_size=None, fused_len=24, speed_size=None,
                    batch=2, seq_len=32, warmup=1, steps=2, prompt=8, new=4, peak_sizes=(256,), peak_reps=2,
                    compile_backend="eager", train_args=["--model_size", "pico", "--set", "d_state=8", "--set", "headdim=8"])
    return dict(props_len=160, cuts=(0, 31, 63, 64, 100, 158), props_size="pico", fused_size="micro", fused_len=256,
                speed_size=args.size, batch=args.batch, seq_len=args.seq_len, warmup=2, steps=5, prompt=64, new=32,
                peak_sizes=(4096, 8192), peak_reps=5, compile_backend="inductor",
                train_args=["--model_size", "micro", "--dtype", "bf16"])


def make(variant: str, args, size: str | None, seq_len: int, device: str) -> torch.nn.Module:
    """A fresh model: the unit tests' tiny one with --tiny, else `size` (via bench/measure.build)."""
    if args.tiny:
        sys.path.insert(0, str(ROOT / "tests"))
        from helpers import tiny_model  # the property tests' tiny models

        return tiny_model(variant).to(device)
    return measure.build(variant, size, seq_len).to(device)


def _ids(model, batch: int, T: int, device: str, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.cfg.vocab_size, (batch, T), generator=g).to(device)


@contextlib.contextmanager
def kernels(k: ssd_scan.FusedKernels):
    """Run the block with these fused kernels (NO_KERNELS = the PyTorch path) for every device."""
    with mock.patch.object(ssd_scan, "fused_kernels", lambda device: k):
        yield


# ---- sections --------------------------------------------------------------------------------------
def env_section(args, device: str) -> dict[str, Any]:
    """What ran: device, versions, the kernel backends a model on this device gets."""
    def version(pkg: str) -> str | None:
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return None
    out = {"device": device, "torch": torch.__version__, "cuda": torch.version.cuda,
           "packages": {p: version(p) for p in ("triton", "mamba-ssm", "causal-conv1d", "einops")},
           "kernels": kernel_backends(device), "tiny": args.tiny, "emulated_kernels": args.emulate_kernels}
    if device.startswith("cuda"):
        p = torch.cuda.get_device_properties(device)
        out["gpu"] = {"name": p.name, "capability": f"{p.major}.{p.minor}", "memory_gib": round(p.total_memory / 2**30, 1)}
    return out


def properties_section(args, cfg, device: str, variants: list[str]) -> dict[str, Any]:
    """Causality and cache equivalence in fp32 and bf16 autocast, and 20 bf16 training steps."""
    out: dict[str, Any] = {}
    torch.set_float32_matmul_precision("highest")  # fp32 means fp32 (no TF32) for these checks
    for variant in variants:
        res: dict[str, Any] = {}
        try:
            torch.manual_seed(0)
            model = make(variant, args, cfg.get("props_size"), cfg["props_len"], device).eval()
            ids = _ids(model, 2, cfg["props_len"], device)
            for dtype in ("fp32", "bf16"):
                ctx = lambda: measure.autocast(dtype, device)  # noqa: E731
                c, k = causality_diffs(model, ids, cfg["cuts"], context=ctx), cache_diffs(model, ids, context=ctx)
                past, cache = max(c["past"].values()) / c["scale"], k["max"] / k["scale"]
                ok = (past <= TOL[dtype]["causal"] and c["rows"] / c["scale"] <= TOL[dtype]["causal"]
                      and min(c["future"].values()) > 0 and cache <= TOL[dtype]["cache"])
                res[dtype] = {"ok": ok, "causal_rel": past, "rows_rel": c["rows"] / c["scale"], "cache_rel": cache}
            res["train_bf16"] = train_steps(model, ids, 20, device)
            res["ok"] = res["fp32"]["ok"] and res["bf16"]["ok"] and res["train_bf16"]["ok"]
        except Exception as exc:  # noqa: BLE001  (a crash is a finding: record it, check the rest)
            res = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
        out[variant] = res
    return out


def train_steps(model, ids: torch.Tensor, n: int, device: str) -> dict[str, Any]:
    """n training steps under bf16 autocast on a copy of the model (the Trainer's optimizer)."""
    m = copy.deepcopy(model).train()
    opt = measure.make_optimizer(m)
    losses = []
    for _ in range(n):
        with measure.autocast("bf16", device):
            loss = m(ids[:, :-1], targets=ids[:, 1:]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return {"ok": all(math.isfinite(v) for v in losses), "first": losses[0], "last": losses[-1], "steps": n}


def fused_section(args, cfg, device: str, k: ssd_scan.FusedKernels, reason: str | None) -> dict[str, Any]:
    """Fused kernels vs the PyTorch path for ssm / ssm_mem: logits and speed of each path."""
    if k.chunk_scan is None:
        return {"ok": None if not device.startswith("cuda") else False, "skipped": reason}
    out: dict[str, Any] = {}
    T, B = cfg["fused_len"], 4
    for variant in FUSED_VARIANTS:
        try:
            model = make(variant, args, cfg["fused_size"], T, device).eval()
            ids = _ids(model, B, T + 16, device, seed=3)
            paths: dict[str, dict[str, Any]] = {}
            for name, kk in (("torch", ssd_scan.NO_KERNELS), ("fused", k)):  # logits first: training changes weights
                with kernels(kk):
                    paths[name] = _decode_logits(model, ids, T, device)
                    paths[name]["backends"] = kernel_backends(model)
            for name, kk in (("torch", ssd_scan.NO_KERNELS), ("fused", k)):
                with kernels(kk):
                    paths[name]["prefill_tok_s"], paths[name]["decode_b1_tok_s"] = measure.prefill_and_decode(
                        model, 1, cfg["prompt"], cfg["new"], device)
                    if not args.emulate_kernels:  # the emulation has no backward kernels
                        tr = measure.train_step_times(model, B, T, "bf16", cfg["warmup"], cfg["steps"], device=device)
                        paths[name]["train_tok_s"] = B * T / tr["median_step_s"]
            ref, got = paths["torch"].pop("logits"), paths["fused"].pop("logits")
            rel = {part: ((got[part] - ref[part]).abs().max() / ref[part].abs().max()).item() for part in ref}
            out[variant] = {"ok": max(rel.values()) <= FUSED_TOL, "rel_diff": rel, "paths": paths}
        except Exception as exc:  # noqa: BLE001
            out[variant] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    return out


@torch.no_grad()
def _decode_logits(model, ids: torch.Tensor, T: int, device: str) -> dict[str, Any]:
    """Under bf16 autocast: prefill logits of ids[:, :T], then 16 cached steps fed ids[:, T:]."""
    with measure.autocast("bf16", device):
        out = model(ids[:, :T], cache=model.init_cache(ids.shape[0]))
        prefill, steps = out.logits.float(), []
        for t in range(T, ids.shape[1]):
            out = model(ids[:, t:t + 1], cache=out.cache)
            steps.append(out.logits.float())
    return {"logits": {"prefill": prefill, "decode": torch.cat(steps, 1)}}


def speed_section(args, cfg, device: str, variants: list[str], peak: float | None, deadline: float) -> dict[str, Any]:
    """Training tokens/s + MFU (bf16) and decoding tokens/s per variant; compile on vs off."""
    out: dict[str, Any] = {}
    B, T = cfg["batch"], cfg["seq_len"]
    for variant in sorted(variants, key=lambda v: v == "reservoir"):  # reservoir's build is slow: last
        if time.time() + (0.0 if args.tiny else ROW_RESERVE_S.get(variant, 0.0)) > deadline:
            out[variant] = {"ok": None, "skipped": "time budget (--budget_s; run it alone with a larger one)"}
            continue
        try:
            t0 = time.time()
            model = make(variant, args, cfg["speed_size"], T, device)
            res: dict[str, Any] = {"build_s": time.time() - t0, "params": model.num_params(),
                                   "kernels": kernel_backends(model)}
            tr = measure.train_step_times(model, B, T, "bf16", cfg["warmup"], cfg["steps"], device=device)
            res["train_tok_s"] = B * T / tr["median_step_s"]
            res["mfu_bf16"] = model.flops_per_token(T) * res["train_tok_s"] / (peak * 1e9) if peak else None
            _, res["decode_b1_tok_s"] = measure.prefill_and_decode(model, 1, cfg["prompt"], cfg["new"], device)
            _, res["decode_b32_tok_s"] = measure.prefill_and_decode(model, 32, cfg["prompt"], cfg["new"], device)
            if variant in args.compile_variants.split(","):
                compiled = torch.compile(model, backend=cfg["compile_backend"])
                tc = measure.train_step_times(compiled, B, T, "bf16", cfg["warmup"], cfg["steps"], device=device)
                res["compiled"] = {"backend": cfg["compile_backend"], "train_tok_s": B * T / tc["median_step_s"],
                                   "compile_and_warmup_s": tc["warmup_s"]}
            res["ok"] = math.isfinite(res["train_tok_s"])
        except Exception as exc:  # noqa: BLE001
            res = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
        out[variant] = res
    return out


def torchrun_section(args, cfg, device: str) -> dict[str, Any]:
    """train.py under torchrun (1 process) for a few steps, and the DDP probe on NCCL / gloo."""
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"]
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cmd = run + [str(ROOT / "train.py"), "--variant", "ssm", "--max_steps", "3", "--batch_size", "2",
                     "--seq_len", "32", "--lang_dataset", "none", "--alg_tasks", "copy", "--eval_samples", "2",
                     "--device", device, "--output_dir", str(Path(tmp) / "run")] + cfg["train_args"]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
        summary = Path(tmp) / "run" / "summary.json"
        s = json.loads(summary.read_text()) if summary.is_file() else {}
        out["train"] = {"ok": p.returncode == 0 and s.get("steps") == 3, "returncode": p.returncode,
                        "summary": {k: s.get(k) for k in ("steps", "world_size", "device", "final_loss", "kernels")},
                        "stderr_tail": p.stderr[-600:] if p.returncode else ""}
        p = subprocess.run(run + [str(HERE / "gpu_check.py"), "--ddp_probe", "--device", device],
                           capture_output=True, text=True, timeout=300, cwd=ROOT)
        lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
        probe = json.loads(lines[-1]) if lines else {}
        out["ddp_probe"] = {"ok": p.returncode == 0 and probe.get("ok") is True, **probe,
                            "stderr_tail": p.stderr[-600:] if p.returncode else ""}
    return out


def ddp_probe(device: str) -> int:
    """Run by torchrun: join the process group (NCCL on CUDA, gloo on CPU), wrap a small model in
    DDP, take 3 steps and all_reduce a value; print one JSON line."""
    import torch.distributed as dist
    from unified.train.distributed import init_from_env
    from unified.models import create_model

    world, dev = init_from_env(device)
    cuda = dev.startswith("cuda")
    if cuda:
        torch.cuda.set_device(world.local_rank)
        dev = f"cuda:{world.local_rank}"
    if not dist.is_initialized():  # train.py joins no group at world size 1; the probe must
        dist.init_process_group("nccl" if cuda else "gloo")
    model = create_model("baseline", "pico").to(dev)
    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[world.local_rank] if cuda else None)
    opt = measure.make_optimizer(model)
    ids = torch.randint(0, model.cfg.vocab_size, (2, 33), generator=torch.Generator().manual_seed(0)).to(dev)
    losses = []
    for _ in range(3):
        loss = ddp(ids[:, :-1], targets=ids[:, 1:]).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    x = torch.ones(1, device=dev)
    dist.all_reduce(x)
    res = {"ok": x.item() == dist.get_world_size() and all(math.isfinite(v) for v in losses),
           "backend": dist.get_backend(), "world_size": dist.get_world_size(), "losses": losses}
    dist.destroy_process_group()
    print(json.dumps(res))
    return 0


def main(argv: list[str] | None = None) -> int:
    from unified.models import variant_names

    ap = ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda", help="cuda (the check) or cpu (with --tiny: a dry run of the same code)")
    ap.add_argument("--tiny", action="store_true", help="the unit tests' tiny models and counts (seconds, not minutes)")
    ap.add_argument("--emulate_kernels", action="store_true",
                    help="CPU only: the fused section runs mamba-ssm's real wrappers with emulated launches")
    ap.add_argument("--variants", default="all", help="comma-separated variants, or all")
    ap.add_argument("--model_size", dest="size", default="nano", help="model size of the speed section")
    ap.add_argument("--size", dest="size", default="nano", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=16, help="training batch of the speed section")
    ap.add_argument("--seq_len", type=int, default=512, help="training length of the speed section")
    ap.add_argument("--compile_variants", default="baseline,ssm", help="variants measured with torch.compile too")
    ap.add_argument("--budget_s", type=float, default=420.0, help="speed rows starting after this are skipped")
    ap.add_argument("--out", default=None, help="markdown report (JSON beside it); default bench/RESULTS_gpu.md, "
                                                "with --tiny bench/RESULTS_gpu_tiny.md")
    ap.add_argument("--ddp_probe", action="store_true", help="internal: the DDP probe torchrun starts")
    args = ap.parse_args(argv)
    if args.ddp_probe:
        return ddp_probe(args.device)
    t_start = time.time()
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda but no CUDA device is visible; use --device cpu --tiny for a dry run")
    if device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"--device must be cuda, cuda:N or cpu, got {device!r}")
    if device == "cpu" and not args.tiny:
        raise ConfigError("--device cpu needs --tiny (the full check is sized for a GPU)")
    if args.emulate_kernels and device != "cpu":
        raise ConfigError("--emulate_kernels is for CPU dry runs; on CUDA the real kernels run")
    names = variant_names()
    variants = names if args.variants == "all" else [x.strip() for x in args.variants.split(",") if x.strip()]
    bad = [x for x in variants if x not in names]
    if bad:
        raise ConfigError(f"unknown variant(s) {', '.join(bad)}; accepted: {', '.join(names)} or all")
    out = Path(args.out or HERE / ("RESULTS_gpu_tiny.md" if args.tiny else "RESULTS_gpu.md"))
    ensure_writable_dir(out.parent, "--out folder")
    cfg = settings(args)
    k, reason = ssd_scan.fused_kernels(device), "no fused kernels on CPU (use --emulate_kernels)"
    if args.emulate_kernels:
        sys.path.insert(0, str(ROOT / "tests"))
        import kernel_emulation as ke

        missing = ke.missing_sources()
        if missing:
            raise ConfigError(missing)
        w = ke.load()
        k = ssd_scan.FusedKernels(w.chunk_scan, w.state_update, w.conv, w.conv_update)
        torch.cuda.device = lambda index: contextlib.nullcontext()  # the wrappers enter it around launches
    elif device.startswith("cuda") and k.chunk_scan is None:
        reason = "mamba_ssm does not import here: install it (docs/gpu.md)"
    results: dict[str, Any] = {"env": env_section(args, device), "settings": {**cfg, "cuts": list(cfg["cuts"])}}
    sections: list[tuple[str, Callable[[], Any]]] = [
        ("peak", lambda: measure.matmul_peak(cfg["peak_sizes"], cfg["peak_reps"], device)),
        ("properties", lambda: properties_section(args, cfg, device, variants)),
        ("fused", lambda: fused_section(args, cfg, device, k, reason)),
        ("speed", lambda: speed_section(args, cfg, device, variants, results.get("peak", {}).get("bf16_gflops"),
                                        t_start + args.budget_s)),
        ("torchrun", lambda: torchrun_section(args, cfg, device)),
    ]
    for name, fn in sections:
        t0 = time.time()
        try:
            results[name] = fn()
        except Exception as exc:  # noqa: BLE001  (record, keep going: the report must be written)
            results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
        print(f"{name}: {time.time() - t0:.1f} s", file=sys.stderr)
    results["wall_s"] = time.time() - t_start
    results["verdicts"] = verdicts(results)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    out.write_text(markdown(results))
    failed = [n for n, x in results["verdicts"].items() if x is False]
    print(f"wrote {out} and {out.with_suffix('.json').name}: {len(failed)} failed" + (f" ({', '.join(failed)})" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    run_cli(main)
