"""Language data: local text through the memmap cache, HF dataset sources (with a stand-in for
`datasets`), the offline error, `auto`, BPE tokenizers, and the procedural corpus and its entropy."""
from __future__ import annotations

import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import run_cli
from unified.errors import ConfigError, DataError
from unified.text import textcache
from unified.text.corpus import corpus_from_path, load_corpus, load_language, resolve_source
from unified.text.storygrammar import generate_documents, grammar
from unified.text.tokenizer import ByteTokenizer, load_tokenizer, train_bpe
from unified.train.checkpoint import load_checkpoint, save_checkpoint

DOCS = [f"Story {i}: the cat sat on mat number {i}. Café ✓ {'x' * (i % 7)}" for i in range(40)]


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A private cache root (UNIFIED_CACHE) for one test."""
    root = tmp_path / "cache"
    monkeypatch.setenv("UNIFIED_CACHE", str(root))
    return root


def _write_docs(path: Path, docs: list[str]) -> Path:
    path.write_text("\n<|endoftext|>\n".join(docs) + "\n", encoding="utf-8")
    return path


def _split_on(arr: np.ndarray, eos: int) -> list[list[int]]:
    out, cur = [], []
    for t in arr.tolist():
        if t == eos:
            out.append(cur)
            cur = []
        else:
            cur.append(t)
    assert not cur, "the packed array must end with EOS"
    return out


def test_local_text_round_trips_through_the_packed_cache(tmp_path, cache) -> None:
    tok = ByteTokenizer()
    src = _write_docs(tmp_path / "docs.txt", DOCS)
    for d in DOCS:
        assert tok.decode(tok.encode(d)) == d
    corpus = load_corpus(str(src), tok)
    assert isinstance(corpus.train, np.memmap) and corpus.train.dtype == np.uint16
    folder = Path(corpus.info["cache_dir"])
    assert folder.is_relative_to(cache) and (folder / "meta.json").is_file()
    train_docs, val_docs = DOCS[:38], DOCS[38:]  # the last 5% of 40 documents
    assert len(corpus.train) == sum(len(d.encode()) for d in train_docs) + len(train_docs)
    assert corpus.train_bytes == sum(len(d.encode()) for d in train_docs)
    assert [tok.decode(d) for d in _split_on(corpus.train, tok.eos_id)] == train_docs
    assert [tok.decode(d) for d in _split_on(corpus.val, tok.eos_id)] == val_docs
    # the same arrays as the in-memory path, and the second load reuses the cache
    plain = corpus_from_path(src, tok)
    assert np.array_equal(plain.train, corpus.train) and np.array_equal(plain.val, corpus.val)
    stamp = (folder / "train.bin").stat().st_mtime_ns
    again = load_corpus(str(src), tok)
    assert again.info["cache_dir"] == str(folder) and (folder / "train.bin").stat().st_mtime_ns == stamp
    # a damaged cache is rebuilt, not read
    with open(folder / "train.bin", "r+b") as f:
        f.truncate(10)
    assert np.array_equal(load_corpus(str(src), tok).train, plain.train)
    # editing the file gives a new cache entry rather than stale tokens
    _write_docs(src, DOCS + ["one more story"])
    assert load_corpus(str(src), tok).info["cache_dir"] != str(folder)


class _WideTokenizer(ByteTokenizer):
    """Byte ids, but a vocabulary too large for uint16."""

    name, vocab_size, eos_id = "wide", 70_000, 69_999


def test_cache_uses_uint32_when_the_vocabulary_needs_it(tmp_path, cache) -> None:
    corpus = load_corpus(str(_write_docs(tmp_path / "d.txt", DOCS)), _WideTokenizer())
    assert corpus.train.dtype == np.uint32 and int(corpus.train[-1]) == 69_999


class _FakeDatasets:
    """Stands in for `datasets.load_dataset`: splits are lists of {"text": ...} rows."""

    def __init__(self, splits: dict[str, list[str]]):
        self.splits, self.calls = splits, []

    def load_dataset(self, repo, config=None, split="train", revision=None, streaming=False):
        self.calls.append((repo, config, split, revision))
        if split not in self.splits:
            raise ValueError(f'Bad split: {split}. Available splits: {list(self.splits)}')
        return [{"text": t} for t in self.splits[split]]


def _fake_hub(monkeypatch, splits: dict[str, list[str]]) -> _FakeDatasets:
    fake = _FakeDatasets(splits)
    monkeypatch.setitem(sys.modules, "datasets", fake)
    monkeypatch.setattr(textcache, "hub_offline", lambda: False)
    return fake


def test_hub_sources_stream_into_the_cache(cache, monkeypatch) -> None:
    tok = ByteTokenizer()
    fake = _fake_hub(monkeypatch, {"train": DOCS[:30] + ["", "  "], "validation": DOCS[30:]})
    corpus = load_corpus("tinystories", tok, progress=False)
    assert [tok.decode(d) for d in _split_on(corpus.val, tok.eos_id)] == DOCS[30:]
    assert [tok.decode(d) for d in _split_on(corpus.train, tok.eos_id)] == DOCS[:30]  # blank rows dropped
    assert corpus.info["repo"] == "roneneldan/TinyStories"
    n_calls = len(fake.calls)
    load_corpus("tinystories", tok, progress=False)
    assert len(fake.calls) == n_calls  # served from the cache
    capped = load_corpus("tinystories", tok, max_tokens=100, progress=False)
    assert len(capped.train) == 100 and capped.info["cache_dir"] != corpus.info["cache_dir"]


def test_hub_source_without_validation_split_holds_out_its_first_documents(cache, monkeypatch) -> None:
    tok = ByteTokenizer()
    _fake_hub(monkeypatch, {"train": DOCS})
    monkeypatch.setattr(textcache, "VAL_DOCS_WITHOUT_SPLIT", 5)
    corpus = load_corpus("openwebtext", tok, progress=False)
    val = [tok.decode(d) for d in _split_on(corpus.val, tok.eos_id)]
    train = [tok.decode(d) for d in _split_on(corpus.train, tok.eos_id)]
    assert val == DOCS[:5] and train == DOCS[5:] and not set(val) & set(train)


def test_wikitext_lines_are_grouped_into_articles() -> None:
    lines = [" = Cats = \n", " Cats purr . \n", " = = Food = = \n", " Fish . \n", " = Dogs = \n", " Woof . \n"]
    arts = list(textcache.wikitext_articles(lines))
    assert len(arts) == 2 and arts[0].startswith(" = Cats =") and "Fish" in arts[0] and "Woof" in arts[1]


def test_an_empty_hub_dataset_is_an_error_not_an_empty_stream(cache, monkeypatch) -> None:
    _fake_hub(monkeypatch, {"train": ["", " "], "validation": DOCS[:3]})
    with pytest.raises(DataError, match="no training text"):
        load_corpus("minipile", ByteTokenizer(), progress=False)
    assert not list((cache / "corpora").rglob("meta.json"))  # nothing half-built left behind


def test_offline_hub_name_fails_fast_with_one_line(tmp_path) -> None:
    t0 = time.time()
    r = run_cli("train.py", "--model_size", "pico", "--lang_dataset", "tinystories", cwd=tmp_path,
                env={"UNIFIED_CACHE": str(tmp_path / "cache")})
    assert r.returncode == 2, r.stderr[-1000:]
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "--lang_data PATH" in lines[0] and "roneneldan/TinyStories" in lines[0], r.stderr
    assert time.time() - t0 < 45


def test_auto_uses_tinystories_when_cached_else_procedural(cache, monkeypatch) -> None:
    monkeypatch.setattr(textcache, "hub_is_cached", lambda src: False)
    spec, notice = resolve_source("auto")
    assert spec == "procedural" and "procedural" in notice and "bits/byte" in notice
    (textcache.corpus_dir(cache, "tinystories", "byte")).mkdir(parents=True)
    (textcache.corpus_dir(cache, "tinystories", "byte") / "meta.json").write_text("{}")
    assert resolve_source("auto")[0] == "tinystories"
    assert resolve_source("auto", "gpt2")[0] == "procedural"  # cached for another tokenizer only
    with pytest.raises(ConfigError, match="accepted: auto, procedural"):
        load_corpus("no_such_dataset", ByteTokenizer())


def test_bpe_trains_offline_saves_and_reloads_identically(shared_data, tmp_path, cache) -> None:
    text = (shared_data / "tinyshakespeare.txt").read_text()[:150_000]
    docs = [d for d in text.split("\n\n") if d.strip()]
    tok = train_bpe(docs, 400)
    assert tok.vocab_size == 400 and tok.name.startswith("bpe:400:")
    assert train_bpe(docs, 400).name == tok.name  # deterministic
    sample = "ROMEO: 12 + 305 = 317, wherefore art thou?\n\n  Café ✓"
    ids = tok.encode(sample)
    assert tok.decode(ids) == sample and len(ids) < len(sample.encode())
    assert all(len(tok.decode([i])) == 1 for i in tok.encode("1234567890"))  # one token per digit
    path = tok.save(tmp_path / "run" / "tokenizer.json")
    for again in (load_tokenizer(str(path)), load_tokenizer(tok.name, tokenizer_json=path.read_text())):
        assert again.name == tok.name and again.encode(sample) == ids and again.json == tok.json
    with pytest.raises(DataError, match="not in the cache"):
        load_tokenizer(tok.name)
    with pytest.raises(ConfigError, match="trained on a corpus"):
        load_tokenizer("bpe:400")
    # a checkpoint embeds it: evaluation on another machine (empty cache) rebuilds the same tokenizer
    from helpers import tiny_model
    from unified.evals.hub import load_for_eval

    model = tiny_model("baseline", vocab_size=tok.vocab_size)
    save_checkpoint(tmp_path / "m.pt", model, tok.name, tokenizer_json=tok.json)
    assert load_checkpoint(tmp_path / "m.pt")["tokenizer_json"] == tok.json  # weights_only load
    ctx = load_for_eval(tmp_path / "m.pt")
    assert ctx.tokenizer.name == tok.name and ctx.tokenizer.encode(sample) == ids


def test_load_language_trains_bpe_on_training_text_once(tmp_path, cache) -> None:
    src = _write_docs(tmp_path / "d.txt", DOCS * 3)
    corpus, tok, notices = load_language(str(src), "bpe:300", progress=False)
    assert tok.name.startswith("bpe:") and any("trained" in n for n in notices)
    assert int(corpus.train.max()) < tok.vocab_size and corpus.info["tokenizer"] == tok.name
    corpus2, tok2, notices2 = load_language(str(src), "bpe:300", progress=False)
    assert tok2.name == tok.name and not notices2 and np.array_equal(corpus2.train, corpus.train)
    assert load_tokenizer(tok.name).name == tok.name  # now in the cache by name


def test_procedural_corpus_is_deterministic_per_seed_with_a_separate_validation_stream() -> None:
    a = generate_documents(0, "train", 20_000)
    assert a == generate_documents(0, "train", 20_000)
    assert generate_documents(0, "train", 40_000)[:len(a)] == a  # longer = same prefix
    assert generate_documents(1, "train", 20_000) != a
    val = generate_documents(0, "val", 20_000)
    assert val[:20] != a[:20] and len(set(val) & set(a)) < len(val) // 10
    tok = ByteTokenizer()
    c = load_corpus("procedural:3", tok, procedural_bytes=30_000)
    assert c.name == "procedural:3" and tok.decode(_split_on(c.val, tok.eos_id)[0]) == generate_documents(3, "val", 1)[0]
    rate = grammar().entropy()
    assert c.entropy_bits_per_byte == rate.bits_per_byte
    assert c.entropy_nats_per_token == pytest.approx(rate.bits_per_byte_token * math.log(2), rel=0.02)


def test_entropy_closed_form_agrees_with_the_exact_grammar_model() -> None:
    g = grammar()
    rate = g.entropy()
    assert 0.1 < rate.bits_per_byte < 1.0
    rng = random.Random(12345)
    bits, lens = [], []
    for _ in range(400):
        text, logp = g.sample(rng)
        scored = g.log2_prob(text)  # the exact model scores the text alone (all derivations)
        assert scored == pytest.approx(logp, abs=1e-9)  # one derivation per text: H(text) = H(derivation)
        bits.append(-scored)
        lens.append(len(text.encode()))
    bits_a, lens_a = np.array(bits), np.array(lens)
    ratio = bits_a.mean() / lens_a.mean()
    se = np.std(bits_a - ratio * lens_a, ddof=1) / math.sqrt(len(bits)) / lens_a.mean()
    assert abs(ratio - rate.bits_per_byte) < 4 * se, (ratio, se, rate)
    mc = g.monte_carlo(20_000, seed=7)  # tighter check from derivation log-probabilities
    assert abs(mc["bits_per_byte"] - rate.bits_per_byte) < 4 * mc["bits_per_byte_stderr"]
    assert mc["bytes_per_story"] == pytest.approx(rate.bytes_per_story, rel=0.02)
    # texts outside the grammar have probability 0
    assert g.log2_prob(text + " The end.") == -math.inf
    assert g.log2_prob(text.replace(" named ", " called ", 1)) == -math.inf


def test_train_with_bpe_on_local_text_writes_tokenizer_and_eval_reloads_it(shared_data, tmp_path) -> None:
    env = {"UNIFIED_CACHE": str(tmp_path / "cache")}
    r = run_cli("train.py", "--model_size", "pico", "--max_steps", "6", "--eval_every", "6", "--batch_size", "2",
                "--seq_len", "64", "--eval_samples", "2", "--tokenizer", "bpe:300",
                "--lang_data", str(shared_data / "tinystories_valid_head.txt"), "--alg_tokens", "0",
                "--output_dir", "run", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["language"]["source"].endswith("tinystories_valid_head.txt")
    assert config["tokenizer_name"].startswith("bpe:300:") and (tmp_path / "run" / "tokenizer.json").is_file()
    val = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert val[-1]["kind"] == "val" and math.isfinite(val[-1]["val_lang_loss"]) and "val_lang_bpb" in val[-1]
    ckpt = torch.load(tmp_path / "run" / "best_model.pt", weights_only=True)
    assert ckpt["tokenizer"] == config["tokenizer_name"] and ckpt["language"]["source"] == config["language"]["source"]
    r = run_cli("eval_hub.py", "--checkpoint", "run/best_model.pt", "--suite", "algorithmic", "--limit", "1",
                "--tasks", "copy", cwd=tmp_path, env={"UNIFIED_CACHE": str(tmp_path / "empty_cache")})
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((tmp_path / "run" / "results_algorithmic@limit=1,tasks=copy.json").read_text())
    assert res["meta"]["tokenizer"] == config["tokenizer_name"]
