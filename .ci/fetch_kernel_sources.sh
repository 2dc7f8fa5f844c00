#!/usr/bin/env bash
# Download and unpack the source distributions of mamba-ssm and causal-conv1d into .cache/ (or
# $UNIFIED_KERNEL_SOURCES) for tests/test_mamba_contract.py: their Python wrappers run on CPU with
# the GPU launches emulated. pip only downloads (no build: the *_SKIP_CUDA_BUILD settings let the
# setup scripts prepare metadata without CUDA). Fails loudly when PyPI cannot be reached.
# Idempotent: what is already there is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${UNIFIED_KERNEL_SOURCES:-.cache}"
mkdir -p "$dest"
fetch() {  # fetch <pip requirement> <unpacked directory name> <skip-build variable>
    if [ -d "$dest/$2" ]; then return; fi
    tmp="$(mktemp -d)"
    env "$3=TRUE" python -m pip download --quiet --no-deps --no-build-isolation --no-binary :all: "$1" -d "$tmp"
    tar -xzf "$tmp"/*.tar.gz -C "$dest"
    rm -rf "$tmp"
    test -d "$dest/$2"
}
fetch mamba-ssm==2.3.2.post1 mamba_ssm-2.3.2.post1 MAMBA_SKIP_CUDA_BUILD
fetch causal-conv1d==1.7.0 causal_conv1d-1.7.0 CAUSAL_CONV1D_SKIP_CUDA_BUILD
# einops (what mamba-ssm's wrappers import) and wheel (what its setup.py imports) as wheels, for
# GPU machines without network: bench/gpu_device_run.sh installs from here.
for pkg in einops wheel; do
    ls "$dest"/wheels/"$pkg"-*.whl >/dev/null 2>&1 || python -m pip download --quiet --no-deps "$pkg" -d "$dest/wheels"
done
echo "kernel sources in $dest: $(ls "$dest" | tr '\n' ' ')"
