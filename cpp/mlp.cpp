// mlp: a small ReLU network (the coarse field's 8 -> 64 -> 64 -> 4), forward and backward fused per tile
// of points. meshdream/nerf/field.py keeps the torch.nn.Linear modules (same parameters, same state-dict
// keys) and owns the autograd glue; torch's Linear / ReLU modules are the reference.
//
// Why: PyTorch runs the network as separate GEMMs and element-wise passes, each over [N, 64] activations
// that do not fit in cache (32k points: 8 MB per pass), and its skinny GEMMs (K = 8, N = 4) run far from
// the machine's peak. Here a tile of kTile points goes through every layer while it sits in L1, and
// backward recomputes the tile's activations instead of reading stored ones.
//
// Layout as torch.nn.Linear: weights[l] [D_{l+1}, D_l], biases[l] [D_{l+1}]; ReLU after every layer but
// the last. Gradients are deterministic for any thread count: points are cut into fixed blocks of
// kBlock, each block sums its weight gradients in point order, and the blocks' sums are added in block
// order in double.
//
// SIMD: the build targets baseline x86-64 (the wheel must load anywhere), so on x86-64 Linux the tile
// functions are compiled three times (x86-64-v4 = AVX-512, v3 = AVX2 + FMA, baseline) and the loader
// picks the best one for the CPU (GCC/Clang target_clones).
#include "checks.h"
#include "kernels.h"

#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <vector>

namespace py = pybind11;

#if defined(__GNUC__) && defined(__x86_64__) && defined(__linux__)
#define MD_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MD_CLONES
#endif
#if defined(__GNUC__)
#define MD_INLINE inline __attribute__((always_inline))
#else
#define MD_INLINE inline
#endif

namespace {

using checks::Array;

constexpr int kTile = 64;      // points per tile (a 64 x 64 float activation is 16 KB: L1)
constexpr int64_t kBlock = 1024;  // points per gradient block (the unit of the deterministic sum)
constexpr int kMaxWidth = 4096;

// C[R, W] = (C or bias or 0) + A[R, K] B[K, W], row-major with leading dimensions: R rows of W accumulators
// held in SIMD registers across the K loop (GCC / Clang vector types: one instruction per row and k on
// AVX-512, two on AVX2, four on SSE2; a plain loop elsewhere).
#if defined(__GNUC__)
template <typename T, int W>
struct Row {
    typedef T type __attribute__((vector_size(W * sizeof(T))));
};
template <typename T, int R, int W, bool Acc>
MD_INLINE void micro(int K, const T* A, int lda, const T* B, int ldb, T* C, int ldc, const T* bias) {
    using V = typename Row<T, W>::type;
    V acc[R];
    for (int i = 0; i < R; ++i) {
        if (Acc) std::memcpy(&acc[i], C + i * ldc, sizeof(V));
        else if (bias) std::memcpy(&acc[i], bias, sizeof(V));
        else acc[i] = V{};
    }
    for (int k = 0; k < K; ++k) {
        V b;
        std::memcpy(&b, B + (int64_t)k * ldb, sizeof(V));
        for (int i = 0; i < R; ++i) acc[i] += A[i * lda + k] * b;
    }
    for (int i = 0; i < R; ++i) std::memcpy(C + i * ldc, &acc[i], sizeof(V));
}
#else
template <typename T, int R, int W, bool Acc>
MD_INLINE void micro(int K, const T* A, int lda, const T* B, int ldb, T* C, int ldc, const T* bias) {
    T acc[R][W];
    for (int i = 0; i < R; ++i)
        for (int j = 0; j < W; ++j) acc[i][j] = Acc ? C[i * ldc + j] : (bias ? bias[j] : T(0));
    for (int k = 0; k < K; ++k)
        for (int i = 0; i < R; ++i)
            for (int j = 0; j < W; ++j) acc[i][j] += A[i * lda + k] * B[(int64_t)k * ldb + j];
    for (int i = 0; i < R; ++i)
        for (int j = 0; j < W; ++j) C[i * ldc + j] = acc[i][j];
}
#endif

template <typename T, int R, bool Acc>
MD_INLINE void row_block(int N, int K, const T* A, int lda, const T* B, int ldb, T* C, int ldc, const T* bias) {
    constexpr int V = 64 / (int)sizeof(T);  // one 512-bit row: 16 floats / 8 doubles
    int j = 0;
    for (; j + V <= N; j += V) micro<T, R, V, Acc>(K, A, lda, B + j, ldb, C + j, ldc, bias ? bias + j : nullptr);
    for (; j + V / 2 <= N; j += V / 2) micro<T, R, V / 2, Acc>(K, A, lda, B + j, ldb, C + j, ldc, bias ? bias + j : nullptr);
    for (; j + V / 4 <= N; j += V / 4) micro<T, R, V / 4, Acc>(K, A, lda, B + j, ldb, C + j, ldc, bias ? bias + j : nullptr);
    for (; j < N; ++j) micro<T, R, 1, Acc>(K, A, lda, B + j, ldb, C + j, ldc, bias ? bias + j : nullptr);
}

// C[M, N] (= or +=) A[M, K] B[K, N] (+ bias[N])
template <typename T, bool Acc>
MD_INLINE void gemm(int M, int N, int K, const T* A, int lda, const T* B, int ldb, T* C, int ldc, const T* bias) {
    int i = 0;
    for (; i + 4 <= M; i += 4) row_block<T, 4, Acc>(N, K, A + i * lda, lda, B, ldb, C + i * ldc, ldc, bias);
    for (; i < M; ++i) row_block<T, 1, Acc>(N, K, A + i * lda, lda, B, ldb, C + i * ldc, ldc, bias);
}

template <typename T>
MD_INLINE void relu(T* a, int n) {
    for (int i = 0; i < n; ++i) a[i] = a[i] > T(0) ? a[i] : T(0);
}

// The network as raw pointers: widths D_0 .. D_L; W[l] [D_{l+1}, D_l]; WT[l] its transpose [D_l, D_{l+1}].
template <typename T>
struct Net {
    std::vector<int> dims;
    std::vector<const T*> W, B;
    std::vector<std::vector<T>> WT;
    int layers() const { return (int)W.size(); }
    int widest() const { return *std::max_element(dims.begin(), dims.end()); }
};

// Forward of n <= kTile points: X [n, D_0] -> O [n, D_L]; buf: 2 x kTile x widest scratch.
template <typename T>
MD_INLINE void forward_tile(const Net<T>& net, const T* X, int n, T* O, T* buf) {
    const int L = net.layers(), stride = kTile * net.widest();
    const T* in = X;
    for (int l = 0; l < L; ++l) {
        const int din = net.dims[l], dout = net.dims[l + 1];
        T* out = l == L - 1 ? O : buf + (l % 2) * stride;
        gemm<T, false>(n, dout, din, in, din, net.WT[l].data(), dout, out, dout, net.B[l]);
        if (l < L - 1) relu(out, n * dout);
        in = out;
    }
}

// Backward of n <= kTile points: recompute the activations, then walk the layers down.
// dW / dB: this block's gradient sums (+=); GX [n, D_0] (or null). act: L x kTile x widest scratch for
// the activations a_1 .. a_{L-1}; g0, g1, gt: kTile x widest scratch each.
template <typename T>
MD_INLINE void backward_tile(const Net<T>& net, const T* X, const T* G, int n, std::vector<T*>& dW, std::vector<T*>& dB, T* GX,
                             T* act, T* g0, T* g1, T* gt) {
    const int L = net.layers(), stride = kTile * net.widest();
    // a_0 = X; a_l = relu(a_{l-1} W^T + b) for l = 1 .. L-1 (the output layer's value is not needed)
    const T* a_prev = X;
    for (int l = 0; l + 1 < L; ++l) {
        const int din = net.dims[l], dout = net.dims[l + 1];
        T* out = act + l * stride;
        gemm<T, false>(n, dout, din, a_prev, din, net.WT[l].data(), dout, out, dout, net.B[l]);
        relu(out, n * dout);
        a_prev = out;
    }
    const T* g = G;  // dLoss / d(output of layer l), [n, D_{l+1}]
    for (int l = L - 1; l >= 0; --l) {
        const int din = net.dims[l], dout = net.dims[l + 1];
        const T* a = l == 0 ? X : act + (l - 1) * stride;  // layer l's input [n, din]
        // dW_l += g^T a: as a product gT [dout, n] x a [n, din], so the n-long sums stay in registers
        for (int t = 0; t < n; ++t)
            for (int j = 0; j < dout; ++j) gt[j * n + t] = g[t * dout + j];
        gemm<T, true>(dout, din, n, gt, n, a, din, dW[l], din, nullptr);
        for (int t = 0; t < n; ++t)
            for (int j = 0; j < dout; ++j) dB[l][j] += g[t * dout + j];
        if (l == 0 && GX == nullptr) break;
        // d input = g W_l [n, din]; through the ReLU that made it (not for the network's input)
        T* gin = l == 0 ? GX : (g == g0 ? g1 : g0);
        gemm<T, false>(n, din, dout, g, dout, net.W[l], din, gin, din, nullptr);
        if (l > 0)
            for (int i = 0; i < n * din; ++i)
                if (!(a[i] > T(0))) gin[i] = T(0);
        g = gin;
    }
}

// The tile loops of one block, compiled per SIMD level (see the header): one overload per float type, since
// target_clones applies to plain functions, not templates.
#define MD_BLOCKS(T)                                                                                                      \
    MD_CLONES void forward_block(const Net<T>& net, const T* X, int64_t n, T* O, T* buf) {                               \
        const int d0 = net.dims.front(), dl = net.dims.back();                                                           \
        for (int64_t s = 0; s < n; s += kTile)                                                                           \
            forward_tile(net, X + s * d0, (int)std::min<int64_t>(kTile, n - s), O + s * dl, buf);                       \
    }                                                                                                                    \
    MD_CLONES void backward_block(const Net<T>& net, const T* X, const T* G, int64_t n, std::vector<T*>& dW,             \
                                  std::vector<T*>& dB, T* GX, T* act, T* g0, T* g1, T* gt) {                             \
        const int d0 = net.dims.front(), dl = net.dims.back();                                                           \
        for (int64_t s = 0; s < n; s += kTile)                                                                           \
            backward_tile(net, X + s * d0, G + s * dl, (int)std::min<int64_t>(kTile, n - s), dW, dB,                    \
                          GX ? GX + s * d0 : nullptr, act, g0, g1, gt);                                                  \
    }
MD_BLOCKS(float)
MD_BLOCKS(double)
#undef MD_BLOCKS

// The checked inputs of one call: x [N, D_0] and the layers (converted to T), and the network over them.
template <typename T>
struct Inputs {
    Array<T> x;
    std::vector<Array<T>> weights, biases;
    Net<T> net;
    Inputs(const py::array& x_in, const std::vector<py::array>& weights_in, const std::vector<py::array>& biases_in, int64_t threads) {
        checks::require_threads(threads);
        if (weights_in.empty() || weights_in.size() != biases_in.size())
            checks::fail("weights and biases must be non-empty lists of the same length (one per layer), got " +
                         std::to_string(weights_in.size()) + " and " + std::to_string(biases_in.size()));
        x = checks::floats<T>(x_in, "x", 2, "[N, D_0]");
        if (x.shape(1) < 1 || x.shape(1) > kMaxWidth)
            checks::fail("x's width D_0 must be 1 .. " + std::to_string(kMaxWidth) + ", got shape " + checks::shape_of(x));
        net.dims.push_back((int)x.shape(1));
        for (size_t l = 0; l < weights_in.size(); ++l) {
            const std::string wl = "weights[" + std::to_string(l) + "]", bl = "biases[" + std::to_string(l) + "]";
            weights.push_back(checks::floats<T>(weights_in[l], wl.c_str(), 2, "[D_out, D_in] (torch.nn.Linear layout)"));
            biases.push_back(checks::floats<T>(biases_in[l], bl.c_str(), 1, "[D_out]"));
            const auto& w = weights.back();
            const auto& b = biases.back();
            if (w.shape(1) != net.dims.back())
                checks::fail(wl + " must be [D_out, " + std::to_string(net.dims.back()) + "] (torch.nn.Linear layout), got shape " +
                             checks::shape_of(w));
            if (w.shape(0) < 1 || w.shape(0) > kMaxWidth)
                checks::fail("layer widths must be 1 .. " + std::to_string(kMaxWidth) + ", got " + wl + " of shape " + checks::shape_of(w));
            if (b.shape(0) != w.shape(0))
                checks::fail(bl + " must be [" + std::to_string(w.shape(0)) + "], got shape " + checks::shape_of(b));
            const int dout = (int)w.shape(0), din = (int)w.shape(1);
            net.dims.push_back(dout);
            net.W.push_back(w.data());
            net.B.push_back(b.data());
            std::vector<T> wt((size_t)din * dout);
            for (int o = 0; o < dout; ++o)
                for (int i = 0; i < din; ++i) wt[(size_t)i * dout + o] = w.data()[(size_t)o * din + i];
            net.WT.push_back(std::move(wt));
        }
        checks::buffer_elements({x.shape(0), (int64_t)net.dims.back()}, sizeof(T), "the output [N, D_L]");
    }
};

template <typename T>
Array<T> mlp_fwd(const py::array& x_in, const std::vector<py::array>& weights, const std::vector<py::array>& biases, int64_t threads_in) {
    const Inputs<T> in(x_in, weights, biases, threads_in);
    const Array<T>& x = in.x;
    const Net<T>& net = in.net;
    const int threads = (int)threads_in;
    const int64_t N = x.shape(0), dl = net.dims.back(), d0 = net.dims.front();
    Array<T> out({N, dl});
    const T* X = x.data();
    T* O = out.mutable_data();
    const int64_t blocks = (N + kBlock - 1) / kBlock;
    {
        py::gil_scoped_release release;
#pragma omp parallel num_threads(omp_team(threads))
        {
            std::vector<T> buf((size_t)2 * kTile * net.widest());
#pragma omp for schedule(static)
            for (int64_t blk = 0; blk < blocks; ++blk) {
                const int64_t s = blk * kBlock, n = std::min(kBlock, N - s);
                forward_block(net, X + s * d0, n, O + s * dl, buf.data());
            }
        }
    }
    return out;
}

template <typename T>
py::tuple mlp_bwd(const py::array& x_in, const std::vector<py::array>& weights, const std::vector<py::array>& biases,
                  const py::array& grad_in, bool need_x, int64_t threads_in) {
    const Inputs<T> in(x_in, weights, biases, threads_in);
    const Array<T>& x = in.x;
    const Net<T>& net = in.net;
    const int threads = (int)threads_in;
    const int64_t N = x.shape(0), d0 = net.dims.front(), dl = net.dims.back();
    const int L = net.layers();
    const Array<T> grad_out = checks::floats<T>(grad_in, "grad_out", 2, "[N, D_L]");
    if (grad_out.shape(0) != N || grad_out.shape(1) != dl)
        checks::fail("grad_out must be [N, " + std::to_string(dl) + "] with x's N = " + std::to_string(N) + ", got shape " +
                     checks::shape_of(grad_out));
    // one block's gradients: every layer's dW then dB, packed
    std::vector<int64_t> w_off(L), b_off(L);
    int64_t P = 0;
    for (int l = 0; l < L; ++l) {
        w_off[l] = P;
        P += (int64_t)net.dims[l + 1] * net.dims[l];
        b_off[l] = P;
        P += net.dims[l + 1];
    }
    const int64_t blocks = (N + kBlock - 1) / kBlock;
    std::vector<T> partial((size_t)(blocks * P), T(0));
    py::object grad_x = py::none();
    T* GX = nullptr;
    if (need_x) {
        Array<T> gx({N, d0});
        GX = gx.mutable_data();
        grad_x = gx;
    }
    const T* X = x.data();
    const T* G = grad_out.data();
    std::vector<double> total((size_t)P, 0.0);
    {
        py::gil_scoped_release release;
#pragma omp parallel num_threads(omp_team(threads))
        {
            const int64_t stride = (int64_t)kTile * net.widest();
            std::vector<T> act((size_t)(std::max(1, L - 1) * stride)), g0((size_t)stride), g1((size_t)stride), gt((size_t)stride);
            std::vector<T*> dW(L), dB(L);
#pragma omp for schedule(static)
            for (int64_t blk = 0; blk < blocks; ++blk) {
                const int64_t s = blk * kBlock, n = std::min(kBlock, N - s);
                T* p = partial.data() + blk * P;
                for (int l = 0; l < L; ++l) {
                    dW[l] = p + w_off[l];
                    dB[l] = p + b_off[l];
                }
                backward_block(net, X + s * d0, G + s * dl, n, dW, dB, GX ? GX + s * d0 : nullptr, act.data(), g0.data(),
                                  g1.data(), gt.data());
            }
            // the blocks' sums in block order, each thread a slice of the parameters
#pragma omp for schedule(static)
            for (int64_t i = 0; i < P; ++i) {
                double sum = 0.0;
                for (int64_t blk = 0; blk < blocks; ++blk) sum += (double)partial[(size_t)(blk * P + i)];
                total[(size_t)i] = sum;
            }
        }
    }
    py::list grad_w, grad_b;
    for (int l = 0; l < L; ++l) {
        const int64_t dout = net.dims[l + 1], din = net.dims[l];
        Array<T> gw({dout, din}), gb({dout});
        std::transform(total.begin() + w_off[l], total.begin() + w_off[l] + dout * din, gw.mutable_data(), [](double v) { return (T)v; });
        std::transform(total.begin() + b_off[l], total.begin() + b_off[l] + dout, gb.mutable_data(), [](double v) { return (T)v; });
        grad_w.append(gw);
        grad_b.append(gb);
    }
    return py::make_tuple(grad_w, grad_b, grad_x);
}

const char* kFwdDoc =
    "A ReLU network's output [N, D_L] for x [N, D_0]: weights[l] [D_{l+1}, D_l] and biases[l] [D_{l+1}] as in "
    "torch.nn.Linear, ReLU after every layer but the last. threads: OpenMP threads (0: OpenMP's default).";
const char* kBwdDoc =
    "Gradients of the ReLU network for grad_out [N, D_L]: (grad_weights list, grad_biases list, grad_x [N, D_0] or None). "
    "Activations are recomputed; deterministic for any thread count (fixed point blocks, summed in order in double).";

}  // namespace

void register_mlp(py::module_& m) {
    using namespace py::literals;
    m.def("mlp_fwd_f32", &mlp_fwd<float>, kFwdDoc, "x"_a, "weights"_a, "biases"_a, "threads"_a = 0);
    m.def("mlp_fwd_f64", &mlp_fwd<double>, kFwdDoc, "x"_a, "weights"_a, "biases"_a, "threads"_a = 0);
    m.def("mlp_bwd_f32", &mlp_bwd<float>, kBwdDoc, "x"_a, "weights"_a, "biases"_a, "grad_out"_a, "need_x"_a = true,
          "threads"_a = 0);
    m.def("mlp_bwd_f64", &mlp_bwd<double>, kBwdDoc, "x"_a, "weights"_a, "biases"_a, "grad_out"_a, "need_x"_a = true,
          "threads"_a = 0);
}
