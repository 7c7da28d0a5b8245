// Mamba's selective scan on CPU, one sequential pass per (batch, channel) row with its N-state in L1.
// Built by `python -m ssm_models.scan_ext build`; ssm_models/scan_ext/__init__.py loads it and wraps it in autograd.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

// Baseline x86-64 plus an x86-64-v3 (AVX2, FMA) clone picked at load time: the image may run on another CPU than
// the one that built it, so no -march=native. `omp simd` (-fopenmp-simd) vectorises the loops over the state.
// The forward also gets an x86-64-v4 (AVX-512) clone: measured about 20% faster per row than AVX2 on an AVX-512
// EPYC core at L = 1,024, N = 64; the backward's showed no gain there, so it stays without one.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SCAN_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#define SCAN_CLONES_V4 __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define SCAN_CLONES
#define SCAN_CLONES_V4
#endif

// 2^x for the decays exp(dt A) = 2^(dt A log2 e): std::exp2 in float64 (the tests' precision; speed matters
// little there); in float32 a polynomial that GCC vectorises inline: 2^n 2^f, |f| <= 1/2, degree 5 fitted to
// 2^f (relative error 1.4e-7, 2.5e-7 measured in float32, about 2 ulp), clamped to float's exponent range.
template <typename T>
inline T decay_exp2(T x) {
  return std::exp2(x);
}

template <>
inline float decay_exp2<float>(float x) {
  x = x < -126.0f ? -126.0f : (x > 127.0f ? 127.0f : x);
  const int n = static_cast<int>(x + 127.5f) - 127;  // rounded: truncation floors the positive sum
  const float f = x - static_cast<float>(n);
  float p = 1.32669753e-3f;
  p = p * f + 9.67546459e-3f;
  p = p * f + 5.55074252e-2f;
  p = p * f + 2.40221217e-1f;
  p = p * f + 6.93146944e-1f;
  p = p * f + 1.00000012f;
  int32_t bits = (n + 127) << 23;  // 2^n
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

// The inputs of one (b, e) row: x, dt, y and the gradients per step at stride E; B, C at stride N; row e of A
// and of A2 = A log2(e).
template <typename T>
struct Row {
  const T *x, *dt, *A, *A2, *B, *C;
  int64_t L, E, N;
};

template <typename T>
Row<T> row_of(const T* x, const T* dt, const T* A, const T* A2, const T* B, const T* C, int64_t row, int64_t L,
              int64_t E, int64_t N) {
  int64_t b = row / E, e = row % E;
  return Row<T>{x + b * L * E + e, dt + b * L * E + e, A + e * N, A2 + e * N, B + b * L * N, C + b * L * N,
                L, E, N};
}

// h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t, y_t = C_t . h_t. For the backward, `states` and `decays` (L, N)
// receive every h_t and exp(dt_t A) when given: the reverse pass then needs no exponential of its own.
template <typename T>
SCAN_CLONES_V4 void forward_row(Row<T> r, T* h, T* y, T* states, T* decays) {
  const int64_t N = r.N;
  for (int64_t n = 0; n < N; ++n) h[n] = 0;
  for (int64_t t = 0; t < r.L; ++t) {
    const T d = r.dt[t * r.E], u = d * r.x[t * r.E];
    const T *Bt = r.B + t * N, *Ct = r.C + t * N;
    if (states) {
      T *ht = states + t * N, *at = decays + t * N;
      const T* h_prev = t > 0 ? ht - N : h;
#pragma omp simd  // the row's buffers never overlap
      for (int64_t n = 0; n < N; ++n) {
        at[n] = decay_exp2(d * r.A2[n]);
        ht[n] = at[n] * h_prev[n] + u * Bt[n];
      }
      continue;
    }
    T acc = 0;
#pragma omp simd reduction(+ : acc)
    for (int64_t n = 0; n < N; ++n) {
      h[n] = decay_exp2(d * r.A2[n]) * h[n] + u * Bt[n];
      acc += Ct[n] * h[n];
    }
    y[t * r.E] = acc;
  }
}

// Reverse pass over the recomputed `states` and `decays`: g_t = dL/dh_t = gy_t C_t + exp(dt_{t+1} A) g_{t+1}. Writes the
// row's dx, ddt (stride E), adds into gB, gC (this batch's (L, N) rows, shared over channels) and gA (N).
template <typename T>
SCAN_CLONES void backward_row(Row<T> r, const T* gy, const T* states, const T* decays, const T* zeros, T* carry,
                              T* gx, T* gdt, T* gA, T* gB, T* gC) {
  const int64_t N = r.N;
  for (int64_t n = 0; n < N; ++n) carry[n] = 0;  // exp(dt_{t+1} A) g_{t+1}
  for (int64_t t = r.L - 1; t >= 0; --t) {
    const T d = r.dt[t * r.E], xv = r.x[t * r.E], u = d * xv, gyt = gy[t * r.E];
    const T *Bt = r.B + t * N, *Ct = r.C + t * N, *h = states + t * N, *at = decays + t * N;
    const T* h_prev = t > 0 ? states + (t - 1) * N : zeros;
    T *gBt = gB + t * N, *gCt = gC + t * N;
    T g_dot_B = 0, grad_dt_decay = 0;
#pragma omp simd reduction(+ : g_dot_B, grad_dt_decay)
    for (int64_t n = 0; n < N; ++n) {
      const T a = at[n];
      const T g = gyt * Ct[n] + carry[n];
      gCt[n] += gyt * h[n];
      gBt[n] += u * g;
      g_dot_B += Bt[n] * g;
      const T q = g * a * h_prev[n];  // dL/d(dt A)_n
      grad_dt_decay += r.A[n] * q;
      gA[n] += d * q;
      carry[n] = a * g;
    }
    gx[t * r.E] = d * g_dot_B;
    gdt[t * r.E] = xv * g_dot_B + grad_dt_decay;
  }
}

void check_inputs(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B,
                  const at::Tensor& C) {
  TORCH_CHECK(x.dim() == 3 && dt.sizes() == x.sizes(), "x and dt must be (batch, L, E) of one shape");
  TORCH_CHECK(A.dim() == 2 && A.size(0) == x.size(2), "A must be (E, N)");
  TORCH_CHECK(B.dim() == 3 && B.size(0) == x.size(0) && B.size(1) == x.size(1) && B.size(2) == A.size(1),
              "B must be (batch, L, N)");
  TORCH_CHECK(C.sizes() == B.sizes(), "C must be (batch, L, N) like B");
  for (const auto* t : {&dt, &A, &B, &C}) {
    TORCH_CHECK(t->scalar_type() == x.scalar_type(), "all inputs must share one dtype");
    TORCH_CHECK(t->device().is_cpu(), "the compiled scan runs on CPU tensors only");
  }
}

at::Tensor scan_forward(const at::Tensor& x_in, const at::Tensor& dt_in, const at::Tensor& A_in,
                        const at::Tensor& B_in, const at::Tensor& C_in) {
  check_inputs(x_in, dt_in, A_in, B_in, C_in);
  auto x = x_in.contiguous(), dt = dt_in.contiguous(), A = A_in.contiguous();
  auto B = B_in.contiguous(), C = C_in.contiguous(), A2 = A * M_LOG2E;
  const int64_t batch = x.size(0), L = x.size(1), E = x.size(2), N = A.size(1);
  auto y = at::empty_like(x);  // (batch, L, E)
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ssm_scan_forward", [&] {
    const scalar_t *px = x.const_data_ptr<scalar_t>(), *pdt = dt.const_data_ptr<scalar_t>();
    const scalar_t *pA = A.const_data_ptr<scalar_t>(), *pA2 = A2.const_data_ptr<scalar_t>();
    const scalar_t* pB = B.const_data_ptr<scalar_t>();
    const scalar_t* pC = C.const_data_ptr<scalar_t>();
    scalar_t* py = y.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, batch * E, 1, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> h(N);
      for (int64_t row = begin; row < end; ++row) {
        int64_t offset = (row / E) * L * E + row % E;
        forward_row<scalar_t>(row_of(px, pdt, pA, pA2, pB, pC, row, L, E, N), h.data(), py + offset, nullptr,
                              nullptr);
      }
    });
  });
  return y;
}

// -> [grad x, grad dt, grad A, grad B, grad C]. B, C and A gradients sum over rows: each worker thread adds
// into its own slice of a (threads, ...) buffer, summed at the end, so no two threads write one element.
std::vector<at::Tensor> scan_backward(const at::Tensor& grad_y_in, const at::Tensor& x_in, const at::Tensor& dt_in,
                                      const at::Tensor& A_in, const at::Tensor& B_in, const at::Tensor& C_in) {
  check_inputs(x_in, dt_in, A_in, B_in, C_in);
  TORCH_CHECK(grad_y_in.sizes() == x_in.sizes(), "grad_y must be (batch, L, E) like x");
  auto gy = grad_y_in.to(x_in.scalar_type()).contiguous();
  auto x = x_in.contiguous(), dt = dt_in.contiguous(), A = A_in.contiguous();
  auto B = B_in.contiguous(), C = C_in.contiguous(), A2 = A * M_LOG2E;
  const int64_t batch = x.size(0), L = x.size(1), E = x.size(2), N = A.size(1);
  const int64_t threads = at::get_num_threads();
  auto gx = at::empty_like(x), gdt = at::empty_like(x);  // (batch, L, E)
  auto gA = at::zeros({threads, E, N}, A.options());
  auto gB = at::zeros({threads, batch, L, N}, B.options());
  auto gC = at::zeros({threads, batch, L, N}, C.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ssm_scan_backward", [&] {
    const scalar_t *px = x.const_data_ptr<scalar_t>(), *pdt = dt.const_data_ptr<scalar_t>();
    const scalar_t *pA = A.const_data_ptr<scalar_t>(), *pA2 = A2.const_data_ptr<scalar_t>();
    const scalar_t* pB = B.const_data_ptr<scalar_t>();
    const scalar_t *pC = C.const_data_ptr<scalar_t>(), *pgy = gy.const_data_ptr<scalar_t>();
    scalar_t *pgx = gx.mutable_data_ptr<scalar_t>(), *pgdt = gdt.mutable_data_ptr<scalar_t>();
    scalar_t *pgA = gA.mutable_data_ptr<scalar_t>(), *pgB = gB.mutable_data_ptr<scalar_t>();
    scalar_t* pgC = gC.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, batch * E, 1, [&](int64_t begin, int64_t end) {
      const int64_t slot = at::get_thread_num();
      TORCH_CHECK(slot < threads, "thread ", slot, " outside the ", threads, " gradient buffers");
      // the row's scratch: its L x N states and decays (512 KB at L = 1,024, N = 64 in float32), in L2
      std::vector<scalar_t> states(L * N), decays(L * N), h(N, 0), carry(N), zeros(N, 0);
      for (int64_t row = begin; row < end; ++row) {
        const int64_t b = row / E, e = row % E, offset = b * L * E + e;
        Row<scalar_t> r = row_of(px, pdt, pA, pA2, pB, pC, row, L, E, N);
        forward_row<scalar_t>(r, h.data(), nullptr, states.data(), decays.data());
        const int64_t rows_bc = (slot * batch + b) * L * N;
        backward_row<scalar_t>(r, pgy + offset, states.data(), decays.data(), zeros.data(), carry.data(), pgx + offset,
                               pgdt + offset, pgA + (slot * E + e) * N, pgB + rows_bc, pgC + rows_bc);
      }
    });
  });
  // one thread: slice 0 is the sum, no extra pass or copy
  auto total = [threads](const at::Tensor& t) { return threads == 1 ? t.select(0, 0) : t.sum(0); };
  return {gx, gdt, total(gA), total(gB), total(gC)};
}

}  // namespace

TORCH_LIBRARY(ssm_scan, m) {
  m.def("forward(Tensor x, Tensor dt, Tensor A, Tensor B, Tensor C) -> Tensor");
  m.def("backward(Tensor grad_y, Tensor x, Tensor dt, Tensor A, Tensor B, Tensor C) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(ssm_scan, CPU, m) {
  m.impl("forward", &scan_forward);
  m.impl("backward", &scan_backward);
}
