"""Tokenizers (docs/design.md#contract-2).

`byte` (default) needs nothing: 256 byte ids + BOS/EOS/PAD, one token per digit. `bpe:N` is a
byte-level BPE of N tokens that the harness trains on a corpus's training text with the HF
`tokenizers` library (`train_bpe`; `unified.text.corpus.load_language` does it for train.py); once
trained it is named `bpe:N:<sha12 of its JSON>`, saved as tokenizer.json in the run folder and
in the cache, and embedded in checkpoints, so evaluation reloads exactly the same one. Digits
stay single tokens (as with `byte`) so algorithmic answers tokenize the same way at every length.
Any other name or local path goes through `transformers.AutoTokenizer`; when it cannot be loaded
offline the error says so and names `--tokenizer byte`. Every checkpoint and results file stores
the tokenizer's `name`, and loading a checkpoint with another tokenizer is an error.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Iterable, Protocol, Sequence

import numpy as np

from unified.errors import ConfigError, DataError
from unified.text.documents import cache_root

BPE_SPECIALS = ("<|bos|>", "<|eos|>", "<|pad|>")
_BPE_NAME = re.compile(r"^bpe:(\d+)(?::([0-9a-f]{12}))?$")


class Tokenizer(Protocol):
    """What the rest of the harness needs from a tokenizer."""

    name: str
    vocab_size: int
    bos_id: int
    eos_id: int
    pad_id: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]: ...


class ByteTokenizer:
    """UTF-8 bytes as tokens (ids 0-255) plus BOS=256, EOS=257, PAD=258."""

    name = "byte"
    vocab_size = 259
    bos_id, eos_id, pad_id = 256, 257, 258

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode("utf-8", errors="replace")

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [list(t.encode("utf-8")) for t in texts]


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

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self.tok(list(texts), add_special_tokens=False)["input_ids"]


class BPETokenizer:
    """A byte-level BPE trained by the harness (HF `tokenizers`), named `bpe:<vocab>:<sha12>`.

    The name hashes the tokenizer's canonical JSON, so two different BPEs never share a name and
    a checkpoint's name identifies exactly one tokenizer."""

    def __init__(self, tok) -> None:
        self.tok = tok
        self.json: str = tok.to_str()
        ids = [tok.token_to_id(t) for t in BPE_SPECIALS]
        if any(i is None for i in ids):
            raise DataError(f"tokenizer JSON lacks the special tokens {', '.join(BPE_SPECIALS)}; "
                            f"it was not trained by this harness (use an HF tokenizer folder instead)")
        self.bos_id, self.eos_id, self.pad_id = ids
        self.vocab_size = tok.get_vocab_size()
        self.name = f"bpe:{self.vocab_size}:{hashlib.sha256(self.json.encode()).hexdigest()[:12]}"

    @classmethod
    def from_json(cls, text: str) -> "BPETokenizer":
        """Rebuild from the JSON string stored in checkpoints and tokenizer.json files."""
        from tokenizers import Tokenizer as HFTok

        try:
            return cls(HFTok.from_str(text))
        except Exception as exc:  # tokenizers raises plain Exception subclasses for bad JSON
            raise DataError(f"invalid BPE tokenizer JSON ({str(exc).splitlines()[0][:120]})") from None

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(list(texts), add_special_tokens=False)]

    def save(self, path: str | Path) -> Path:
        """Write the tokenizer JSON (what `load_tokenizer(path)` reads back)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.json, encoding="utf-8")
        return path


def is_bpe_name(name: str) -> bool:
    """Whether `name` is a well-formed BPE name: `bpe:N` (to train) or `bpe:N:<12 hex digits>` (trained)."""
    return _BPE_NAME.match(name) is not None


def bpe_size(name: str) -> int | None:
    """N of an untrained `bpe:N` request, else None (a trained `bpe:N:<hash>` name returns None)."""
    m = _BPE_NAME.match(name)
    return int(m.group(1)) if m and m.group(2) is None else None


def train_bpe(texts: Iterable[str], vocab_size: int) -> BPETokenizer:
    """Train a byte-level BPE of `vocab_size` tokens (3 specials + 256 bytes + merges) on `texts`.

    Digits are split individually before the byte-level pre-tokenizer, so numbers stay one token
    per digit. Training is deterministic for the same texts in the same order."""
    from tokenizers import Tokenizer as HFTok
    from tokenizers import decoders, models, pre_tokenizers, trainers

    if vocab_size < len(BPE_SPECIALS) + 257:
        raise ConfigError(f"--tokenizer bpe:{vocab_size}: the vocabulary must hold the 256 bytes, 3 special "
                          f"tokens and at least one merge (N >= {len(BPE_SPECIALS) + 257})")
    tok = HFTok(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(BPE_SPECIALS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return BPETokenizer(tok)


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


def tokenizer_cache_dir() -> Path:
    """Where trained BPE tokenizers are kept by name (under the corpus cache, `UNIFIED_CACHE`)."""
    return cache_root() / "tokenizers"


def load_tokenizer(name: str = "byte", tokenizer_json: str | None = None) -> Tokenizer:
    """The tokenizer called `name`: "byte"; a trained BPE "bpe:N:<hash>" (from `tokenizer_json`,
    e.g. a checkpoint's embedded copy, else from the cache); a BPE tokenizer.json path; or an HF
    hub name / local path. An untrained "bpe:N" request is trained by `unified.text.corpus.load_language`."""
    if name == "byte":
        return ByteTokenizer()
    if name.startswith("bpe:"):
        return _load_bpe(name, tokenizer_json)
    if name.endswith(".json") and Path(name).is_file():
        return BPETokenizer.from_json(Path(name).read_text(encoding="utf-8"))
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


def _load_bpe(name: str, tokenizer_json: str | None) -> BPETokenizer:
    """A trained BPE by name, from the given JSON or the tokenizer cache; checks the name's hash."""
    m = _BPE_NAME.match(name)
    if not m:
        raise ConfigError(f"bad tokenizer name {name!r}; accepted: bpe:N (train one) or bpe:N:<12 hex digits>")
    if m.group(2) is None:
        raise ConfigError(f"--tokenizer {name} is trained on a corpus's training text: use it with train.py or "
                          f"`python -m unified.text prepare`; to load a trained one give bpe:N:<hash> or its "
                          f"tokenizer.json path")
    if tokenizer_json is None:
        cached = tokenizer_cache_dir() / f"bpe-{m.group(1)}-{m.group(2)}.json"
        if not cached.is_file():
            raise DataError(f"tokenizer {name} is not embedded here and not in the cache ({cached.parent}); "
                            f"give the run's tokenizer.json path with --tokenizer")
        tokenizer_json = cached.read_text(encoding="utf-8")
    tok = BPETokenizer.from_json(tokenizer_json)
    if tok.name != name:
        raise DataError(f"tokenizer JSON is {tok.name}, not {name}")
    return tok
