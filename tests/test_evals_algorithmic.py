"""The algorithmic suite's numbers (issue 14): strict scoring, distinct stratified cells whose
content depends only on (task, grid, seed), chance floors equal to the cell's constant-answer
exact match, length ranges and OOD overlap flags, answer-position compute steps, and the needle
grid relative to the training length."""
from __future__ import annotations

import pytest
import torch

import unified.data.scoring as scoring
from helpers import tiny_model
from unified.data.scoring import constant_answer_floor, score_examples, strict_correct, token_accuracy
from unified.data.tasks import Example, get_task, resolve_tasks
from unified.errors import ConfigError, UnknownNameError
from unified.evals.algorithmic import AlgorithmicSettings, parse_ood_grid, run_algorithmic
from unified.evals.needle import NeedleSettings, run_needle
from unified.models.decoding import DecodeSettings, Generation, generate
from unified.text.tokenizer import ByteTokenizer

TOK = ByteTokenizer()
PAD, EOS, BOS = TOK.pad_id, TOK.eos_id, TOK.bos_id


def _ids(text: str) -> list[int]:
    return TOK.encode(text)


# ---- strict scoring --------------------------------------------------------------------------
@pytest.mark.parametrize("pred,ended,right", [
    (_ids("42") + [PAD, PAD, PAD], False, False),  # decodes to "42", but PADs and no EOS
    (_ids("4") + [PAD] + _ids("2"), True, False),  # decodes to "42" too
    (_ids("42 "), True, False),  # answer + space
    (_ids(" 42"), True, False),
    ([BOS] + _ids("42"), True, False),
    (_ids("42"), False, False),  # the exact answer but generation never stopped
    (_ids("4"), True, False),
    (_ids("42"), True, True),  # exactly the answer, then EOS
])
def test_strict_correct(pred: list[int], ended: bool, right: bool) -> None:
    assert strict_correct(pred, ended, _ids("42")) is right


def test_token_accuracy_counts_extra_and_missing_tokens() -> None:
    ans = _ids("42")
    assert token_accuracy(ans, True, ans, EOS) == 1.0
    assert token_accuracy(ans + [PAD, PAD, PAD], False, ans, EOS) == pytest.approx(2 / 5)  # 4 2 P P P vs 4 2 EOS
    assert token_accuracy(_ids("42 "), True, ans, EOS) == pytest.approx(2 / 4)  # 4 2 ' ' EOS vs 4 2 EOS
    assert token_accuracy(_ids("4"), True, ans, EOS) == pytest.approx(1 / 3)  # 4 EOS vs 4 2 EOS
    assert token_accuracy([], True, ans, EOS) == 0.0


def _stub_generate(answers_for):
    """A `generate` stand-in: row i of the batch gets `answers_for(prompt_text)` = (ids, ended)."""
    def fake(model, prompts, eos_id, settings, batch_size=64, **_):
        out = [answers_for(TOK.decode(p)) for p in prompts]
        return Generation([o[0] for o in out], [None] * len(prompts), [o[1] for o in out], [None] * len(prompts))
    return fake


def test_score_examples_is_strict_end_to_end(monkeypatch) -> None:
    exs = [Example(f"add {a}+{b}=", str(a + b), {"task": "addition", "difficulty": 2}) for a, b in
           ((40, 2), (41, 2), (42, 2), (43, 2), (44, 2))]
    replies = {"add 40+2=": (_ids("42") + [PAD, PAD, PAD], False), "add 41+2=": (_ids("4") + [PAD] + _ids("3"), True),
               "add 42+2=": (_ids("44 "), True), "add 43+2=": (_ids("45"), True), "add 44+2=": (_ids("46"), False)}
    monkeypatch.setattr(scoring, "generate", _stub_generate(lambda p: replies[p]))
    rows = score_examples(None, TOK, exs)
    assert [r["correct"] for r in rows] == [0.0, 0.0, 0.0, 1.0, 0.0]
    assert rows[0]["prediction"] == "42" and rows[1]["prediction"] == "43"  # lenient decoding would accept both
    assert [r["ended"] for r in rows] == [False, True, True, True, False]
    assert rows[3]["token_accuracy"] == 1.0 and rows[4]["token_accuracy"] == pytest.approx(2 / 3)
    assert rows[3]["length"] == 1 + len("add 43+2=") + 2 + 1  # BOS prompt answer EOS


def test_the_suite_calls_task_check(monkeypatch) -> None:
    calls = []
    task = get_task("copy")
    monkeypatch.setattr(type(task), "check", lambda self, pred, ans: calls.append((pred, ans)) or False)
    monkeypatch.setattr(scoring, "generate", _stub_generate(lambda p: (_ids(p.split()[1][:-1]), True)))
    rows = score_examples(None, TOK, [Example("copy abc=", "abc", {"task": "copy", "difficulty": 3})])
    assert calls == [("abc", "abc")] and rows[0]["correct"] == 0.0  # token-exact, but check said no


# ---- cells, floors -------------------------------------------------------------------------------
def test_constant_answer_floor() -> None:
    assert constant_answer_floor(["1", "0", "1", "1"]) == (0.75, "1")
    assert constant_answer_floor(["b", "a"]) == (0.5, "a")  # ties: the smallest string, deterministically


@pytest.fixture(scope="module")
def constant_runs():
    """The suite run twice with a stub model answering one constant per task: first "0", then each
    task's IID floor answer; plus a run on two tasks only (cells must not depend on the task list)."""
    mp = pytest.MonkeyPatch()
    tasks = resolve_tasks(None)
    settings = AlgorithmicSettings(limit=24, seed=3)
    mp.setattr(scoring, "generate", _stub_generate(lambda p: (_ids("0"), True)))
    first = run_algorithmic(None, TOK, tasks, settings)
    answer = {t.tag: first["tasks"][t.name]["iid"]["floor_answer"] for t in tasks}
    mp.setattr(scoring, "generate", _stub_generate(lambda p: (_ids(answer[p.split()[0]]), True)))
    floor_run = run_algorithmic(None, TOK, tasks, settings)
    subset = run_algorithmic(None, TOK, [get_task("successor"), get_task("addition")], settings)
    mp.undo()
    return first, floor_run, subset


def test_cells_are_distinct_stratified_and_report_n_distinct(constant_runs) -> None:
    first, _, _ = constant_runs
    for name, entry in first["tasks"].items():
        task = get_task(name)
        iid = entry["iid"]
        assert 0 < iid["n"] == iid["n_distinct"] <= 24, name
        lo, hi = task.train_range
        share = 24 // (hi - lo + 1)
        counts = {int(d): c["n"] for d, c in iid["by_difficulty"].items()}
        assert set(counts) <= set(range(lo, hi + 1))
        assert all(c <= share + 1 for c in counts.values()), (name, counts)  # equal shares, never pooled
        assert max(counts.values()) - min(counts.values()) <= 1 or any(c < share for c in counts.values())
        for d, cell in entry["ood"].items():
            assert cell["n"] == cell["n_distinct"] > 0, (name, d)
    assert first["n_distinct"] == sum(e["iid"]["n_distinct"] for e in first["tasks"].values())


def test_floors_are_the_cells_constant_answer_exact_match(constant_runs) -> None:
    first, floor_run, _ = constant_runs
    for name, entry in floor_run["tasks"].items():
        iid = entry["iid"]
        assert iid["exact_match"] == pytest.approx(iid["floor"]), name  # answering the floor answer scores the floor
        assert iid["floor"] == first["tasks"][name]["iid"]["floor"]
        zero = first["tasks"][name]
        for d, cell in zero["ood"].items():  # the constant "0" never beats a cell's floor
            assert cell["exact_match"] <= cell["floor"] + 1e-12, (name, d)
    parity = first["tasks"]["parity"]
    assert parity["iid"]["random_valid_rate"] == 0.5 and first["tasks"]["compare"]["iid"]["random_valid_rate"] == 1 / 3
    assert floor_run["exact_match"] == pytest.approx(floor_run["floor"])  # pooled floor: each task's constant


def test_cells_depend_only_on_task_grid_and_seed(constant_runs) -> None:
    _, floor_run, subset = constant_runs  # the same stub model: identical cells, prompts and numbers
    for name in ("addition", "successor"):
        full, part = floor_run["tasks"][name], subset["tasks"][name]
        assert full["examples"] == part["examples"] and full["iid"] == part["iid"] and full["ood"] == part["ood"]


def test_length_ranges_and_ood_overlap_flags(monkeypatch) -> None:
    monkeypatch.setattr(scoring, "generate", _stub_generate(lambda p: (_ids("0"), True)))
    task = get_task("addition")
    grid = parse_ood_grid(["addition=5"], [task])
    res = run_algorithmic(None, TOK, [task], AlgorithmicSettings(limit=20, ood_grid=grid))["tasks"]["addition"]
    train_lo, train_hi = res["train_length_range"]
    assert train_lo <= res["iid"]["length_range"][0] <= res["iid"]["length_range"][1] <= train_hi
    five = res["ood"]["5"]
    assert five["overlaps_train_length"] is (five["length_range"][0] <= train_hi)
    default = run_algorithmic(None, TOK, [task], AlgorithmicSettings(limit=20))["tasks"]["addition"]
    assert all(not c["overlaps_train_length"] for c in default["ood"].values())  # the default grid is length-OOD


def test_parse_ood_grid() -> None:
    tasks = resolve_tasks(["parity", "addition"])
    assert parse_ood_grid(["parity=128,16,32,64", "addition=5 6"], tasks) == {"parity": (16, 32, 64, 128),
                                                                              "addition": (5, 6)}
    with pytest.raises(UnknownNameError):
        parse_ood_grid(["nope=3"], tasks)
    for bad in ("copy=12", "parity=8", "parity=x", "parity", "=3"):
        with pytest.raises(ConfigError):
            parse_ood_grid([bad], tasks)


# ---- compute steps over answer positions -------------------------------------------------------
def test_answer_steps_are_the_mean_over_answer_positions() -> None:
    model = tiny_model("act", vocab_size=259, max_seq_len=64).eval()
    prompts = [[BOS, *_ids("parity 0110=")], [BOS, *_ids("succ 19=")]]
    gen = generate(model, prompts, EOS, DecodeSettings(max_new_tokens=5))
    for p, toks, ended, mean_all, mean_ans in zip(prompts, gen.tokens, gen.ended, gen.mean_steps, gen.answer_steps):
        seq = p + toks
        with torch.no_grad():
            model(torch.tensor([seq]))
        steps = model.last_steps[0].float()
        # positions whose output is a generated token (or the EOS): the last prompt position and
        # every fed-back generated token, except the last one when generation ran out
        n_out = len(toks) + (1 if ended else 0)
        answer_pos = list(range(len(p) - 1, len(p) - 1 + n_out))
        assert mean_ans == pytest.approx(float(steps[answer_pos].mean()))
        assert mean_all == pytest.approx(float(steps[:len(p) - 1 + n_out].mean()))


# ---- needle grid relative to the training length -------------------------------------------------
def test_needle_default_grid_is_relative_to_the_training_length(monkeypatch) -> None:
    import unified.evals.needle as needle_mod

    monkeypatch.setattr(needle_mod, "generate", lambda m, p, e, s, batch_size, **_: Generation(
        [TOK.encode(" 1") for _ in p], [None] * len(p)))
    model = tiny_model("baseline", vocab_size=259, max_seq_len=256)
    res = run_needle(model, TOK, NeedleSettings(depths=(0.5,), samples=1, train_len=128))
    assert res["grid"]["context_lengths"] == [64, 128, 256, 512, 1024] and res["train_len"] == 128
    assert "64" in res["skipped_lengths"]  # shorter than the smallest needle prompt: recorded, not run
    regimes = {n: v["regime"] for n, v in res["lengths"].items()}
    assert regimes == {"128": "in_distribution", "256": "extrapolation", "512": "extrapolation",
                       "1024": "extrapolation"}
    absolute = run_needle(model, TOK, NeedleSettings(context_lengths=(1024, 2048), depths=(0.5,), samples=1,
                                                     train_len=128))
    assert absolute["grid"]["context_lengths"] == [1024, 2048] and absolute["grid"]["relative"] is False
