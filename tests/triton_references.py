"""References for the Triton kernels of mamba-ssm's SSD scan and state update, written from each
kernel's addressing: every tensor argument is read and written through `as_strided` with the strides
the wrapper passed, so a call whose strides do not describe its tensors computes a wrong result.
`REFERENCES` maps a kernel's name to its reference; tests/kernel_emulation.py dispatches launches here."""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F

def _v(t: torch.Tensor, size: tuple[int, ...], strides: tuple[int, ...]) -> torch.Tensor:
    """The tensor a kernel addresses at t's data pointer with these sizes and element strides."""
    return t.as_strided(size, strides, t.storage_offset())


def _s(a: dict[str, Any], *names: str) -> tuple[int, ...]:
    return tuple(int(a[n]) for n in names)


def _chunks(seqlen: int, chunk: int) -> int:
    return math.ceil(seqlen / chunk)


def _ref_chunk_cumsum(a: dict[str, Any]) -> None:
    """dt (b, T, H) [+ dt_bias, softplus, clamp], zero past T; dt_out and dA_cumsum (b, c, H, L)."""
    b, T, H, L = _s(a, "batch", "seqlen", "nheads", "chunk_size")
    nc = _chunks(T, L)
    dt = _v(a["dt_ptr"], (b, T, H), _s(a, "stride_dt_batch", "stride_dt_seqlen", "stride_dt_head")).float()
    if a["HAS_DT_BIAS"]:
        dt = dt + _v(a["dt_bias_ptr"], (H,), _s(a, "stride_dt_bias_head")).float()
    if a["DT_SOFTPLUS"]:
        dt = torch.where(dt <= 20.0, F.softplus(dt), dt)
    dt = dt.clamp(float(a["dt_min"]), float(a["dt_max"]))
    dt = F.pad(dt, (0, 0, 0, nc * L - T)).reshape(b, nc, L, H).transpose(2, 3)  # (b, c, H, L)
    A = _v(a["A_ptr"], (H,), _s(a, "stride_A_head")).float()
    shape = (b, nc, H, L)
    _v(a["dt_out_ptr"], shape, _s(a, *(f"stride_dt_out_{k}" for k in ("batch", "chunk", "head", "csize")))).copy_(dt)
    _v(a["dA_cumsum_ptr"], shape, _s(a, *(f"stride_dA_cs_{k}" for k in ("batch", "chunk", "head", "csize")))).copy_(
        torch.cumsum(dt * A[:, None], dim=-1))


def _per_chunk(a: dict[str, Any], key: str, b: int, nc: int, H: int, L: int) -> torch.Tensor:
    """dt or dA_cumsum (b, c, H, L) as a kernel reads it (stride names stride_<key>_...)."""
    return _v(a[f"{'dA_cumsum' if key == 'dA_cs' else key}_ptr"], (b, nc, H, L),
              _s(a, *(f"stride_{key}_{k}" for k in ("batch", "chunk", "head", "csize")))).float()


def _seq(t: torch.Tensor, T: int, L: int) -> torch.Tensor:
    """(b, T, ...) -> (b, c, L, ...), zero-padded past T."""
    pad = [0, 0] * (t.dim() - 2) + [0, _chunks(T, L) * L - T]
    return F.pad(t, pad).reshape(t.shape[0], -1, L, *t.shape[2:])


def _ref_chunk_state(a: dict[str, Any]) -> None:
    """states[b, c, h] = sum_l x_l (B_l exp(min(cs_last - cs_l, 0)) dt_l)^T within each chunk."""
    P, N, L, b, T, ratio = _s(a, "hdim", "dstate", "chunk_size", "batch", "seqlen", "nheads_ngroups_ratio")
    st = a["states_ptr"]
    nc, H = st.shape[1], st.shape[2]
    assert not a["HAS_SEQ_IDX"]
    x = _v(a["x_ptr"], (b, T, H, P), _s(a, "stride_x_batch", "stride_x_seqlen", "stride_x_head", "stride_x_hdim"))
    B = _v(a["b_ptr"], (b, T, H // ratio, N), _s(a, "stride_b_batch", "stride_b_seqlen", "stride_b_head", "stride_b_dstate"))
    dt, cs = _per_chunk(a, "dt", b, nc, H, L), _per_chunk(a, "dA_cs", b, nc, H, L)
    scale = torch.exp(torch.clamp(cs[..., -1:] - cs, max=0.0)) * dt  # (b, c, H, L)
    Bh = _seq(B.float(), T, L).repeat_interleave(ratio, dim=3)  # (b, c, L, H, N)
    xs = _seq(x.float(), T, L)  # (b, c, L, H, P)
    out = torch.einsum("bclhp,bclhn,bchl->bchpn", xs, Bh, scale)
    _v(st, (b, nc, H, P, N), _s(a, *(f"stride_states_{k}" for k in ("batch", "chunk", "head", "hdim", "dstate")))).copy_(out)


def _ref_state_passing(a: dict[str, Any]) -> None:
    """out[c] = state entering chunk c (initial or 0 first), final = state after the last chunk."""
    dim, nc = _s(a, "dim", "nchunks")
    st = a["states_ptr"]
    b, H = st.shape[0], st.shape[2]
    assert not a["HAS_SEQ_IDX"]
    chunk_states = _v(st, (b, nc, H, dim), _s(a, *(f"stride_states_{k}" for k in ("batch", "chunk", "head", "dim")))).float()
    dA = _v(a["dA_cs_ptr"], (b, nc, H), _s(a, "stride_dA_cs_batch", "stride_dA_cs_chunk", "stride_dA_cs_head")).float()
    if a["HAS_INITSTATES"]:
        h = _v(a["initstates_ptr"], (b, H, dim), _s(a, *(f"stride_initstates_{k}" for k in ("batch", "head", "dim")))).float()
    else:
        h = torch.zeros(b, H, dim)
    out = _v(a["out_ptr"], (b, nc, H, dim), _s(a, *(f"stride_out_{k}" for k in ("batch", "chunk", "head", "dim"))))
    for c in range(nc):
        out[:, c] = h
        h = torch.exp(dA[:, c])[..., None] * h + chunk_states[:, c]
    _v(a["final_states_ptr"], (b, H, dim), _s(a, *(f"stride_final_states_{k}" for k in ("batch", "head", "dim")))).copy_(h)


def _ref_bmm_chunk(a: dict[str, Any]) -> None:
    """out[b, c, g, i, j] = a_i . b_j within each chunk (zero past seqlen)."""
    T, L, K, G = _s(a, "seqlen", "chunk_size", "K", "ngroups")
    out = a["out_ptr"]
    b, nc = out.shape[0], out.shape[1]
    assert not a["HAS_SEQ_IDX"]
    x = _v(a["a_ptr"], (b, T, G, K), _s(a, "stride_a_batch", "stride_a_seqlen", "stride_a_head", "stride_ak"))
    y = _v(a["b_ptr"], (b, T, G, K), _s(a, "stride_b_batch", "stride_b_seqlen", "stride_b_head", "stride_bk"))
    cb = torch.einsum("bcigk,bcjgk->bcgij", _seq(x.float(), T, L), _seq(y.float(), T, L))
    _v(out, (b, nc, G, L, L), _s(a, "stride_out_batch", "stride_out_chunk", "stride_out_head", "stride_outm", "stride_outn")).copy_(cb)


def _ref_chunk_scan(a: dict[str, Any]) -> None:
    """out_t = sum_{s<=t} CB_ts exp(min(cs_t - cs_s, 0)) dt_s x_s + exp(cs_t) C_t . prev_state [+ D x] [* silu(z)]."""
    L, P, N, b, T, ratio = _s(a, "chunk_size", "hdim", "dstate", "batch", "seqlen", "nheads_ngroups_ratio")
    st = a["prev_states_ptr"]
    nc, H = st.shape[1], st.shape[2]
    G = H // ratio
    assert a["IS_CAUSAL"] and not a["HAS_SEQ_IDX"]
    cb = _v(a["cb_ptr"], (b, nc, G, L, L), _s(a, *(f"stride_cb_{k}" for k in ("batch", "chunk", "head", "csize_m", "csize_k")))).float()
    x = _v(a["x_ptr"], (b, T, H, P), _s(a, *(f"stride_x_{k}" for k in ("batch", "seqlen", "head", "hdim")))).float()
    C = _v(a["C_ptr"], (b, T, G, N), _s(a, *(f"stride_C_{k}" for k in ("batch", "seqlen", "head", "dstate")))).float()
    prev = _v(st, (b, nc, H, P, N), _s(a, *(f"stride_states_{k}" for k in ("batch", "chunk", "head", "hdim", "dstate")))).float()
    dt, cs = _per_chunk(a, "dt", b, nc, H, L), _per_chunk(a, "dA_cs", b, nc, H, L)
    decay = torch.exp(torch.clamp(cs[..., :, None] - cs[..., None, :], max=0.0))  # (b, c, H, L, L)
    w = cb.repeat_interleave(ratio, dim=2) * decay * dt[..., None, :]
    w = w.masked_fill(~torch.ones(L, L, dtype=torch.bool).tril(), 0.0)
    xs = _seq(x, T, L)  # (b, c, L, H, P)
    y = torch.einsum("bchts,bcshp->bcthp", w, xs)
    Ch = _seq(C, T, L).repeat_interleave(ratio, dim=3)  # (b, c, L, H, N)
    y = y + torch.einsum("bcthn,bchpn->bcthp", Ch, prev) * torch.exp(cs).permute(0, 1, 3, 2)[..., None]
    if a["HAS_D"]:
        D = a["D_ptr"]
        if a["D_HAS_HDIM"]:
            Dv = _v(D, (H, P), (int(a["stride_D_head"]), 1)).float()
        else:
            Dv = _v(D, (H,), _s(a, "stride_D_head")).float()[:, None]
        y = y + xs * Dv
    y = y.reshape(b, nc * L, H, P)[:, :T]
    assert not a["HAS_Z"], "z is not used by the project's calls"
    _v(a["out_ptr"], (b, T, H, P), _s(a, *(f"stride_out_{k}" for k in ("batch", "seqlen", "head", "hdim")))).copy_(y)


def _ref_state_update(a: dict[str, Any]) -> None:
    """One recurrent step in place on the state; tied (TIE_HDIM) reads one dt / dt_bias / A per head."""
    b, H, P, N, ratio = _s(a, "batch", "nheads", "dim", "dstate", "nheads_ngroups_ratio")
    assert not a["HAS_STATE_BATCH_INDICES"] and not a["HAS_Z"]
    state = _v(a["state_ptr"], (b, H, P, N), _s(a, *(f"stride_state_{k}" for k in ("batch", "head", "dim", "dstate"))))
    x = _v(a["x_ptr"], (b, H, P), _s(a, "stride_x_batch", "stride_x_head", "stride_x_dim")).float()
    if a["TIE_HDIM"]:  # the kernel reads element 0 of each head's row
        dt = _v(a["dt_ptr"], (b, H), _s(a, "stride_dt_batch", "stride_dt_head")).float()[..., None]
        bias = _v(a["dt_bias_ptr"], (H,), _s(a, "stride_dt_bias_head")).float()[:, None] if a["HAS_DT_BIAS"] else 0.0
        A = _v(a["A_ptr"], (H,), _s(a, "stride_A_head")).float()[:, None, None]
    else:
        dt = _v(a["dt_ptr"], (b, H, P), _s(a, "stride_dt_batch", "stride_dt_head", "stride_dt_dim")).float()
        bias = (_v(a["dt_bias_ptr"], (H, P), _s(a, "stride_dt_bias_head", "stride_dt_bias_dim")).float()
                if a["HAS_DT_BIAS"] else 0.0)
        A = _v(a["A_ptr"], (H, P, N), _s(a, "stride_A_head", "stride_A_dim", "stride_A_dstate")).float()
    dt = dt + bias
    if a["DT_SOFTPLUS"]:
        dt = torch.where(dt <= 20.0, F.softplus(dt), dt)
    B = _v(a["B_ptr"], (b, H // ratio, N), _s(a, "stride_B_batch", "stride_B_group", "stride_B_dstate")).float()
    C = _v(a["C_ptr"], (b, H // ratio, N), _s(a, "stride_C_batch", "stride_C_group", "stride_C_dstate")).float()
    B, C = B.repeat_interleave(ratio, dim=1), C.repeat_interleave(ratio, dim=1)
    dt = dt.expand(b, H, P)
    new = state.float() * torch.exp(A * dt[..., None]) + (dt[..., None] * B[:, :, None, :]) * x[..., None]
    state.copy_(new)
    out = (new * C[:, :, None, :]).sum(-1)
    if a["HAS_D"]:
        out = out + x * _v(a["D_ptr"], (H, P), _s(a, "stride_D_head", "stride_D_dim")).float()
    _v(a["out_ptr"], (b, H, P), _s(a, "stride_out_batch", "stride_out_head", "stride_out_dim")).copy_(out)


REFERENCES: dict[str, Callable[[dict[str, Any]], None]] = {
    "_chunk_cumsum_fwd_kernel": _ref_chunk_cumsum, "_chunk_state_fwd_kernel": _ref_chunk_state,
    "_state_passing_fwd_kernel": _ref_state_passing, "_bmm_chunk_fwd_kernel": _ref_bmm_chunk,
    "_chunk_scan_fwd_kernel": _ref_chunk_scan, "_selective_scan_update_kernel": _ref_state_update,
}
