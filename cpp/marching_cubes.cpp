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
// Traversal ("flying edges", Schroeder et al. 2015): grid rows run along z (contiguous). Pass 1 reads
// every sample once: per row, the z-crossing count and the trim [lo, hi] outside which the row is
// constant. Pass 2 works only inside the trims: per row, the crossed x- and y-edges it owns and the
// triangles of the cell row it starts. Prefix sums give each row its vertex and triangle ranges.
// Pass 3 writes each row's vertices and walks each cell row's trimmed cells with one running vertex
// counter per edge group, so triangles find their shared vertex ids without any id array or hash.
// Rows run in parallel (OpenMP over x-slabs) in all passes; memory beyond the output is O(rows).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <memory>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "checks.h"
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

// Per-case lookup for pass 3. Counter slots: 0, 1 = x-edges of rows dy = 0, 1; 2, 3 = y-edges of rows
// dx = 0, 1; 4 + dx + 2 dy = z-edges of row (dx, dy). Triangle corner t of case c uses vertex
// counter[slot] + off, off = 1 when the edge is at the cell's far z and its near-z twin is crossed too.
struct Walk {
    uint8_t slot[256][15];
    uint8_t off[256][15];
    uint8_t inc[256][8];  // crossings at the cell's near z (the counters' advance past this cell)
    Walk(const Table& T) {
        auto crosses = [](int c, int e, const Table& T) {
            const int c0 = T.edge_corner0[e], c1 = c0 | (1 << T.edge_axis[e]);
            return int((c >> c0 & 1) != (c >> c1 & 1));
        };
        auto slot_of = [&](int e) {
            const int c0 = T.edge_corner0[e], ax = T.edge_axis[e];
            const int dx = c0 & 1, dy = c0 >> 1 & 1;
            return ax == 0 ? dy : ax == 1 ? 2 + dx : 4 + dx + 2 * dy;
        };
        for (int c = 0; c < 256; ++c) {
            for (int q = 0; q < 8; ++q) inc[c][q] = 0;
            for (int e = 0; e < 12; ++e) {
                const int c0 = T.edge_corner0[e];
                if (T.edge_axis[e] == 2 || !(c0 & 4)) inc[c][slot_of(e)] = (uint8_t)crosses(c, e, T);
            }
            for (int t = 0; t < 3 * T.ntri[c]; ++t) {
                const int e = T.tri[c][t], c0 = T.edge_corner0[e];
                slot[c][t] = (uint8_t)slot_of(e);
                off[c][t] = 0;
                if (T.edge_axis[e] != 2 && (c0 & 4)) off[c][t] = (uint8_t)inc[c][slot_of(e)];
            }
        }
    }
};

const Walk& walk() {
    static const Walk w(table());
    return w;
}

struct Rows {
    const float* v;
    int64_t X, Y, Z;
    float level;
    // per row r = i * Y + j: samples [0, lo] all equal `first`, samples [hi, Z - 1] all equal `last`
    std::vector<int32_t> lo, hi, nz;
    std::vector<uint8_t> first, last;
    const float* row(int64_t r) const { return v + r * Z; }
    // Samples [ks, ke] of rows rs[0..n) outside which all n rows are constant and equal (empty: ks > ke).
    void trim(const int64_t* rs, int n, int64_t& ks, int64_t& ke) const {
        int64_t L = lo[rs[0]], H = hi[rs[0]];
        bool fe = true, le = true;
        for (int a = 1; a < n; ++a) {
            L = std::min<int64_t>(L, lo[rs[a]]);
            H = std::max<int64_t>(H, hi[rs[a]]);
            fe &= first[rs[a]] == first[rs[0]];
            le &= last[rs[a]] == last[rs[0]];
        }
        ks = fe ? L : 0;
        ke = le ? H : Z - 1;
    }
};

inline void bits(const float* p, float level, int64_t ks, int64_t ke, uint8_t* out) {
    for (int64_t k = ks; k <= ke; ++k) out[k - ks] = p[k] > level;
}

// Cube cases of cells ks..ke-1 from the inside bytes of rows (i,j), (i+1,j), (i,j+1), (i+1,j+1).
inline void cases(const uint8_t* a, const uint8_t* bx, const uint8_t* by, const uint8_t* bxy, int64_t n, uint8_t* c) {
    for (int64_t k = 0; k < n; ++k)
        c[k] = uint8_t(a[k] | bx[k] << 1 | by[k] << 2 | bxy[k] << 3 | a[k + 1] << 4 | bx[k + 1] << 5 | by[k + 1] << 6 | bxy[k + 1] << 7);
}

// Next cell index >= k whose case is neither 0 nor 255 (skips 8 uniform cells per step).
inline int64_t next_active(const uint8_t* c, int64_t k, int64_t n) {
    while (k + 8 <= n) {
        uint64_t w;
        std::memcpy(&w, c + k, 8);
        if (w != 0 && w != ~uint64_t(0)) break;
        k += 8;
    }
    while (k < n && (c[k] == 0 || c[k] == 255)) ++k;
    return k;
}

struct Scratch {
    std::vector<uint8_t> b[4], c;
    explicit Scratch(int64_t Z) : c((size_t)Z) { for (auto& x : b) x.resize((size_t)Z); }
};

// Crossed edges between rows ra and rb (same k), counted or written as vertices from `next`.
inline int64_t pair_edges(const Rows& g, int64_t ra, int64_t rb, int64_t next, float* pos, const double* p0, int dir, const double* lo, const double* step) {
    int64_t rs[2] = {ra, rb}, ks, ke;
    g.trim(rs, 2, ks, ke);
    const float* pa = g.row(ra);
    const float* pb = g.row(rb);
    if (!pos) {
        int64_t n = 0;
        for (int64_t k = ks; k <= ke; ++k) n += (pa[k] > g.level) != (pb[k] > g.level);
        return n;
    }
    for (int64_t k = ks; k <= ke; ++k) {
        if ((pa[k] > g.level) == (pb[k] > g.level)) continue;
        double t = (double(g.level) - pa[k]) / (double(pb[k]) - pa[k]);
        t = std::fmin(std::fmax(t, 1e-6), 1.0 - 1e-6);  // strictly inside the edge: no coincident vertices
        double p[3] = {p0[0], p0[1], double(k)};
        p[dir] += t;
        for (int c = 0; c < 3; ++c) pos[3 * next + c] = float(lo[c] + p[c] * step[c]);
        ++next;
    }
    return next;
}

py::tuple marching_cubes(const py::array& volume_in, double level_in, std::array<double, 3> lo, std::array<double, 3> hi) {
    const auto volume = checks::reals<float>(volume_in, "volume", 3, "3-dimensional [X, Y, Z]");
    const int64_t X = volume.shape(0), Y = volume.shape(1), Z = volume.shape(2);
    if (X < 2 || Y < 2 || Z < 2) checks::fail("volume must have at least 2 samples per axis, got shape " + checks::shape_of(volume));
    if (Z > std::numeric_limits<int32_t>::max()) checks::fail("volume must have fewer than 2^31 samples along z, got shape " + checks::shape_of(volume));
    if (!(std::fabs(level_in) <= std::numeric_limits<float>::max()))  // NaN, infinite or beyond float32
        checks::fail("level must be a finite float32 value, got " + checks::num(level_in));
    const float level = (float)level_in;
    for (int a = 0; a < 3; ++a)
        if (!(std::isfinite(lo[a]) && std::isfinite(hi[a]) && lo[a] < hi[a]))
            checks::fail("bounds must be finite with lo < hi on every axis (inverted bounds would turn the faces inward), got lo " +
                         checks::num(lo[a]) + " and hi " + checks::num(hi[a]) + " on axis " + std::to_string(a));
    const Table& T = table();
    const Walk& W = walk();
    const double step[3] = {(hi[0] - lo[0]) / double(X - 1), (hi[1] - lo[1]) / double(Y - 1), (hi[2] - lo[2]) / double(Z - 1)};
    const int64_t R = X * Y;
    Rows g;
    g.v = volume.data();
    g.X = X;
    g.Y = Y;
    g.Z = Z;
    g.level = level;
    g.lo.resize((size_t)R);
    g.hi.resize((size_t)R);
    g.nz.resize((size_t)R);
    g.first.resize((size_t)R);
    g.last.resize((size_t)R);
    // per-row counts, then exclusive prefix sums = each row's first vertex / triangle
    std::vector<int64_t> nx((size_t)R), ny((size_t)R), vstart((size_t)R + 1, 0), tstart((size_t)R + 1, 0);
    int bad = 0;
    {
        py::gil_scoped_release release;
        // pass 1: the only full read of the volume
#pragma omp parallel for schedule(static) reduction(| : bad)
        for (int64_t i = 0; i < X; ++i) {
            uint32_t nonfinite = 0;
            for (int64_t r = i * Y; r < (i + 1) * Y; ++r) {
                const float* p = g.row(r);
                const uint32_t* raw = reinterpret_cast<const uint32_t*>(p);
                uint32_t n = 0;
                for (int64_t k = 0; k < Z; ++k) nonfinite |= uint32_t((raw[k] & 0x7f800000u) == 0x7f800000u);  // inf or NaN
                for (int64_t k = 0; k + 1 < Z; ++k) n += uint32_t((p[k] > level) != (p[k + 1] > level));
                g.nz[r] = (int32_t)n;
                g.first[r] = p[0] > level;
                g.last[r] = p[Z - 1] > level;
                if (n == 0) { g.lo[r] = int32_t(Z - 1); g.hi[r] = 0; continue; }
                int64_t a = 0, b = Z - 1;
                while ((p[a] > level) == (p[a + 1] > level)) ++a;
                while ((p[b] > level) == (p[b - 1] > level)) --b;
                g.lo[r] = (int32_t)a;
                g.hi[r] = (int32_t)b;
            }
            bad |= int(nonfinite != 0);
        }
        // pass 2: counts inside the trims
        if (!bad) {
#pragma omp parallel
            {
                Scratch s(Z);
#pragma omp for schedule(dynamic, 1)
                for (int64_t i = 0; i < X; ++i) {
                    for (int64_t j = 0; j < Y; ++j) {
                        const int64_t r = i * Y + j;
                        nx[r] = i + 1 < X ? pair_edges(g, r, r + Y, 0, nullptr, nullptr, 0, nullptr, nullptr) : 0;
                        ny[r] = j + 1 < Y ? pair_edges(g, r, r + 1, 0, nullptr, nullptr, 1, nullptr, nullptr) : 0;
                        vstart[r + 1] = nx[r] + ny[r] + g.nz[r];
                        if (i + 1 >= X || j + 1 >= Y) continue;
                        const int64_t rs[4] = {r, r + Y, r + 1, r + Y + 1};
                        int64_t ks, ke;
                        g.trim(rs, 4, ks, ke);
                        if (ks >= ke) continue;
                        for (int a = 0; a < 4; ++a) bits(g.row(rs[a]), level, ks, ke, s.b[a].data());
                        const int64_t n = ke - ks;
                        cases(s.b[0].data(), s.b[1].data(), s.b[2].data(), s.b[3].data(), n, s.c.data());
                        int64_t tris = 0;
                        for (int64_t k = next_active(s.c.data(), 0, n); k < n; k = next_active(s.c.data(), k + 1, n)) tris += T.ntri[s.c[k]];
                        tstart[r + 1] = tris;
                    }
                }
            }
        }
    }
    if (bad) checks::fail("volume contains NaN or infinite values");
    for (int64_t r = 0; r < R; ++r) {
        vstart[r + 1] += vstart[r];
        tstart[r + 1] += tstart[r];
    }
    const int64_t V = vstart[R], F = tstart[R];
    py::array_t<float> verts({V, (int64_t)3});
    py::array_t<int64_t> faces({F, (int64_t)3});
    float* vp = verts.mutable_data();
    int64_t* fp = faces.mutable_data();
    {
        py::gil_scoped_release release;
        // pass 3: vertices (x-, y-, then z-edges of each row, in k order) and triangles
#pragma omp parallel
        {
            Scratch s(Z);
#pragma omp for schedule(dynamic, 1)
            for (int64_t i = 0; i < X; ++i) {
                for (int64_t j = 0; j < Y; ++j) {
                    const int64_t r = i * Y + j;
                    if (vstart[r + 1] > vstart[r]) {
                        const double p0[3] = {double(i), double(j), 0.0};
                        int64_t next = vstart[r];
                        if (nx[r]) next = pair_edges(g, r, r + Y, next, vp, p0, 0, lo.data(), step);
                        if (ny[r]) next = pair_edges(g, r, r + 1, next, vp, p0, 1, lo.data(), step);
                        const float* p = g.row(r);
                        for (int64_t k = g.lo[r]; k < g.hi[r]; ++k) {
                            if ((p[k] > level) == (p[k + 1] > level)) continue;
                            double t = (double(level) - p[k]) / (double(p[k + 1]) - p[k]);
                            t = std::fmin(std::fmax(t, 1e-6), 1.0 - 1e-6);
                            const double q[3] = {double(i), double(j), double(k) + t};
                            for (int c = 0; c < 3; ++c) vp[3 * next + c] = float(lo[c] + q[c] * step[c]);
                            ++next;
                        }
                    }
                    if (tstart[r + 1] == tstart[r]) continue;
                    const int64_t rs[4] = {r, r + Y, r + 1, r + Y + 1};  // corner rows (dx, dy) = bit dx + 2 dy
                    int64_t ks, ke;
                    g.trim(rs, 4, ks, ke);
                    for (int a = 0; a < 4; ++a) bits(g.row(rs[a]), level, ks, ke, s.b[a].data());
                    const int64_t n = ke - ks;
                    cases(s.b[0].data(), s.b[1].data(), s.b[2].data(), s.b[3].data(), n, s.c.data());
                    // no crossings before cell ks (all four rows agree there), so counters start at the groups' first ids
                    int64_t cnt[8] = {vstart[r], vstart[r + 1], vstart[r] + nx[r], vstart[r + Y] + nx[r + Y], 0, 0, 0, 0};
                    for (int q = 0; q < 4; ++q) cnt[4 + q] = vstart[rs[q]] + nx[rs[q]] + ny[rs[q]];
                    int64_t out = 3 * tstart[r];
                    for (int64_t k = next_active(s.c.data(), 0, n); k < n; k = next_active(s.c.data(), k + 1, n)) {
                        const int c = s.c[k];
                        for (int t = 0; t < 3 * T.ntri[c]; ++t) fp[out + t] = cnt[W.slot[c][t]] + W.off[c][t];
                        out += 3 * T.ntri[c];
                        for (int q = 0; q < 8; ++q) cnt[q] += W.inc[c][q];
                    }
                }
            }
        }
    }
    return py::make_tuple(verts, faces);
}

}  // namespace

void register_marching_cubes(py::module_& m) {
    m.def("marching_cubes", &marching_cubes, py::arg("volume"), py::arg("level"), py::arg("lo"), py::arg("hi"),
          "Marching cubes on a float32 [X, Y, Z] grid (larger inside). Returns (vertices [V, 3] float32, "
          "faces [F, 3] int64); grid index 0..n-1 maps linearly to lo..hi (finite, lo < hi per axis). Any real dtype is "
          "converted to float32; NaN / infinite samples and a non-finite level are refused (ValueError).");
}
