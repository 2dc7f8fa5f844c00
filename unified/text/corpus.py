"""Language text sources for the language phase (docs/design.md#contract-3).

A corpus is a token array for training and a held-out validation array that training never
reads; documents are packed and separated by EOS. Sources (`load_corpus` / `load_language`):
  - `procedural`: the offline story grammar (`unified.text.storygrammar`), generated deterministically
    from a seed (`procedural:SEED`, default 0), validation from a separate seed stream; its exact
    entropy rate is `TextCorpus.entropy_bits_per_byte` (the floor no model can beat on average).
  - `tinystories`, `wikitext103`, `openwebtext`, `minipile`, or `hf:<repo>[:<config>]`: HF
    `datasets` (streamed), tokenized once into a memmap cache (`unified.text.textcache`).
  - a local `.txt` file or folder (documents split on `<|endoftext|>` lines), also cached.
  - `auto` (train.py's default): TinyStories when cached or reachable, else `procedural`.
Offline, a hub name fails within seconds with one line naming `--lang_data PATH`.
`python -m unified.text prepare --lang_dataset X --tokenizer Y` fills the cache ahead of training.
This module builds on `unified.text.documents` (local text, the `TextCorpus` type),
`unified.text.tokenizer`, `unified.text.textcache` (memmap cache, HF sources) and
`unified.text.storygrammar`; imports point one way, from here towards those modules.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

from unified.errors import ConfigError, DataError
from unified.text.documents import TextCorpus, cache_root, utf8_bytes, read_documents, split_documents
from unified.text.storygrammar import GRAMMAR_VERSION, generate_documents, grammar
from unified.text.textcache import (HUB_SOURCES, cached_hub_corpus, cached_local_corpus, hub_documents,
                                    hub_has_validation, hub_is_cached, hub_offline, resolve_hub, source_key,
                                    token_cache_exists)
from unified.text.tokenizer import (BPETokenizer, Tokenizer, bpe_size, encode_documents, load_tokenizer,
                                    tokenizer_cache_dir, train_bpe)

PROCEDURAL_VAL_BYTES = 256_000  # fixed, so every run of a seed is validated on the same stories
BPE_TRAIN_BYTES = 16_000_000  # training text a bpe:N tokenizer is learned from (at most)


# ---- local text ------------------------------------------------------------------------------
def corpus_from_path(path: str | Path, tokenizer: Tokenizer, val_fraction: float = 0.05) -> TextCorpus:
    """Tokenize local text (in memory, no cache) into a training array and a disjoint validation array.

    The last `val_fraction` of documents is validation; a single document is split by characters."""
    train_docs, val_docs = split_documents(read_documents(path), val_fraction)
    train, val = encode_documents(train_docs, tokenizer), encode_documents(val_docs, tokenizer)
    if len(train) < 2 or len(val) < 2:
        raise DataError(f"language data {str(path)!r} is too small to split into training and validation")
    return TextCorpus(str(path), train, val, utf8_bytes(train_docs), utf8_bytes(val_docs))


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
    train_docs = generate_documents(seed, "train", train_bytes)
    val_docs = generate_documents(seed, "val", val_bytes)
    rate = grammar().entropy()
    info = {"grammar_version": GRAMMAR_VERSION, "seed": seed, "train_docs": len(train_docs),
            "val_docs": len(val_docs), "entropy_bits_per_story": rate.bits_per_story,
            "mean_story_bytes": rate.bytes_per_story}
    return TextCorpus(f"procedural:{seed}", encode_documents(train_docs, tokenizer), encode_documents(val_docs, tokenizer),
                      utf8_bytes(train_docs), utf8_bytes(val_docs), rate.bits_per_byte, info)


# ---- one entry point ---------------------------------------------------------------------------
def describe_sources() -> str:
    """The accepted --lang_dataset values, for error messages and --help."""
    return f"auto, procedural[:SEED], none, {', '.join(HUB_SOURCES)}, hf:<repo>[:<config>], or a local .txt file/folder"


def is_hub_spec(spec: str) -> bool:
    """Whether `spec` names an HF dataset (a known name or hf:<repo>)."""
    return spec in HUB_SOURCES or spec.startswith("hf:")


def load_corpus(spec: str, tokenizer: Tokenizer, *, cache_dir: str | Path | None = None, max_tokens: int | None = None,
                procedural_bytes: int = 4_000_000, val_fraction: float = 0.05, progress: bool = True) -> TextCorpus:
    """The corpus named by `spec` (see the module docstring; "auto" must be resolved first with
    `resolve_source`), tokenized with `tokenizer`. Hub and local sources go through the memmap
    cache under `cache_dir` (default `cache_root()`); `max_tokens` caps hub training tokens."""
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
    root = Path(cache_dir) if cache_dir else cache_root()
    if token_cache_exists(root, "tinystories", tokenizer_spec) or hub_is_cached(HUB_SOURCES["tinystories"]):
        return "tinystories", "note: --lang_dataset auto: using TinyStories (cached)"
    if not hub_offline():
        return "tinystories", (f"note: --lang_dataset auto: using TinyStories from the hub (the first run downloads "
                               f"and tokenizes it into {root}; pass --lang_dataset procedural to skip)")
    return "procedural", (f"note: --lang_dataset auto: TinyStories is neither cached nor reachable; training on the "
                          f"offline procedural story corpus (entropy floor {grammar().entropy().bits_per_byte:.4f} "
                          f"bits/byte)")


def training_texts(spec: str, max_bytes: int = BPE_TRAIN_BYTES, cache_dir: str | Path | None = None,
                   val_fraction: float = 0.05) -> Iterator[str]:
    """Training documents of `spec` (never validation ones), up to about `max_bytes`: what a
    `bpe:N` tokenizer is learned from."""
    if spec == "procedural" or spec.startswith("procedural:"):
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
