#!/usr/bin/env bash
# The prepared GPU run, for a CUDA machine with torch (and Triton) but possibly without network or
# mamba-ssm: installs mamba-ssm's Python package without its CUDA extension from .cache/ (fetch it
# first on a networked machine: bash .ci/fetch_kernel_sources.sh; copy .cache/ along), then runs
# the check. Arguments go to bench/gpu_check.py. causal-conv1d is not installed here (it needs a
# compiled extension); without it the PyTorch conv runs and the report says "conv1d": "torch".
set -euo pipefail
cd "$(dirname "$0")/.."
src="${UNIFIED_KERNEL_SOURCES:-.cache}"
for pkg in einops wheel; do  # wheel: mamba-ssm's setup.py imports it
    python -c "import $pkg" 2>/dev/null || python -m pip install --quiet --no-index --find-links "$src/wheels" "$pkg"
done
# SKIP_CUDA_BUILD: no nvcc build of the Mamba-1 extension; FORCE_BUILD: no attempt to download a
# prebuilt wheel (offline that attempt crashes instead of falling back).
python -c "import importlib.metadata as m; m.version('mamba-ssm')" 2>/dev/null ||
    MAMBA_FORCE_BUILD=TRUE MAMBA_SKIP_CUDA_BUILD=TRUE python -m pip install --quiet --no-deps --no-build-isolation \
        --no-index "$src/mamba_ssm-2.3.2.post1"
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader || true
exec python bench/gpu_check.py "$@"
