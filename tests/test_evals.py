"""Evaluation suites: needle-in-a-haystack, perplexity, `--suite all` for every variant, determinism."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import run_cli, tiny_model
from unified.errors import ConfigError, DataError, UnknownNameError
from unified.evals.needle import FILLER_SENTENCES, NeedleBuilder, NeedleSettings, extract_code, run_needle
from unified.evals.perplexity import PerplexitySettings, run_perplexity, window_nll
from unified.evals.results import strip_volatile
from unified.models import variant_names
from unified.text.tokenizer import ByteTokenizer
from unified.train.checkpoint import save_checkpoint

TEXT = ("Once upon a time a small fox lived in a wood. It liked to run — très vite — past the old oak.\n"
        "One day it met a crow. The crow said hello and they became friends.")


class CharTokenizer:
    """Test tokenizer: one token per character (code point mod 100), so tokens != bytes for
    non-ASCII text. BOS/EOS/PAD are 100/101/102."""

    name = "char-test"
    vocab_size = 103
    bos_id, eos_id, pad_id = 100, 101, 102

    def encode(self, text: str) -> list[int]:
        return [ord(c) % 100 for c in text]

    def decode(self, ids) -> str:
        return "".join(chr(int(i) + 32) for i in ids if int(i) < 100)


# ---- needle -------------------------------------------------------------------------------------

def test_filler_has_no_digits() -> None:
    assert not any(re.search(r"\d", s) for s in FILLER_SENTENCES)


@pytest.mark.parametrize("tokenizer", [ByteTokenizer(), CharTokenizer()], ids=["byte", "char"])
@pytest.mark.parametrize("length", [300, 1024])
def test_needle_prompt_has_exact_length_and_code_at_depth(tokenizer, length: int) -> None:
    builder = NeedleBuilder(tokenizer)
    longest = max(len(s) for s in builder.sentences)
    hay_by_depth = []
    for depth in (0.0, 0.25, 0.5, 0.75, 1.0):
        p = builder.build(length, depth, seed=3, index=1)
        assert len(p.ids) == length and p.ids[0] == tokenizer.bos_id
        needle = builder.needle_ids(p.code)
        assert p.ids[p.needle_start:p.needle_start + len(needle)] == needle
        assert p.ids[-len(builder.question):] == builder.question
        hay = p.ids[1:p.needle_start] + p.ids[p.needle_start + len(needle):-len(builder.question)]
        assert len(hay) == p.haystack_tokens
        # the needle sits at a sentence boundary within one sentence of the requested depth
        assert abs((p.needle_start - 1) / len(hay) - depth) <= longest / len(hay)
        assert p.actual_depth == pytest.approx((p.needle_start - 1) / len(hay))
        hay_by_depth.append(hay)
        if isinstance(tokenizer, ByteTokenizer):  # the code is the only number in the prompt
            assert re.findall(r"\d+", tokenizer.decode(p.ids)) == [p.code]
    assert all(h == hay_by_depth[0] for h in hay_by_depth)  # paired design: only the needle moves
    assert builder.build(length, 0.5, 3, 1).ids == builder.build(length, 0.5, 3, 1).ids
    assert builder.build(length, 0.5, 3, 1).code != builder.build(length, 0.5, 4, 1).code


def test_extract_code() -> None:
    assert extract_code(" 48213. Remember") == "48213"
    assert extract_code(" the code") is None
    assert extract_code("4821") == "4821"


def test_needle_suite_flags_and_skips_lengths(tmp_path: Path, monkeypatch) -> None:
    model = tiny_model("baseline", vocab_size=259, max_seq_len=100).eval()
    real_forward = model.forward

    def limited(input_ids, targets=None, cache=None):
        if (cache.pos if cache is not None else 0) + input_ids.shape[1] > 200:
            raise ConfigError("sequence longer than 200 tokens; this model cannot run it")
        return real_forward(input_ids, targets, cache)

    monkeypatch.setattr(model, "forward", limited)
    settings = NeedleSettings(context_lengths=(96, 160, 256), depths=(0.0, 1.0), samples=2)
    res = run_needle(model, ByteTokenizer(), settings, plot_path=tmp_path / "needle.png")
    assert set(res["lengths"]) == {"96", "160"}
    assert res["lengths"]["96"]["beyond_train_len"] is False and res["lengths"]["160"]["beyond_train_len"] is True
    assert "256" in res["skipped_lengths"] and "200 tokens" in res["skipped_lengths"]["256"]
    assert res["n"] == 8 and set(res["lengths"]["96"]["depths"]) == {"0", "1"}
    assert (tmp_path / "needle.png").stat().st_size > 0
    with pytest.raises(ConfigError, match="--depths"):
        run_needle(model, ByteTokenizer(), NeedleSettings(depths=(1.5,)))


def test_needle_scores_a_model_that_answers_correctly(monkeypatch) -> None:
    """A stub that reads the code out of the prompt scores 1.0; a wrong answer scores 0."""
    import unified.evals.needle as needle_mod
    from unified.models.decoding import Generation

    tok = ByteTokenizer()

    def oracle(model, prompts, eos_id, settings, batch_size, **_):
        codes = [re.findall(r"\d+", tok.decode(p))[0] for p in prompts]
        return Generation([tok.encode(" " + c + ".") for c in codes], [None] * len(prompts))

    monkeypatch.setattr(needle_mod, "generate", oracle)
    model = tiny_model("baseline", vocab_size=259)
    res = run_needle(model, tok, NeedleSettings(context_lengths=(128,), depths=(0.5,), samples=3))
    assert res["accuracy"] == 1.0 and res["n"] == 3
    monkeypatch.setattr(needle_mod, "generate",
                        lambda m, p, e, s, batch_size, **_: Generation([tok.encode(" 1") for _ in p], [None] * len(p)))
    assert run_needle(model, tok, NeedleSettings(context_lengths=(128,), depths=(0.5,), samples=3))["accuracy"] == 0.0


# ---- perplexity ---------------------------------------------------------------------------------

def test_uniform_model_perplexity_is_vocab_size(tmp_path: Path) -> None:
    tok = CharTokenizer()
    docs = [TEXT, "Second story: naïve café owners. " * 7 + "The end."]
    path = tmp_path / "held_out.txt"
    path.write_text(f"{docs[0]}\n<|endoftext|>\n{docs[1]}\n", encoding="utf-8")
    model = tiny_model("baseline", vocab_size=tok.vocab_size, max_seq_len=48).eval()
    with torch.no_grad():
        model.lm_head.weight.zero_()  # tied with the embedding: every logit is exactly 0
    res = run_perplexity(model, tok, {}, PerplexitySettings(text_file=str(path)))
    V = tok.vocab_size
    n_tokens = sum(len(d) for d in docs)  # one token per character
    n_bytes = sum(len(d.encode("utf-8")) for d in docs)
    n_words = sum(len(d.split()) for d in docs)
    assert n_bytes > n_tokens  # the text has multi-byte characters, so bpb != log2(ppl)
    assert res["available"] and res["tokens"] == n_tokens and res["bytes"] == n_bytes and res["words"] == n_words
    assert res["token_perplexity"] == pytest.approx(V, rel=1e-5)
    assert res["bits_per_byte"] == pytest.approx(math.log(V) * n_tokens / (n_bytes * math.log(2)), rel=1e-5)
    assert res["word_perplexity"] == pytest.approx(math.exp(math.log(V) * n_tokens / n_words), rel=1e-4)
    assert res["windows"] == math.ceil((n_tokens + len(docs)) / 48)  # EOS separators fill the stream
    assert res["token_perplexity_stderr"] == pytest.approx(0.0, abs=1e-3)


def test_windows_are_disjoint_and_start_from_bos() -> None:
    """Batched window scoring equals scoring each window alone as [BOS] + window[:-1]."""
    model = tiny_model("baseline", vocab_size=259, max_seq_len=16).eval()
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 256, size=53)
    ids[[7, 30]] = 257  # EOS: context, not scored
    got = window_nll(model, ids, 256, 257, context=16, batch_size=2)
    assert [n for _, n in got] == [15, 15, 16, 5]
    for w, (nll, n) in zip(range(0, 53, 16), got):
        chunk = torch.as_tensor(ids[w:w + 16], dtype=torch.long)[None]
        inp = torch.cat([torch.tensor([[256]]), chunk[:, :-1]], dim=1)
        with torch.no_grad():
            logp = model(inp).logits.log_softmax(-1)[0]
        ref = -sum(float(logp[t, chunk[0, t]]) for t in range(chunk.shape[1]) if chunk[0, t] != 257)
        assert nll == pytest.approx(ref, rel=1e-5)


def test_perplexity_without_language_data_says_so_and_bad_sources_fail(tmp_path: Path) -> None:
    model = tiny_model("baseline", vocab_size=259)
    res = run_perplexity(model, ByteTokenizer(), {"train_config": {"lang_data": None}}, PerplexitySettings())
    assert res["available"] is False and "--text_file" in res["reason"]
    moved = run_perplexity(model, ByteTokenizer(), {"train_config": {"lang_data": str(tmp_path / "gone.txt")}},
                           PerplexitySettings())
    assert moved["available"] is False and "gone.txt" in moved["reason"]
    with pytest.raises(DataError, match="--text_file"):
        run_perplexity(model, ByteTokenizer(), {}, PerplexitySettings(text_file=str(tmp_path / "missing.txt")))
    with pytest.raises(DataError, match="--text_file"):  # offline (conftest): one line naming --text_file
        run_perplexity(model, ByteTokenizer(), {}, PerplexitySettings(dataset="hf:no-such-org/no-such-dataset"))
    with pytest.raises(UnknownNameError, match="wikitext103"):
        run_perplexity(model, ByteTokenizer(), {}, PerplexitySettings(dataset="not-a-source"))


def test_ppl_max_tokens_truncates_and_recounts(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text(TEXT, encoding="utf-8")
    model = tiny_model("baseline", vocab_size=259, max_seq_len=32)
    res = run_perplexity(model, ByteTokenizer(), {}, PerplexitySettings(text_file=str(path), max_tokens=39))
    assert res["source"]["truncated"] and res["tokens"] == 39 == res["bytes"]
    assert res["words"] == len(TEXT.encode()[:39].decode().split()) == 10
    settings = PerplexitySettings(text_file=str(path), max_tokens=39, prefix="eos")
    eos = run_perplexity(model, ByteTokenizer(), {}, settings)
    assert res["prefix_token"] == "bos" and eos["prefix_token"] == "eos" and eos["tokens"] == 39
    assert eos["token_perplexity"] != res["token_perplexity"]  # the first token of the window sees another prefix
    with pytest.raises(ConfigError, match="--ppl_prefix"):
        run_perplexity(model, ByteTokenizer(), {}, PerplexitySettings(text_file=str(path), prefix="pad"))


# ---- the CLI: every variant, determinism ----------------------------------------------------------

def _pico_checkpoint(tmp_path: Path, variant: str, lang_data: str | None) -> Path:
    model = tiny_model(variant, vocab_size=259, max_seq_len=128)
    path = tmp_path / f"{variant}.pt"
    save_checkpoint(path, model, "byte", train_config={"variant": variant, "lang_data": lang_data}, step=0)
    return path


QUICK = ["--suite", "all", "--limit", "1", "--context_lengths", "96,160", "--needle_samples", "1",
         "--ppl_max_tokens", "600"]


@pytest.mark.parametrize("variant", variant_names())
def test_suite_all_runs_for_every_variant(tmp_path: Path, variant: str) -> None:
    text = tmp_path / "lang.txt"
    text.write_text("\n<|endoftext|>\n".join(f"Story {i}: {TEXT}" for i in range(30)), encoding="utf-8")
    ckpt = _pico_checkpoint(tmp_path, variant, str(text))
    out = tmp_path / "out"
    r = run_cli("eval_hub.py", "--checkpoint", str(ckpt), *QUICK, "--tasks", "parity,copy", "--out_dir", str(out),
                cwd=tmp_path)
    assert r.returncode == 0, f"{variant}: {r.stderr[-3000:]}"
    # every option above changes the grid, so each file is named by its options (tags sorted by key)
    names = {"results_algorithmic@limit=1,tasks=copy-parity.json",
             "results_needle@needle_lengths=96-160,needle_samples=1.json",
             "results_perplexity@ppl_max_tokens=600.json",
             "results_all@limit=1,needle_lengths=96-160,needle_samples=1,ppl_max_tokens=600,tasks=copy-parity.json"}
    assert {p.name for p in out.glob("results_*.json")} == names
    assert (out / "needle@needle_lengths=96-160,needle_samples=1.png").stat().st_size > 0
    res = json.loads(next(out.glob("results_all@*.json")).read_text())["all"]
    assert set(res) == {"algorithmic", "needle", "perplexity"}
    needle = res["needle"]
    assert needle["lengths"]["96"]["beyond_train_len"] is False and needle["lengths"]["160"]["beyond_train_len"] is True
    assert needle["n"] == 10 and not needle["skipped_lengths"]
    ppl = res["perplexity"]
    assert ppl["available"] and ppl["source"]["kind"] == "run_validation" and ppl["tokens"] > 0
    assert ppl["tokens"] == ppl["bytes"] and ppl["bits_per_byte"] == pytest.approx(math.log2(ppl["token_perplexity"]))
    assert 0.0 <= res["algorithmic"]["exact_match"] <= 1.0


def test_same_checkpoint_and_seed_give_identical_results(tmp_path: Path) -> None:
    ckpt = _pico_checkpoint(tmp_path, "baseline", None)
    files = {}
    for hash_seed in ("1", "2"):
        out = tmp_path / f"out{hash_seed}"
        r = run_cli("eval_hub.py", "--checkpoint", str(ckpt), *QUICK, "--tasks", "addition,dyck", "--text_file",
                    str(_write(tmp_path / "t.txt", TEXT * 3)), "--seed", "5", "--out_dir", str(out), cwd=tmp_path,
                    env={"PYTHONHASHSEED": hash_seed})
        assert r.returncode == 0, r.stderr[-2000:]
        files[hash_seed] = {p.name: json.loads(p.read_text()) for p in sorted(out.glob("results_*.json"))}
    assert len(files["1"]) == 4
    for name, first in files["1"].items():
        assert first["meta"]["wall_time_s"] >= 0 and "timestamp" in first["meta"]
        assert strip_volatile(first) == strip_volatile(files["2"][name]), name
    needle = next(v for k, v in files["1"].items() if k.startswith("results_needle@"))
    assert needle["meta"]["needle_settings"]["seed"] == 5 and needle["meta"]["eval_options"]["seed"] == 5


def test_suite_all_without_language_data_still_completes(tmp_path: Path) -> None:
    ckpt = _pico_checkpoint(tmp_path, "baseline", None)
    r = run_cli("eval_hub.py", "--checkpoint", str(ckpt), "--suite", "perplexity", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "perplexity not measured" in r.stdout
    res = json.loads((tmp_path / "results_perplexity.json").read_text())["perplexity"]
    assert res["available"] is False
    r = run_cli("eval_hub.py", "--checkpoint", str(ckpt), "--suite", "needle", "--depths", "2", cwd=tmp_path)
    assert r.returncode == 2 and "--depths" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path
