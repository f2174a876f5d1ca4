// Marching cubes: one vertex per crossed grid edge, watertight, outward-facing triangles.
//
// The triangle table is built at start-up from one rule instead of being typed in: on every cube face
// the iso-segments connect the crossing where the face boundary (walked counter-clockwise, seen from
// outside the cube) enters an inside run of corners to the crossing where it leaves it. A face's
// segments therefore depend only on that face's four corner signs (ambiguous faces always separate
// the inside corners), so neighbouring cells agree on their shared face and the surface is closed.
// The directed segments of the six faces chain into loops, which are triangulated without diagonals
// between two points of one cube face (a neighbour could draw the same diagonal).
//
// Parallel plan (OpenMP over x-planes): pass 1 counts the crossed edges each grid row owns and the
// triangles each row of cells emits; prefix sums give every row its output range; pass 2 writes
// the vertices, then each thread walks a contiguous run of slabs holding the edge ids of the slab's two
// planes and writes triangles straight into place (rows without crossings are skipped). Memory beyond
// the output: an inside byte per sample and two planes of edge ids per thread.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <memory>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels.h"

namespace py = pybind11;

namespace {

// corner c has offsets (c & 1, (c >> 1) & 1, (c >> 2) & 1) along (x, y, z)
// edge e = axis * 4 + k joins corner `edge_corner0[e]` to corner `edge_corner0[e] | (1 << axis)`
struct Table {
    int8_t edge_corner0[12];
    int8_t edge_axis[12];
    uint8_t ntri[256];
    int8_t tri[256][36];

    int edge_between(int a, int b) const {
        for (int e = 0; e < 12; ++e) {
            int c0 = edge_corner0[e], c1 = c0 | (1 << edge_axis[e]);
            if ((c0 == a && c1 == b) || (c0 == b && c1 == a)) return e;
        }
        return -1;
    }

    // Two cube edges lie on a common cube face.
    bool share_face(int e1, int e2) const {
        for (int a = 0; a < 3; ++a) {
            if (a == edge_axis[e1] || a == edge_axis[e2]) continue;
            if ((edge_corner0[e1] >> a & 1) == (edge_corner0[e2] >> a & 1)) return true;
        }
        return false;
    }

    // Triangulate a loop (in order) without any diagonal between two points on a common cube face:
    // the neighbouring cell could draw the same diagonal, and that edge would then have four triangles.
    bool triangulate(const std::vector<int>& poly, std::vector<std::array<int, 3>>& out) const {
        const size_t n = poly.size();
        if (n < 3) return n == 0;
        if (n == 3) { out.push_back({poly[0], poly[1], poly[2]}); return true; }
        for (size_t k = 1; k + 1 < n; ++k) {
            if (k > 1 && share_face(poly[0], poly[k])) continue;
            if (k + 2 < n && share_face(poly[k], poly[n - 1])) continue;
            std::vector<std::array<int, 3>> trial = {{poly[0], poly[k], poly[n - 1]}};
            std::vector<int> left(poly.begin(), poly.begin() + k + 1), right(poly.begin() + k, poly.end());
            if ((left.size() < 3 || triangulate(left, trial)) && (right.size() < 3 || triangulate(right, trial))) {
                out.insert(out.end(), trial.begin(), trial.end());
                return true;
            }
        }
        return false;
    }

    Table() {
        for (int axis = 0, e = 0; axis < 3; ++axis)
            for (int c = 0; c < 8; ++c)
                if (!(c & (1 << axis))) { edge_corner0[e] = (int8_t)c; edge_axis[e] = (int8_t)axis; ++e; }
        // faces: 4 corners in counter-clockwise order seen from outside (checked by the normal below)
        std::array<std::array<int, 4>, 6> faces;
        int f = 0;
        for (int axis = 0; axis < 3; ++axis) {
            int u = (axis + 1) % 3, v = (axis + 2) % 3;
            for (int side = 0; side < 2; ++side) {
                int base = side << axis;
                std::array<int, 4> q = {base, base | (1 << u), base | (1 << u) | (1 << v), base | (1 << v)};
                // (u, v, axis) is right-handed, so this order is CCW seen from +axis; flip for the -axis face
                if (side == 0) std::swap(q[1], q[3]);
                faces[f++] = q;
            }
        }
        for (int cube = 0; cube < 256; ++cube) {
            // directed segments: next_on_loop[entry edge] = exit edge
            int next[12];
            for (int e = 0; e < 12; ++e) next[e] = -1;
            for (const auto& q : faces) {
                for (int s = 0; s < 4; ++s) {
                    int p = q[s], r = q[(s + 1) % 4];
                    bool pin = cube >> p & 1, rin = cube >> r & 1;
                    if (!pin && rin) {  // entering an inside run: find where it ends
                        int t = (s + 1) % 4;
                        while (cube >> q[(t + 1) % 4] & 1) t = (t + 1) % 4;
                        int entry = edge_between(p, r);
                        int exit_ = edge_between(q[t], q[(t + 1) % 4]);
                        next[entry] = exit_;
                    }
                }
            }
            int n = 0;
            bool used[12] = {false};
            for (int start = 0; start < 12; ++start) {
                if (next[start] < 0 || used[start]) continue;
                std::vector<int> loop;
                for (int e = start; !used[e]; e = next[e]) { used[e] = true; loop.push_back(e); }
                // the entry -> exit walk runs counter-clockwise seen from the outside region: normals point outward
                std::vector<std::array<int, 3>> tris;
                if (!triangulate(loop, tris)) throw std::logic_error("marching cubes table: no valid triangulation");
                for (const auto& t : tris) {
                    for (int a = 0; a < 3; ++a) tri[cube][3 * n + a] = (int8_t)t[a];
                    ++n;
                }
            }
            ntri[cube] = (uint8_t)n;
        }
    }
};

const Table& table() {
    static const Table t;
    return t;
}

struct Grid {
    const float* v;
    const uint8_t* in;  // 1 where v > level
    int64_t X, Y, Z;
    float level;
    inline int64_t idx(int64_t i, int64_t j, int64_t k) const { return (i * Y + j) * Z + k; }
};

// Cube index of cell k in the row of cells spanned by sample rows a = (i, j), bx = (i+1, j),
// by = (i, j+1), bxy = (i+1, j+1): corner bit dx + 2 dy + 4 dz.
inline int cube_index(const uint8_t* a, const uint8_t* bx, const uint8_t* by, const uint8_t* bxy, int64_t k) {
    return a[k] | bx[k] << 1 | by[k] << 2 | bxy[k] << 3 | a[k + 1] << 4 | bx[k + 1] << 5 | by[k + 1] << 6 | bxy[k + 1] << 7;
}

// Edge ids of row (i, j): id[dir * Z + k] for the edge owned by point (i, j, k) along dir, assigned in
// (dir, k) order from `first`. Writes the ids when `id` is given and the vertices when `pos` is.
void row_ids(const Grid& g, int64_t i, int64_t j, int64_t first, int32_t* id, float* pos, const double* lo, const double* step) {
    int64_t next = first;
    const int64_t base = g.idx(i, j, 0);
    const int64_t stride[3] = {g.Y * g.Z, g.Z, 1};
    const int64_t len[3] = {i + 1 < g.X ? g.Z : 0, j + 1 < g.Y ? g.Z : 0, g.Z - 1};
    for (int dir = 0; dir < 3; ++dir) {
        const uint8_t* a = g.in + base;
        const uint8_t* b = a + stride[dir];
        for (int64_t k = 0; k < len[dir]; ++k) {
            if (a[k] == b[k]) continue;
            const int64_t vid = next++;
            if (id) id[dir * g.Z + k] = (int32_t)vid;
            if (pos) {
                const float v0 = g.v[base + k], v1 = g.v[base + k + stride[dir]];
                double t = (double(g.level) - v0) / (double(v1) - v0);
                t = std::fmin(std::fmax(t, 1e-6), 1.0 - 1e-6);  // strictly inside the edge: no coincident vertices
                double p[3] = {double(i), double(j), double(k)};
                p[dir] += t;
                for (int c = 0; c < 3; ++c) pos[3 * vid + c] = float(lo[c] + p[c] * step[c]);
            }
        }
    }
}

py::tuple marching_cubes(py::array_t<float, py::array::c_style | py::array::forcecast> volume, float level,
                         std::array<double, 3> lo, std::array<double, 3> hi) {
    if (volume.ndim() != 3) throw std::invalid_argument("volume must be 3-dimensional");
    const int64_t X = volume.shape(0), Y = volume.shape(1), Z = volume.shape(2);
    if (X < 2 || Y < 2 || Z < 2) throw std::invalid_argument("volume must have at least 2 samples per axis");
    if (!std::isfinite(level)) throw std::invalid_argument("level must be finite");
    const Table& T = table();
    const double step[3] = {(hi[0] - lo[0]) / double(X - 1), (hi[1] - lo[1]) / double(Y - 1), (hi[2] - lo[2]) / double(Z - 1)};
    const float* v = volume.data();
    const int64_t N = X * Y * Z;
    std::unique_ptr<uint8_t[]> inside(new uint8_t[(size_t)N]);  // no zero-fill: every byte is written
    // per-row counts, then exclusive prefix sums = each row's first vertex / triangle
    std::vector<int64_t> row_verts((size_t)X * Y + 1, 0), row_tris((size_t)(X - 1) * (Y - 1) + 1, 0);
    Grid g{v, inside.get(), X, Y, Z, level};
    int bad = 0;
    {
        py::gil_scoped_release release;
#pragma omp parallel for schedule(static) reduction(| : bad)
        for (int64_t i = 0; i < X; ++i) {
            const float* src = v + i * Y * Z;
            const uint32_t* raw = reinterpret_cast<const uint32_t*>(src);
            uint8_t* dst = inside.get() + i * Y * Z;
            uint32_t nonfinite = 0;
            for (int64_t p = 0; p < Y * Z; ++p) {  // vectorises: an exponent of all ones is inf or NaN
                nonfinite |= uint32_t((raw[p] & 0x7f800000u) == 0x7f800000u);
                dst[p] = src[p] > level;
            }
            bad |= int(nonfinite);
        }
        if (!bad) {
#pragma omp parallel for schedule(dynamic, 2)
            for (int64_t i = 0; i < X; ++i) {
                const bool xi = i + 1 < X;
                for (int64_t j = 0; j < Y; ++j) {
                    const uint8_t* a = g.in + g.idx(i, j, 0);  // row (i, j)
                    const uint8_t* bx = xi ? a + Y * Z : a;     // row (i + 1, j)
                    const uint8_t* by = j + 1 < Y ? a + Z : a;  // row (i, j + 1)
                    uint32_t count = 0;  // simple byte loops so they vectorise
                    for (int64_t k = 0; k < Z; ++k) count += uint32_t(a[k] ^ bx[k]) + uint32_t(a[k] ^ by[k]);
                    for (int64_t k = 0; k + 1 < Z; ++k) count += uint32_t(a[k] ^ a[k + 1]);
                    row_verts[i * Y + j + 1] = count;
                    if (!xi || j + 1 >= Y) continue;
                    const uint8_t* bxy = bx + Z;  // row (i + 1, j + 1)
                    uint32_t differ = 0;
                    for (int64_t k = 0; k < Z; ++k) differ |= uint32_t((a[k] ^ a[0]) | (bx[k] ^ a[0]) | (by[k] ^ a[0]) | (bxy[k] ^ a[0]));
                    if (!differ) continue;  // all four rows inside or all outside: no triangles
                    int64_t tris = 0;
                    for (int64_t k = 0; k + 1 < Z; ++k) tris += T.ntri[cube_index(a, bx, by, bxy, k)];
                    row_tris[i * (Y - 1) + j + 1] = tris;
                }
            }
        }
    }
    if (bad) throw std::invalid_argument("volume contains NaN or infinite values");
    for (size_t r = 1; r < row_verts.size(); ++r) row_verts[r] += row_verts[r - 1];
    for (size_t r = 1; r < row_tris.size(); ++r) row_tris[r] += row_tris[r - 1];
    const int64_t V = row_verts.back(), F = row_tris.back();
    if (V > INT32_MAX) throw std::length_error("too many vertices");
    py::array_t<float> verts({V, (int64_t)3});
    py::array_t<int64_t> faces({F, (int64_t)3});
    float* vp = verts.mutable_data();
    int64_t* fp = faces.mutable_data();
    {
        py::gil_scoped_release release;
#pragma omp parallel for schedule(dynamic, 4)
        for (int64_t r = 0; r < X * Y; ++r)  // vertices: each row writes its own range
            if (row_verts[r + 1] > row_verts[r]) row_ids(g, r / Y, r % Y, row_verts[r], nullptr, vp, lo.data(), step);
#pragma omp parallel
        {
            // edge ids of the two planes bounding the current slab; contiguous slabs per thread, so the
            // far plane of slab i is the near plane of slab i + 1
            std::vector<int32_t> near_ids((size_t)3 * Y * Z), far_ids((size_t)3 * Y * Z);
            auto fill_plane = [&](int64_t i, int32_t* ids) {
                for (int64_t j = 0; j < Y; ++j) {
                    const int64_t r = i * Y + j;
                    if (row_verts[r + 1] > row_verts[r]) row_ids(g, i, j, row_verts[r], ids + (size_t)j * 3 * Z, nullptr, lo.data(), step);
                }
            };
            int64_t filled = -1;  // plane held in near_ids
#pragma omp for schedule(static)
            for (int64_t i = 0; i < X - 1; ++i) {
                if (row_tris[(i + 1) * (Y - 1)] == row_tris[i * (Y - 1)]) continue;  // slab without triangles
                if (filled != i) fill_plane(i, near_ids.data());
                fill_plane(i + 1, far_ids.data());
                for (int64_t j = 0; j + 1 < Y; ++j) {
                    const int64_t r = i * (Y - 1) + j;
                    if (row_tris[r + 1] == row_tris[r]) continue;
                    const uint8_t* a = g.in + g.idx(i, j, 0);
                    int64_t out = row_tris[r];
                    for (int64_t k = 0; k + 1 < Z; ++k) {
                        const int c = cube_index(a, a + Y * Z, a + Z, a + Y * Z + Z, k);
                        const int n = T.ntri[c];
                        for (int t = 0; t < 3 * n; ++t) {
                            const int e = T.tri[c][t];
                            const int c0 = T.edge_corner0[e], dir = T.edge_axis[e];
                            const int32_t* ids = (c0 & 1) ? far_ids.data() : near_ids.data();
                            fp[3 * out + t] = ids[(size_t)(j + (c0 >> 1 & 1)) * 3 * Z + dir * Z + k + (c0 >> 2 & 1)];
                        }
                        out += n;
                    }
                }
                std::swap(near_ids, far_ids);
                filled = i + 1;
            }
        }
    }
    return py::make_tuple(verts, faces);
}

}  // namespace

void register_marching_cubes(py::module_& m) {
    m.def("marching_cubes", &marching_cubes, py::arg("volume"), py::arg("level"), py::arg("lo"), py::arg("hi"),
          "Marching cubes on a float32 [X, Y, Z] grid (larger inside). Returns (vertices [V, 3] float32, "
          "faces [F, 3] int64); grid index 0..n-1 maps linearly to lo..hi.");
}
