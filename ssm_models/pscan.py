"""Mamba's selective scan on CPU: a fused time-blocked scan with a hand-written backward, and a sequential reference."""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

# elements of one (block, batch, E, N) buffer: 2 MB in float32, about one core's L2 cache
_BLOCK_ELEMENTS = 1 << 19


def selective_scan(x, dt, A, B, C, D=None, block: int | None = None):
    """y_t = C_t h_t (+ D x_t), h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t, h_{-1} = 0.

    x, dt (batch, L, E); A (E, N); B, C (batch, L, N); D (E) or None -> y (batch, L, E).
    """
    batch, length, e = x.shape
    block = min(length, block or max(1, _BLOCK_ELEMENTS // (batch * e * A.shape[1])))
    y = _BlockedSelectiveScan.apply(x, dt, A, B, C, block)  # (batch, L, E)
    return y if D is None else y + D * x


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


def _block_states(decay, h, dt, dtx, A, B, h_start):
    """Fill `decay` = exp(dt A) and `h` = states of one block (time-major buffers), starting after `h_start`."""
    torch.mul(dt[..., None], A, out=decay).exp_()  # (k, batch, E, N)
    torch.mul(dtx[..., None], B[:, :, None, :], out=h)  # (k, batch, E, N) inputs dt B x
    # unbind once: per-step indexing would add three view ops per step, which dominate at small batches
    steps, decays = h.unbind(0), decay.unbind(0)  # (batch, E, N) views
    steps[0].addcmul_(decays[0], h_start)
    for t in range(1, len(steps)):
        steps[t].addcmul_(decays[t], steps[t - 1])


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, *t.shape[2:])  # (k, batch, ...) -> (k * batch, ...), a view for contiguous blocks


class _BlockedSelectiveScan(torch.autograd.Function):
    """y = C h (no D term) in time-major blocks of `block` steps; saves only the state entering each block.

    Why not a Blelloch tree (mambapy's pscan) or a chunked-cumsum ("SSD") scan: on a CPU each op already spans
    the whole (batch, E, N) state, so a shallower tree buys little, while every extra (batch, L, E, N) tensor
    costs a pass over ~0.2 GB plus page faults on fresh memory. Per block, the decays, inputs and contractions
    are batched; the recurrence is one in-place multiply-add per step on a cache-sized buffer that is reused;
    the backward recomputes each block's states from its saved start. Products of decays stay in [0, 1], so
    there is nothing to overflow. First-order gradients only (`once_differentiable`).
    """

    @staticmethod
    def forward(ctx, x, dt, A, B, C, block):
        batch, length, e = x.shape
        n = A.shape[1]
        dt_tm, B_tm, C_tm = _time_major(dt), _time_major(B), _time_major(C)  # (L, batch, .)
        dtx_tm = _time_major(dt * x)  # (L, batch, E)
        decay = x.new_empty(block, batch, e, n)
        h = x.new_empty(block, batch, e, n)
        y = x.new_empty(length, batch, e)  # (L, batch, E)
        h_start = x.new_zeros(batch, e, n)  # (batch, E, N)
        starts = []
        for s in range(0, length, block):
            k = min(block, length - s)
            span = slice(s, s + k)
            starts.append(h_start)
            _block_states(decay[:k], h[:k], dt_tm[span], dtx_tm[span], A, B_tm[span], h_start)
            torch.bmm(_flat(C_tm[span])[:, None, :], _flat(h[:k]).transpose(1, 2), out=_flat(y[span])[:, None, :])
            h_start = h[k - 1].clone()
        ctx.save_for_backward(x, dt, A, B, C, torch.stack(starts))
        ctx.block = block
        return y.transpose(0, 1)  # (batch, L, E)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        x, dt, A, B, C, starts = ctx.saved_tensors
        block = ctx.block
        batch, length, e = x.shape
        n = A.shape[1]
        x_tm, dt_tm, B_tm, C_tm, gy_tm = (_time_major(t) for t in (x, dt, B, C, grad_y))  # (L, batch, .)
        dtx_tm = dt_tm * x_tm  # (L, batch, E)
        decay = x.new_empty(block, batch, e, n)
        h = x.new_empty(block, batch, e, n)
        g = x.new_empty(block, batch, e, n)  # dL/dh_t
        grad_C, grad_B = torch.empty_like(C_tm), torch.empty_like(B_tm)  # (L, batch, N)
        g_dot_B = torch.empty_like(x_tm)  # (L, batch, E)
        grad_dt_decay = torch.empty_like(x_tm)  # (L, batch, E), through the decay exp(dt A)
        want_A = ctx.needs_input_grad[2]
        grad_A_terms = torch.zeros_like(h) if want_A else None  # summed over time and batch at the end
        carry = x.new_zeros(batch, e, n)  # decay_{t+1} g_{t+1} entering the block from the next one
        for index, s in reversed(list(enumerate(range(0, length, block)))):
            k = min(block, length - s)
            span = slice(s, s + k)
            d, hk, gk = decay[:k], h[:k], g[:k]
            h_start = starts[index]
            _block_states(d, hk, dt_tm[span], dtx_tm[span], A, B_tm[span], h_start)
            torch.mul(gy_tm[span, :, :, None], C_tm[span, :, None, :], out=gk)  # (k, batch, E, N)
            g_steps, d_steps = gk.unbind(0), d.unbind(0)  # (batch, E, N) views
            g_steps[k - 1].add_(carry)
            for t in range(k - 2, -1, -1):
                g_steps[t].addcmul_(d_steps[t + 1], g_steps[t + 1])
            carry = d[0] * gk[0]
            # batched (row vector @ matrix) products, the fast layout for MKL: sums over E or N per (t, b)
            torch.bmm(_flat(gy_tm[span])[:, None, :], _flat(hk), out=_flat(grad_C[span])[:, None, :])
            torch.bmm(_flat(B_tm[span])[:, None, :], _flat(gk).transpose(1, 2), out=_flat(g_dot_B[span])[:, None, :])
            torch.bmm(_flat(dtx_tm[span])[:, None, :], _flat(gk), out=_flat(grad_B[span])[:, None, :])
            # dL/d(dt A)_t = g_t * decay_t * h_{t-1}, computed in place over g
            gk.mul_(d)
            gk[1:].mul_(hk[:-1])
            gk[0].mul_(h_start)
            per_channel = torch.bmm(_flat(gk).transpose(0, 1), A[..., None])  # (E, k * batch, 1): sum_n g A
            grad_dt_decay[span] = per_channel.view(e, k, batch).permute(1, 2, 0)
            if want_A:
                grad_A_terms[:k].addcmul_(gk, dt_tm[span, :, :, None])
        grad_x = (dt_tm * g_dot_B).transpose(0, 1)  # (batch, L, E)
        grad_dt = (x_tm * g_dot_B + grad_dt_decay).transpose(0, 1)  # (batch, L, E)
        grad_A = grad_A_terms.sum((0, 1)) if want_A else None
        return grad_x, grad_dt, grad_A, grad_B.transpose(0, 1), grad_C.transpose(0, 1), None
