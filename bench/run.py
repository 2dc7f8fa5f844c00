"""Speed benchmark: training tokens/s and MFU against the machine's measured matmul peak,
prefill / cached decoding tokens/s, cached-vs-recomputed decoding, peak memory.

    python bench/run.py                                   # pico,micro,nano x all variants x fp32,bf16
    python bench/run.py --model_sizes nano --variants baseline --dtype fp32 --steps 3
    python bench/run.py --model_sizes pico --variants baseline,ssm --threads 1 --out /tmp/r.md   # quick check

Writes `--out` (markdown, default bench/RESULTS.md) and the same data as JSON beside it.

- Peak: best GFLOP/s of square float32 / bf16 matmuls (n = 1024, 1536, 2048, best of several) under
  each float32 matmul precision; the float32 peak is the fastest setting whose relative error vs
  float64 stays at float32 level (see `unified.ops.precision`), the bf16 peak is plain bf16 matmuls.
- Each (row, size) runs in its own process (`--threads` intra-op threads, set with
  `torch.set_num_threads`); the model is built once and each dtype's peak RSS is its own (the
  high-water mark VmHWM is reset between dtypes). Training = the Trainer's step
  (autocast forward, backward, clip, AdamW) at `--batch` x `--seq_len`, median of `--steps` steps
  after `--warmup`; MFU = model.flops_per_token(seq_len) x tokens/s / peak of that dtype.
- Prefill (batch x seq_len prompt with a fresh cache) and cached greedy decoding (batch 1 and 32,
  `--decode_tokens` after a `--prompt_len` prompt) are measured once per (row, size), in fp32
  (the evaluation harness decodes in fp32).
- Cached vs recomputed decoding (`bench/decode_cache.py`'s functions, batch 1, `--cache_prompt` +
  `--cache_new` tokens) at `--cache_size`.
- Sequential rows (reservoir in tanh mode, hrnn) also report the share of the training step spent
  in their per-token loop (step time with the loop replaced by an elementwise stand-in).
Timings on a loaded machine are not comparable (threads stall), so the CPU time other processes
used during each case is recorded (/proc/stat busy time minus this run's own CPU time); a case
taken while they used more than `--max_others` cores is measured again after waiting for quiet
(`--retries`, `--wait_quiet`), and the report warns when that never helped or when the 1-minute
load average exceeded `--max_load` at the start.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import time
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from unified.cli import ArgumentParser, run_cli  # noqa: E402
from unified.errors import ConfigError, UnknownNameError  # noqa: E402
from unified.models.config import SCALES  # noqa: E402
from unified.ops.precision import MATMUL_PRECISIONS, set_matmul_precision  # noqa: E402

import measure  # noqa: E402

DTYPES = ("fp32", "bf16")
PARALLEL_ROWS = ("shared_loop", "latent", "act", "ssm", "ssm_mem", "reservoir-linear", "liquid", "rsm")
TARGETS = {"baseline_fp32": 0.55, "baseline_bf16": 0.45, "parallel_fp32": 0.30, "cache_speedup": 10.0}


def all_rows() -> list[str]:
    """Every registered variant in ladder order, with reservoir's linear mode after reservoir."""
    from unified.models import variant_names

    rows = []
    for v in variant_names():
        rows.append(v)
        rows += [name for name, (base, _) in measure.EXTRA_ROWS.items() if base == v]
    return rows


def split_list(text: str, accepted: list[str] | tuple[str, ...], kind: str) -> list[str]:
    """Comma-separated names, `all` = every accepted one; unknown names are an error."""
    items = [x.strip() for x in text.split(",") if x.strip()]
    if items == ["all"]:
        return list(accepted)
    for x in items:
        if x not in accepted:
            raise UnknownNameError(kind, x, accepted)
    return items


def build_parser() -> ArgumentParser:
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model_sizes", dest="sizes", default="pico,micro,nano", help="comma-separated model sizes")
    p.add_argument("--sizes", dest="sizes", default="pico,micro,nano", help=argparse.SUPPRESS)
    p.add_argument("--variants", default="all", help="comma-separated rows (variants, plus reservoir-linear), or all")
    p.add_argument("--dtype", default="fp32,bf16", help="comma-separated: fp32, bf16 (bf16 = CPU autocast)")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch intra-op threads")
    p.add_argument("--matmul_precision", default="auto", choices=MATMUL_PRECISIONS,
                   help="float32 matmul setting for the model runs (auto: medium if its error is fp32-level)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq_len", type=int, default=256)
    p.add_argument("--warmup", type=int, default=2, help="training steps before timing")
    p.add_argument("--steps", type=int, default=4, help="timed training steps (median reported)")
    p.add_argument("--prompt_len", type=int, default=256, help="decoding: prompt tokens before the timed steps")
    p.add_argument("--decode_tokens", type=int, default=64, help="decoding: timed cached steps")
    p.add_argument("--cache_size", default="micro", help="size for cached-vs-recomputed decoding ('' = skip)")
    p.add_argument("--cache_prompt", type=int, default=256)
    p.add_argument("--cache_new", type=int, default=256)
    p.add_argument("--no_decode", action="store_true", help="skip prefill / decoding measurements")
    p.add_argument("--compile", action="store_true", help="torch.compile the model for the training steps")
    p.add_argument("--profile", action="store_true", help="record the top ops of one training step per case")
    p.add_argument("--peak_reps", type=int, default=5, help="repetitions per matmul size for the peak")
    p.add_argument("--max_load", type=float, default=1.5,
                   help="warn when the 1-minute load average exceeds this before the run starts")
    p.add_argument("--max_others", type=float, default=0.25,
                   help="a case during which other processes used more than this many cores (on average) is "
                        "measured again after waiting for quiet, and marked if it never gets quiet")
    p.add_argument("--retries", type=int, default=2, help="re-measurements of a case taken under load (0 = none)")
    p.add_argument("--wait_quiet", type=float, default=180.0,
                   help="with --retries: at most this many seconds to wait for quiet before each attempt")
    p.add_argument("--out", default=str(HERE / "RESULTS.md"), help="markdown report; JSON written beside it")
    p.add_argument("--render", default=None, metavar="JSON",
                   help="only rewrite --out from a saved results JSON (no measurement)")
    p.add_argument("--case", default=None, help=argparse.SUPPRESS)  # internal: run one case, print JSON
    return p


def run_subprocess_cases(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Run the cases of one (row, size) in a fresh interpreter; their JSON results, or error entries."""
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"]), "MKL_NUM_THREADS": str(spec["threads"])}
    r = subprocess.run([sys.executable, __file__, "--case", json.dumps(spec)], capture_output=True, text=True,
                       env=env)
    lines = [x for x in r.stdout.splitlines() if x.startswith("[")]
    if r.returncode != 0 or not lines:
        tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
        return [{"row": spec["row"], "size": spec["size"], "dtype": d, "error": tail[:200]} for d in spec["dtypes"]]
    return json.loads(lines[-1])


def cpu_seconds() -> tuple[float, float, float]:
    """(busy CPU seconds of the whole machine, steal seconds, CPU seconds of this process and its
    finished children), all since boot / start; differences over a case give the CPU time that
    other processes used meanwhile (Linux /proc/stat; zeros elsewhere)."""
    own = sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
              for f in ("ru_utime", "ru_stime"))
    try:
        v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return 0.0, 0.0, own
    hz = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq, steal = v
    return (user + nice + system + irq + softirq) / hz, steal / hz, own


def others_cores_now(window_s: float = 3.0) -> float:
    """Cores used by other processes over the next `window_s` seconds (this process idles)."""
    busy0, _, own0 = cpu_seconds()
    time.sleep(window_s)
    busy1, _, own1 = cpu_seconds()
    return max(0.0, (busy1 - busy0) - (own1 - own0)) / window_s


def wait_until_quiet(max_others: float, limit_s: float) -> float:
    """Sleep until other processes use at most `max_others` cores (or `limit_s` passed); seconds waited."""
    t0 = time.perf_counter()
    while others_cores_now() > max_others and time.perf_counter() - t0 < limit_s:
        time.sleep(7.0)
    return time.perf_counter() - t0


def run_and_watch(spec: dict[str, Any]) -> tuple[list[dict[str, Any]], float, float]:
    """Run one (row, size) subprocess; (results, cores used by other processes meanwhile, steal cores)."""
    busy0, steal0, own0 = cpu_seconds()
    t0 = time.perf_counter()
    cases = run_subprocess_cases(spec)
    busy1, steal1, own1 = cpu_seconds()
    wall = time.perf_counter() - t0
    return cases, max(0.0, (busy1 - busy0) - (own1 - own0)) / wall, (steal1 - steal0) / wall


def machine_info(threads: int) -> dict[str, Any]:
    """CPU model and the instruction-set flags that decide the matmul paths."""
    flags, model = set(), "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == "unknown":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {"cpu": model, "logical_cpus": os.cpu_count(), "threads": threads, "torch": torch.__version__,
            "avx512f": "avx512f" in flags, "avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags,
            "python": sys.version.split()[0]}


def add_mfu(rows: list[dict[str, Any]], peak: dict[str, Any]) -> None:
    """MFU of every case against the peak of its dtype."""
    for r in rows:
        if "train_tok_s" in r:
            gflops = r["flops_per_token"] * r["train_tok_s"] / 1e9
            r["achieved_gflops"] = gflops
            r["mfu"] = gflops / (peak["bf16_gflops"] if r["dtype"] == "bf16" else peak["fp32_gflops"])


def check_targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets that this run measured: value, threshold, met or by how much missed."""
    out = []

    def find(row: str, size: str, dtype: str) -> dict[str, Any] | None:
        return next((r for r in rows if (r["row"], r["size"], r["dtype"]) == (row, size, dtype) and "mfu" in r), None)

    checks = [("baseline", "fp32", TARGETS["baseline_fp32"]), ("baseline", "bf16", TARGETS["baseline_bf16"])]
    checks += [(row, "fp32", TARGETS["parallel_fp32"]) for row in PARALLEL_ROWS]
    for row, dtype, need in checks:
        r = find(row, "nano", dtype)
        if r is not None:
            out.append({"target": f"{row} nano {dtype} MFU >= {need:.0%}", "measured": f"{r['mfu']:.1%}",
                        "met": r["mfu"] >= need, "gap": "" if r["mfu"] >= need else f"{need - r['mfu']:.1%} short"})
    for r in rows:
        c = r.get("cache")
        if c and "speedup" in c:
            need = TARGETS["cache_speedup"]
            out.append({"target": f"{r['row']} {r['size']} cached decoding >= {need:g}x recompute",
                        "measured": f"{c['speedup']:.1f}x", "met": c["speedup"] >= need,
                        "gap": "" if c["speedup"] >= need else f"{need / c['speedup']:.1f}x short"})
    return out


def fmt(x: Any, digits: int = 0) -> str:
    return "" if x is None or (isinstance(x, float) and x != x) else f"{x:,.{digits}f}"


HAND_KEPT = "<!-- hand-kept: measurements of the other bench scripts; bench/run.py keeps everything from this line on -->"


def write_markdown(out: Path, text: str) -> None:
    """Write RESULTS.md, keeping the hand-kept part of the file it replaces (from `HAND_KEPT` on):
    the measurements of the other bench scripts live there, so that every timing is in one file."""
    old = out.read_text() if out.is_file() else ""
    out.write_text(text + ("\n" + old[old.index(HAND_KEPT):] if HAND_KEPT in old else ""))


def markdown(report: dict[str, Any]) -> str:
    """The RESULTS.md text of a report."""
    m, peak, a = report["machine"], report["peak"], report["args"]
    lines = ["# Benchmark results", "",
             f"`python bench/run.py {report['argv']}` on {report['date']}.", ""]
    if report["loaded"]:
        lines += [f"> **WARNING: taken under load**: 1-minute load average {report['load_start']:.2f} at the start "
                  f"(threshold {a['max_load']}), other processes used up to {report.get('max_others_cores', float('nan')):.2f} "
                  f"of {m['logical_cpus']} cores during a case (threshold {a.get('max_others', 0.25)}). Shared cores make absolute "
                  "speeds low and noisy (threads stall); see the `others` column per row.", ""]
    lines += ["## Machine", "",
              f"- CPU: {m['cpu']}, {m['logical_cpus']} logical CPUs; AVX-512 {m['avx512f']}, AVX-512 bf16 "
              f"{m['avx512_bf16']}, AMX {m['amx_bf16']}; torch {m['torch']}, Python {m['python']}",
              f"- threads: `torch.set_num_threads({m['threads']})` in every case process",
              f"- float32 matmul precision for the model runs: `{report['precision']['setting']}` "
              f"(requested `{report['precision']['requested']}`, relative error vs float64 "
              f"{report['precision']['error']:.1e})",
              f"- load average (1 min): {report['load_start']:.2f} before the run, {report['load_end']:.2f} at its end "
              f"(the run's own threads count in it); CPU used by other processes during a case: at most "
              f"{report.get('max_others_cores', float('nan')):.2f} cores (`others` column: /proc/stat busy time minus "
              "this run's own CPU time, per case)",
              f"- training: batch {a['batch']} x seq {a['seq_len']}, median of {a['steps']} steps after {a['warmup']} "
              f"warm-up steps{' (torch.compile)' if a['compile'] else ''}; decoding: {a['decode_tokens']} cached "
              f"steps after a {a['prompt_len']}-token prompt; prefill: batch {a['batch']} x {a['seq_len']}", "",
              "## Matmul peak (square matmuls, best of several)", "",
              "| setting | GFLOP/s | per size | rel. error vs fp64 | fp32-level |", "|---|---:|---|---:|---|"]
    for name, s in peak["settings"].items():
        per = ", ".join(f"{n}: {g:.0f}" for n, g in s["per_size"].items())
        lines.append(f"| {name} | {s['gflops']:.0f} | {per} | {s['rel_error_vs_fp64']:.1e} | {s['fp32_level']} |")
    lines += ["", f"fp32 peak = **{peak['fp32_gflops']:.0f} GFLOP/s** ({peak['fp32_setting']}, error <= "
              f"{peak['tolerance']:.0e}); bf16 peak = **{peak['bf16_gflops']:.0f} GFLOP/s**.", "",
              "## Per variant and size", "",
              "MFU = FLOPs/token x train tokens/s / peak of the dtype. Decoding and prefill in fp32. "
              "Peak RSS: the case's process (training + decoding).", ""]
    table = []
    for r in report["rows"]:
        if "error" in r:
            table.append({"row": r["row"], "size": r["size"], "dtype": r["dtype"], "train tok/s": f"error: {r['error']}"})
            continue
        table.append({"row": r["row"], "size": r["size"], "dtype": r["dtype"], "params": fmt(r["params"]),
                      "MFLOPs/token": fmt(r["flops_per_token"] / 1e6, 1), "train tok/s": fmt(r["train_tok_s"]),
                      "GFLOP/s": fmt(r["achieved_gflops"], 1), "MFU": f"{r['mfu']:.1%}",
                      "prefill tok/s": fmt(r.get("prefill_tok_s")), "decode b1 tok/s": fmt(r.get("decode_b1_tok_s")),
                      "decode b32 tok/s": fmt(r.get("decode_b32_tok_s")), "peak RSS MiB": fmt(r["peak_rss_mib"]),
                      "others": fmt(r.get("others_cores"), 2)})
    lines += [pd.DataFrame(table).fillna("").to_markdown(index=False), ""]
    seq = [r for r in report["rows"] if "loop_share" in r]
    if seq:
        lines += ["## Sequential rows: share of the training step in the per-token loop", "",
                  "| row | size | dtype | train tok/s | loop share |", "|---|---|---|---:|---:|"]
        lines += [f"| {r['row']} | {r['size']} | {r['dtype']} | {fmt(r['train_tok_s'])} | {r['loop_share']:.0%} |"
                  for r in seq]
        lines.append("")
    cache = [r for r in report["rows"] if r.get("cache")]
    if cache:
        lines += [f"## Cached vs recomputed decoding (batch 1, {a['cache_prompt']}-token prompt + {a['cache_new']} "
                  "new tokens, `bench/decode_cache.py`)", "",
                  "| row | size | cached tok/s | recompute tok/s | speed-up | same tokens |", "|---|---|---:|---:|---:|---:|"]
        for r in cache:
            c = r["cache"]
            lines.append(f"| {r['row']} | {r['size']} | {fmt(c.get('cached_tok_s'))} | {fmt(c.get('uncached_tok_s'))} | "
                         f"{fmt(c.get('speedup'), 1)}x | {c.get('same_tokens', 0):.0%} |" if "speedup" in c
                         else f"| {r['row']} | {r['size']} | {c.get('error')} | | | |")
        lines.append("")
    if report["targets"]:
        lines += ["## Targets", "", pd.DataFrame(report["targets"]).to_markdown(index=False), ""]
    profiled = [r for r in report["rows"] if r.get("profile")]
    if profiled:
        lines += ["## Profiles (top ops of one training step by self CPU time)", ""]
        for r in profiled:
            ops = ", ".join(f"{o['op']} {o['share']:.0%}" for o in r["profile"][:8])
            lines.append(f"- {r['row']} {r['size']} {r['dtype']}: {ops}")
        lines.append("")
    lines += ["## FLOPs per token, per family (`flops_per_token` docstrings)", ""]
    for row, doc in report["formulas"].items():
        lines.append(f"- **{row}**: {' '.join(doc.split())}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.case is not None:  # child process: one case
        print(json.dumps(measure.run_cases(json.loads(args.case))))
        return 0
    if args.render is not None:
        report = json.loads(Path(args.render).read_text())
        write_markdown(Path(args.out), markdown(report))
        print(f"wrote {args.out}")
        return 0
    for name in ("batch", "seq_len", "steps", "threads", "prompt_len", "decode_tokens", "peak_reps"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name} must be >= 1, got {getattr(args, name)}")
    sizes = split_list(args.sizes, list(SCALES), "size")
    rows = split_list(args.variants, all_rows(), "bench row")
    dtypes = split_list(args.dtype, DTYPES, "dtype")
    if args.cache_size and args.cache_size not in SCALES:
        raise UnknownNameError("--cache_size", args.cache_size, SCALES)
    load_start = os.getloadavg()[0]
    if load_start > args.max_load:
        print(f"WARNING: 1-minute load average is {load_start:.2f} (> {args.max_load}): other processes share the "
              f"cores, timings will be low and noisy", file=sys.stderr)
    torch.set_num_threads(args.threads)
    precision = set_matmul_precision(args.matmul_precision)
    print(f"measuring the matmul peak ({args.threads} threads) ...", file=sys.stderr, flush=True)
    peak = measure.matmul_peak(reps=args.peak_reps)
    print(f"peak: fp32 {peak['fp32_gflops']:.0f} GFLOP/s ({peak['fp32_setting']}), bf16 {peak['bf16_gflops']:.0f}",
          file=sys.stderr, flush=True)
    results, formulas = [], {}
    for size in sizes:
        for row in rows:
            spec = {"row": row, "size": size, "dtypes": dtypes, "threads": args.threads,
                    "matmul_precision": args.matmul_precision, "batch": args.batch, "seq_len": args.seq_len,
                    "warmup": args.warmup, "steps": args.steps, "prompt_len": args.prompt_len,
                    "decode_tokens": args.decode_tokens, "decode": not args.no_decode,
                    "cache_ratio": size == args.cache_size, "cache_prompt": args.cache_prompt,
                    "cache_new": args.cache_new, "compile": args.compile, "profile": args.profile}
            waited = 0.0
            for attempt in range(args.retries + 1):
                waited += wait_until_quiet(args.max_others, args.wait_quiet) if attempt else 0.0
                cases, others, steal = run_and_watch(spec)
                if others <= args.max_others:
                    break
                print(f"{row} {size}: other processes used {others:.2f} cores during the case; "
                      f"{'measuring again' if attempt < args.retries else 'keeping it (marked)'}", file=sys.stderr)
            for res in cases:
                res["others_cores"], res["steal_cores"], res["attempts"] = others, steal, attempt + 1
                res["waited_for_quiet_s"] = waited
                if "flops_formula" in res:
                    formulas.setdefault(row, res.pop("flops_formula"))
                results.append(res)
                brief = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in res.items()
                         if k in ("row", "size", "dtype", "train_tok_s", "error", "load_start", "build_s", "others_cores")}
                print(brief, file=sys.stderr, flush=True)
    add_mfu(results, peak)
    load_end = os.getloadavg()[0]
    others = max((r.get("others_cores", 0.0) for r in results), default=0.0)
    report = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "argv": " ".join(sys.argv[1:] if argv is None else argv),
              "args": vars(args), "machine": machine_info(args.threads), "precision": precision.to_dict(),
              "load_start": load_start, "load_end": load_end, "max_others_cores": others,
              "loaded": load_start > args.max_load or others > args.max_others,
              "peak": peak, "rows": results, "targets": check_targets(results), "formulas": formulas}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_markdown(out, markdown(report))
    out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    if report["loaded"]:
        print(f"WARNING: taken under load (1-minute load average {load_start:.2f} at start; other processes used up "
              f"to {others:.2f} cores during a case); see {out}", file=sys.stderr)
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    run_cli(main)
