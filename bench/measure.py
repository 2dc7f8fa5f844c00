"""Measurements behind `bench/run.py`: the machine's matmul peak and the cases of one (row, size).

Everything here runs inside one process with an explicit `torch.set_num_threads`; `bench/run.py`
starts one process per (row, size), and `run_cases` resets the peak-RSS high-water mark between
dtypes so that each case's peak resident memory is its own.

Training step = what `unified.train.trainer.Trainer` does per optimizer step with grad_accum 1:
autocast forward with targets, backward, gradient clipping at 1.0, AdamW (two parameter groups,
betas 0.9/0.95), zero_grad. Tokens/s is batch x seq_len over the median step time after warm-up.
MFU = flops_per_token(seq_len) x tokens/s / peak, with the peak of the dtype's matmuls.
"""
from __future__ import annotations

import contextlib
import inspect
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import torch  # noqa: E402

from unified.ops.precision import FP32_LEVEL_TOL, small_matmul_precision  # noqa: E402

# Bench rows: name -> (registered variant, overrides). Every registered variant is a row under its
# own name; reservoir's two modes are separate rows (tanh is sequential, linear parallel in time).
EXTRA_ROWS: dict[str, tuple[str, dict[str, Any]]] = {"reservoir-linear": ("reservoir", {"reservoir_mode": "linear"})}
# Rows whose training runs a per-token Python loop, and the module function holding that loop.
SEQUENTIAL_LOOPS: dict[str, tuple[str, str]] = {"reservoir": ("unified.models.reservoir", "tanh_scan"),
                                                "hrnn": ("unified.models.hrnn", "hierarchical_scan")}


def row_spec(name: str) -> tuple[str, dict[str, Any]]:
    """(variant, overrides) of a bench row."""
    return EXTRA_ROWS.get(name, (name, {}))


def _status_kib(field: str) -> float | None:
    """A field of /proc/self/status in KiB (None where unavailable)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> float | None:
    """Reset this process's peak-RSS high-water mark (Linux: write 5 to /proc/self/clear_refs);
    returns the current RSS in MiB (None where that is not possible)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    rss = _status_kib("VmRSS")
    return None if rss is None else rss / 1024


def peak_rss() -> float:
    """Peak RSS in MiB: the high-water mark VmHWM (since the last `reset_peak_rss`), else
    ru_maxrss (since the process started)."""
    hwm = _status_kib("VmHWM")
    return hwm / 1024 if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---- the peak ------------------------------------------------------------------------------------
def sync(device: torch.device | str = "cpu") -> None:
    """Wait for the device's queued work (CUDA runs asynchronously), so wall times are real."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _best_gflops(fn: Callable[[], Any], flops: float, reps: int, device: torch.device | str = "cpu") -> float:
    """GFLOP/s of the fastest of `reps` timed calls of `fn` after one warm-up call."""
    fn()  # warm-up (first call sets up kernels / packs)
    sync(device)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return flops / best / 1e9


def matmul_peak(sizes: tuple[int, ...] = (1024, 1536, 2048), reps: int = 5,
                device: torch.device | str = "cpu") -> dict[str, Any]:
    """Best GFLOP/s of square matmuls per setting (float32 under "highest" and "medium", bf16),
    and each setting's relative error vs float64 (at n = sizes[0]). The float32 peak is the fastest
    float32 setting whose error stays at float32 level (<= FP32_LEVEL_TOL); bf16 is the bf16 peak."""
    before = torch.get_float32_matmul_precision()
    settings: dict[str, dict[str, Any]] = {}
    g = torch.Generator().manual_seed(0)
    try:
        for name, prec, dtype in (("fp32 highest", "highest", torch.float32), ("fp32 medium", "medium", torch.float32),
                                  ("bf16", "highest", torch.bfloat16)):
            torch.set_float32_matmul_precision(prec)
            per_size, err = {}, None
            for n in sizes:
                a = torch.randn(n, n, generator=g)
                b = torch.randn(n, n, generator=g)
                if err is None:
                    ref = a.double() @ b.double()
                    prod = a.to(device, dtype) @ b.to(device, dtype)
                    err = float((prod.double().cpu() - ref).norm() / ref.norm())
                a, b = a.to(device, dtype), b.to(device, dtype)
                per_size[n] = round(_best_gflops(lambda: a @ b, 2.0 * n ** 3, reps, device), 1)
            settings[name] = {"gflops": max(per_size.values()), "per_size": per_size, "rel_error_vs_fp64": err,
                              "fp32_level": err <= FP32_LEVEL_TOL}
    finally:
        torch.set_float32_matmul_precision(before)
    fp32_ok = {k: v for k, v in settings.items() if k.startswith("fp32") and v["fp32_level"]}
    fp32_name = max(fp32_ok, key=lambda k: fp32_ok[k]["gflops"]) if fp32_ok else "fp32 highest"
    return {"settings": settings, "fp32_setting": fp32_name, "fp32_gflops": settings[fp32_name]["gflops"],
            "bf16_gflops": settings["bf16"]["gflops"], "sizes": list(sizes), "reps": reps,
            "tolerance": FP32_LEVEL_TOL}


# ---- one case ------------------------------------------------------------------------------------
def autocast(dtype: str, device: torch.device | str = "cpu"):
    """bf16 autocast on the device (what `train.py --dtype bf16` uses), or nothing for fp32."""
    if dtype != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def build(row: str, size: str, seq_len: int):
    """A fresh model of a bench row at `size` with its context set to at least `seq_len`."""
    from unified.models.config import SCALES
    from unified.models import create_model

    variant, overrides = row_spec(row)
    return create_model(variant, size, max_seq_len=max(seq_len, SCALES[size]["max_seq_len"]), **overrides)


def make_optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
    """The Trainer's optimizer (`LanguageModel.configure_optimizer`: AdamW, its parameter groups
    and betas) at the default weight decay and a small learning rate."""
    return model.configure_optimizer(lr=1e-4, weight_decay=0.1)


def train_step_times(model, batch: int, seq_len: int, dtype: str, warmup: int, steps: int,
                     compile_model: bool = False, profile: bool = False,
                     device: torch.device | str = "cpu") -> dict[str, Any]:
    """Wall time of each training step after `warmup` steps (and, with `profile`, the top ops
    of one more step by self CPU time). `device`: where the model and the batch are."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.cfg.vocab_size, (batch, seq_len + 1), generator=g).to(device)
    x, y = ids[:, :-1], ids[:, 1:]
    opt = make_optimizer(model)
    fwd = torch.compile(model) if compile_model else model
    model.train()

    def step() -> None:
        with autocast(dtype, device):
            loss = fwd(x, targets=y).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    t_first = time.perf_counter()
    for _ in range(warmup):
        step()
    sync(device)
    warm_s = time.perf_counter() - t_first
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t0)
    out: dict[str, Any] = {"step_s": times, "median_step_s": statistics.median(times), "warmup_s": warm_s}
    if profile:
        out["profile"] = top_ops(step)
    return out


def top_ops(fn: Callable[[], None], n: int = 12) -> list[dict[str, Any]]:
    """torch.profiler: the `n` ops with the largest self CPU time in one call of `fn`."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
        fn()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    return [{"op": e.key, "self_ms": round(e.self_cpu_time_total / 1e3, 2), "calls": e.count,
             "share": round(e.self_cpu_time_total / total, 3)} for e in events[:n]]


@torch.no_grad()
def prefill_and_decode(model, batch: int, prompt_len: int, new_tokens: int,
                       device: torch.device | str = "cpu") -> tuple[float, float]:
    """(prefill tokens/s, cached decoding tokens/s) at `batch`: one forward pass over a
    `prompt_len`-token prompt with a fresh cache, then `new_tokens` greedy steps through it (under
    `small_matmul_precision`, like the harness's `generate`). `device`: where the model is."""
    model.eval()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, min(256, model.cfg.vocab_size), (batch, prompt_len), generator=g).to(device)
    model(ids[:, :8], cache=model.init_cache(batch))  # warm-up
    sync(device)
    t0 = time.perf_counter()
    out = model(ids, cache=model.init_cache(batch))
    sync(device)
    prefill = batch * prompt_len / (time.perf_counter() - t0)
    tok = out.logits[:, -1].argmax(-1, keepdim=True)
    t0 = time.perf_counter()
    with small_matmul_precision(device):  # as `unified.models.decoding.generate` does
        for _ in range(new_tokens):
            out = model(tok, cache=out.cache)
            tok = out.logits[:, -1].argmax(-1, keepdim=True)
    sync(device)
    return prefill, batch * new_tokens / (time.perf_counter() - t0)


def cache_ratio(model, prompt_len: int, new_tokens: int) -> dict[str, Any]:
    """Cached vs recomputed greedy decoding at batch 1 via `bench/decode_cache.py` (the eval
    harness's `generate` against a full forward pass per new token)."""
    try:
        from decode_cache import decode_cached, decode_uncached
    except ImportError as exc:
        return {"error": f"bench/decode_cache.py unavailable: {exc}"}
    g = torch.Generator().manual_seed(2)
    prompt = torch.randint(0, min(256, model.cfg.vocab_size), (1, prompt_len), generator=g)
    decode_cached(model, prompt[:, :16], 4)  # warm-up
    t0 = time.perf_counter()
    a = decode_cached(model, prompt, new_tokens)
    t_cached = time.perf_counter() - t0
    t0 = time.perf_counter()
    b = decode_uncached(model, prompt, new_tokens)
    t_uncached = time.perf_counter() - t0
    same = sum(p == q for p, q in zip(a[0], b[0])) / new_tokens
    return {"cached_tok_s": new_tokens / t_cached, "uncached_tok_s": new_tokens / t_uncached,
            "speedup": t_uncached / t_cached, "same_tokens": same}


def _loop_standin(name: str) -> Callable[..., Any]:
    """A per-token loop replaced by one elementwise op of the same output shapes (for timing the
    rest of the step): tanh_scan(pre, h, w, leak) and hierarchical_scan(xn, low, high, ...)."""
    if name == "tanh_scan":
        def standin(pre, h, *args):
            ys = torch.tanh(pre)
            return ys, ys[:, -1]
    else:
        def standin(xn, low, high, *args):
            hs = torch.tanh(xn[..., : high.shape[1]] + high[:, None])
            return hs, low, hs[:, -1]
    return standin


def loop_share(row: str, model, batch: int, seq_len: int, dtype: str, steps: int, full_step_s: float) -> float | None:
    """Fraction of a training step spent in the per-token loop: 1 - t(step with the loop replaced
    by an elementwise stand-in) / t(full step). None for rows without a per-token loop."""
    if row not in SEQUENTIAL_LOOPS:
        return None
    import importlib

    mod_name, fn_name = SEQUENTIAL_LOOPS[row]
    mod = importlib.import_module(mod_name)
    original = getattr(mod, fn_name)
    setattr(mod, fn_name, _loop_standin(fn_name))
    try:
        t = train_step_times(model, batch, seq_len, dtype, warmup=1, steps=steps)["median_step_s"]
    finally:
        setattr(mod, fn_name, original)
    return max(0.0, 1.0 - t / full_step_s)


def run_cases(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Every measurement of one (row, size) for each dtype in spec["dtypes"], as JSON-ready dicts.
    The model is built once (frozen reservoirs take minutes to draw at nano); the peak RSS of each
    dtype is measured on its own by resetting the process's high-water mark between them.
    Decoding, prefill, the loop share and the cache ratio are measured in the first dtype only."""
    from unified.ops.precision import set_matmul_precision

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    choice = set_matmul_precision(spec["matmul_precision"])
    row, size, T = spec["row"], spec["size"], spec["seq_len"]
    load0, t0 = os.getloadavg()[0], time.perf_counter()
    model = build(row, size, T)
    common: dict[str, Any] = {"row": row, "size": size, "threads": torch.get_num_threads(),
                              "matmul_precision": choice.setting, "build_s": time.perf_counter() - t0,
                              "params": model.num_params(), "trainable_params": model.num_params(trainable_only=True),
                              "flops_per_token": float(model.flops_per_token(T)),
                              "flops_formula": inspect.getdoc(type(model).flops_per_token) or ""}
    out = []
    for i, dtype in enumerate(spec["dtypes"]):
        rss_before = reset_peak_rss()
        res = {**common, "dtype": dtype, "load_start": load0 if i == 0 else os.getloadavg()[0],
               "rss_before_mib": rss_before}
        try:
            _measure_dtype(res, model, spec, dtype, first=i == 0)
        except Exception as exc:  # one failing dtype (e.g. a variant without bf16 autocast) keeps the rest
            res = {k: v for k, v in res.items() if k in common or k in ("dtype", "load_start")}
            res["error"] = f"{type(exc).__name__}: {exc}"[:200]
        res["peak_rss_mib"], res["peak_rss_scope"] = peak_rss(), "case" if rss_before is not None else "process"
        res["load_end"] = os.getloadavg()[0]
        out.append(res)
    return out


def _measure_dtype(res: dict[str, Any], model, spec: dict[str, Any], dtype: str, first: bool) -> None:
    """Training speed in `dtype` (and, for the first dtype, decoding, loop share, cache ratio) into `res`."""
    row, B, T = spec["row"], spec["batch"], spec["seq_len"]
    tr = train_step_times(model, B, T, dtype, spec["warmup"], spec["steps"], spec.get("compile", False),
                          spec.get("profile", False))
    res.update(tr)
    res["train_tok_s"] = B * T / tr["median_step_s"]
    if first:
        share = loop_share(row, model, B, T, dtype, max(2, spec["steps"] // 2), tr["median_step_s"])
        if share is not None:
            res["loop_share"] = share
        if spec.get("decode", True):
            res["prefill_tok_s"], _ = prefill_and_decode(model, B, T, 0)
            _, res["decode_b1_tok_s"] = prefill_and_decode(model, 1, spec["prompt_len"], spec["decode_tokens"])
            _, res["decode_b32_tok_s"] = prefill_and_decode(model, 32, spec["prompt_len"], spec["decode_tokens"])
        if spec.get("cache_ratio"):
            res["cache"] = cache_ratio(model, spec["cache_prompt"], spec["cache_new"])
