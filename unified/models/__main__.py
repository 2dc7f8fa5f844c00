"""`python -m unified.models`: the parameter-count tables of docs/variants.md, one per vocabulary size,
computed from the registered variants on the meta device."""
from unified.models.base import scale_table_markdown

for vocab in (259, 32000):
    print(f"\nvocabulary {vocab}:\n")
    print(scale_table_markdown(vocab))
