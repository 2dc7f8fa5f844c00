"""Sequence-mixing kernels written in PyTorch, each with a naive step-recurrence reference beside
it (`<op>_naive.py`) that the tests compare against (the layout of flash-linear-attention):

    ssd_scan.py     Mamba-2 SSD chunked scan + fused-kernel dispatch   ssd_naive.py
    signed_scan.py  SSD scan with decays in [-1, 1]                    signed_scan_naive.py
    linear_scan.py  block-diagonal linear recurrence (reservoir)       linear_scan_naive.py
    tanh_scan.py    leaky echo-state recurrence, backward through time by hand   tanh_scan_naive.py
                    (and the fused RNN kernel used on CUDA)
    hrnn_scan.py    hrnn's two-level LayerNorm-GRU, backward through time by hand hrnn_scan_naive.py
    precision.py    float32 matmul path and the dtype scans run in
    packed_matmul.py  a weight packed once for a scan's many small per-step products
    compiled.py     per-step loops compiled once into a C++ extension (csrc/), Python loops as fallback
    host_memory.py  freed host memory kept for reuse (set by train.py and eval_hub.py)

This is the lowest layer of the package: nothing here imports `unified.models` or above.
"""
