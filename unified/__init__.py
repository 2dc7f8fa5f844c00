"""unified: an ablation ladder and evaluation harness for small language-model architectures."""

__version__ = "0.1.0"
