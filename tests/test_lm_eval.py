"""The lm-evaluation-harness adapter: model `unified` on local YAML tasks over local JSON files,
its rolling log-likelihood against eval_hub's perplexity suite, batching, and compare's reader."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from helpers import ROOT, tiny_model
from unified.evals.lm_eval.results import lm_eval_metrics
from unified.evals.perplexity import PerplexitySettings, run_perplexity
from unified.models import variant_names
from unified.models.decoding import DecodeSettings, generate
from unified.text.tokenizer import ByteTokenizer
from unified.train.checkpoint import save_checkpoint

pytest.importorskip("lm_eval")
from lm_eval.api.instance import Instance  # noqa: E402

from unified.evals.lm_eval.adapter import UnifiedLM, default_output_path  # noqa: E402

DOC = "Once upon a time there was a girl named Lily. She liked the park."  # 65 bytes + BOS < one window
LONG = " ".join(["The little dog ran to the big red house and sat down."] * 5)  # several windows of 64


def _ckpt(tmp: Path, variant: str = "baseline") -> Path:
    torch.manual_seed(0)
    path = tmp / variant / "best_model.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, tiny_model(variant, vocab_size=259, max_seq_len=80), "byte", step=5)
    return path


def _req(kind: str, *args) -> Instance:
    return Instance(request_type=kind, doc={}, arguments=tuple(args), idx=0)


@pytest.mark.parametrize("variant", variant_names())
@pytest.mark.parametrize("prefix", ["bos", "eos"])
def test_rolling_loglikelihood_agrees_with_the_perplexity_suite(tmp_path: Path, variant: str, prefix: str) -> None:
    ckpt = _ckpt(tmp_path, variant)
    text = tmp_path / "doc.txt"
    text.write_text(DOC, encoding="utf-8")
    lm = UnifiedLM(checkpoint=str(ckpt), device="cpu", prefix=prefix)
    suite = run_perplexity(lm.model, ByteTokenizer(), lm.ctx.checkpoint,
                           PerplexitySettings(text_file=str(text), prefix=prefix))
    (ll,) = lm.loglikelihood_rolling([_req("loglikelihood_rolling", DOC)], disable_tqdm=True)
    assert suite["tokens"] == len(DOC.encode())
    assert abs(-ll / suite["tokens"] - suite["nll_per_token"]) < 1e-4, variant


def test_batching_and_padding_change_no_score_and_greedy_is_detected(tmp_path: Path) -> None:
    ckpt = _ckpt(tmp_path, "rsm")
    one, five = (UnifiedLM(checkpoint=str(ckpt), device="cpu", batch_size=b) for b in (1, 5))
    reqs = [_req("loglikelihood", c, x) for c, x in (("The cat", " sat"), ("A", " much longer continuation here"),
                                                     ("", "empty context"), ("add 12+34=", "46"),
                                                     ("x" * 120, " beyond the context"))]
    a, b = one.loglikelihood(reqs, disable_tqdm=True), five.loglikelihood(reqs, disable_tqdm=True)
    for (la, ga), (lb, gb) in zip(a, b):
        assert abs(la - lb) < 1e-4 and ga == gb and la < 0
    rolls = [_req("loglikelihood_rolling", t) for t in (LONG, DOC, "hi")]
    ra, rb = one.loglikelihood_rolling(rolls, disable_tqdm=True), five.loglikelihood_rolling(rolls, disable_tqdm=True)
    assert all(abs(x - y) < 1e-3 for x, y in zip(ra, rb))
    ctx = one.tok_encode("Once upon")
    greedy = generate(one.model, [ctx], one.eot_token_id, DecodeSettings(max_new_tokens=6)).tokens[0]
    other = [(greedy[0] + 1) % 256] + greedy[1:]
    (lg, is_g), (lo, is_o) = one._loglikelihood_tokens([(None, ctx, greedy), (None, ctx, other)], disable_tqdm=True)
    assert is_g and not is_o and lg > lo


def test_generate_until_stops_at_until_and_max_gen_toks(tmp_path: Path) -> None:
    lm = UnifiedLM(checkpoint=str(_ckpt(tmp_path, "ssm")), device="cpu", batch_size=4)
    free = lm.generate_until([_req("generate_until", "Once", {"until": ["\x00"], "max_gen_toks": 12})],
                             disable_tqdm=True)[0]
    stop = free.encode("utf-8", "replace").decode("utf-8")[3:4] or "\x00"
    reqs = [_req("generate_until", "Once", {"until": [stop], "max_gen_toks": 12}),
            _req("generate_until", "Once", {"until": ["\x00"], "max_gen_toks": 3})]
    cut, short = lm.generate_until(reqs, disable_tqdm=True)
    assert stop not in cut and free.startswith(cut)
    assert len(lm.tok.encode(short)) <= 3 and free.startswith(short.rstrip("\ufffd"))


def test_default_output_path_is_the_run_folder() -> None:
    assert default_output_path(["--model_args", "checkpoint=runs/a/best_model.pt,K=4"]) == "runs/a/lm_eval/results.json"
    assert default_output_path(['--model_args={"checkpoint": "r/b.pt"}']) == "r/lm_eval/results.json"
    assert default_output_path(["--tasks", "x"]) is None


TASKS = {
    "unified_local_mc": ("mc.jsonl", [{"text": "The cat sat on the", "choices": [" mat", " sky"], "label": 0},
                                      {"text": "add 12+34=", "choices": ["46", "47"], "label": 0}],
                         "output_type: multiple_choice\ndoc_to_text: \"{{text}}\"\ndoc_to_choice: \"{{choices}}\"\n"
                         "doc_to_target: label\nmetric_list:\n  - metric: acc\n"),
    "unified_local_gen": ("gen.jsonl", [{"q": "add 1+2=", "a": "3"}, {"q": "Once upon a", "a": " time"}],
                          "output_type: generate_until\ndoc_to_text: \"{{q}}\"\ndoc_to_target: \"{{a}}\"\n"
                          "generation_kwargs:\n  until: [\"\\n\"]\n  max_gen_toks: 6\n"
                          "metric_list:\n  - metric: exact_match\n"),
    "unified_local_ppl": ("ppl.jsonl", [{"page": DOC}, {"page": LONG}],
                          "output_type: loglikelihood_rolling\ndoc_to_text: \"\"\ndoc_to_target: \"{{page}}\"\n"
                          "metric_list:\n  - metric: bits_per_byte\n  - metric: word_perplexity\n"),
}


def _adapter_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m unified.evals.lm_eval ...` as a user runs it: offline, one thread."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "HF_DATASETS_CACHE": str(cwd / "hf_datasets")}
    return subprocess.run([sys.executable, "-m", "unified.evals.lm_eval", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_lm_eval_cli_runs_local_tasks_and_compare_reads_the_results(tmp_path: Path) -> None:
    ckpt = _ckpt(tmp_path, "baseline")
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    for name, (data, rows, body) in TASKS.items():
        (tasks / data).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        (tasks / f"{name}.yaml").write_text(
            f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {tasks / data}\n"
            f"test_split: test\n{body}", encoding="utf-8")
    r = _adapter_cli("--model_args", f"checkpoint={ckpt}", "--tasks", ",".join(TASKS), "--include_path", str(tasks),
                     "--batch_size", "4", "--device", "cpu", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "unified_local_mc" in r.stdout and "bits_per_byte" in r.stdout  # lm-eval's table
    files = list((ckpt.parent / "lm_eval").glob("results_*.json"))
    assert len(files) == 1
    data = json.loads(files[0].read_text())
    assert data["config"]["variant"] == "baseline" and data["config"]["train_step"] == 5
    metrics = lm_eval_metrics(ckpt.parent, best_step=5, notes=(notes := []))
    assert not notes and set(metrics) == {"lm_eval/unified_local_mc/acc", "lm_eval/unified_local_gen/exact_match",
                                          "lm_eval/unified_local_ppl/bits_per_byte",
                                          "lm_eval/unified_local_ppl/word_perplexity"}
    assert 0 <= metrics["lm_eval/unified_local_mc/acc"] <= 1
    lm = UnifiedLM(checkpoint=str(ckpt), device="cpu")  # lm-eval's bits/byte is our rolling NLL over the bytes
    lls = lm.loglikelihood_rolling([_req("loglikelihood_rolling", d["page"]) for d in TASKS["unified_local_ppl"][1]],
                                   disable_tqdm=True)
    n_bytes = sum(len(d["page"].encode()) for d in TASKS["unified_local_ppl"][1])
    assert metrics["lm_eval/unified_local_ppl/bits_per_byte"] == pytest.approx(-sum(lls) / n_bytes / math.log(2),
                                                                             rel=1e-5)
    assert lm_eval_metrics(ckpt.parent, best_step=9, notes=(stale := [])) and "stale" in stale[0]
    bad = _adapter_cli("--model_args", f"checkpoint={tmp_path / 'absent.pt'}", "--tasks", "unified_local_mc",
                       "--include_path", str(tasks), "--device", "cpu", cwd=tmp_path)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].startswith("error: checkpoint")


def test_compare_adds_lm_eval_metrics_as_columns_and_flags_stale_results(tmp_path: Path) -> None:
    from test_compare import fake_run
    from unified.compare.comparison import compare
    from unified.compare.report import write_report

    for variant, acc in (("baseline", 0.25), ("ssm", 0.5)):
        for seed in (0, 1):
            run = fake_run(tmp_path / "runs", variant, seed, iid=0.2, ood=0.1)
            summary = json.loads((run / "summary.json").read_text())
            (run / "summary.json").write_text(json.dumps({**summary, "best_step": 10}))
            (run / "lm_eval").mkdir()
            for date, value, step in ((1.0, 0.0, 10), (2.0, acc + seed / 100, 10 if variant == "baseline" else 7)):
                (run / "lm_eval" / f"results_{date}.json").write_text(json.dumps(
                    {"date": date, "config": {"train_step": step},
                     "results": {"arc_easy": {"alias": "arc_easy", "acc,none": value, "acc_stderr,none": 0.1,
                                              "exact_match,strict-match": 0.5}}}))
    comp = compare([tmp_path / "runs"])
    written = write_report(comp, tmp_path / "out", samples=False)
    csv = pd.read_csv(written["comparison.csv"]).set_index("label")
    assert csv.loc["baseline", "lm_eval/arc_easy/acc"] == pytest.approx(0.255)  # the newest file wins
    assert csv.loc["ssm", "lm_eval/arc_easy/acc"] == pytest.approx(0.505)
    assert "lm_eval/arc_easy/exact_match[strict-match]" in csv.columns
    assert not any("stderr" in c for c in csv.columns if c.startswith("lm_eval/"))
    md = written["comparison.md"].read_text()
    assert "## lm-eval metrics" in md and "arc_easy/acc" in md
    assert any("stale" in n and "ssm" in n for n in comp.notes)
    assert not any("stale" in n and "baseline" in n and "lm-eval" in n for n in comp.notes)
