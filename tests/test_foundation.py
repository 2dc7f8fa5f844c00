"""Foundation: tokenizer, scales, held-out splits, curriculum, checkpoints, metrics log."""
from __future__ import annotations

import random

import pytest
import torch

from helpers import tiny_model
from unified.data.batches import (Curriculum, CurriculumConfig, encode_example, heldout_sets, prompt_split,
                                  sample_split)
from unified.data.tasks import TASKS, resolve_tasks
from unified.errors import CheckpointError, DataError, UnknownNameError
from unified.models import create_model, variant_names
from unified.models.config import SCALES
from unified.text.tokenizer import ByteTokenizer, load_tokenizer
from unified.train.checkpoint import atomic_save, load_checkpoint, model_from_checkpoint, save_checkpoint
from unified.train.runlog import append_metrics, read_metrics


def test_byte_tokenizer_round_trip_and_digits() -> None:
    tok = load_tokenizer("byte")
    text = "add 123+45=168 — héllo"
    assert tok.decode(tok.encode(text)) == text
    assert len(tok.encode("1234567890")) == 10
    assert {tok.bos_id, tok.eos_id, tok.pad_id} == {256, 257, 258} and tok.vocab_size == 259


def test_hf_tokenizer_offline_is_one_clear_error(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="--tokenizer byte"):
        load_tokenizer("some-org/not-a-tokenizer")


def test_unknown_names_list_the_valid_ones() -> None:
    with pytest.raises(UnknownNameError, match="baseline"):
        create_model("nope", "pico")
    with pytest.raises(UnknownNameError, match="micro"):
        create_model("baseline", "2B")
    with pytest.raises(UnknownNameError, match="d_model"):
        create_model("baseline", "pico", not_an_option=3)


def test_scale_shapes_match_the_ladder() -> None:
    assert (SCALES["nano"]["d_model"], SCALES["nano"]["n_layers"], SCALES["nano"]["n_heads"]) == (512, 6, 8)
    m = create_model("baseline", "1B-16k", device="meta")
    assert m.cfg.n_kv_heads == 4 and m.cfg.max_seq_len == 16384
    # nano with the byte vocabulary: 6 layers of 512 -> ~19M parameters
    assert 15e6 < create_model("baseline", "nano", device="meta").num_params() < 25e6


def test_shared_loop_reports_effective_depth_and_flops() -> None:
    base = tiny_model("baseline")
    loop = tiny_model("shared_loop", n_unique=1, n_loops=4)
    assert len(loop.schedule()) == 4 and loop.attention_layers() == 4
    assert loop.num_params() < base.num_params()
    f4 = loop.flops_per_token(64)
    loop.apply_overrides(n_loops=8)
    assert loop.flops_per_token(64) > 1.9 * f4 - 6 * loop.lm_head.weight.numel()
    ids = torch.randint(0, 61, (1, 12))
    with torch.no_grad():
        full = loop(ids).logits
        cache = loop.init_cache(1)
        a = loop(ids[:, :5], cache=cache)
        b = loop(ids[:, 5:], cache=a.cache)
    torch.testing.assert_close(torch.cat([a.logits, b.logits], 1), full, atol=1e-5, rtol=1e-4)


def _row_prompts(row: list[int]) -> list[str]:
    """Prompts ("... =") of the examples packed in a row (each starts with BOS)."""
    tok, prompts, current = ByteTokenizer(), [], None
    for t in row + [tok.bos_id]:
        if t == tok.bos_id:
            if current is not None and "=" in tok.decode(current):
                prompts.append(tok.decode(current).split("=")[0] + "=")
            current = []
        elif current is not None:
            current.append(t)
    return prompts


def test_heldout_splits_are_disjoint_from_training() -> None:
    tasks = resolve_tasks(None)
    cur = Curriculum(CurriculumConfig(seq_len=128, tokens_per_step=1024, alg_tokens=10_000), ByteTokenizer(),
                     tasks, None, seed=0)
    eval_prompts = {e.prompt for exs in heldout_sets(tasks, "eval", 50, seed=0).values() for e in exs}
    val_prompts = {e.prompt for exs in heldout_sets(tasks, "val", 50, seed=0).values() for e in exs}
    assert len(eval_prompts) > 300 and len(val_prompts) > 300 and not (eval_prompts & val_prompts)
    assert all(prompt_split(p) == "eval" for p in eval_prompts)
    trained = [p for s in range(0, 60, 3) for row in cur.batch(s, range(8))[0].tolist() for p in _row_prompts(row)]
    assert len(trained) > 300
    assert all(prompt_split(p) == "train" for p in trained)
    assert not set(trained) & (eval_prompts | val_prompts)
    rng = random.Random(0)
    assert all(prompt_split(sample_split(TASKS["addition"], rng, "train").prompt) == "train" for _ in range(200))


def test_answer_only_loss_mask() -> None:
    ex = TASKS["addition"].sample(random.Random(1), 3)
    ids, tgt = encode_example(ByteTokenizer(), ex)
    supervised = [t for t in tgt if t != -100]
    assert ByteTokenizer().decode(supervised[:-1]) == ex.answer and supervised[-1] == ByteTokenizer.eos_id
    assert len(ids) == len(tgt)


def test_curriculum_difficulty_rises_with_tokens() -> None:
    tasks = resolve_tasks("addition,parity,copy")
    cfg = CurriculumConfig(seq_len=256, tokens_per_step=256 * 8, alg_tokens=200 * 256 * 8)
    cur = Curriculum(cfg, ByteTokenizer(), tasks, None, seed=3)

    def mean_prompt_len(step: int) -> float:
        ids, tgt = cur.batch(step, range(8))
        n_examples = int((ids == ByteTokenizer.bos_id).sum())
        return int((tgt != -100).sum()) and (ids != ByteTokenizer.pad_id).sum().item() / n_examples

    early = sum(mean_prompt_len(s) for s in range(0, 6)) / 6
    late = sum(mean_prompt_len(s) for s in range(170, 176)) / 6
    assert late > 1.3 * early, (early, late)
    assert cur.level(0) == 0.0 and cur.level(cfg.alg_tokens) == 1.0


def test_batches_are_a_function_of_seed_and_step() -> None:
    cfg = CurriculumConfig(seq_len=64, tokens_per_step=64 * 4, alg_tokens=100_000)
    a = Curriculum(cfg, ByteTokenizer(), resolve_tasks(None), None, seed=5)
    b = Curriculum(cfg, ByteTokenizer(), resolve_tasks(None), None, seed=5)
    assert torch.equal(a.batch(7, range(4))[0], b.batch(7, range(4))[0])
    assert not torch.equal(a.batch(7, range(4))[0], a.batch(8, range(4))[0])
    # rows are addressed globally: two processes with 2 rows each see the rows of one with 4
    assert torch.equal(torch.cat([a.batch(7, range(0, 2))[0], a.batch(7, range(2, 4))[0]]), a.batch(7, range(4))[0])


def test_language_fraction_schedule(tmp_path) -> None:
    from unified.text.corpus import corpus_from_path

    f = tmp_path / "t.txt"
    f.write_text("hello world, this is text. " * 400)
    corpus = corpus_from_path(f, ByteTokenizer())
    assert len(corpus.val) > 0 and len(corpus.train) > 10 * len(corpus.val)
    cfg = CurriculumConfig(seq_len=32, tokens_per_step=1000, alg_tokens=100_000, mix_tokens=20_000)
    cur = Curriculum(cfg, ByteTokenizer(), resolve_tasks("copy"), corpus, seed=0)
    assert cur.lang_fraction(50_000) == 0.0 and cur.phase(50_000) == "algorithmic"
    assert 0 < cur.lang_fraction(90_000) < 0.85 and cur.phase(90_000) == "mix"
    assert cur.lang_fraction(200_000) == pytest.approx(0.85) and cur.phase(200_000) == "language"


def test_checkpoint_round_trip_and_errors(tmp_path) -> None:
    model = tiny_model("baseline")
    save_checkpoint(tmp_path / "m.pt", model, "byte", step=3)
    ckpt = load_checkpoint(tmp_path / "m.pt")
    again = model_from_checkpoint(ckpt)
    ids = torch.randint(0, 61, (1, 8))
    assert torch.equal(again(ids).logits, model(ids).logits)
    with pytest.raises(CheckpointError, match="tokenizer"):
        model_from_checkpoint(ckpt, tokenizer_name="gpt2")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    atomic_save({"x": 1}, tmp_path / "a.pt")
    assert not list(tmp_path.glob(".*tmp"))


def test_metrics_log_drops_records_replaced_by_a_resume(tmp_path) -> None:
    p = tmp_path / "metrics.jsonl"
    for s in (10, 20, 30):
        append_metrics(p, {"kind": "train", "step": s, "loss": 1.0})
    append_metrics(p, {"kind": "resume", "step": 20})
    append_metrics(p, {"kind": "train", "step": 30, "loss": 0.5})
    with open(p, "a") as f:
        f.write('{"kind": "train", "st')  # torn last line from a kill
    recs = [r for r in read_metrics(p) if r["kind"] == "train"]
    assert [(r["step"], r["loss"]) for r in recs] == [(10, 1.0), (20, 1.0), (30, 0.5)]


def test_registry_has_the_foundation_variants() -> None:
    assert {"baseline", "shared_loop"} <= set(variant_names())
