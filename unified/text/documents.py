"""Plain-text documents and the tokenized-corpus type every language source returns.

The lowest module of the text layer (it imports no other): the document separator, reading a
local `.txt` file or folder into documents, the train/validation split of documents, the root of
the token and tokenizer cache, and `TextCorpus`.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from unified.errors import DataError

DOC_SEPARATOR = "<|endoftext|>"


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


def utf8_bytes(docs: Iterable[str]) -> int:
    """UTF-8 bytes of all `docs` together."""
    return sum(len(d.encode("utf-8")) for d in docs)
