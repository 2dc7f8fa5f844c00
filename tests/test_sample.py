"""sample.py and unified.evals.sample_text: streaming through every variant's cache, deterministic greedy
and seeded sampling, stop strings, prompts with the right conditioning token, one-line errors."""
from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
import torch

from helpers import run_cli, tiny_model
from unified.errors import ConfigError, UnknownNameError
from unified.evals.sample_text import (TextStreamer, encode_prompt, generate_until, is_algorithmic_prompt,
                                       stream_sample, validate_settings)
from unified.models import variant_names
from unified.models.decoding import DecodeSettings, generate
from unified.text.tokenizer import ByteTokenizer
from unified.train.checkpoint import save_checkpoint

TOK = ByteTokenizer()


class LetterTokenizer(ByteTokenizer):
    """Byte ids, but every id decodes to one printable letter (untrained models emit invalid UTF-8)."""

    def decode(self, ids):
        return "".join(chr(97 + int(i) % 26) for i in ids)


NO_EOS = 10 ** 6  # an id no model emits: generation runs to max_new_tokens


def _model(variant: str):
    torch.manual_seed(0)
    return tiny_model(variant, vocab_size=259).eval()


@pytest.mark.parametrize("variant", variant_names())
def test_streamed_greedy_sample_equals_batched_decoding_and_arrives_token_by_token(variant: str) -> None:
    model = _model(variant)
    prompt = encode_prompt("Once upon a time", TOK)
    settings = DecodeSettings(max_new_tokens=12)
    forwards, seen = [0], []
    hook = model.register_forward_hook(lambda *_: forwards.__setitem__(0, forwards[0] + 1))
    letters = LetterTokenizer()
    sample = stream_sample(model, letters, prompt, settings, write=lambda piece: seen.append((forwards[0], piece)))
    hook.remove()
    ref = generate(model, [prompt], TOK.eos_id, settings)
    assert sample.ids == ref.tokens[0], variant  # same tokens as the suites' cached decoder
    assert "".join(p for _, p in seen) == sample.text == letters.decode(ref.tokens[0])
    # one piece per token, each written right after the forward that chose it (prefill, then one step each)
    assert [f for f, _ in seen] == list(range(1, len(sample.ids) + 1)), variant


def test_seeded_sampling_is_deterministic_and_matches_the_suites_sampler() -> None:
    model = _model("baseline")
    prompt = encode_prompt("The cat", TOK)
    s = DecodeSettings(max_new_tokens=24, temperature=1.0, top_k=50, top_p=0.95, seed=7)
    a = stream_sample(model, TOK, prompt, s).ids
    assert a == stream_sample(model, TOK, prompt, s).ids
    ref = generate(model, [prompt], TOK.eos_id, s)
    assert a == ref.tokens[0]
    other = stream_sample(model, TOK, prompt, DecodeSettings(max_new_tokens=24, temperature=1.0, seed=8)).ids
    assert other != a


def test_text_streamer_never_splits_a_multibyte_character() -> None:
    text = "héllo € 😀 done"
    streamer, pieces = TextStreamer(TOK), []
    for b in text.encode("utf-8"):
        pieces.append(streamer.push(b))
    pieces.append(streamer.flush())
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)
    assert pieces[text.encode().index("€".encode()[0])] == ""  # held back until the character completes


def test_generate_until_stops_at_the_stop_string_and_batching_changes_nothing() -> None:
    model = _model("rsm")
    prompts = [encode_prompt(t, TOK) for t in ("abc", "abd", "hello there", "x")]
    s = DecodeSettings(max_new_tokens=20)
    full = generate(model, prompts, NO_EOS, s).tokens
    texts = [TOK.decode(t) for t in full]
    stops = [[t[3:5]] if len(t) >= 5 else ["\x00never"] for t in texts]
    got = generate_until(model, TOK, prompts, stops, s, batch_size=8)
    assert got == generate_until(model, TOK, prompts, stops, s, batch_size=1)
    for text, stop, out in zip(texts, stops, got):
        assert out == text[:text.find(stop[0])] if stop[0] in text else out == text


def test_prompts_get_the_token_training_put_before_them() -> None:
    assert is_algorithmic_prompt("add 12+34=") and not is_algorithmic_prompt("Once upon a time")
    assert encode_prompt("add 12+34=", TOK)[0] == TOK.bos_id
    assert encode_prompt("Once upon a time", TOK)[0] == TOK.eos_id
    assert encode_prompt("", TOK) == [TOK.eos_id]
    assert encode_prompt("hi", TOK, "none") == list(b"hi")
    with pytest.raises(ConfigError, match="empty"):
        encode_prompt("", TOK, "none")
    with pytest.raises(UnknownNameError, match="--prefix"):
        encode_prompt("hi", TOK, "pad")
    for bad, flag in ((dict(max_new_tokens=0), "--max_new_tokens"), (dict(temperature=-1.0), "--temperature"),
                      (dict(temperature=float("nan")), "--temperature"), (dict(top_k=-2), "--top_k"),
                      (dict(top_p=0.0), "--top_p"), (dict(top_p=1.5), "--top_p")):
        with pytest.raises(ConfigError, match=flag):
            validate_settings(DecodeSettings(**bad))


# ---- the CLI ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sample") / "best_model.pt"
    save_checkpoint(path, _model("baseline"), "byte", step=1)
    return path


def _main(argv: list[str], capsys, stdin: str | None = None, monkeypatch=None) -> tuple[int, str, str]:
    import sample

    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    try:
        code = sample.main(argv)
    except ConfigError as exc:  # what run_cli turns into "error: ..." and exit 2
        code = 2
        print(f"error: {exc}", file=sys.stderr)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_greedy_and_seeded_sampling_print_the_same_text_every_time(checkpoint: Path, capsys) -> None:
    base = ["--checkpoint", str(checkpoint), "--prompt", "Once upon", "--max_new_tokens", "16"]
    greedy = [_main(base, capsys)[1] for _ in range(2)]
    assert greedy[0] == greedy[1] and greedy[0].startswith("Once upon") and len(greedy[0]) > len("Once upon\n")
    sampled = ["--temperature", "1.0", "--top_k", "40", "--num_samples", "2"]
    one, two = (_main(base + sampled + ["--seed", "3"], capsys)[1] for _ in range(2))
    assert one == two and one.count("--- sample") == 2
    assert _main(base + sampled + ["--seed", "4"], capsys)[1] != one


def test_cli_interactive_reads_one_prompt_per_line(checkpoint: Path, capsys, monkeypatch) -> None:
    code, out, _ = _main(["--checkpoint", str(checkpoint), "--interactive", "--max_new_tokens", "4"], capsys,
                         stdin="first\nsecond\n", monkeypatch=monkeypatch)
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("first") and lines[1].startswith("second")


def test_cli_bad_input_is_one_line_and_exit_2(checkpoint: Path, tmp_path: Path) -> None:
    cases = [(["--top_p", "0"], "--top_p"), (["--prompt", "a", "--prompt_file", "b"], "not both"),
             (["--prompt_file", str(tmp_path / "absent.txt")], "does not exist"),
             (["--temperature", "-1"], "--temperature"), (["--num_samples", "0"], "--num_samples"),
             (["--device", "cuda:7"], "--device")]
    for extra, needle in cases:
        r = run_cli("sample.py", "--checkpoint", str(checkpoint), *extra, cwd=tmp_path, timeout=120)
        assert r.returncode == 2, (extra, r.stderr)
        assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    r = run_cli("sample.py", "--checkpoint", str(tmp_path / "none.pt"), cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_report_samples_section_shows_every_group_side_by_side(tmp_path: Path) -> None:
    from test_compare import fake_run
    from unified.compare.comparison import compare
    from unified.compare.report import write_report
    from unified.compare.samples import LANGUAGE_PROMPT, algorithmic_prompt

    for variant in ("baseline", "ssm"):
        for seed in (0, 1):
            run = fake_run(tmp_path / "runs", variant, seed, iid=0.2, ood=0.1)
            save_checkpoint(run / "best_model.pt", _model(variant), "byte", step=1)
    comp = compare([tmp_path / "runs"])
    first = write_report(comp, tmp_path / "a")
    md = first["comparison.md"].read_text()
    section = md[md.index("## Samples"):].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| pico/")]
    assert [r.split(" | ")[0] for r in rows] == ["| pico/baseline", "| pico/ssm"]
    assert LANGUAGE_PROMPT in section and algorithmic_prompt() in section and algorithmic_prompt().startswith("add ")
    assert "<h2>Samples</h2>" in first["report.html"].read_text()
    again = write_report(comp, tmp_path / "b")["comparison.md"].read_text()
    assert again[again.index("## Samples"):].split("\n## ", 1)[0] == section  # greedy: the same every time
    none = write_report(comp, tmp_path / "c", samples=False)["comparison.md"].read_text()
    assert "## Samples" not in none
