"""Every command the README and docs/ show for train.py, eval_hub.py, compare.py, ladder.py and
sample.py still parses as written: its flags exist and take the values shown, and for train.py (and
a ladder's train.py options) the pure `resolve` accepts the names and values. Nothing is run:
parsing and resolving read no data and build no model."""
from __future__ import annotations

import importlib
import re
import shlex

import pytest

from helpers import ROOT
from unified.train.flags import config_from_args
from unified.train.resolve import resolve

CLIS = ("train.py", "eval_hub.py", "compare.py", "ladder.py", "sample.py")
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def documented_commands() -> list[tuple[str, str, list[str]]]:
    """(where, cli, argv) of every `python <cli> ...` line in a fenced code block or inline code span
    (continuation lines joined; shell redirections, pipes and comments dropped)."""
    found = []
    for doc in DOCS:
        text = re.sub(r"\\\n\s*", " ", doc.read_text())
        spans = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S) + re.findall(r"`([^`\n]+)`", text)
        for span in spans:
            for line in span.splitlines():
                m = re.search(r"(?:^|\s)python (?:-m torch\.distributed\.run \S+ |torchrun \S+ )?("
                              + "|".join(map(re.escape, CLIS)) + r")(?=\s|$)(.*)", line)
                if not m:
                    continue
                rest = re.split(r"\s(?:\||&&|;|2?>|#)\s?", " " + m.group(2))[0]
                try:
                    argv = shlex.split(rest)
                except ValueError:
                    continue
                found.append((f"{doc.name}: {line.strip()[:90]}", m.group(1), argv))
    return found


COMMANDS = documented_commands()


def test_the_docs_show_commands_of_every_cli() -> None:
    assert {cli for _, cli, _ in COMMANDS} == set(CLIS), "the extraction found no command of some CLI"


def _is_synopsis(argv: list[str]) -> bool:
    """A line like `python train.py --model_size SIZE --variant NAME`: placeholders for values."""
    return any(re.fullmatch(r"[A-Z][A-Z_,0-9]*", a) for a in argv)


@pytest.mark.parametrize("where,cli,argv", COMMANDS, ids=[w for w, _, _ in COMMANDS])
def test_documented_command_parses_as_written(where: str, cli: str, argv: list[str]) -> None:
    argv = [a for a in argv if not (a.startswith("<") or a == "...")]  # placeholders: the flags still count
    module = importlib.import_module(cli[:-3])
    own, train_args = module.split_argv(argv) if cli == "ladder.py" else (argv, [])
    parser = module.build_parser()
    if _is_synopsis(own) or "--help" in own or "-h" in own:
        unknown = [a.split("=")[0] for a in own if a.startswith("-") and a.split("=")[0] not in parser._option_string_actions]
        assert not unknown, f"{where}: no such option {unknown}"
        return
    args = parser.parse_args(own)
    if cli == "ladder.py" and train_args and not _is_synopsis(train_args):
        module.check_train_args(["baseline"], "pico", train_args)
    if cli == "train.py" and not getattr(args, "config", None):
        resolve(config_from_args(args))
