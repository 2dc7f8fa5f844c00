"""Variant families, one module each. Every module here is imported by `unified.model` and
registers its variants with `@register_variant`, which also puts them under the property tests."""
