"""Mamba's selective scan on CPU: the compiled kernel if built (scan_ext), else a tiled PyTorch scan; a reference."""
from __future__ import annotations

import math

import torch
from torch.autograd.function import once_differentiable

from . import scan_ext

# elements of one tile's state (batch tile, channel tile, N): 256 KB in float32, so a time block of its buffers
# (decays, states, and in the backward their gradients) stays within a core's L2/L3 share
TILE_ELEMENTS = 1 << 14
# elements of one (block, tile) buffer: 2 MB in float32
BLOCK_ELEMENTS = 1 << 19
# the states saved for the backward (one per time block) may take at most this many times the input x
MAX_SAVED_STATES_RATIO = 8
LOG2_E = 1 / math.log(2)


def selective_scan(x, dt, A, B, C, D=None, block: int | None = None, tile: int | None = None):
    """y_t = C_t h_t (+ D x_t), h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t, h_{-1} = 0.

    x, dt (batch, L, E); A (E, N); B, C (batch, L, N); D (E) or None -> y (batch, L, E). Runs the compiled
    kernel (scan_ext) when it is built, not switched off by SSM_LAB_SCAN_EXT=0, and the inputs are CPU
    float32/float64; else the PyTorch tiled scan, whose `block` (time steps) and `tile` (state elements per
    tile) override its cache-sized defaults (tests use them to cover edges; giving either selects it).
    """
    compiled = scan_ext.supports(x, dt, A, B, C, *(() if D is None else (D,))) and scan_ext.enabled()
    if block is None and tile is None and compiled:
        return scan_ext.compiled_scan(x, dt, A, B, C, D)  # (batch, L, E)
    return selective_scan_tiled(x, dt, A, B, C, D, block, tile)


def selective_scan_tiled(x, dt, A, B, C, D=None, block: int | None = None, tile: int | None = None):
    """`selective_scan` by the pure-PyTorch tiled scan, whatever is built (same arguments)."""
    plan = scan_plan(*x.shape, A.shape[1], block, tile)
    y = _TiledSelectiveScan.apply(x, dt, A, B, C, plan)  # (batch, L, E)
    return y if D is None else torch.addcmul(y, D, x)  # y + D x in one pass


def scan_plan(batch: int, length: int, e: int, n: int, block: int | None = None, tile: int | None = None):
    """(batch tile, channel tile, time block): tiles of about `tile` state elements, blocks of about
    BLOCK_ELEMENTS per buffer, and blocks long enough that the saved block-start states stay bounded."""
    tile = tile or TILE_ELEMENTS
    e_tile = max(1, min(e, tile // n))
    b_tile = max(1, min(batch, tile // (e_tile * n)))
    if block is None:
        block = max(1, BLOCK_ELEMENTS // (b_tile * e_tile * n))
        block = max(block, -(-n // MAX_SAVED_STATES_RATIO))  # L/block starts of N elements per x element
    return b_tile, e_tile, max(1, min(length, block))


def selective_scan_sequential(x, dt, A, B, C, D=None):
    """Step-by-step reference of `selective_scan` (same arguments), differentiated by autograd.

    `unbind` + `stack` keep its backward linear in L: indexing `tensor[:, t]` in a loop would make
    autograd add one full-size zero-padded gradient per step.
    """
    h = x.new_zeros(x.shape[0], x.shape[2], A.shape[1])  # (batch, E, N)
    ys = []
    for x_t, dt_t, b_t, c_t in zip(x.unbind(1), dt.unbind(1), B.unbind(1), C.unbind(1)):
        h = torch.exp(dt_t[..., None] * A) * h + (dt_t * x_t)[..., None] * b_t[:, None, :]  # (batch, E, N)
        ys.append((h @ c_t[..., None])[..., 0])  # (batch, E)
    y = torch.stack(ys, dim=1)  # (batch, L, E)
    return y if D is None else y + D * x


def _time_major(t: torch.Tensor) -> torch.Tensor:
    return t.transpose(0, 1).contiguous()  # (batch, L, ...) -> (L, batch, ...)


def _block_states(decay, h, dt, dtx, A2, B, h_start):
    """Fill `decay` = exp(dt A) = 2^(dt A log2 e) (exp2 is about twice as fast as exp on CPU) and `h` = the
    states of one block of one tile (time-major buffers (k, b, e, N)), starting after `h_start` (b, e, N)."""
    torch.mul(dt[..., None], A2, out=decay).exp2_()  # (k, b, e, N)
    torch.mul(dtx[..., None], B[:, :, None, :], out=h)  # (k, b, e, N) inputs dt B x
    # unbind once: per-step indexing would add three view ops per step, which dominate at small tiles
    steps, decays = h.unbind(0), decay.unbind(0)  # (b, e, N) views
    steps[0].addcmul_(decays[0], h_start)
    for t in range(1, len(steps)):
        steps[t].addcmul_(decays[t], steps[t - 1])


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, *t.shape[2:])  # (k, b, ...) -> (k * b, ...), a view for contiguous blocks


def _tiles(batch: int, e: int, plan) -> list[tuple[slice, slice]]:
    b_tile, e_tile, _ = plan
    return [(slice(b, min(b + b_tile, batch)), slice(c, min(c + e_tile, e)))
            for b in range(0, batch, b_tile) for c in range(0, e, e_tile)]


def _row_times(rows: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """Batched (row vector @ matrix), the fast layout for MKL: rows (m, p), matrices (m, p, q) -> (m, q)."""
    return torch.bmm(rows[:, None, :], matrices)[:, 0]


class _TiledSelectiveScan(torch.autograd.Function):
    """y = C h (no D term), tile by tile (a slice of the batch and of the channels), each tile in time-major
    blocks of `block` steps; saves only the state entering each block.

    Why tiles: the recurrence is sequential in time, so each step is one op; over the whole (batch, E, N)
    state that op streams megabytes from memory at large batches, while a tile's state stays in cache for the
    whole block and the op count per image falls as tiles grow. Why not a Blelloch tree (mambapy's pscan) or a
    chunked-cumsum ("SSD") scan: both do several times the exponentials and passes, and with per-(E, N) decays
    SSD's factorisation exp(S_t - S_s) = exp(S_t) exp(-S_s) overflows in float32. Per block, the decays, inputs
    and contractions are batched; the recurrence is one in-place multiply-add per step on a reused buffer; the
    backward recomputes each block's states from its saved start. Products of decays stay in [0, 1], so there
    is nothing to overflow. First-order gradients only (`once_differentiable`).
    """

    @staticmethod
    def forward(ctx, x, dt, A, B, C, plan):
        batch, length, e = x.shape
        n = A.shape[1]
        b_tile, e_tile, block = plan
        A2 = A * LOG2_E  # (E, N)
        dt_tm, B_tm, C_tm = _time_major(dt), _time_major(B), _time_major(C)  # (L, batch, .)
        dtx_tm = _time_major(dt * x)  # (L, batch, E)
        decay = x.new_empty(block, b_tile, e_tile, n)
        h = x.new_empty(block, b_tile, e_tile, n)
        y = x.new_empty(length, batch, e)  # (L, batch, E)
        starts = x.new_empty(-(-length // block), batch, e, n)  # the state entering each block
        for bs, es in _tiles(batch, e, plan):
            bt, et = bs.stop - bs.start, es.stop - es.start
            h_start = starts[0, bs, es].zero_()  # (b, e, N)
            for index, s in enumerate(range(0, length, block)):
                k = min(block, length - s)
                span = slice(s, s + k)
                if index:  # every block but the last is `block` steps long, so the previous one ended at block - 1
                    h_start = starts[index, bs, es].copy_(h[block - 1, :bt, :et])
                d, hk = decay[:k, :bt, :et], h[:k, :bt, :et]
                _block_states(d, hk, dt_tm[span, bs, es], dtx_tm[span, bs, es], A2[es], B_tm[span, bs], h_start)
                c_rows = C_tm[span, bs].reshape(k * bt, n)
                y[span, bs, es] = _row_times(c_rows, _flat(hk).transpose(1, 2)).view(k, bt, et)
        ctx.save_for_backward(x, dt, A, B, C, starts)
        ctx.plan = plan
        return y.transpose(0, 1)  # (batch, L, E)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        x, dt, A, B, C, starts = ctx.saved_tensors
        b_tile, e_tile, block = ctx.plan
        batch, length, e = x.shape
        n = A.shape[1]
        A2 = A * LOG2_E  # (E, N)
        x_tm, dt_tm, B_tm, C_tm, gy_tm = (_time_major(t) for t in (x, dt, B, C, grad_y))  # (L, batch, .)
        dtx_tm = dt_tm * x_tm  # (L, batch, E)
        decay = x.new_empty(block, b_tile, e_tile, n)
        h = x.new_empty(block, b_tile, e_tile, n)
        g = x.new_empty(block, b_tile, e_tile, n)  # dL/dh_t
        split_channels = e_tile < e  # then the sums over channels add up across tiles
        grad_C = (torch.zeros_like if split_channels else torch.empty_like)(C_tm)  # (L, batch, N)
        grad_B = (torch.zeros_like if split_channels else torch.empty_like)(B_tm)  # (L, batch, N)
        g_dot_B = torch.empty_like(x_tm)  # (L, batch, E)
        grad_dt_decay = torch.empty_like(x_tm)  # (L, batch, E), through the decay exp(dt A)
        want_A = ctx.needs_input_grad[2]
        grad_A = torch.zeros_like(A) if want_A else None  # (E, N)
        n_blocks = starts.shape[0]
        for bs, es in _tiles(batch, e, ctx.plan):
            bt, et = bs.stop - bs.start, es.stop - es.start
            carry = x.new_zeros(bt, et, n)  # decay_{t+1} g_{t+1} entering the block from the next one
            for index in reversed(range(n_blocks)):
                s = index * block
                k = min(block, length - s)
                span = slice(s, s + k)
                d, hk, gk = decay[:k, :bt, :et], h[:k, :bt, :et], g[:k, :bt, :et]
                h_start = starts[index, bs, es]  # (b, e, N)
                _block_states(d, hk, dt_tm[span, bs, es], dtx_tm[span, bs, es], A2[es], B_tm[span, bs], h_start)
                torch.mul(gy_tm[span, bs, es, None], C_tm[span, bs, None, :], out=gk)  # (k, b, e, N)
                g_steps, d_steps = gk.unbind(0), d.unbind(0)  # (b, e, N) views
                g_steps[k - 1].add_(carry)
                for t in range(k - 2, -1, -1):
                    g_steps[t].addcmul_(d_steps[t + 1], g_steps[t + 1])
                carry = d[0] * gk[0]
                gy_rows = gy_tm[span, bs, es].reshape(k * bt, et)
                part_C = _row_times(gy_rows, _flat(hk)).view(k, bt, n)  # sum over the tile's channels
                part_B = _row_times(dtx_tm[span, bs, es].reshape(k * bt, et), _flat(gk)).view(k, bt, n)
                if split_channels:
                    grad_C[span, bs] += part_C
                    grad_B[span, bs] += part_B
                else:
                    grad_C[span, bs] = part_C
                    grad_B[span, bs] = part_B
                b_rows = B_tm[span, bs].reshape(k * bt, n)
                g_dot_B[span, bs, es] = _row_times(b_rows, _flat(gk).transpose(1, 2)).view(k, bt, et)
                # dL/d(dt A)_t = g_t * decay_t * h_{t-1}, computed in place over g
                gk.mul_(d)
                gk[1:].mul_(hk[:-1])
                gk[0].mul_(h_start)
                per_channel = gk.permute(2, 0, 1, 3).reshape(et, k * bt, n)  # (e, k b, N), a strided view
                if want_A:  # sum over time and batch of g dt, one (1, k b) @ (k b, N) product per channel
                    dt_rows = dt_tm[span, bs, es].reshape(k * bt, et).T[:, None, :]  # (e, 1, k b)
                    grad_A[es] += torch.bmm(dt_rows, per_channel)[:, 0]
                # sum over N of A g, (1, N) @ (N, k b) per channel on the strided view: no copy, and faster than
                # a multiply and a sum (or 5x faster than the equivalent einsum, which copies)
                weighted = torch.bmm(A[es, None, :], per_channel.transpose(1, 2))[:, 0]  # (e, k b)
                grad_dt_decay[span, bs, es] = weighted.T.reshape(k, bt, et)
        grad_x = (dt_tm * g_dot_B).transpose(0, 1)  # (batch, L, E)
        grad_dt = (x_tm * g_dot_B + grad_dt_decay).transpose(0, 1)  # (batch, L, E)
        return grad_x, grad_dt, grad_A, grad_B.transpose(0, 1), grad_C.transpose(0, 1), None
