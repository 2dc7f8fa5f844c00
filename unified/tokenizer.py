"""Tokenizers (DESIGN contract 2).

`byte` (default) needs nothing: 256 byte ids + BOS/EOS/PAD, one token per digit. Any other name
or local path goes through `transformers.AutoTokenizer`; when it cannot be loaded offline the
error says so and names `--tokenizer byte`. Every checkpoint and results file stores the
tokenizer's `name`, and loading a checkpoint with another tokenizer is an error.
"""
from __future__ import annotations

from typing import Protocol, Sequence

from unified.errors import ConfigError, DataError


class Tokenizer(Protocol):
    """What the rest of the harness needs from a tokenizer."""

    name: str
    vocab_size: int
    bos_id: int
    eos_id: int
    pad_id: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes as tokens (ids 0-255) plus BOS=256, EOS=257, PAD=258."""

    name = "byte"
    vocab_size = 259
    bos_id, eos_id, pad_id = 256, 257, 258

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode("utf-8", errors="replace")


class HFTokenizer:
    """A `transformers` tokenizer (hub name or local path) behind the same interface."""

    def __init__(self, name: str, tokenizer) -> None:
        self.name, self.tok = name, tokenizer
        self.eos_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
        if self.eos_id is None:
            raise ConfigError(f"tokenizer {name!r} has no EOS token; use --tokenizer byte or one with EOS")
        self.bos_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else self.eos_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        self.vocab_size = len(tokenizer)

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=True)


def load_tokenizer(name: str = "byte") -> Tokenizer:
    """The tokenizer called `name`: "byte", or an HF hub name / local path."""
    if name == "byte":
        return ByteTokenizer()
    try:
        from transformers import AutoTokenizer
    except ImportError:  # pragma: no cover - transformers is in requirements.txt
        raise ConfigError(f"tokenizer {name!r} needs the transformers package; use --tokenizer byte") from None
    try:
        tok = AutoTokenizer.from_pretrained(name)
    except Exception as exc:  # OSError offline / not found, ValueError for bad files
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise DataError(f"cannot load tokenizer {name!r} (offline or not found: {reason}); "
                        f"use --tokenizer byte or a local tokenizer path") from None
    return HFTokenizer(name, tok)
