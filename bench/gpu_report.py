"""bench/RESULTS_gpu.md from bench/gpu_check.py's results: the verdict of every check, then one
table per section (the same data as RESULTS_gpu.json)."""
from __future__ import annotations

import json
from typing import Any

# Tolerances relative to the largest |logit|: float32 (TF32 off) differs only by summation order;
# bf16 autocast rounds every matmul input to 8 bits of mantissa.
TOL = {"fp32": {"causal": 1e-5, "cache": 1e-4}, "bf16": {"causal": 1e-2, "cache": 5e-2}}
FUSED_TOL = 5e-2  # fused vs PyTorch under bf16 autocast, relative to the largest |logit|


def verdicts(results: dict[str, Any]) -> dict[str, bool | None]:
    """check name -> True (passed) / False (failed) / None (skipped), flattened from the sections."""
    out: dict[str, bool | None] = {}
    for section in ("properties", "fused", "speed", "torchrun"):
        res = results.get(section, {})
        if "ok" in res and not isinstance(res.get("ok"), dict):
            out[section] = res["ok"]
            continue
        for name, r in res.items():
            if isinstance(r, dict) and "ok" in r:
                out[f"{section}/{name}"] = r["ok"]
    if "error" in results.get("peak", {}):
        out["peak"] = False
    return out


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return str(x)


def markdown(results: dict[str, Any]) -> str:
    """RESULTS_gpu.md: verdicts, then one table per section."""
    env, v = results["env"], verdicts(results)
    lines = [f"# GPU check ({env.get('gpu', {}).get('name', env['device'])})", "",
             f"torch {env['torch']} (CUDA {env['cuda']}); packages {json.dumps(env['packages'])}; "
             f"kernel backends {json.dumps(env['kernels'])}; tiny={env['tiny']}; total {results['wall_s']:.0f} s.", "",
             f"**{sum(x is True for x in v.values())} passed, {sum(x is False for x in v.values())} failed, "
             f"{sum(x is None for x in v.values())} skipped.** Failed: {', '.join(k for k, x in v.items() if x is False) or 'none'}.", ""]
    if env["tiny"]:
        lines += ["Tiny dry run (`--tiny`): the code paths ran; speeds, peak and MFU of such small models mean "
                  "nothing" + (" (fused kernels: the real wrappers with emulated launches)." if env["emulated_kernels"] else "."), ""]
    peak = results.get("peak", {})
    lines += [f"Matmul peak measured here: bf16 {_fmt(peak.get('bf16_gflops'))} GFLOP/s, fp32 "
              f"{_fmt(peak.get('fp32_gflops'))} GFLOP/s ({peak.get('fp32_setting', '-')}).", "",
              "## Properties (max |diff| / max |logit|; tolerances " + json.dumps(TOL) + ")", "",
              "| variant | fp32 causal | fp32 cache | bf16 causal | bf16 cache | 20 bf16 steps: loss | ok |", "|---|---|---|---|---|---|---|"]
    for name, r in results.get("properties", {}).items():
        if "error" in r:
            lines.append(f"| {name} | {r['error']} | | | | | FAIL |")
            continue
        tr = r["train_bf16"]
        lines.append(f"| {name} | {_fmt(r['fp32']['causal_rel'])} | {_fmt(r['fp32']['cache_rel'])} | "
                     f"{_fmt(r['bf16']['causal_rel'])} | {_fmt(r['bf16']['cache_rel'])} | "
                     f"{_fmt(tr['first'])} -> {_fmt(tr['last'])} | {'ok' if r['ok'] else 'FAIL'} |")
    lines += ["", f"## Fused kernels vs PyTorch path (bf16 autocast; tolerance {FUSED_TOL} of max |logit|)", ""]
    fused = results.get("fused", {})
    if "skipped" in fused:
        lines.append(f"Skipped: {fused['skipped']}")
    else:
        lines += ["| variant | prefill diff | decode diff | path | train tok/s | prefill tok/s (b1) | decode tok/s (b1) |",
                  "|---|---|---|---|---|---|---|"]
        for name, r in fused.items():
            if "error" in r:
                lines.append(f"| {name} | {r['error']} | | | | | |")
                continue
            for path, p in r["paths"].items():
                lines.append(f"| {name} | {_fmt(r['rel_diff']['prefill'])} | {_fmt(r['rel_diff']['decode'])} | {path} "
                             f"{json.dumps(p['backends'])} | {_fmt(p.get('train_tok_s'))} | {_fmt(p['prefill_tok_s'])} | "
                             f"{_fmt(p['decode_b1_tok_s'])} |")
    lines += ["", "## Speed (bf16 autocast training; MFU against the bf16 peak above)", "",
              "| variant | params | train tok/s | MFU | decode tok/s b1 | decode tok/s b32 | compiled tok/s (compile s) |",
              "|---|---|---|---|---|---|---|"]
    for name, r in results.get("speed", {}).items():
        if "error" in r or "skipped" in r:
            lines.append(f"| {name} | {r.get('error') or r.get('skipped')} | | | | | |")
            continue
        c = r.get("compiled")
        comp = f"{_fmt(c['train_tok_s'])} ({c['compile_and_warmup_s']:.0f} s, {c['backend']})" if c else "-"
        kern = r.get("kernels", {})
        label = name if kern.get("ssm_scan", "none") == "none" else f"{name} ({kern['ssm_scan']}, {kern['conv1d']})"
        lines.append(f"| {label} | {r['params']:,} | {_fmt(r['train_tok_s'])} | {_fmt(r['mfu_bf16'])} | "
                     f"{_fmt(r['decode_b1_tok_s'])} | {_fmt(r['decode_b32_tok_s'])} | {comp} |")
    tr = results.get("torchrun", {})
    lines += ["", "## torchrun (1 process)", "",
              f"- train.py: {'ok' if tr.get('train', {}).get('ok') else 'FAIL'} {json.dumps(tr.get('train', {}).get('summary'))}",
              f"- DDP probe: {'ok' if tr.get('ddp_probe', {}).get('ok') else 'FAIL'} backend "
              f"{tr.get('ddp_probe', {}).get('backend')}, losses {tr.get('ddp_probe', {}).get('losses')}", ""]
    errors = {k: r["error"] for k, r in results.items() if isinstance(r, dict) and "error" in r}
    if errors:
        lines += ["## Section errors", ""] + [f"- {k}: {e}" for k, e in errors.items()] + [""]
    return "\n".join(lines)
