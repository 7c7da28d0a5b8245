"""Causal per-channel convolutions of the LTI families: the FFT reference, and fast Toeplitz and spectral paths."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

# Up to this length a causal convolution runs as one batched matrix product per channel (a Toeplitz matrix).
# Measured on one AVX-512 core, in turns: a training step's conv at (B, L, H) = (64, 49, 64) or (64, 64, 96)
# takes about half the time of the FFT path (bmm runs near matmul peak at these shapes, the FFTs at a few
# GFLOP/s on a 2L padding); the FFT catches up near L = 128 at batch 64, and near L = 64 for one image with a
# fixed kernel (attacks): the Toeplitz work grows as L^2, the FFT's as L log L.
DIRECT_MAX_LENGTH = 64


def fft_conv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Reference causal convolution y_t = sum_{j<=t} k_j u_{t-j} of u (B, L, H) with k (H, L), via a length-2L
    FFT and plain autograd (slow backward: complex FFTs of the full spectrum). `causal_conv` is the fast path."""
    length = u.shape[1]
    n = fft_size(2 * length)
    k_f = torch.fft.rfft(k, n=n)  # (H, n/2+1)
    u_f = torch.fft.rfft(u.transpose(1, 2), n=n)  # (B, H, n/2+1)
    y = torch.fft.irfft(u_f * k_f, n=n)[..., :length]  # (B, H, L)
    # contiguous: the ops after it (GELU's backward) run 10x slower on the transposed view
    return y.transpose(1, 2).contiguous()  # (B, L, H)


def fft_size(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n: pocketfft is fastest on such sizes, and padding to a power of 2 wastes up to 2x."""
    best = 1 << (n - 1).bit_length()
    p2 = 1
    while p2 < best:
        p3 = p2
        while p3 < best:
            p5 = p3
            while p5 < best:
                if p5 >= n:
                    best = p5
                p5 *= 5
            p3 *= 3
        p2 *= 2
    return best


def causal_conv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """`fft_conv(u, k)` with hand-written backwards: Toeplitz products for short sequences, else FFTs.

    u (B, L, H), k (H, L) -> (B, L, H). First-order gradients only (training needs no more)."""
    if u.shape[1] <= DIRECT_MAX_LENGTH:
        return _ToeplitzConv.apply(u, k)
    return _SpectralConv.apply(u, k)


# ----- Toeplitz path ------------------------------------------------------------------------------------

def toeplitz_operator(k: torch.Tensor, length: int) -> torch.Tensor:
    """(H, L, L) upper-triangular T with T[h, s, t] = k[h, t - s] for t >= s, so y[h] = u[h] @ T[h]."""
    padded = F.pad(k[:, :length], (length - 1, 0))  # (H, 2L-1): L-1 zeros, then k_0 .. k_{L-1}
    return padded.unfold(-1, length, 1).flip(1)  # (H, L, L): row s is k shifted right by s


def _channels_first(u: torch.Tensor) -> torch.Tensor:
    return u.permute(2, 0, 1).contiguous()  # (B, L, H) -> (H, B, L): one matrix per channel for bmm


def _channels_last(y: torch.Tensor) -> torch.Tensor:
    return y.permute(1, 2, 0).contiguous()  # (H, B, L) -> (B, L, H)


_DIAGONAL_SUMS: dict[tuple, torch.Tensor] = {}


def _diagonal_sum_matrix(length: int, dtype: torch.dtype, device) -> torch.Tensor:
    """(L*L, L) 0/1 matrix D with (G.flatten(-2) @ D)[j] = sum_s G[s, s + j]: the adjoint of `toeplitz_operator`.
    A matrix product is faster here than index_add or strided diagonal views (measured)."""
    key = (length, dtype, str(device))
    if key not in _DIAGONAL_SUMS:
        index = torch.arange(length, device=device)
        lag = index[None, :] - index[:, None]  # (L, L): t - s
        rows = torch.arange(length * length, device=device).view(length, length)
        matrix = torch.zeros(length * length, length, dtype=dtype, device=device)
        upper = lag >= 0
        matrix[rows[upper], lag[upper]] = 1
        _DIAGONAL_SUMS[key] = matrix
    return _DIAGONAL_SUMS[key]


class _ToeplitzConv(torch.autograd.Function):
    """y[h] = u[h] @ T(k)[h] with u channels-first; the backward is two more bmm and one small matmul."""

    @staticmethod
    def forward(ctx, u, k):
        length = u.shape[1]
        operator = toeplitz_operator(k, length)  # (H, L, L)
        u_h = _channels_first(u)  # (H, B, L)
        ctx.save_for_backward(u_h, operator)
        return _channels_last(torch.bmm(u_h, operator))  # (B, L, H)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        u_h, operator = ctx.saved_tensors
        channels, _, length = u_h.shape
        g_h = _channels_first(grad_y)  # (H, B, L)
        grad_u = grad_k = None
        if ctx.needs_input_grad[0]:
            grad_u = _channels_last(torch.bmm(g_h, operator.transpose(1, 2)))  # (B, L, H)
        if ctx.needs_input_grad[1]:
            grad_operator = torch.bmm(u_h.transpose(1, 2), g_h)  # (H, L, L): sum over the batch
            diagonal_sums = _diagonal_sum_matrix(length, grad_operator.dtype, grad_operator.device)
            grad_k = grad_operator.reshape(channels, length * length) @ diagonal_sums  # (H, L)
        return grad_u, grad_k


# ----- spectral path ------------------------------------------------------------------------------------

class _SpectralConv(torch.autograd.Function):
    """`fft_conv` keeping the forward's spectra; the backward is real FFTs only: the input gradient is the
    correlation with k (conjugate spectrum), the kernel gradient the batch-summed correlation of the output
    gradient with u, both free of wrap-around since n >= 2L."""

    @staticmethod
    def forward(ctx, u, k):
        length = u.shape[1]
        n = fft_size(2 * length)
        k_f = torch.fft.rfft(k, n=n)  # (H, n/2+1)
        u_f = torch.fft.rfft(u.transpose(1, 2), n=n)  # (B, H, n/2+1)
        ctx.save_for_backward(u_f, k_f)
        ctx.n = n
        return torch.fft.irfft(u_f * k_f, n=n)[..., :length].transpose(1, 2).contiguous()  # (B, L, H)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        u_f, k_f = ctx.saved_tensors
        n, length = ctx.n, grad_y.shape[1]
        g_f = torch.fft.rfft(grad_y.transpose(1, 2), n=n)  # (B, H, n/2+1)
        grad_u = grad_k = None
        if ctx.needs_input_grad[0]:
            grad_u = torch.fft.irfft(g_f * k_f.conj(), n=n)[..., :length].transpose(1, 2).contiguous()  # (B, L, H)
        if ctx.needs_input_grad[1]:
            grad_k = torch.fft.irfft((g_f * u_f.conj()).sum(0), n=n)[:, :length]  # (H, L)
        return grad_u, grad_k


# ----- fixed kernels (attack mode) ----------------------------------------------------------------------

def kernel_spectrum(k: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """rfft of a kernel k (H, >= L) at the FFT size `fft_conv` uses for length L, and its conjugate
    (the adjoint's spectrum): ((H, n/2+1), (H, n/2+1)), for `fixed_kernel_conv`."""
    k_f = torch.fft.rfft(k[:, :length].detach(), n=fft_size(2 * length))  # (H, n/2+1)
    return k_f, k_f.conj().resolve_conj()


def fixed_kernel_operator(k: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(operator, adjoint) of the convolution with a constant kernel k (H, >= L), for `fixed_kernel_conv`:
    Toeplitz matrices for short sequences, spectra otherwise (the same choice as `causal_conv`)."""
    if length <= DIRECT_MAX_LENGTH:
        operator = toeplitz_operator(k.detach(), length).contiguous()  # (H, L, L)
        return operator, operator.transpose(1, 2)
    return kernel_spectrum(k, length)


def _apply_operator(u: torch.Tensor, operator: torch.Tensor, contiguous: bool = True) -> torch.Tensor:
    if not operator.is_complex():
        if operator.shape[-1] != u.shape[1]:
            raise ValueError(f"Toeplitz operator of size {operator.shape[-1]} applied to a sequence of {u.shape[1]}")
        return _channels_last(torch.bmm(_channels_first(u), operator))  # (B, L, H)
    length = u.shape[1]
    n = fft_size(2 * length)
    if operator.shape[-1] != n // 2 + 1:
        raise ValueError(f"kernel spectrum has {operator.shape[-1]} bins; sequences of length {length} need "
                         f"{n // 2 + 1}")
    # one strided copy into a buffer whose padding alone is zeroed, instead of rfft's own transpose-copy, pad and
    # fill (measured 12% faster for the whole convolution at (B, L, H) = (100, 1024, 128), zeroing only the padding
    # 3% more); the product is formed in place
    padded = u.new_empty(u.shape[0], u.shape[2], n)  # (B, H, n)
    padded[..., :length].copy_(u.transpose(1, 2))
    padded[..., length:].zero_()
    u_f = torch.fft.rfft(padded).mul_(operator)  # (B, H, n/2+1)
    y = torch.fft.irfft(u_f, n=n)[..., :length].transpose(1, 2)  # (B, L, H), a view of the (B, H, n) result
    # a linear layer reads the view in place (measured 2.8x faster at (100, 1,024, 128) than copying it first);
    # other consumers get the copy (see fft_conv)
    return y.contiguous() if contiguous else y


class _FixedKernelConv(torch.autograd.Function):
    """Causal convolution with a kernel that needs no gradient. Its adjoint is the correlation with the
    same kernel (transposed Toeplitz matrix, or conjugate spectrum with zero padding to n >= 2L so that it
    does not wrap), so the backward costs one more product and stays differentiable (it is this same op)."""

    @staticmethod
    def forward(ctx, u, operator, adjoint, contiguous=True):
        ctx.save_for_backward(operator, adjoint)
        return _apply_operator(u, operator, contiguous)

    @staticmethod
    def backward(ctx, grad):
        operator, adjoint = ctx.saved_tensors
        return _FixedKernelConv.apply(grad.contiguous(), adjoint, operator), None, None, None


def fixed_kernel_conv(u: torch.Tensor, operator: tuple[torch.Tensor, torch.Tensor],
                      contiguous: bool = True) -> torch.Tensor:
    """`fft_conv(u, k)` for a constant kernel, `operator = fixed_kernel_operator(k, L)` (or `kernel_spectrum`);
    gradients reach u only. `contiguous=False` may return a transposed (B, L, H) view (long sequences)."""
    return _FixedKernelConv.apply(u, *operator, contiguous)


def with_skip(k: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """The kernel k (H, L) of `k * u + skip u` (skip (H,) or (1, H)): the skip term is the convolution's lag 0."""
    folded = k.detach().clone()  # (H, L)
    folded[:, 0] += skip.detach().reshape(-1)
    return folded
