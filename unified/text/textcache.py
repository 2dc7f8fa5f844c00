"""The memmap token cache and the HF `datasets` sources behind `unified.text.corpus.load_corpus`.

Layout: <root>/corpora/<source key>/<tokenizer key>/{train.bin, val.bin, meta.json}; token
arrays are raw uint16 (vocabulary <= 65536) or uint32, documents each followed by EOS. A cache
folder is built under a temporary name and renamed into place when complete, so an interrupted
or concurrent build never leaves a half-written cache that looks finished. Hub sources are
streamed; their validation split is the dataset's own ("validation"), or, when it has none, the
first `VAL_DOCS_WITHOUT_SPLIT` documents, which training then skips.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
from tqdm.auto import tqdm

from unified.errors import DataError
from unified.text.documents import TextCorpus, read_documents, split_documents, utf8_bytes
from unified.text.tokenizer import BPETokenizer, Tokenizer, bpe_size, encode_documents, token_dtype

CACHE_VERSION = 1
VAL_DOCS_WITHOUT_SPLIT = 2000


@dataclass(frozen=True)
class HubSource:
    """An HF dataset: repository, config, text field, validation split (None: hold out the first
    documents), revision, and whether rows are lines to group into articles (WikiText)."""

    repo: str
    config: str | None = None
    text_field: str = "text"
    val_split: str | None = "validation"
    revision: str | None = None
    articles: bool = False


HUB_SOURCES: dict[str, HubSource] = {
    "tinystories": HubSource("roneneldan/TinyStories"),
    "wikitext103": HubSource("Salesforce/wikitext", "wikitext-103-raw-v1", articles=True),
    # the original repository is a loading script, which datasets >= 4 no longer runs; the hub's
    # automatic Parquet conversion of it loads without one
    "openwebtext": HubSource("Skylion007/openwebtext", val_split=None, revision="refs/convert/parquet"),
    "minipile": HubSource("JeanKaddour/minipile"),
}


def resolve_hub(spec: str) -> HubSource:
    """The HubSource of a known name or of `hf:<repo>[:<config>]`."""
    if spec in HUB_SOURCES:
        return HUB_SOURCES[spec]
    repo, _, config = spec[3:].partition(":")
    if not repo:
        raise DataError(f"bad --lang_dataset {spec!r}; expected hf:<owner>/<name>[:<config>]")
    return HubSource(repo, config or None)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


def source_key(spec: str, max_tokens: int | None = None, val_fraction: float = 0.05) -> str:
    """Cache folder name of a source: its name (+ token cap) for hub and procedural sources; for a
    local path its stem plus a hash of the absolute path, file sizes and mtimes (edits rebuild)."""
    cap = f"-max{max_tokens}" if max_tokens else ""
    if spec in HUB_SOURCES:
        return spec + cap
    if spec.startswith("hf:"):
        return "hf-" + _slug(spec[3:]) + cap
    if spec == "procedural" or spec.startswith("procedural:"):
        return "procedural-" + (spec.partition(":")[2] or "0")
    p = Path(spec).resolve()
    files = sorted(p.rglob("*.txt")) if p.is_dir() else [p]
    stamp = [str(p), str(val_fraction)] + [f"{f}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files if f.exists()]
    return f"local-{_slug(p.stem)}-{hashlib.sha256('|'.join(stamp).encode()).hexdigest()[:12]}"


def corpus_dir(root: Path, source: str, tokenizer_name: str) -> Path:
    """The cache folder of (source key, tokenizer)."""
    return root / "corpora" / source / _slug(tokenizer_name.replace("/", "--").replace(":", "-"))


def token_cache_exists(root: Path, source: str, tokenizer_spec: str) -> bool:
    """Whether tokens of `source` are cached for this tokenizer (for `bpe:N`: the BPE trained on
    that source, if any)."""
    name = tokenizer_spec
    n = bpe_size(tokenizer_spec)
    if n is not None:
        trained = root / "tokenizers" / f"from-{source}-bpe{n}.json"
        if not trained.is_file():
            return False
        name = BPETokenizer.from_json(trained.read_text(encoding="utf-8")).name
    return (corpus_dir(root, source, name) / "meta.json").is_file()


# ---- the cache -------------------------------------------------------------------------------
def open_cache(folder: Path, name: str) -> TextCorpus | None:
    """The cached corpus in `folder` as memmaps, or None when absent, stale or damaged."""
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("version") != CACHE_VERSION:
            return None
        dtype = np.dtype(meta["dtype"])
        arrays = {}
        for split in ("train", "val"):
            n = int(meta[f"{split}_tokens"])
            if (folder / f"{split}.bin").stat().st_size != n * dtype.itemsize or n < 2:
                return None
            arrays[split] = np.memmap(folder / f"{split}.bin", dtype=dtype, mode="r", shape=(n,))
    except (OSError, ValueError, KeyError):
        return None
    return TextCorpus(name, arrays["train"], arrays["val"], int(meta["train_bytes"]), int(meta["val_bytes"]),
                      info={**meta, "cache_dir": str(folder)})


def build_cache(folder: Path, name: str, tokenizer: Tokenizer, train_docs: Iterable[str], val_docs: Iterable[str],
                max_tokens: int | None = None, total_docs: dict[str, int | None] | None = None,
                progress: bool = True, extra: dict[str, Any] | None = None) -> TextCorpus:
    """Tokenize documents into `folder` (validation first, then training up to `max_tokens`),
    with a progress bar per split; returns the cached corpus. An empty split is an error."""
    dtype = token_dtype(tokenizer)
    if folder.exists() and open_cache(folder, name) is None:  # stale or damaged: rebuild it
        shutil.rmtree(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    meta: dict[str, Any] = {"version": CACHE_VERSION, "source": name, "tokenizer": tokenizer.name,
                            "dtype": np.dtype(dtype).name, "eos_id": tokenizer.eos_id, **(extra or {})}
    try:
        for split, docs in (("val", val_docs), ("train", train_docs)):
            n_tok = n_bytes = n_docs = 0
            bar = tqdm(desc=f"tokenizing {name} [{split}]", unit=" docs", total=(total_docs or {}).get(split),
                       disable=not progress, mininterval=1.0, file=sys.stderr)
            with open(tmp / f"{split}.bin", "wb") as f:
                for chunk in _batched(docs, 512):
                    arr = encode_documents(chunk, tokenizer)
                    full = split == "train" and max_tokens is not None and n_tok + len(arr) >= max_tokens
                    if full:
                        arr = arr[:max_tokens - n_tok]
                    arr.tofile(f)
                    n_tok, n_bytes, n_docs = n_tok + len(arr), n_bytes + utf8_bytes(chunk), n_docs + len(chunk)
                    bar.update(len(chunk))
                    bar.set_postfix(tokens=f"{n_tok:,}", refresh=False)
                    if full:
                        break
            bar.close()
            if n_tok < 2:
                raise DataError(f"language data {name!r} has no {'validation' if split == 'val' else 'training'} "
                                f"text (0 documents); check the source")
            meta.update({f"{split}_tokens": n_tok, f"{split}_bytes": n_bytes, f"{split}_docs": n_docs})
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        try:
            os.replace(tmp, folder)
        except OSError:  # built concurrently by another process: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    corpus = open_cache(folder, name)
    if corpus is None:
        raise DataError(f"token cache {folder} is unreadable right after building it; delete it and retry")
    return corpus


def _batched(docs: Iterable[str], n: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for d in docs:
        chunk.append(d)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def cached_local_corpus(path: str | Path, tokenizer: Tokenizer, root: Path, val_fraction: float = 0.05,
                        progress: bool = True) -> TextCorpus:
    """A local .txt file/folder through the cache (same split as `corpus_from_path`)."""
    folder = corpus_dir(root, source_key(str(path), val_fraction=val_fraction), tokenizer.name)
    corpus = open_cache(folder, str(path))
    if corpus is not None:
        return corpus
    train_docs, val_docs = split_documents(read_documents(path), val_fraction)
    return build_cache(folder, str(path), tokenizer, train_docs, val_docs,
                       total_docs={"train": len(train_docs), "val": len(val_docs)}, progress=progress)


def cached_hub_corpus(spec: str, tokenizer: Tokenizer, root: Path, max_tokens: int | None = None,
                      progress: bool = True) -> TextCorpus:
    """An HF dataset through the cache: streamed and tokenized on first use."""
    src = resolve_hub(spec)
    folder = corpus_dir(root, source_key(spec, max_tokens), tokenizer.name)
    corpus = open_cache(folder, spec)
    if corpus is not None:
        return corpus
    has_val = hub_has_validation(src)
    return build_cache(folder, spec, tokenizer, hub_documents(src, "train", has_val), hub_documents(src, "val", has_val),
                       max_tokens=max_tokens, progress=progress,
                       extra={"repo": src.repo, "config": src.config, "revision": src.revision})


# ---- HF datasets -------------------------------------------------------------------------------
def set_offline_if_unreachable(host: str = "huggingface.co", timeout: float = 2.0) -> bool:
    """Set HF_HUB_OFFLINE / HF_DATASETS_OFFLINE unless the hub answers; returns True if offline.

    Without network, a Hugging Face hub lookup retries for ~45 s before failing; this probes the
    hub once (`timeout` s) and, if it cannot be reached, switches the HF libraries to offline mode
    so a hub name fails at once with a one-line error (the CLIs call it before any work)."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
        return True
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return False
    except OSError:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"
        return True


def hub_offline() -> bool:
    """Whether the hub is unreachable (probing once, 2 s); if so, switch the HF libraries offline,
    also when they were imported before, so lookups fail at once instead of retrying for ~25 s."""
    offline = set_offline_if_unreachable()
    if offline:
        for module, attrs in (("datasets.config", ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")),
                              ("huggingface_hub.constants", ("HF_HUB_OFFLINE",))):
            if module in sys.modules:
                for attr in attrs:
                    setattr(sys.modules[module], attr, True)
    return offline


def hub_is_cached(src: HubSource) -> bool:
    """Whether the HF hub cache holds files of this dataset (a cheap check, no import of datasets)."""
    from huggingface_hub.constants import HF_HUB_CACHE

    return (Path(HF_HUB_CACHE) / f"datasets--{src.repo.replace('/', '--')}").is_dir()


def _offline_error(src: HubSource) -> DataError:
    return DataError(f"dataset {src.repo} needs the Hugging Face hub, which cannot be reached, and is not cached; "
                     f"use a local text file with --lang_data PATH (e.g. ../shared/data/tinystories_valid_head.txt) "
                     f"or --lang_dataset procedural")


def _load_split(src: HubSource, split: str):
    """The rows of one split (streamed when online); None when the dataset has no such split."""
    offline = hub_offline()
    import datasets

    try:
        return datasets.load_dataset(src.repo, src.config, split=split, revision=src.revision, streaming=not offline)
    except ConnectionError:
        raise _offline_error(src) from None
    except (ValueError, KeyError) as exc:
        if "split" in str(exc).lower():
            return None
        raise DataError(f"cannot load dataset {src.repo}: {str(exc).strip().splitlines()[0][:200]}") from None
    except Exception as exc:  # DatasetNotFoundError, bad config ...: one line naming the dataset
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        if offline:
            raise _offline_error(src) from None
        raise DataError(f"cannot load dataset {src.repo}: {first}") from None


def hub_has_validation(src: HubSource) -> bool:
    """Whether the dataset has its own validation split (else its first documents are held out)."""
    return src.val_split is not None and _load_split(src, src.val_split) is not None


def hub_documents(src: HubSource, split: str, has_val: bool) -> Iterator[str]:
    """Documents of the "train" or "val" split: the dataset's validation split when `has_val`, else
    its first VAL_DOCS_WITHOUT_SPLIT training documents, which "train" then skips."""
    rows = _load_split(src, src.val_split if split == "val" and has_val else "train")
    if rows is None:
        raise DataError(f"dataset {src.repo} has no 'train' split")
    texts = (r[src.text_field] for r in rows)
    docs = wikitext_articles(texts) if src.articles else (t for t in texts if t and t.strip())
    first, last = 0, None
    if not has_val:
        first, last = (VAL_DOCS_WITHOUT_SPLIT, None) if split == "train" else (0, VAL_DOCS_WITHOUT_SPLIT)
    try:
        for i, d in enumerate(docs):
            if last is not None and i >= last:
                return
            if i >= first:
                yield d
    except ConnectionError:
        raise DataError(f"lost the connection while reading {src.repo}; the partial cache was discarded, run "
                        f"`python -m unified.text prepare` again") from None
    except KeyError:
        raise DataError(f"dataset {src.repo} rows have no {src.text_field!r} field") from None


_WIKI_TITLE = re.compile(r"^ = [^=].* = $")


def wikitext_articles(lines: Iterable[str]) -> Iterator[str]:
    """Group WikiText rows (one line each) into articles, each starting at a " = Title = " line."""
    current: list[str] = []
    for line in lines:
        if _WIKI_TITLE.match(line.rstrip("\n")) and any(x.strip() for x in current):
            yield "".join(current).strip("\n")
            current = []
        current.append(line)
    if any(x.strip() for x in current):
        yield "".join(current).strip("\n")
