// antialias: analytic anti-aliasing of silhouette edges, differentiable with respect to colours and vertex
// positions; the rules that pick and blend a pixel pair are nvdiffrast's (common/antialias.cu,
// AntialiasFwdAnalysisKernel):
//
// For every pair of horizontally or vertically adjacent pixels showing different triangles (or one showing
// background), take the nearer pixel's triangle and, of its edges crossing the line through the two pixel
// centres, the one crossed farthest towards the other pixel, at fraction t from the nearer centre. The pair is
// blended when that edge is
//   - a silhouette edge: no other triangle has it, or the vertex opposite to it in the other triangle that has
//     it projects on the same side of the edge as the triangle itself (the mesh folds over there). Which
//     triangle the other pixel shows does not decide it: on a smooth surface adjacent pixel centres often land
//     on triangles that share no edge (a thin triangle between them), and that is no silhouette;
//   - steeper than 45 degrees to the pair (|across| >= |along| on screen): every edge is blended along one
//     axis only;
//   - crossed within 1/16 pixel of the segment between the centres (t is then clamped to [0, 1]).
// The triangle covers t - 0.5 of the far pixel (t > 0.5), or misses 0.5 - t of its own pixel (t < 0.5), and
// the colours are blended by that coverage. t moves with the edge's screen position, which carries the
// gradient to the positions. Pairs are independent given the input colours; each image is one thread.
// Arguments are checked first (cpp/checks.h): rast must show color's images, pos hold their batch.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "kernels.h"
#include "raster_common.h"

namespace py = pybind11;
using namespace raster;

namespace {

struct Crossing {
    bool found = false;
    int vi = -1, vj = -1, vk = -1;  // vertex ids of the crossed edge, and the triangle's third vertex
    double t = 0;
    double dt[2][2];  // dt / d(screen x, screen y) of vertex vi (row 0) and vj (row 1)
};

// Screen position (pixel-centre units) of a clip-space vertex.
template <typename T>
inline void screen(const T* p, int64_t W, int64_t H, double& sx, double& sy) {
    sx = (p[0] / p[3] * 0.5 + 0.5) * W - 0.5;
    sy = (p[1] / p[3] * 0.5 + 0.5) * H - 0.5;
}

constexpr double kSlack = 0.0625;  // nvdiffrast: "expect no more than 1/16 pixel inaccuracy"

// The edge of triangle `vi` crossed farthest along the segment from pixel centre (fx, fy) one pixel along `axis`
// (dir = +-1); found only when it is steeper than 45 degrees to the segment and crossed within [-1/16, 1 + 1/16].
template <typename T>
Crossing find_crossing(const T* pb, const int32_t* vi, int64_t W, int64_t H, double fx, double fy, int axis, int dir) {
    Crossing best;
    bool any = false, steep = false;
    for (int e = 0; e < 3; ++e) {
        const int a = vi[e], b = vi[(e + 1) % 3];
        const T* pa = pb + 4 * (int64_t)a;
        const T* pbv = pb + 4 * (int64_t)b;
        if (!(pa[3] > 0) || !(pbv[3] > 0)) return Crossing();
        double s[2][2];
        screen(pa, W, H, s[0][0], s[0][1]);
        screen(pbv, W, H, s[1][0], s[1][1]);
        // along = coordinate on the segment's axis, across = the other one (fixed on the segment)
        const int al = axis, ac = 1 - axis;
        const double c = axis == 0 ? fy : fx, f0 = axis == 0 ? fx : fy;
        const double d0 = s[0][ac] - c, d1 = s[1][ac] - c;
        if (!(d0 * d1 < 0)) continue;  // the edge does not cross the segment's line
        const double den = s[1][ac] - s[0][ac];
        const double k = (c - s[0][ac]) / den;
        const double x = s[0][al] + k * (s[1][al] - s[0][al]);
        const double t = dir * (x - f0);
        if (!std::isfinite(t)) continue;  // non-finite positions: no crossing
        if (any && t <= best.t) continue;
        any = true;
        steep = std::fabs(den) >= std::fabs(s[1][al] - s[0][al]);
        best.vi = a;
        best.vj = b;
        best.vk = vi[(e + 2) % 3];
        best.t = t;
        // derivatives of x = s0a + (c - s0c) (s1a - s0a) / (s1c - s0c)
        const double dx_ds0a = 1 - k, dx_ds1a = k;
        const double dx_ds0c = (s[1][al] - s[0][al]) * (c - s[1][ac]) / (den * den);
        const double dx_ds1c = -(s[1][al] - s[0][al]) * (c - s[0][ac]) / (den * den);
        best.dt[0][al] = dir * dx_ds0a;
        best.dt[1][al] = dir * dx_ds1a;
        best.dt[0][ac] = dir * dx_ds0c;
        best.dt[1][ac] = dir * dx_ds1c;
    }
    if (!any || !steep || !(best.t > -kSlack && best.t < 1 + kSlack)) return Crossing();
    if (best.t < 0 || best.t > 1) {  // clamped: the coverage no longer moves with the edge
        best.t = best.t < 0 ? 0 : 1;
        for (auto& row : best.dt) row[0] = row[1] = 0;
    }
    best.found = true;
    return best;
}

// Edge (two vertex ids) -> the third vertices of the (first two) triangles that have it.
class EdgeOpposites {
  public:
    EdgeOpposites(const int32_t* I, int64_t F) {
        map_.reserve((size_t)(3 * F));
        for (int64_t f = 0; f < F; ++f)
            for (int e = 0; e < 3; ++e) {
                auto& slot = map_.try_emplace(key(I[3 * f + e], I[3 * f + (e + 1) % 3]), std::array<int, 2>{-1, -1}).first->second;
                const int n = I[3 * f + (e + 2) % 3];
                if (slot[0] < 0) slot[0] = n;
                else if (slot[1] < 0) slot[1] = n;
            }
    }
    // The vertex across edge (a, b) from `own`, or -1 when no other triangle has the edge.
    int across(int a, int b, int own) const {
        auto it = map_.find(key(a, b));
        if (it == map_.end()) return -1;
        return it->second[0] == own ? it->second[1] : it->second[0];
    }

  private:
    static uint64_t key(int a, int b) {
        const uint32_t lo = (uint32_t)std::min(a, b), hi = (uint32_t)std::max(a, b);
        return (uint64_t)hi << 32 | lo;
    }
    std::unordered_map<uint64_t, std::array<int, 2>> map_;
};

// nvdiffrast's wing test: edge (vi, vj) of a triangle with third vertex vk is a silhouette when no other
// triangle has it (o < 0) or that triangle's third vertex o lies on vk's side of the edge on screen.
template <typename T>
bool is_silhouette(const T* pb, int64_t W, int64_t H, const Crossing& cr, int o) {
    if (o < 0) return true;
    double e[4][2];
    const int ids[4] = {cr.vi, cr.vj, cr.vk, o};
    for (int k = 0; k < 4; ++k) {
        const T* p = pb + 4 * (int64_t)ids[k];
        if (!(p[3] > 0)) return true;
        screen(p, W, H, e[k][0], e[k][1]);
    }
    const double ex = e[1][0] - e[0][0], ey = e[1][1] - e[0][1];
    const double side_k = ex * (e[2][1] - e[0][1]) - ey * (e[2][0] - e[0][0]);
    const double side_o = ex * (e[3][1] - e[0][1]) - ey * (e[3][0] - e[0][0]);
    return (side_k >= 0) == (side_o >= 0);
}

// Visit every silhouette pair of image b: fn(front pixel, other pixel, crossing)
template <typename T, typename Fn>
void for_each_pair(const T* R, const T* P, const int32_t* I, const EdgeOpposites& opposites, int64_t F, int64_t b, int64_t H,
                   int64_t W, int64_t V, Fn fn) {
    const T* rb = R + b * H * W * 4;
    const T* pb = P + b * V * 4;
    // each pixel's triangle id + 1 (0: none), read once: every pixel is in up to four pairs
    std::vector<int64_t> ids((size_t)(H * W));
    for (int64_t i = 0; i < H * W; ++i) ids[(size_t)i] = triangle_of(rb[4 * i + 3], F) + 1;
    for (int64_t y = 0; y < H; ++y)
        for (int64_t x = 0; x < W; ++x)
            for (int axis = 0; axis < 2; ++axis) {
                const int64_t x2 = x + (axis == 0), y2 = y + (axis == 1);
                if (x2 >= W || y2 >= H) continue;
                const int64_t ta = ids[(size_t)(y * W + x)], tn = ids[(size_t)(y2 * W + x2)];
                if (ta == tn) continue;
                const T* ra = rb + 4 * (y * W + x);
                const T* rn = rb + 4 * (y2 * W + x2);
                bool a_front = tn == 0 || (ta != 0 && ra[2] < rn[2]);
                const int64_t f = a_front ? y * W + x : y2 * W + x2;
                const int64_t o = a_front ? y2 * W + x2 : y * W + x;
                const int64_t tf = a_front ? ta : tn;
                const double fx = double(f % W), fy = double(f / W);
                const int dir = a_front ? 1 : -1;
                const int32_t* vf = I + 3 * (tf - 1);
                Crossing cr = find_crossing(pb, vf, W, H, fx, fy, axis, dir);
                if (!cr.found) continue;
                if (!is_silhouette(pb, W, H, cr, opposites.across(cr.vi, cr.vj, cr.vk))) continue;
                fn(b * H * W + f, b * H * W + o, cr);
            }
}

// color [B, H, W, C], rast [B, H, W, 4], pos [B, V, 4] and tri [F, 3] (indices into pos's V): checked and converted.
template <typename T>
struct Inputs {
    Array<T> color, rast, pos;
    Array<int32_t> tri;
    int64_t B, H, W, C, V, F;
    Inputs(const py::array& color_in, const py::array& rast_in, const py::array& pos_in, const py::array& tri_in)
        : color(checks::floats<T>(color_in, "color", 4, "[B, H, W, C]")), rast(raster_of<T>(rast_in)), pos(positions_of<T>(pos_in)),
          tri(checks::triangles(tri_in, pos.shape(1))) {
        checks::require_leading(rast, "rast", color, "color", 3, "B, H, W (the same images)");
        checks::require_leading(pos, "pos", color, "color", 1, "the batch size B");
        B = color.shape(0), H = color.shape(1), W = color.shape(2), C = color.shape(3);
        V = pos.shape(1), F = tri.shape(0);
    }
};

template <typename T>
Array<T> antialias_fwd(const py::array& color_in, const py::array& rast_in, const py::array& pos_in, const py::array& tri_in) {
    const Inputs<T> in(color_in, rast_in, pos_in, tri_in);
    const int64_t B = in.B, H = in.H, W = in.W, C = in.C, V = in.V, F = in.F;
    const T* CI = in.color.data();
    const T* R = in.rast.data();
    const T* P = in.pos.data();
    const int32_t* I = in.tri.data();
    const EdgeOpposites opposites(I, F);
    Array<T> out({B, H, W, C});
    T* O = out.mutable_data();
    std::copy(CI, CI + B * H * W * C, O);
    {
        py::gil_scoped_release release;
#pragma omp parallel for schedule(dynamic, 1)
        for (int64_t b = 0; b < B; ++b)
            for_each_pair(R, P, I, opposites, F, b, H, W, V, [&](int64_t f, int64_t o, const Crossing& cr) {
                const T* cf = CI + C * f;
                const T* co = CI + C * o;
                if (cr.t >= 0.5) {
                    for (int64_t c = 0; c < C; ++c) O[C * o + c] += T((cr.t - 0.5) * (cf[c] - co[c]));
                } else {
                    for (int64_t c = 0; c < C; ++c) O[C * f + c] += T((0.5 - cr.t) * (co[c] - cf[c]));
                }
            });
    }
    return out;
}

template <typename T>
py::tuple antialias_bwd(const py::array& color_in, const py::array& rast_in, const py::array& pos_in, const py::array& tri_in,
                        const py::array& grad_in) {
    const Inputs<T> in(color_in, rast_in, pos_in, tri_in);
    const int64_t B = in.B, H = in.H, W = in.W, C = in.C, V = in.V, F = in.F;
    const Array<T> grad_out = checks::floats<T>(grad_in, "grad_out", 4, "[B, H, W, C]");
    checks::require_same_shape(grad_out, "grad_out", in.color, "color");
    const T* CI = in.color.data();
    const T* R = in.rast.data();
    const T* P = in.pos.data();
    const T* G = grad_out.data();
    const int32_t* I = in.tri.data();
    const EdgeOpposites opposites(I, F);
    Array<T> grad_color({B, H, W, C});
    Array<T> grad_pos({B, V, (int64_t)4});
    T* GC = grad_color.mutable_data();
    T* GP = grad_pos.mutable_data();
    std::copy(G, G + B * H * W * C, GC);
    std::fill(GP, GP + B * V * 4, T(0));
    {
        py::gil_scoped_release release;
#pragma omp parallel for schedule(dynamic, 1)
        for (int64_t b = 0; b < B; ++b) {
            const T* pb = P + b * V * 4;
            T* gpb = GP + b * V * 4;
            for_each_pair(R, P, I, opposites, F, b, H, W, V, [&](int64_t f, int64_t o, const Crossing& cr) {
                const T* cf = CI + C * f;
                const T* co = CI + C * o;
                double gt = 0;
                if (cr.t >= 0.5) {  // out[o] += (t - 0.5)(cf - co)
                    const T* g = G + C * o;
                    for (int64_t c = 0; c < C; ++c) {
                        gt += g[c] * (cf[c] - co[c]);
                        GC[C * f + c] += T((cr.t - 0.5) * g[c]);
                        GC[C * o + c] -= T((cr.t - 0.5) * g[c]);
                    }
                } else {  // out[f] += (0.5 - t)(co - cf)
                    const T* g = G + C * f;
                    for (int64_t c = 0; c < C; ++c) {
                        gt -= g[c] * (co[c] - cf[c]);
                        GC[C * o + c] += T((0.5 - cr.t) * g[c]);
                        GC[C * f + c] -= T((0.5 - cr.t) * g[c]);
                    }
                }
                // t -> screen positions -> clip positions (x, y, w)
                const int v2[2] = {cr.vi, cr.vj};
                for (int k = 0; k < 2; ++k) {
                    const T* p = pb + 4 * (int64_t)v2[k];
                    T* gp = gpb + 4 * (int64_t)v2[k];
                    const double gsx = gt * cr.dt[k][0], gsy = gt * cr.dt[k][1];
                    const double w = p[3];
                    gp[0] += T(gsx * 0.5 * W / w);
                    gp[1] += T(gsy * 0.5 * H / w);
                    gp[3] += T(-(gsx * 0.5 * W * p[0] + gsy * 0.5 * H * p[1]) / (w * w));
                }
            });
        }
    }
    return py::make_tuple(grad_color, grad_pos);
}

}  // namespace

void register_antialias(py::module_& m) {
    const char* fwd_doc =
        "Blend colours across silhouette edges by their analytic coverage: color [B, H, W, C], rast [B, H, W, 4], "
        "pos [B, V, 4] clip space, tri [F, 3] integer vertex indices in [0, V) -> antialiased colours [B, H, W, C]. "
        "ValueError names a bad argument.";
    const char* bwd_doc =
        "Backward of antialias_fwd: grad_out [B, H, W, C] -> (grad_color [B, H, W, C], grad_pos [B, V, 4]).";
    m.def("antialias_fwd_f32", &antialias_fwd<float>, py::arg("color"), py::arg("rast"), py::arg("pos"), py::arg("tri"), fwd_doc);
    m.def("antialias_fwd_f64", &antialias_fwd<double>, py::arg("color"), py::arg("rast"), py::arg("pos"), py::arg("tri"), fwd_doc);
    m.def("antialias_bwd_f32", &antialias_bwd<float>, py::arg("color"), py::arg("rast"), py::arg("pos"), py::arg("tri"),
          py::arg("grad_out"), bwd_doc);
    m.def("antialias_bwd_f64", &antialias_bwd<double>, py::arg("color"), py::arg("rast"), py::arg("pos"), py::arg("tri"),
          py::arg("grad_out"), bwd_doc);
}
