// hash_grid: Instant-NGP's multi-resolution hash-grid encoding (meshdream/nerf/hash_grid.py is the
// PyTorch reference; same table layout, same dense / hashed rule, same primes and index arithmetic).
//
// Level l has resolution res[l]; a point's cell corners index the table densely
// (i + j (r+1) + k (r+1)^2) or by the spatial hash (i * 1) ^ (j * 2654435761) ^ (k * 805459861),
// both taken modulo the level's size and shifted by its offset. Features are trilinear blends of the
// 8 corners, in the reference's corner order (x outermost) and with its float operations, so float32
// features match it bit for bit up to the order of the 8-term sum.
//
// Backward is deterministic and independent of the thread count: every level owns a disjoint slice of
// the table, so threads split the levels and each accumulates its level over the points in order
// (in double, cast once at the end). No atomics, no per-thread table copies.
//
// Arguments are checked first (cpp/checks.h): shapes, dtypes, the levels (with overflow-safe sums and
// cubes) against the table's rows, bound > 0, threads. A NaN coordinate gives NaN features.
#include "checks.h"
#include "kernels.h"

#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <vector>

namespace py = pybind11;

namespace {

using checks::Array;

constexpr uint64_t kPrimes[3] = {1ull, 2654435761ull, 805459861ull};
constexpr int64_t kMaxResolution = (int64_t(1) << 31) - 1;  // cell indices stay exact in float and in int64

struct Levels {
    std::vector<int64_t> resolution, offset, size;
    std::vector<bool> dense;
    int64_t rows = 0;  // table rows the levels cover

    Levels(std::vector<int64_t> r, std::vector<int64_t> o, std::vector<int64_t> s, std::vector<bool> d)
        : resolution(std::move(r)), offset(std::move(o)), size(std::move(s)), dense(std::move(d)) {
        const size_t L = resolution.size();
        if (offset.size() != L || size.size() != L || dense.size() != L)
            checks::fail("resolution, offset, table_size and dense must have one entry per level, got " +
                         std::to_string(L) + ", " + std::to_string(offset.size()) + ", " + std::to_string(size.size()) + ", " +
                         std::to_string(dense.size()));
        for (size_t l = 0; l < L; ++l) {
            const std::string at = " (level " + std::to_string(l) + ")";
            if (resolution[l] < 1 || resolution[l] > kMaxResolution)
                checks::fail("resolution must be 1 .. 2^31 - 1, got " + std::to_string(resolution[l]) + at);
            if (size[l] < 1) checks::fail("table_size must be >= 1, got " + std::to_string(size[l]) + at);
            if (offset[l] < 0) checks::fail("offset must be >= 0, got " + std::to_string(offset[l]) + at);
            int64_t end, corners = resolution[l] + 1;  // rows the level spans; (resolution + 1)^3 dense corners
            if (__builtin_add_overflow(offset[l], size[l], &end))
                checks::fail("offset + table_size overflows int64" + at);
            // overflow means more corners than any table: too many for a dense level
            const bool too_many = __builtin_mul_overflow(corners, resolution[l] + 1, &corners) ||
                                  __builtin_mul_overflow(corners, resolution[l] + 1, &corners) || corners > size[l];
            if (dense[l] && too_many)
                checks::fail("a dense level needs (resolution + 1)^3 <= table_size, got resolution " + std::to_string(resolution[l]) +
                             " and table_size " + std::to_string(size[l]) + at);
            rows = std::max(rows, end);
        }
    }
    int64_t count() const { return (int64_t)resolution.size(); }
};

// One level's view of one point: the 8 table rows and trilinear weights (corner c = 4 i + 2 j + k for
// offsets i, j, k along x, y, z), plus what backward wrt x needs (the fractions and dpos/dx).
template <typename T>
struct Corners {
    int64_t row[8];
    T w[8];
    T frac[3];
    T dpos[3];  // d pos / d x per axis (0 where the clamp clips x)
};

// A point's position in the unit cube, shared by all levels: u = ((x / bound + 1) / 2).clamp(0, 1), and
// where the clamp lets the gradient through.
template <typename T>
struct Unit {
    T u[3];
    bool inside[3];
};

template <typename T>
inline Unit<T> unit(const T* x, T bound) {
    Unit<T> p;
    for (int a = 0; a < 3; ++a) {
        // the reference's float operations, in its order: u = ((x / bound + 1) / 2).clamp(0, 1)
        const T v = (x[a] / bound + T(1)) / T(2);
        p.u[a] = v < T(0) ? T(0) : (v > T(1) ? T(1) : v);
        // torch's clamp passes the gradient where min <= v <= max (NaN-free inputs)
        p.inside[a] = v >= T(0) && v <= T(1);
    }
    return p;
}

template <typename T>
inline void corners(const Unit<T>& p, T bound, int64_t res, bool dense, int64_t size, int64_t offset, Corners<T>& c) {
    const T r = (T)res;
    int64_t cell[3];
    for (int a = 0; a < 3; ++a) {
        c.dpos[a] = p.inside[a] ? r / (bound * T(2)) : T(0);
        const T pos = p.u[a] * r;
        // a NaN coordinate takes cell 0 (its weights are NaN, so are its features): the cast would be undefined
        int64_t ci = pos >= T(0) ? (int64_t)std::floor(pos) : 0;
        if (ci > res - 1) ci = res - 1;
        cell[a] = ci;
        c.frac[a] = pos - (T)ci;
    }
    uint64_t part[3][2];
    const uint64_t r1 = (uint64_t)res + 1;
    for (int a = 0; a < 3; ++a)
        for (int o = 0; o < 2; ++o) {
            const uint64_t ci = (uint64_t)(cell[a] + o);
            part[a][o] = dense ? (a == 0 ? ci : a == 1 ? ci * r1 : ci * r1 * r1) : ci * kPrimes[a];
        }
    T wa[3][2];
    for (int a = 0; a < 3; ++a) {
        wa[a][0] = T(1) - c.frac[a];
        wa[a][1] = c.frac[a];
    }
    // the row within the level, as the reference's index % table_size: a dense level's index is below its size
    // already ((res + 1)^3 <= size), and a hashed level's size is 2^log2_table_size, so a mask does instead of a
    // 64-bit division per corner. Other sizes keep the modulo
    const uint64_t usize = (uint64_t)size;
    const bool pow2 = (usize & (usize - 1)) == 0;
    for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 2; ++j)
            for (int k = 0; k < 2; ++k) {
                const int n = 4 * i + 2 * j + k;
                const uint64_t h = dense ? part[0][i] + part[1][j] + part[2][k] : part[0][i] ^ part[1][j] ^ part[2][k];
                c.row[n] = (int64_t)(dense ? h : (pow2 ? h & (usize - 1) : h % usize)) + offset;
                c.w[n] = wa[0][i] * wa[1][j] * wa[2][k];
            }
}

template <typename T>
struct Inputs {
    Levels lv;
    Array<T> x, table;
    Inputs(const py::array& x_in, const py::array& table_in, std::vector<int64_t> resolution, std::vector<int64_t> offset,
           std::vector<int64_t> table_size, std::vector<bool> dense, double bound, int64_t threads)
        : lv(std::move(resolution), std::move(offset), std::move(table_size), std::move(dense)),
          x(checks::floats<T>(x_in, "x", 2, "[N, 3]")), table(checks::floats<T>(table_in, "table", 2, "[rows, F]")) {
        checks::require_dim(x, "x", 1, 3, "[N, 3]", "3-d points");
        if (table.shape(0) < lv.rows)
            checks::fail("table has " + std::to_string(table.shape(0)) + " rows; the levels index rows up to " + std::to_string(lv.rows));
        if (!(std::isfinite(bound) && bound > 0)) checks::fail("bound must be finite and > 0, got " + checks::num(bound));
        checks::require_threads(threads);
        checks::buffer_elements({x.shape(0), lv.count(), table.shape(1)}, sizeof(T), "the features [N, levels * F]");
    }
};

template <typename T>
Array<T> hash_grid_fwd(const py::array& x_in, const py::array& table_in, std::vector<int64_t> resolution, std::vector<int64_t> offset,
                       std::vector<int64_t> table_size, std::vector<bool> dense, double bound, int64_t threads_in) {
    const Inputs<T> in(x_in, table_in, std::move(resolution), std::move(offset), std::move(table_size), std::move(dense), bound,
                       threads_in);
    const Levels& lv = in.lv;
    const Array<T>& x = in.x;
    const Array<T>& table = in.table;
    const int threads = (int)threads_in;
    const int64_t N = x.shape(0), F = table.shape(1), L = lv.count();
    Array<T> out({N, L * F});
    const T* X = x.data();
    const T* tab = table.data();
    T* O = out.mutable_data();
    const T b = (T)bound;
    {
        py::gil_scoped_release release;
#pragma omp parallel for schedule(static) num_threads(omp_team(threads))
        for (int64_t p = 0; p < N; ++p) {
            Corners<T> c;
            const Unit<T> u = unit(X + 3 * p, b);
            for (int64_t l = 0; l < L; ++l) {
                corners(u, b, lv.resolution[l], lv.dense[l], lv.size[l], lv.offset[l], c);
                T* o = O + p * L * F + l * F;
                for (int64_t f = 0; f < F; ++f) {
                    T s = T(0);
                    for (int n = 0; n < 8; ++n) s += tab[c.row[n] * F + f] * c.w[n];
                    o[f] = s;
                }
            }
        }
    }
    return out;
}

template <typename T>
py::tuple hash_grid_bwd(const py::array& x_in, const py::array& table_in, const py::array& grad_in, std::vector<int64_t> resolution,
                        std::vector<int64_t> offset, std::vector<int64_t> table_size, std::vector<bool> dense, double bound,
                        bool need_table, bool need_x, int64_t threads_in) {
    const Inputs<T> in(x_in, table_in, std::move(resolution), std::move(offset), std::move(table_size), std::move(dense), bound,
                       threads_in);
    const Levels& lv = in.lv;
    const Array<T>& x = in.x;
    const Array<T>& table = in.table;
    const int threads = (int)threads_in;
    const int64_t N = x.shape(0), F = table.shape(1), L = lv.count(), rows = table.shape(0);
    const Array<T> grad_out = checks::floats<T>(grad_in, "grad_out", 2, "[N, levels * F]");
    if (grad_out.shape(0) != N || grad_out.shape(1) != L * F)
        checks::fail("grad_out must be [N, levels * F] = [" + std::to_string(N) + ", " + std::to_string(L * F) + "], got " +
                     checks::shape_of(grad_out));
    const T* X = x.data();
    const T* tab = table.data();
    const T* G = grad_out.data();
    const T b = (T)bound;
    py::object grad_table = py::none(), grad_x = py::none();
    if (need_table) {
        Array<T> gt({rows, F});
        T* GT = gt.mutable_data();
        {
            py::gil_scoped_release release;
            std::fill(GT, GT + rows * F, T(0));
            // one level per task: its rows are its own, points in order -> same sums for any thread count
#pragma omp parallel for schedule(dynamic, 1) num_threads(omp_team(threads))
            for (int64_t l = 0; l < L; ++l) {
                const int64_t off = lv.offset[l], size = lv.size[l];
                std::vector<double> acc((size_t)(size * F), 0.0);
                Corners<T> c;
                for (int64_t p = 0; p < N; ++p) {
                    const T* g = G + p * L * F + l * F;
                    bool any = false;
                    for (int64_t f = 0; f < F; ++f) any |= g[f] != T(0);
                    if (!any) continue;  // rays that missed or samples dropped: zero gradient rows are common
                    corners(unit(X + 3 * p, b), b, lv.resolution[l], lv.dense[l], size, off, c);
                    for (int n = 0; n < 8; ++n) {
                        double* a = acc.data() + (c.row[n] - off) * F;
                        const double w = c.w[n];
                        for (int64_t f = 0; f < F; ++f) a[f] += w * (double)g[f];
                    }
                }
                for (int64_t i = 0; i < size * F; ++i) GT[off * F + i] = (T)acc[(size_t)i];
            }
        }
        grad_table = gt;
    }
    if (need_x) {
        Array<T> gx({N, (int64_t)3});
        T* GX = gx.mutable_data();
        {
            py::gil_scoped_release release;
#pragma omp parallel for schedule(static) num_threads(omp_team(threads))
            for (int64_t p = 0; p < N; ++p) {
                Corners<T> c;
                double d[3] = {0.0, 0.0, 0.0};
                const Unit<T> u = unit(X + 3 * p, b);
                for (int64_t l = 0; l < L; ++l) {
                    corners(u, b, lv.resolution[l], lv.dense[l], lv.size[l], lv.offset[l], c);
                    const T* g = G + p * L * F + l * F;
                    const double fr[3] = {c.frac[0], c.frac[1], c.frac[2]};
                    for (int i = 0; i < 2; ++i)
                        for (int j = 0; j < 2; ++j)
                            for (int k = 0; k < 2; ++k) {
                                const int n = 4 * i + 2 * j + k;
                                double s = 0.0;  // dL/d(corner value) summed over features
                                for (int64_t f = 0; f < F; ++f) s += (double)g[f] * (double)tab[c.row[n] * F + f];
                                if (s == 0.0) continue;
                                // d w / d frac_a: the other two axes' weights, signed by the corner's side
                                const double wx = i ? fr[0] : 1.0 - fr[0], wy = j ? fr[1] : 1.0 - fr[1], wz = k ? fr[2] : 1.0 - fr[2];
                                d[0] += s * (i ? 1.0 : -1.0) * wy * wz * (double)c.dpos[0];
                                d[1] += s * (j ? 1.0 : -1.0) * wx * wz * (double)c.dpos[1];
                                d[2] += s * (k ? 1.0 : -1.0) * wx * wy * (double)c.dpos[2];
                            }
                }
                for (int a = 0; a < 3; ++a) GX[3 * p + a] = (T)d[a];
            }
        }
        grad_x = gx;
    }
    return py::make_tuple(grad_table, grad_x);
}

const char* kFwdDoc =
    "Hash-grid features [N, L * F] of points x [N, 3] from table [rows, F]; per level l: resolution, "
    "row offset, table_size and whether it is indexed densely. Points are clamped to [-bound, bound]^3. threads: "
    "OpenMP threads (0: OpenMP's default).";
const char* kBwdDoc =
    "Gradients of the hash-grid encoding: (grad_table [rows, F] or None, grad_x [N, 3] or None) from "
    "grad_out [N, L * F]. Deterministic for any thread count (levels split across threads).";

}  // namespace

void register_hash_grid(py::module_& m) {
    using namespace py::literals;
    m.def("hash_grid_fwd_f32", &hash_grid_fwd<float>, kFwdDoc, "x"_a, "table"_a, "resolution"_a, "offset"_a, "table_size"_a,
          "dense"_a, "bound"_a, "threads"_a = 0);
    m.def("hash_grid_fwd_f64", &hash_grid_fwd<double>, kFwdDoc, "x"_a, "table"_a, "resolution"_a, "offset"_a, "table_size"_a,
          "dense"_a, "bound"_a, "threads"_a = 0);
    m.def("hash_grid_bwd_f32", &hash_grid_bwd<float>, kBwdDoc, "x"_a, "table"_a, "grad_out"_a, "resolution"_a, "offset"_a,
          "table_size"_a, "dense"_a, "bound"_a, "need_table"_a = true, "need_x"_a = false, "threads"_a = 0);
    m.def("hash_grid_bwd_f64", &hash_grid_bwd<double>, kBwdDoc, "x"_a, "table"_a, "grad_out"_a, "resolution"_a, "offset"_a,
          "table_size"_a, "dense"_a, "bound"_a, "need_table"_a = true, "need_x"_a = false, "threads"_a = 0);
}
