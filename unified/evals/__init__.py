"""Evaluation suites, one module each; `results.py` writes their files (DESIGN contract 4)."""
