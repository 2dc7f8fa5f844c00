"""Sequence-mixing kernels written in PyTorch, each with a naive step-recurrence reference beside
it (`<op>_naive.py`) that the tests compare against (the layout of flash-linear-attention)."""
