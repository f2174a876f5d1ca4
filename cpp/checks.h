// Argument checks shared by every entry point of meshdream._C. They run before a kernel touches memory
// and raise ValueError (pybind11::value_error) naming the argument, what it is and what is allowed.
//
// Arrays arrive as plain numpy arrays (py::array) so that their dtype can be checked before it is
// converted: floating-point data is converted to the kernel's type (float32 / float64, C-contiguous, no
// copy when it already is), index arrays are range-checked in their own width before they become int32.
// Sizes are multiplied with overflow checks: an array with a zero-sized axis can have any other extents.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <string>

namespace checks {

namespace py = pybind11;

template <typename T>
using Array = py::array_t<T, py::array::c_style | py::array::forcecast>;

constexpr int64_t kMaxResolution = 16384;  // raster height / width (nvdiffrast's CUDA rasteriser limit)
constexpr int kMaxThreads = 1024;          // OpenMP team size a caller may ask for
constexpr int64_t kMaxExactFloatId = int64_t(1) << 24;  // float32 holds triangle_id + 1 exactly up to here

[[noreturn]] inline void fail(const std::string& message) { throw py::value_error(message); }

inline std::string shape_of(const py::array& a) {
    std::string s = "[";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
    return s + "]";
}

// A double as the shortest text that reads back the same (std::to_string prints 6 fixed decimals).
inline std::string num(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.17g", v);
    for (int precision = 1; precision < 17; ++precision) {
        char shorter[32];
        std::snprintf(shorter, sizeof shorter, "%.*g", precision, v);
        if (std::strtod(shorter, nullptr) == v) return shorter;
    }
    return buf;
}

inline std::string dtype_of(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

// a.ndim() == ndim, else "NAME must be LAYOUT, got shape [...]"
inline void require_ndim(const py::array& a, const char* name, py::ssize_t ndim, const char* layout) {
    if (a.ndim() != ndim) fail(std::string(name) + " must be " + layout + ", got shape " + shape_of(a));
}

// a.shape(axis) == expected, else "NAME must be LAYOUT with AXIS_NAME = expected (why), got shape [...]"
inline void require_dim(const py::array& a, const char* name, py::ssize_t axis, int64_t expected, const char* layout,
                        const char* why) {
    if ((int64_t)a.shape(axis) != expected)
        fail(std::string(name) + " must be " + layout + " with " + std::to_string(expected) + " in dimension " +
             std::to_string(axis) + " (" + why + "), got shape " + shape_of(a));
}

// a's first n extents equal b's (the same images, points, ...: `what`), else a ValueError naming both shapes.
inline void require_leading(const py::array& a, const char* name, const py::array& b, const char* b_name, py::ssize_t n,
                            const char* what) {
    for (py::ssize_t i = 0; i < n; ++i)
        if (a.shape(i) != b.shape(i))
            fail(std::string(name) + " must match " + b_name + " in " + what + ", got shapes " + shape_of(a) + " and " +
                 shape_of(b));
}

// A gradient shaped exactly like the output it belongs to.
inline void require_same_shape(const py::array& grad, const char* name, const py::array& like, const char* like_name) {
    bool same = grad.ndim() == like.ndim();
    for (py::ssize_t i = 0; same && i < grad.ndim(); ++i) same = grad.shape(i) == like.shape(i);
    if (!same) fail(std::string(name) + " must have the shape of " + like_name + " " + shape_of(like) + ", got " + shape_of(grad));
}

// A floating-point array of `ndim` dimensions, converted to T (C-contiguous).
template <typename T>
Array<T> floats(const py::array& a, const char* name, py::ssize_t ndim, const char* layout) {
    if (a.dtype().kind() != 'f') fail(std::string(name) + " must hold floating-point values, got dtype " + dtype_of(a));
    require_ndim(a, name, ndim, layout);
    Array<T> out = Array<T>::ensure(a);
    if (!out) throw py::error_already_set();
    return out;
}

// A real-valued array (bool, integer or floating point) of `ndim` dimensions, converted to T.
template <typename T>
Array<T> reals(const py::array& a, const char* name, py::ssize_t ndim, const char* layout) {
    const char k = a.dtype().kind();
    if (k != 'f' && k != 'i' && k != 'u' && k != 'b')
        fail(std::string(name) + " must hold real numbers, got dtype " + dtype_of(a));
    require_ndim(a, name, ndim, layout);
    Array<T> out = Array<T>::ensure(a);
    if (!out) throw py::error_already_set();
    return out;
}

// The product of non-negative sizes, or ValueError when it does not fit in int64 (what: what is counted).
inline int64_t product(std::initializer_list<int64_t> sizes, const char* what) {
    for (int64_t s : sizes) {
        if (s < 0) fail(std::string(what) + ": negative size " + std::to_string(s));
        if (s == 0) return 0;
    }
    int64_t n = 1;
    for (int64_t s : sizes)
        if (__builtin_mul_overflow(n, s, &n)) fail(std::string(what) + " would hold more than 2^63 elements");
    return n;
}

// Elements of an output (or scratch) buffer of `bytes_each` bytes per element that must fit in memory's address
// range: the product of `sizes`, checked.
inline int64_t buffer_elements(std::initializer_list<int64_t> sizes, int64_t bytes_each, const char* what) {
    const int64_t n = product(sizes, what);
    if (n > std::numeric_limits<int64_t>::max() / bytes_each)
        fail(std::string(what) + " would take more than 2^63 bytes");
    return n;
}

namespace detail {
[[noreturn]] inline void bad_index(const std::string& value, int64_t i, int64_t limit, int64_t V, const char* name) {
    fail(std::string(name) + " holds vertex index " + value + " (row " + std::to_string(i / 3) + ") outside [0, " +
         std::to_string(limit) + ")" + (limit < V ? " (indices must fit in int32)" : " (V = " + std::to_string(V) + " vertices)"));
}
template <typename I>
void check_indices(const I* p, int64_t n, int64_t limit, int64_t V, const char* name) {
    for (int64_t i = 0; i < n; ++i)
        if (p[i] < 0 || (int64_t)p[i] >= limit) bad_index(std::to_string(p[i]), i, limit, V, name);
}
inline void check_indices(const uint64_t* p, int64_t n, int64_t limit, int64_t V, const char* name) {
    for (int64_t i = 0; i < n; ++i)
        if (p[i] >= (uint64_t)limit) bad_index(std::to_string(p[i]), i, limit, V, name);
}
}  // namespace detail

// Triangle vertex indices [F, 3] of any integer dtype, every one checked against [0, V) (and int32) in its own width
// (an int64 index 2^32 + 3 is an error, not vertex 3), returned as int32. F must fit in int32.
inline Array<int32_t> triangles(const py::array& tri, int64_t V, const char* name = "tri") {
    const char k = tri.dtype().kind();
    if (k != 'i' && k != 'u') fail(std::string(name) + " must hold integer vertex indices, got dtype " + dtype_of(tri));
    require_ndim(tri, name, 2, "[F, 3]");
    require_dim(tri, name, 1, 3, "[F, 3]", "three vertex indices per triangle");
    const int64_t F = tri.shape(0);
    if (F > std::numeric_limits<int32_t>::max()) fail(std::string(name) + " has more than 2^31 - 1 triangles");
    const int64_t limit = std::min<int64_t>(V, int64_t(std::numeric_limits<int32_t>::max()) + 1);
    if (k == 'i' && tri.dtype().itemsize() == 4) {
        Array<int32_t> out = Array<int32_t>::ensure(tri);
        if (!out) throw py::error_already_set();
        detail::check_indices(out.data(), 3 * F, limit, V, name);
        return out;
    }
    Array<int32_t> out({F, (int64_t)3});
    int32_t* o = out.mutable_data();
    if (k == 'u' && tri.dtype().itemsize() == 8) {
        Array<uint64_t> wide = Array<uint64_t>::ensure(tri);
        if (!wide) throw py::error_already_set();
        detail::check_indices(wide.data(), 3 * F, limit, V, name);
        for (int64_t i = 0; i < 3 * F; ++i) o[i] = (int32_t)wide.data()[i];
    } else {  // every other integer type converts to int64 exactly
        Array<int64_t> wide = Array<int64_t>::ensure(tri);
        if (!wide) throw py::error_already_set();
        detail::check_indices(wide.data(), 3 * F, limit, V, name);
        for (int64_t i = 0; i < 3 * F; ++i) o[i] = (int32_t)wide.data()[i];
    }
    return out;
}

// An OpenMP team size: 0 (OpenMP's default) .. kMaxThreads.
inline void require_threads(int64_t threads) {
    if (threads < 0 || threads > kMaxThreads)
        fail("threads must be 0 (OpenMP's default) .. " + std::to_string(kMaxThreads) + ", got " + std::to_string(threads));
}

}  // namespace checks
