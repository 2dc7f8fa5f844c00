"""Language text sources for the language phase.

A corpus is a token array for training and a held-out validation array that training never
reads. Documents are separated by EOS. Local `.txt` files or folders work offline; the
language-data issue extends this with HF datasets and a memmap cache.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unified.errors import DataError
from unified.tokenizer import Tokenizer

DOC_SEPARATOR = "<|endoftext|>"


@dataclass
class TextCorpus:
    """Training and validation token arrays of one text source."""

    name: str
    train: np.ndarray
    val: np.ndarray
    train_bytes: int
    val_bytes: int

    @property
    def bytes_per_token(self) -> float:
        """Mean UTF-8 bytes per validation token (converts nats/token into bits per byte)."""
        return self.val_bytes / max(1, len(self.val))


def read_documents(path: str | Path) -> list[str]:
    """The documents of a `.txt` file (split on <|endoftext|> lines) or of every `.txt` under a folder."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"language data {str(p)!r} does not exist; give a .txt file or a folder of .txt files")
    files = sorted(p.rglob("*.txt")) if p.is_dir() else [p]
    if not files:
        raise DataError(f"language data folder {str(p)!r} holds no .txt files")
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


def corpus_from_path(path: str | Path, tokenizer: Tokenizer, val_fraction: float = 0.05) -> TextCorpus:
    """Tokenize local text into a training array and a disjoint validation array.

    The last `val_fraction` of documents is validation; a single document is split by tokens."""
    docs = read_documents(path)
    n_val = int(round(len(docs) * val_fraction))
    if len(docs) >= 20 and n_val >= 1:
        train_docs, val_docs = docs[:-n_val], docs[-n_val:]
        train, val = _pack(train_docs, tokenizer), _pack(val_docs, tokenizer)
        train_bytes = sum(len(d.encode()) for d in train_docs)
        val_bytes = sum(len(d.encode()) for d in val_docs)
    else:
        text = "\n".join(docs)
        cut = int(len(text) * (1 - val_fraction))
        train, val = _pack([text[:cut]], tokenizer), _pack([text[cut:]], tokenizer)
        train_bytes, val_bytes = len(text[:cut].encode()), len(text[cut:].encode())
    if len(train) < 2 or len(val) < 2:
        raise DataError(f"language data {str(path)!r} is too small to split into training and validation")
    return TextCorpus(str(path), train, val, train_bytes, val_bytes)


def _pack(docs: list[str], tokenizer: Tokenizer) -> np.ndarray:
    """Token ids of `docs`, each followed by EOS, in one array (uint16 when the vocabulary fits)."""
    dtype = np.uint16 if tokenizer.vocab_size <= 65535 else np.uint32
    ids: list[int] = []
    for d in docs:
        ids.extend(tokenizer.encode(d))
        ids.append(tokenizer.eos_id)
    return np.asarray(ids, dtype=dtype)
