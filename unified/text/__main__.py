"""`python -m unified.text prepare --lang_dataset X --tokenizer Y`: tokenize a language source into
the memmap cache ahead of training (`unified.text.corpus.load_language`), with a progress bar."""
from __future__ import annotations

import sys

from unified.cli import ArgumentParser, run_cli
from unified.errors import ConfigError
from unified.text.corpus import describe_sources, load_language
from unified.text.textcache import set_offline_if_unreachable


def main(argv: list[str] | None = None) -> int:
    """`prepare`: tokenize a source into the cache ahead of training, with a progress bar."""
    p = ArgumentParser(prog="python -m unified.text", description="Prepare language data for train.py.")
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
    run_cli(main, sys.argv[1:])
