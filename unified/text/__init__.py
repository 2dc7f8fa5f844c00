"""The text layer: tokenizers and language corpora, in one-way dependency order:

    documents.py    local text files, the train/validation document split, `TextCorpus`, cache root
    tokenizer.py    byte / trained BPE / HF tokenizers; encoding documents into token arrays
    storygrammar.py the offline procedural story grammar and its exact entropy rate
    textcache.py    the memmap token cache and the HF `datasets` sources
    corpus.py       one entry point: `load_corpus`, `resolve_source`, `load_language`
    __main__.py     `python -m unified.text prepare ...` (a CLI)

Each module imports only those above it (and `unified.errors`).
"""
