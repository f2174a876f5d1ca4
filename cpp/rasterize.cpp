// rasterize: clip-space triangles -> per pixel (u, v, z/w, triangle_id + 1), nvdiffrast's layout.
//
// Pixel (px, py) has its centre at ndc ((px + 0.5) / W * 2 - 1, (py + 0.5) / H * 2 - 1): row 0 is
// y = -1 (the bottom). u, v are the perspective-correct barycentrics of vertices 0 and 1. The nearest
// z/w wins; ties go to the lower triangle id, so the output is deterministic. Triangles with a vertex
// at w <= 0 (behind the camera) or with a NaN / infinite coordinate are skipped; pixels with z/w outside
// [-1, 1] are clipped. Arguments are checked first (cpp/checks.h): shapes, dtypes, vertex indices, and
// height, width in 1 .. 16384; a float32 raster takes fewer than 2^24 triangles (ids stay exact).
// Parallel over (image, band of rows): each band owns its pixels, so the depth test has no races. Each
// triangle is set up once and binned to the bands its box touches.
//
// The backward pass maps dL/du, dL/dv to dL/dpos through the closed form
// u = l0 / (l0 + l1 + l2), v = l1 / (...), l_i = det(p_j, p_k, q) in (x, y, w).
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "kernels.h"
#include "raster_common.h"

namespace py = pybind11;
using namespace raster;

namespace {

// One triangle's screen-space set-up: clip-space (x, y, w), z, and its pixel-centre box in the image.
struct Setup {
    Tri3 t;
    double c[3][3];  // lambda_i = c_i . (X, Y, 1): the cross products of lambdas(), once per triangle
    double zc[3];
    int64_t xa = 0, xb = -1, ya = 0, yb = -1;
    bool ok = false;
};

// Whether lam / s < 0, without the division, for finite s != 0: the quotient is negative exactly when lam is
// nonzero and of the other sign, unless it rounds to zero. It never does for float positions: their
// products and sums in double stay finite and within ~1e-200 of each other, far from double's underflow
// (~1e-308), so the kernel takes this exit (most tested pixels are outside) only for float input.
inline bool outside(double lam, double s) { return lam != 0 && ((lam < 0) != (s < 0)); }

template <typename T>
Array<T> rasterize_fwd(const py::array& pos_in, const py::array& tri_in, int64_t H, int64_t W) {
    const Array<T> pos = positions_of<T>(pos_in);
    const int64_t B = pos.shape(0), V = pos.shape(1);
    const Array<int32_t> tri = checks::triangles(tri_in, V);
    const int64_t F = tri.shape(0);
    if (H < 1 || W < 1 || H > checks::kMaxResolution || W > checks::kMaxResolution)
        checks::fail("height and width must be 1 .. " + std::to_string(checks::kMaxResolution) + ", got " + std::to_string(H) +
                     " x " + std::to_string(W));
    if (std::is_same<T, float>::value && F >= checks::kMaxExactFloatId)
        checks::fail("tri has " + std::to_string(F) + " triangles; a float32 raster holds triangle ids exactly only below 2^24 "
                     "(rasterise in float64)");
    checks::buffer_elements({B, H, W, 4}, sizeof(T), "rast [B, height, width, 4]");
    checks::buffer_elements({B, H, W}, sizeof(double), "the depth buffer [B, height, width]");
    checks::buffer_elements({B, F}, sizeof(Setup), "the per-triangle set-up [B, F]");
    const T* P = pos.data();
    const int32_t* I = tri.data();
    Array<T> out({B, H, W, (int64_t)4});
    T* R = out.mutable_data();
    std::fill(R, R + B * H * W * 4, T(0));
    const int band = 8;
    const int64_t bands = (H + band - 1) / band;
    constexpr bool sign_test = std::is_same<T, float>::value;
    {
        py::gil_scoped_release release;
        std::vector<double> depth((size_t)B * H * W, std::numeric_limits<double>::infinity());
        // setup once per (image, triangle), then bin the triangles by the row bands their boxes touch:
        // each band visits only its own triangles (in triangle order, so ties resolve as before) instead
        // of re-projecting all F triangles per band (64 bands x F at 512 px: that was most of the time)
        std::vector<Setup> setup((size_t)(B * F));
#pragma omp parallel for schedule(static)
        for (int64_t bf = 0; bf < B * F; ++bf) {
            const int64_t b = bf / F, f = bf % F;
            const T* pb = P + b * V * 4;
            const int32_t* vi = I + 3 * f;
            Setup& s = setup[bf];
            double sx[3] = {0, 0, 0}, sy[3] = {0, 0, 0};
            s.ok = true;
            for (int k = 0; k < 3; ++k) {
                const T* p = pb + 4 * (int64_t)vi[k];
                s.t.p[k][0] = p[0]; s.t.p[k][1] = p[1]; s.t.p[k][2] = p[3];
                s.zc[k] = p[2];
                // not drawn: a vertex behind the camera, or any NaN / infinite coordinate
                if (!(p[3] > 0) || !std::isfinite(p[0]) || !std::isfinite(p[1]) || !std::isfinite(p[2]) || !std::isfinite(p[3])) s.ok = false;
                else { sx[k] = (p[0] / p[3] * 0.5 + 0.5) * W - 0.5; sy[k] = (p[1] / p[3] * 0.5 + 0.5) * H - 0.5; }
            }
            if (!s.ok) continue;
            // pixel-centre bounding box, clipped to the image (and later to each band) in double: screen
            // coordinates beyond int64 (clip x / w >= ~1e19, or infinite after the division) clip like any other
            const double xa = std::max(std::ceil(std::min({sx[0], sx[1], sx[2]})), 0.0);
            const double xb = std::min(std::floor(std::max({sx[0], sx[1], sx[2]})), double(W - 1));
            const double ya = std::max(std::ceil(std::min({sy[0], sy[1], sy[2]})), 0.0);
            const double yb = std::min(std::floor(std::max({sy[0], sy[1], sy[2]})), double(H - 1));
            if (!(xa <= xb && ya <= yb)) { s.ok = false; continue; }
            s.xa = (int64_t)xa; s.xb = (int64_t)xb; s.ya = (int64_t)ya; s.yb = (int64_t)yb;
            cross3(s.t.p[1], s.t.p[2], s.c[0]);
            cross3(s.t.p[2], s.t.p[0], s.c[1]);
            cross3(s.t.p[0], s.t.p[1], s.c[2]);
        }
        // band lists (counting sort, triangle order kept): start[job]..start[job + 1] in order[]
        std::vector<int64_t> start((size_t)(B * bands + 1), 0);
        for (int64_t bf = 0; bf < B * F; ++bf) {
            const Setup& s = setup[bf];
            if (!s.ok) continue;
            const int64_t b = bf / F;
            for (int64_t k = s.ya / band; k <= s.yb / band; ++k) ++start[b * bands + k + 1];
        }
        for (size_t j = 1; j < start.size(); ++j) start[j] += start[j - 1];
        std::vector<int32_t> order((size_t)start.back());
        {
            std::vector<int64_t> fill(start.begin(), start.end() - 1);
            for (int64_t bf = 0; bf < B * F; ++bf) {
                const Setup& s = setup[bf];
                if (!s.ok) continue;
                const int64_t b = bf / F;
                for (int64_t k = s.ya / band; k <= s.yb / band; ++k) order[(size_t)fill[b * bands + k]++] = (int32_t)(bf % F);
            }
        }
        // pixel-centre x in ndc per column, the same expression as per pixel before (identical values)
        std::vector<double> xs((size_t)W);
        for (int64_t px = 0; px < W; ++px) xs[(size_t)px] = (px + 0.5) / W * 2 - 1;
#pragma omp parallel for schedule(dynamic, 1)
        for (int64_t job = 0; job < B * bands; ++job) {
            const int64_t b = job / bands, y0 = (job % bands) * band, y1 = std::min<int64_t>(H, y0 + band);
            for (int64_t o = start[job]; o < start[job + 1]; ++o) {
                const int64_t f = order[(size_t)o];
                const Setup& s = setup[(size_t)(b * F + f)];
                const Tri3& t = s.t;
                const double(*c)[3] = s.c;
                const double* zc = s.zc;
                const int64_t xa = s.xa, xb = s.xb;
                const int64_t ya = std::max<int64_t>(s.ya, y0), yb = std::min<int64_t>(s.yb, y1 - 1);
                for (int64_t py_ = ya; py_ <= yb; ++py_) {
                    const double Y = (py_ + 0.5) / H * 2 - 1;
                    for (int64_t px = xa; px <= xb; ++px) {
                        const double X = xs[(size_t)px];
                        const double q[3] = {X, Y, 1.0};  // lambdas(t, X, Y, lam), the same arithmetic
                        const double lam[3] = {dot3(c[0], q), dot3(c[1], q), dot3(c[2], q)};
                        const double s = lam[0] + lam[1] + lam[2];
                        if (s == 0) continue;
                        if (sign_test && std::isfinite(s) && (outside(lam[0], s) || outside(lam[1], s) || outside(lam[2], s))) continue;
                        const double b0 = lam[0] / s, b1 = lam[1] / s, b2 = lam[2] / s;
                        if (b0 < 0 || b1 < 0 || b2 < 0) continue;
                        const double w = b0 * t.p[0][2] + b1 * t.p[1][2] + b2 * t.p[2][2];
                        const double zw = (b0 * zc[0] + b1 * zc[1] + b2 * zc[2]) / w;
                        if (zw < -1 || zw > 1) continue;
                        const int64_t pix = (b * H + py_) * W + px;
                        if (zw < depth[pix]) {  // strict: equal depth keeps the lower triangle id
                            depth[pix] = zw;
                            T* r = R + 4 * pix;
                            r[0] = (T)b0; r[1] = (T)b1; r[2] = (T)zw; r[3] = (T)(f + 1);
                        }
                    }
                }
            }
        }
    }
    return out;
}

template <typename T>
Array<T> rasterize_bwd(const py::array& pos_in, const py::array& tri_in, const py::array& rast_in, const py::array& grad_in) {
    const Array<T> pos = positions_of<T>(pos_in);
    const int64_t B = pos.shape(0), V = pos.shape(1);
    const Array<int32_t> tri = checks::triangles(tri_in, V);
    const Array<T> rast = raster_of<T>(rast_in);
    checks::require_leading(rast, "rast", pos, "pos", 1, "the batch size B");
    const Array<T> grad_rast = checks::floats<T>(grad_in, "grad_rast", 4, "[B, H, W, 4]");
    checks::require_same_shape(grad_rast, "grad_rast", rast, "rast");
    const int64_t H = rast.shape(1), W = rast.shape(2), F = tri.shape(0);
    const T* P = pos.data();
    const int32_t* I = tri.data();
    const T* R = rast.data();
    const T* G = grad_rast.data();
    Array<T> grad_pos({B, V, (int64_t)4});
    T* GP = grad_pos.mutable_data();
    std::fill(GP, GP + B * V * 4, T(0));
    {
        py::gil_scoped_release release;
        ThreadBuffers<double> acc((size_t)B * V * 4);
#pragma omp parallel for schedule(static)
        for (int64_t pix = 0; pix < B * H * W; ++pix) {
            const T* r = R + 4 * pix;
            const T* g = G + 4 * pix;
            const int64_t f = triangle_of(r[3], F);
            if (f < 0 || (g[0] == 0 && g[1] == 0)) continue;
            const int64_t b = pix / (H * W), py_ = (pix / W) % H, px = pix % W;
            const int32_t* vi = I + 3 * f;
            const T* pb = P + b * V * 4;
            Tri3 t;
            for (int k = 0; k < 3; ++k) {
                const T* p = pb + 4 * (int64_t)vi[k];
                t.p[k][0] = p[0]; t.p[k][1] = p[1]; t.p[k][2] = p[3];
            }
            const double q[3] = {(px + 0.5) / W * 2 - 1, (py_ + 0.5) / H * 2 - 1, 1.0};
            double lam[3];
            lambdas(t, q[0], q[1], lam);
            const double s = lam[0] + lam[1] + lam[2];
            const double gu = g[0], gv = g[1], s2 = s * s;
            // dL/dlambda_i of u = l0 / s, v = l1 / s
            const double gl[3] = {gu / s - (gu * lam[0] + gv * lam[1]) / s2, gv / s - (gu * lam[0] + gv * lam[1]) / s2,
                                  -(gu * lam[0] + gv * lam[1]) / s2};
            // l0 = p1 . (p2 x q): d/dp1 = p2 x q, d/dp2 = q x p1; cyclic for l1 (p2, p0) and l2 (p0, p1)
            double* a = acc.get() + b * V * 4;
            for (int i = 0; i < 3; ++i) {
                const int j = (i + 1) % 3, k = (i + 2) % 3;
                double dj[3], dk[3];
                cross3(t.p[k], q, dj);
                cross3(q, t.p[j], dk);
                double* aj = a + 4 * (int64_t)vi[j];
                double* ak = a + 4 * (int64_t)vi[k];
                aj[0] += gl[i] * dj[0]; aj[1] += gl[i] * dj[1]; aj[3] += gl[i] * dj[2];
                ak[0] += gl[i] * dk[0]; ak[1] += gl[i] * dk[1]; ak[3] += gl[i] * dk[2];
            }
        }
        std::vector<double> sum((size_t)B * V * 4, 0.0);
        acc.reduce_into(sum.data(), sum.size());
        for (size_t i = 0; i < sum.size(); ++i) GP[i] = (T)sum[i];
    }
    return grad_pos;
}

}  // namespace

void register_rasterize(py::module_& m) {
    const char* fwd_doc =
        "Rasterise clip-space triangles: pos [B, V, 4] float, tri [F, 3] integer vertex indices in [0, V), height and "
        "width 1 .. 16384 -> rast [B, height, width, 4] = (u, v, z/w, triangle_id + 1), zeros where no triangle covers the "
        "pixel centre; row 0 is y = -1. Triangles with a vertex at w <= 0 or a non-finite coordinate are not drawn. "
        "ValueError names a bad argument.";
    const char* bwd_doc =
        "Backward of rasterize_fwd: grad_rast [B, H, W, 4] (channels u, v used) -> grad_pos [B, V, 4].";
    m.def("rasterize_fwd_f32", &rasterize_fwd<float>, py::arg("pos"), py::arg("tri"), py::arg("height"), py::arg("width"), fwd_doc);
    m.def("rasterize_fwd_f64", &rasterize_fwd<double>, py::arg("pos"), py::arg("tri"), py::arg("height"), py::arg("width"), fwd_doc);
    m.def("rasterize_bwd_f32", &rasterize_bwd<float>, py::arg("pos"), py::arg("tri"), py::arg("rast"), py::arg("grad_rast"), bwd_doc);
    m.def("rasterize_bwd_f64", &rasterize_bwd<double>, py::arg("pos"), py::arg("tri"), py::arg("rast"), py::arg("grad_rast"), bwd_doc);
}
