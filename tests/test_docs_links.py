"""Every reference in the documentation resolves: relative Markdown links (and their #anchors),
backticked repository paths and `unified.*` names in README.md, docs/*.md and bench/RESULTS.md,
scripts named in their code blocks, and docs/*.md references in the code's docstrings and
comments. A moved module or a renamed heading fails here instead of leaving a dead link."""
from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "RESULTS.md"]
# Top-level folders and files whose backticked paths must exist (outputs such as runs/... are not).
REPO_DIRS = ("unified/", "bench/", "tests/", "docs/", "presets/", ".ci/")
REPO_SUFFIXES = (".py", ".md", ".toml", ".txt", ".sh")
# Files the tools write (named in the docs as outputs), not part of the repository.
GENERATED = {"bench/RESULTS_gpu.md", "bench/RESULTS_gpu.json"}

FENCE = re.compile(r"^(```|~~~)")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
ANCHOR_TAG = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"")
SCRIPT_IN_COMMAND = re.compile(r"(?:python|bash)\s+((?:[\w.-]+/)*[\w.-]+\.(?:py|sh))\b")
DOC_REF = re.compile(r"(docs/[\w.-]+\.md)(#[\w-]+)?")


def split_fences(text: str) -> tuple[list[str], list[str]]:
    """The lines outside fenced code blocks and the lines inside them."""
    prose, code, inside = [], [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            inside = not inside
            continue
        (code if inside else prose).append(line)
    return prose, code


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: links reduced to their text, lower case, punctuation other
    than '-' and '_' dropped, spaces turned into '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor a link into `path` may use: heading slugs (duplicates numbered -1, -2 ... as
    GitHub does) and explicit `<a id="...">` tags."""
    prose, _ = split_fences(path.read_text())
    seen: dict[str, int] = {}
    out: set[str] = set()
    for line in prose:
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            out.add(base if n == 0 else f"{base}-{n}")
            seen[base] = n + 1
        out.update(ANCHOR_TAG.findall(line))
    return out


def check_target(source: Path, target: str) -> str | None:
    """None when `target` (a relative link, maybe with #anchor) resolves from `source`, else why not."""
    path_part, _, anchor = target.partition("#")
    dest = (source.parent / path_part).resolve() if path_part else source
    if not dest.exists():
        return f"{target}: no such file"
    if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
        return f"{target}: no heading or anchor #{anchor} in {dest.name}"
    return None


def is_repo_path(span: str) -> bool:
    """A backticked span that names a file or folder of this repository."""
    if any(c in span for c in " <>*${}()=,") or span.startswith(("http", "/", "~")):
        return False
    if span.startswith(REPO_DIRS):
        return True
    return "/" not in span and span.endswith(REPO_SUFFIXES) and (ROOT / span).exists() or \
        span in ("train.py", "eval_hub.py", "compare.py", "ladder.py", "sample.py", "README.md", "requirements.txt")


def check_dotted(name: str) -> str | None:
    """None when `unified.a.b.c` is an importable module or an attribute of one, else why not."""
    parts = name.split(".")
    for k in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:k]))
        except ImportError:
            continue
        for attr in parts[k:]:
            if not hasattr(obj, attr):
                return f"{name}: {'.'.join(parts[:k])} has no {attr!r}"
            obj = getattr(obj, attr)
        return None
    return f"{name}: not importable"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_paths_and_names_in_the_docs_resolve(doc: Path) -> None:
    prose, code = split_fences(doc.read_text())
    problems = []
    for line in prose:
        for target in LINK.findall(line):
            if not re.match(r"^[a-z]+:", target):  # http:, https:, mailto: are not checked
                problems.append(check_target(doc, target))
        for span in CODE_SPAN.findall(line):
            span = span.strip()
            if is_repo_path(span) and span.rstrip("/") not in GENERATED:
                problems.append(check_target(ROOT / "README.md", span))  # repo paths are relative to the root
            m = re.fullmatch(r"(unified(?:\.\w+)+)(?:\(.*\))?", span)
            if m:
                problems.append(check_dotted(m.group(1)))
    for line in code:
        for script in SCRIPT_IN_COMMAND.findall(line):
            if not script.startswith("-") and not (ROOT / script).exists():
                problems.append(f"command runs {script}: no such file")
    problems = [p for p in problems if p]
    assert not problems, f"{doc.relative_to(ROOT)}:\n" + "\n".join(problems)


def python_sources() -> list[Path]:
    """Every tracked-looking Python file of the project (not caches, runs or virtualenvs)."""
    skip = ("runs", ".cache", ".git", ".venv", "venv", "build")
    return [p for p in ROOT.rglob("*.py") if not any(part in skip for part in p.relative_to(ROOT).parts)
            and p != Path(__file__).resolve()]  # this file names what it looks for


def test_docs_references_in_the_code_resolve() -> None:
    problems = []
    for py in python_sources():
        for i, line in enumerate(py.read_text().splitlines(), 1):
            for path, anchor in DOC_REF.findall(line):
                why = check_target(ROOT / "README.md", path + anchor)
                if why:
                    problems.append(f"{py.relative_to(ROOT)}:{i}: {why}")
            if "DESIGN contract" in line or "DESIGN.md" in line:
                problems.append(f"{py.relative_to(ROOT)}:{i}: cites DESIGN; cite docs/design.md#contract-N")
    assert not problems, "\n".join(problems)


def test_the_checker_catches_what_it_should(tmp_path: Path) -> None:
    """The helpers reject a missing file, a missing anchor and a missing module attribute."""
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n## Step 2: run (`--fast`)\n\n```\n# not a heading\n```\n<a id=\"contract-9\"></a>\n")
    assert anchors(page) == {"title", "step-2-run---fast", "contract-9"}
    assert check_target(page, "page.md#step-2-run---fast") is None
    assert "no heading" in check_target(page, "page.md#not-a-heading")
    assert "no such file" in check_target(page, "missing.md")
    assert check_dotted("unified.errors.UnifiedError") is None
    assert "has no" in check_dotted("unified.errors.NoSuchError")
    assert is_repo_path("unified/models/ssm.py") and not is_repo_path("runs/micro_baseline/")


def test_readme_stays_short() -> None:
    """The README states the essentials and links to docs/ (issue 17: about 250 lines)."""
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300
