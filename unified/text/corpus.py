"""Language text sources for the language phase (DESIGN contract 3).

A corpus is a token array for training and a held-out validation array that training never
reads; documents are packed and separated by EOS. Sources (`load_corpus` / `load_language`):
  - `procedural`: the offline story grammar (`unified.storygrammar`), generated deterministically
    from a seed (`procedural:SEED`, default 0), validation from a separate seed stream; its exact
    entropy rate is `TextCorpus.entropy_bits_per_byte` (the floor no model can beat on average).
  - `tinystories`, `wikitext103`, `openwebtext`, `minipile`, or `hf:<repo>[:<config>]`: HF
    `datasets` (streamed), tokenized once into a memmap cache (`unified.textcache`).
  - a local `.txt` file or folder (documents split on `<|endoftext|>` lines), also cached.
  - `auto` (train.py's default): TinyStories when cached or reachable, else `procedural`.
Offline, a hub name fails within seconds with one line naming `--lang_data PATH`.
`python -m unified.corpus prepare --lang_dataset X --tokenizer Y` fills the cache ahead of training.
"""
from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from unified.errors import ConfigError, DataError
from unified.tokenizer import Tokenizer

DOC_SEPARATOR = "<|endoftext|>"
PROCEDURAL_VAL_BYTES = 256_000  # fixed, so every run of a seed is validated on the same stories
BPE_TRAIN_BYTES = 16_000_000  # training text a bpe:N tokenizer is learned from (at most)


@dataclass
class TextCorpus:
    """Training and validation token arrays of one text source.

    `entropy_bits_per_byte` is the true entropy rate when the source's distribution is known
    (the procedural corpus), else None; `info` says where it came from (cache folder ...)."""

    name: str
    train: np.ndarray
    val: np.ndarray
    train_bytes: int
    val_bytes: int
    entropy_bits_per_byte: float | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def bytes_per_token(self) -> float:
        """Mean UTF-8 bytes per validation token (converts nats/token into bits per byte)."""
        return self.val_bytes / max(1, len(self.val))

    @property
    def entropy_nats_per_token(self) -> float | None:
        """The entropy floor in nats per token of this tokenization (bits/byte x validation bytes
        per token x ln 2), or None when unknown."""
        if self.entropy_bits_per_byte is None:
            return None
        return self.entropy_bits_per_byte * self.bytes_per_token * math.log(2)


def cache_root() -> Path:
    """Root of the token and tokenizer cache: $UNIFIED_CACHE, else ~/.cache/unified."""
    return Path(os.environ.get("UNIFIED_CACHE") or Path.home() / ".cache" / "unified").expanduser()


# ---- local text ------------------------------------------------------------------------------
def read_documents(path: str | Path) -> list[str]:
    """The documents of a `.txt` file (split on <|endoftext|> lines) or of every `.txt` under a folder."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"language data {str(p)!r} does not exist; give a .txt file or a folder of .txt files")
    files = sorted(p.rglob("*.txt")) if p.is_dir() else [p]
    if not files:
        raise DataError(f"language data folder {str(p)!r} holds no .txt files")
    folder = next((f for f in files if f.is_dir()), None)
    if folder is not None:
        raise DataError(f"language data {str(folder)!r} is a folder, not a .txt file; rename it (its .txt files "
                        f"are read either way)")
    docs: list[str] = []
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise DataError(f"language data {str(f)!r} is not UTF-8 text; give plain .txt files") from None
        if "\x00" in text:
            raise DataError(f"language data {str(f)!r} looks binary (NUL bytes); give plain .txt files")
        docs.extend(d.strip("\n") for d in text.split(DOC_SEPARATOR))
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise DataError(f"language data {str(p)!r} is empty")
    return docs


def split_documents(docs: list[str], val_fraction: float = 0.05) -> tuple[list[str], list[str]]:
    """(train, validation) documents: the last `val_fraction` of documents is validation; with
    fewer than 20 documents the joined text is cut by characters instead."""
    n_val = int(round(len(docs) * val_fraction))
    if len(docs) >= 20 and n_val >= 1:
        return docs[:-n_val], docs[-n_val:]
    text = "\n".join(docs)
    cut = int(len(text) * (1 - val_fraction))
    return [text[:cut]], [text[cut:]]


def token_dtype(tokenizer: Tokenizer) -> type:
    """uint16 when every id fits, else uint32."""
    return np.uint16 if tokenizer.vocab_size <= 2**16 else np.uint32


def encode_documents(docs: list[str], tokenizer: Tokenizer, chunk: int = 1024) -> np.ndarray:
    """Token ids of `docs`, each followed by EOS, packed into one array of `token_dtype`
    (encoded `chunk` documents at a time, so memory stays near the size of the result)."""
    dtype = token_dtype(tokenizer)
    parts = [np.zeros(0, dtype=dtype)]
    for i in range(0, len(docs), chunk):
        ids: list[int] = []
        for seq in tokenizer.encode_batch(docs[i:i + chunk]):
            ids.extend(seq)
            ids.append(tokenizer.eos_id)
        parts.append(np.asarray(ids, dtype=dtype))
    return np.concatenate(parts)


def _n_bytes(docs: Iterable[str]) -> int:
    return sum(len(d.encode("utf-8")) for d in docs)


def corpus_from_path(path: str | Path, tokenizer: Tokenizer, val_fraction: float = 0.05) -> TextCorpus:
    """Tokenize local text (in memory, no cache) into a training array and a disjoint validation array.

    The last `val_fraction` of documents is validation; a single document is split by characters."""
    train_docs, val_docs = split_documents(read_documents(path), val_fraction)
    train, val = encode_documents(train_docs, tokenizer), encode_documents(val_docs, tokenizer)
    if len(train) < 2 or len(val) < 2:
        raise DataError(f"language data {str(path)!r} is too small to split into training and validation")
    return TextCorpus(str(path), train, val, _n_bytes(train_docs), _n_bytes(val_docs))


# ---- the procedural corpus ---------------------------------------------------------------------
def procedural_seed(spec: str) -> int:
    """SEED of `procedural[:SEED]` (0 by default)."""
    _, _, seed = spec.partition(":")
    try:
        return int(seed or 0)
    except ValueError:
        raise ConfigError(f"bad --lang_dataset {spec!r}; accepted: procedural or procedural:SEED") from None


def procedural_corpus(tokenizer: Tokenizer, seed: int = 0, train_bytes: int = 4_000_000,
                      val_bytes: int = PROCEDURAL_VAL_BYTES) -> TextCorpus:
    """Stories of the grammar: about `train_bytes` for training, `val_bytes` for validation (separate
    seed streams), tokenized in memory; carries the exact entropy rate."""
    from unified.storygrammar import GRAMMAR_VERSION, generate_documents, grammar

    train_docs = generate_documents(seed, "train", train_bytes)
    val_docs = generate_documents(seed, "val", val_bytes)
    rate = grammar().entropy()
    info = {"grammar_version": GRAMMAR_VERSION, "seed": seed, "train_docs": len(train_docs),
            "val_docs": len(val_docs), "entropy_bits_per_story": rate.bits_per_story,
            "mean_story_bytes": rate.bytes_per_story}
    return TextCorpus(f"procedural:{seed}", encode_documents(train_docs, tokenizer), encode_documents(val_docs, tokenizer),
                      _n_bytes(train_docs), _n_bytes(val_docs), rate.bits_per_byte, info)


# ---- one entry point ---------------------------------------------------------------------------
def describe_sources() -> str:
    """The accepted --lang_dataset values, for error messages and --help."""
    from unified.textcache import HUB_SOURCES

    return f"auto, procedural[:SEED], none, {', '.join(HUB_SOURCES)}, hf:<repo>[:<config>], or a local .txt file/folder"


def is_hub_spec(spec: str) -> bool:
    """Whether `spec` names an HF dataset (a known name or hf:<repo>)."""
    from unified.textcache import HUB_SOURCES

    return spec in HUB_SOURCES or spec.startswith("hf:")


def load_corpus(spec: str, tokenizer: Tokenizer, *, cache_dir: str | Path | None = None, max_tokens: int | None = None,
                procedural_bytes: int = 4_000_000, val_fraction: float = 0.05, progress: bool = True) -> TextCorpus:
    """The corpus named by `spec` (see the module docstring; "auto" must be resolved first with
    `resolve_source`), tokenized with `tokenizer`. Hub and local sources go through the memmap
    cache under `cache_dir` (default `cache_root()`); `max_tokens` caps hub training tokens."""
    from unified.textcache import cached_hub_corpus, cached_local_corpus

    if spec in ("auto", "none"):
        raise ConfigError(f"load_corpus needs a concrete source, not {spec!r} (resolve 'auto' with resolve_source)")
    if spec == "procedural" or spec.startswith("procedural:"):
        return procedural_corpus(tokenizer, procedural_seed(spec), procedural_bytes)
    root = Path(cache_dir) if cache_dir else cache_root()
    if is_hub_spec(spec):
        return cached_hub_corpus(spec, tokenizer, root, max_tokens=max_tokens, progress=progress)
    if Path(spec).exists():
        return cached_local_corpus(spec, tokenizer, root, val_fraction=val_fraction, progress=progress)
    if "/" in spec or "\\" in spec or spec.endswith(".txt"):
        read_documents(spec)  # raises the "does not exist" error
    raise ConfigError(f"unknown --lang_dataset {spec!r}; accepted: {describe_sources()}")


def resolve_source(spec: str, tokenizer_spec: str = "byte", cache_dir: str | Path | None = None) -> tuple[str, str | None]:
    """(concrete source, notice or None) for `spec`; only "auto" changes: TinyStories when its
    tokens or the HF dataset are cached or the hub is reachable, else the procedural corpus."""
    if spec != "auto":
        return spec, None
    from unified.textcache import HUB_SOURCES, hub_is_cached, hub_offline, token_cache_exists

    root = Path(cache_dir) if cache_dir else cache_root()
    if token_cache_exists(root, "tinystories", tokenizer_spec) or hub_is_cached(HUB_SOURCES["tinystories"]):
        return "tinystories", "note: --lang_dataset auto: using TinyStories (cached)"
    if not hub_offline():
        return "tinystories", (f"note: --lang_dataset auto: using TinyStories from the hub (the first run downloads "
                               f"and tokenizes it into {root}; pass --lang_dataset procedural to skip)")
    from unified.storygrammar import grammar

    return "procedural", (f"note: --lang_dataset auto: TinyStories is neither cached nor reachable; training on the "
                          f"offline procedural story corpus (entropy floor {grammar().entropy().bits_per_byte:.4f} "
                          f"bits/byte)")


def training_texts(spec: str, max_bytes: int = BPE_TRAIN_BYTES, cache_dir: str | Path | None = None,
                   val_fraction: float = 0.05) -> Iterator[str]:
    """Training documents of `spec` (never validation ones), up to about `max_bytes`: what a
    `bpe:N` tokenizer is learned from."""
    from unified.textcache import hub_documents, hub_has_validation, resolve_hub

    if spec == "procedural" or spec.startswith("procedural:"):
        from unified.storygrammar import generate_documents

        docs: Iterable[str] = generate_documents(procedural_seed(spec), "train", max_bytes)
    elif is_hub_spec(spec):
        src = resolve_hub(spec)
        docs = hub_documents(src, "train", hub_has_validation(src))
    else:
        docs = split_documents(read_documents(spec), val_fraction)[0]
    total = 0
    for d in docs:
        yield d
        total += len(d.encode("utf-8"))
        if total >= max_bytes:
            return


def load_language(spec: str, tokenizer_spec: str = "byte", *, cache_dir: str | Path | None = None,
                  max_tokens: int | None = None, procedural_bytes: int = 4_000_000,
                  tokenizer_file: str | Path | None = None, progress: bool = True,
                  ) -> tuple[TextCorpus, Tokenizer, list[str]]:
    """Resolve `spec` ("auto" included) and the tokenizer ("bpe:N" is trained on the source's
    training text, or read from `tokenizer_file` when given, e.g. a resumed run's tokenizer.json),
    then load the corpus. Returns (corpus, tokenizer, notices to print)."""
    from unified.textcache import source_key
    from unified.tokenizer import BPETokenizer, bpe_size, load_tokenizer, tokenizer_cache_dir, train_bpe

    concrete, notice = resolve_source(spec, tokenizer_spec, cache_dir)
    notices = [notice] if notice else []
    n = bpe_size(tokenizer_spec)
    if n is None:
        tokenizer = load_tokenizer(tokenizer_spec)
    elif tokenizer_file is not None and Path(tokenizer_file).is_file():
        tokenizer = BPETokenizer.from_json(Path(tokenizer_file).read_text(encoding="utf-8"))
    else:
        key = source_key(concrete, max_tokens, val_fraction=0.05)
        by_source = tokenizer_cache_dir() / f"from-{key}-bpe{n}.json"
        if by_source.is_file():
            tokenizer = BPETokenizer.from_json(by_source.read_text(encoding="utf-8"))
        else:
            tokenizer = train_bpe(training_texts(concrete, cache_dir=cache_dir), n)
            tokenizer.save(by_source)
            notices.append(f"note: trained {tokenizer.name} on the training text of {concrete}")
        tokenizer.save(tokenizer_cache_dir() / f"bpe-{tokenizer.vocab_size}-{tokenizer.name.rsplit(':', 1)[1]}.json")
    corpus = load_corpus(concrete, tokenizer, cache_dir=cache_dir, max_tokens=max_tokens,
                         procedural_bytes=procedural_bytes, progress=progress)
    return corpus, tokenizer, notices


# ---- python -m unified.corpus prepare ---------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """`prepare`: tokenize a source into the cache ahead of training, with a progress bar."""
    from unified.cli import ArgumentParser, set_offline_if_unreachable

    p = ArgumentParser(prog="python -m unified.corpus", description="Prepare language data for train.py.")
    sub = p.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="tokenize a source into the memmap cache",
                          formatter_class=p.formatter_class)
    prep.add_argument("--lang_dataset", default="auto", help=describe_sources())
    prep.add_argument("--lang_data", default=None, help="local .txt file or folder (same as --lang_dataset PATH)")
    prep.add_argument("--tokenizer", default="byte", help="byte, bpe:N, or an HF tokenizer name / local path")
    prep.add_argument("--lang_max_tokens", type=int, default=None, help="cap on training tokens of a hub source")
    prep.add_argument("--cache_dir", default=None, help="default $UNIFIED_CACHE or ~/.cache/unified")
    args = p.parse_args(argv)
    set_offline_if_unreachable()
    spec = args.lang_data or args.lang_dataset
    if spec == "none":
        raise ConfigError("nothing to prepare for --lang_dataset none")
    corpus, tok, notices = load_language(spec, args.tokenizer, cache_dir=args.cache_dir, max_tokens=args.lang_max_tokens)
    for line in notices:
        print(line)
    floor = f", entropy floor {corpus.entropy_bits_per_byte:.4f} bits/byte" if corpus.entropy_bits_per_byte else ""
    print(f"{corpus.name} with {tok.name}: {len(corpus.train):,} training and {len(corpus.val):,} validation tokens "
          f"({corpus.bytes_per_token:.2f} bytes/token{floor})")
    print(f"cache: {corpus.info.get('cache_dir', 'none (generated in memory)')}")
    return 0


if __name__ == "__main__":
    from unified.cli import run_cli

    run_cli(main, sys.argv[1:])
