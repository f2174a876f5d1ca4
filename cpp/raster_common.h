// Functions and types the CPU rasteriser kernels share (rasterize, interpolate, texture, antialias).
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "checks.h"

#ifdef MESHDREAM_OPENMP
#include <omp.h>
#endif

namespace raster {

namespace py = pybind11;

template <typename T>
using Array = py::array_t<T, py::array::c_style | py::array::forcecast>;

inline int num_threads() {
#ifdef MESHDREAM_OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

inline int thread_id() {
#ifdef MESHDREAM_OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

// Per-thread accumulation buffers for race-free scatter-adds, summed at the end.
template <typename T>
struct ThreadBuffers {
    std::vector<std::vector<T>> bufs;
    explicit ThreadBuffers(size_t n) : bufs(num_threads(), std::vector<T>(n, T(0))) {}
    T* get() { return bufs[thread_id()].data(); }
    void reduce_into(T* out, size_t n) const {
        for (const auto& b : bufs)
            for (size_t i = 0; i < n; ++i) out[i] += b[i];
    }
};

// Clip-space (x, y, w) barycentric weights of a pixel (ndc X, Y) for a triangle p0, p1, p2:
// lambda_i = det(p_j, p_k, q) with q = (X, Y, 1); the perspective-correct barycentrics are
// lambda_i / sum(lambda). Positions are read as x, y, w (z is not needed here).
struct Tri3 {
    double p[3][3];  // [vertex][x, y, w]
};

inline void cross3(const double* a, const double* b, double* out) {
    out[0] = a[1] * b[2] - a[2] * b[1];
    out[1] = a[2] * b[0] - a[0] * b[2];
    out[2] = a[0] * b[1] - a[1] * b[0];
}

inline double dot3(const double* a, const double* b) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; }

inline void lambdas(const Tri3& t, double X, double Y, double* lam) {
    const double q[3] = {X, Y, 1.0};
    double c[3];
    cross3(t.p[1], t.p[2], c);
    lam[0] = dot3(c, q);
    cross3(t.p[2], t.p[0], c);
    lam[1] = dot3(c, q);
    cross3(t.p[0], t.p[1], c);
    lam[2] = dot3(c, q);
}

// Triangle index (0-based) stored in a raster's 4th channel, or -1 for empty / out-of-range values
// (NaN and values beyond int64 included: they are tested before the rounding, which could not hold them).
template <typename T>
inline int64_t triangle_of(T id_plus_one, int64_t F) {
    const double d = (double)id_plus_one;
    if (!(d >= 0.5 && d < (double)F + 0.5)) return -1;
    const int64_t f = (int64_t)std::llround(d) - 1;
    return (f >= 0 && f < F) ? f : -1;
}

// rast [B, H, W, 4] = (u, v, z/w, triangle_id + 1), converted to T.
template <typename T>
Array<T> raster_of(const py::array& rast, const char* name = "rast") {
    Array<T> r = checks::floats<T>(rast, name, 4, "[B, H, W, 4]");
    checks::require_dim(r, name, 3, 4, "[B, H, W, 4]", "u, v, z/w, triangle_id + 1");
    return r;
}

// pos [B, V, 4] clip-space (x, y, z, w), converted to T.
template <typename T>
Array<T> positions_of(const py::array& pos, const char* name = "pos") {
    Array<T> p = checks::floats<T>(pos, name, 3, "[B, V, 4]");
    checks::require_dim(p, name, 2, 4, "[B, V, 4]", "clip-space x, y, z, w");
    return p;
}

}  // namespace raster
