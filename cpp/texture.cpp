// texture: bilinear (or nearest) lookups of tex [B, TH, TW, C] at uv [B, H, W, 2], nvdiffrast's
// convention: uv (0, 0) is the corner of texel row 0, texel centres at (i + 0.5) / size. Boundary
// modes: wrap, clamp, zero. Backward: dL/dtex (per-thread buffers) and dL/duv (bilinear only).
// Arguments are checked first (cpp/checks.h); the texture needs at least one texel. A NaN or infinite uv
// samples no texel: its colour is NaN (any filter, any boundary) and it passes no gradient.
#include <cmath>
#include <limits>

#include "kernels.h"
#include "raster_common.h"

namespace py = pybind11;
using namespace raster;

namespace {

enum Boundary { WRAP = 0, CLAMP = 1, ZERO = 2 };

// texel index along one axis, or -1 when the zero boundary leaves the texture
inline int64_t texel(int64_t i, int64_t n, int boundary) {
    if (boundary == WRAP) return ((i % n) + n) % n;
    if (boundary == CLAMP) return std::min<int64_t>(std::max<int64_t>(i, 0), n - 1);
    return (i < 0 || i >= n) ? -1 : i;
}

// A floored texel coordinate (finite) as an integer that texel() maps, with its right neighbour i + 1, to the
// same texels as the exact integer: itself within +-2^62, else (wrap) its remainder modulo n, or (clamp, zero)
// a position two texels beyond the texture on its side. Casting larger values to int64 would be undefined.
inline int64_t floored_index(double x0, int64_t n, int boundary) {
    constexpr double kSafe = 4611686018427387904.0;  // 2^62
    if (x0 > -kSafe && x0 < kSafe) return (int64_t)x0;
    if (boundary == WRAP) return (int64_t)std::fmod(x0, (double)n);  // exact; |result| < n
    return x0 > 0 ? n + 1 : -2;
}

struct Taps {
    int64_t x[2], y[2];
    double fx, fy;
};

inline Taps taps(double u, double v, int64_t TW, int64_t TH, int boundary) {
    const double x = u * TW - 0.5, y = v * TH - 0.5;
    const double x0 = std::floor(x), y0 = std::floor(y);
    Taps t;
    t.fx = x - x0;
    t.fy = y - y0;
    const int64_t ix = floored_index(x0, TW, boundary), iy = floored_index(y0, TH, boundary);
    t.x[0] = texel(ix, TW, boundary);
    t.x[1] = texel(ix + 1, TW, boundary);
    t.y[0] = texel(iy, TH, boundary);
    t.y[1] = texel(iy + 1, TH, boundary);
    return t;
}

// The nearest texel's (x, y), or -1 in either when the zero boundary leaves the texture.
inline void nearest(double u, double v, int64_t TW, int64_t TH, int boundary, int64_t& x, int64_t& y) {
    x = texel(floored_index(std::floor(u * TW), TW, boundary), TW, boundary);
    y = texel(floored_index(std::floor(v * TH), TH, boundary), TH, boundary);
}

// tex [B or 1, TH, TW, C] (at least one texel), uv [B, H, W, 2], filter and boundary modes: checked and converted.
template <typename T>
struct Inputs {
    Array<T> tex, uv;
    int64_t TB, TH, TW, C, B, H, W;
    int filter, boundary;
    Inputs(const py::array& tex_in, const py::array& uv_in, int64_t filter_mode, int64_t boundary_mode)
        : tex(checks::floats<T>(tex_in, "tex", 4, "[B or 1, TH, TW, C]")), uv(checks::floats<T>(uv_in, "uv", 4, "[B, H, W, 2]")) {
        TB = tex.shape(0), TH = tex.shape(1), TW = tex.shape(2), C = tex.shape(3);
        B = uv.shape(0), H = uv.shape(1), W = uv.shape(2);
        checks::require_dim(uv, "uv", 3, 2, "[B, H, W, 2]", "texture coordinates u, v");
        if (TH < 1 || TW < 1) checks::fail("tex must have at least one texel (TH, TW >= 1), got shape " + checks::shape_of(tex));
        if (TB != 1 && TB != B)
            checks::fail("tex batch must be 1 or match uv's B = " + std::to_string(B) + ", got tex shape " + checks::shape_of(tex) +
                         " and uv shape " + checks::shape_of(uv));
        if (filter_mode != 0 && filter_mode != 1) checks::fail("filter must be 0 (nearest) or 1 (linear), got " + std::to_string(filter_mode));
        if (boundary_mode < WRAP || boundary_mode > ZERO)
            checks::fail("boundary must be 0 (wrap), 1 (clamp) or 2 (zero), got " + std::to_string(boundary_mode));
        filter = (int)filter_mode, boundary = (int)boundary_mode;
        checks::buffer_elements({B, H, W, C}, sizeof(T), "the output [B, H, W, C]");
    }
};

template <typename T>
Array<T> texture_fwd(const py::array& tex_in, const py::array& uv_in, int64_t filter_mode, int64_t boundary_mode) {
    const Inputs<T> in(tex_in, uv_in, filter_mode, boundary_mode);
    const int64_t TB = in.TB, TH = in.TH, TW = in.TW, C = in.C, B = in.B, H = in.H, W = in.W;
    const int filter = in.filter, boundary = in.boundary;
    const T* X = in.tex.data();
    const T* U = in.uv.data();
    Array<T> out({B, H, W, C});
    T* O = out.mutable_data();
    {
        py::gil_scoped_release release;
#pragma omp parallel for schedule(static)
        for (int64_t pix = 0; pix < B * H * W; ++pix) {
            const int64_t b = TB == 1 ? 0 : pix / (H * W);
            const T* tb = X + b * TH * TW * C;
            T* o = O + C * pix;
            const double u = U[2 * pix], v = U[2 * pix + 1];
            if (!std::isfinite(u) || !std::isfinite(v)) {  // no texel: NaN, whatever the filter and boundary
                std::fill(o, o + C, std::numeric_limits<T>::quiet_NaN());
                continue;
            }
            if (filter == 0) {  // nearest
                int64_t x, y;
                nearest(u, v, TW, TH, boundary, x, y);
                for (int64_t c = 0; c < C; ++c) o[c] = (x < 0 || y < 0) ? T(0) : tb[(y * TW + x) * C + c];
                continue;
            }
            const Taps t = taps(u, v, TW, TH, boundary);
            const double w[2][2] = {{(1 - t.fx) * (1 - t.fy), t.fx * (1 - t.fy)}, {(1 - t.fx) * t.fy, t.fx * t.fy}};
            for (int64_t c = 0; c < C; ++c) {
                double s = 0;
                for (int j = 0; j < 2; ++j)
                    for (int i = 0; i < 2; ++i)
                        if (t.x[i] >= 0 && t.y[j] >= 0) s += w[j][i] * tb[(t.y[j] * TW + t.x[i]) * C + c];
                o[c] = (T)s;
            }
        }
    }
    return out;
}

template <typename T>
py::tuple texture_bwd(const py::array& tex_in, const py::array& uv_in, const py::array& grad_in, int64_t filter_mode,
                      int64_t boundary_mode) {
    const Inputs<T> in(tex_in, uv_in, filter_mode, boundary_mode);
    const int64_t TB = in.TB, TH = in.TH, TW = in.TW, C = in.C, B = in.B, H = in.H, W = in.W;
    const int filter = in.filter, boundary = in.boundary;
    const Array<T> grad_out = checks::floats<T>(grad_in, "grad_out", 4, "[B, H, W, C]");
    if (grad_out.shape(0) != B || grad_out.shape(1) != H || grad_out.shape(2) != W || grad_out.shape(3) != C)
        checks::fail("grad_out must be [B, H, W, C] = [" + std::to_string(B) + ", " + std::to_string(H) + ", " + std::to_string(W) +
                     ", " + std::to_string(C) + "] (the output's shape), got " + checks::shape_of(grad_out));
    const T* X = in.tex.data();
    const T* U = in.uv.data();
    const T* G = grad_out.data();
    Array<T> grad_tex({TB, TH, TW, C});
    Array<T> grad_uv({B, H, W, (int64_t)2});
    T* GT = grad_tex.mutable_data();
    T* GU = grad_uv.mutable_data();
    {
        py::gil_scoped_release release;
        ThreadBuffers<double> acc((size_t)TB * TH * TW * C);
#pragma omp parallel for schedule(static)
        for (int64_t pix = 0; pix < B * H * W; ++pix) {
            const int64_t b = TB == 1 ? 0 : pix / (H * W);
            const T* tb = X + b * TH * TW * C;
            double* ab = acc.get() + b * TH * TW * C;
            const T* g = G + C * pix;
            const double u = U[2 * pix], v = U[2 * pix + 1];
            GU[2 * pix] = GU[2 * pix + 1] = T(0);
            if (!std::isfinite(u) || !std::isfinite(v)) continue;  // sampled no texel: no gradient
            if (filter == 0) {
                int64_t x, y;
                nearest(u, v, TW, TH, boundary, x, y);
                if (x >= 0 && y >= 0)
                    for (int64_t c = 0; c < C; ++c) ab[(y * TW + x) * C + c] += g[c];
                continue;
            }
            const Taps t = taps(u, v, TW, TH, boundary);
            const double w[2][2] = {{(1 - t.fx) * (1 - t.fy), t.fx * (1 - t.fy)}, {(1 - t.fx) * t.fy, t.fx * t.fy}};
            double gfx = 0, gfy = 0;
            for (int64_t c = 0; c < C; ++c) {
                double val[2][2];
                for (int j = 0; j < 2; ++j)
                    for (int i = 0; i < 2; ++i) {
                        const bool in = t.x[i] >= 0 && t.y[j] >= 0;
                        val[j][i] = in ? double(tb[(t.y[j] * TW + t.x[i]) * C + c]) : 0.0;
                        if (in) ab[(t.y[j] * TW + t.x[i]) * C + c] += w[j][i] * g[c];
                    }
                gfx += g[c] * ((val[0][1] - val[0][0]) * (1 - t.fy) + (val[1][1] - val[1][0]) * t.fy);
                gfy += g[c] * ((val[1][0] - val[0][0]) * (1 - t.fx) + (val[1][1] - val[0][1]) * t.fx);
            }
            GU[2 * pix] = (T)(gfx * TW);
            GU[2 * pix + 1] = (T)(gfy * TH);
        }
        std::vector<double> sum((size_t)TB * TH * TW * C, 0.0);
        acc.reduce_into(sum.data(), sum.size());
        for (size_t i = 0; i < sum.size(); ++i) GT[i] = (T)sum[i];
    }
    return py::make_tuple(grad_tex, grad_uv);
}

}  // namespace

void register_texture(py::module_& m) {
    const char* fwd_doc =
        "Sample tex [B or 1, TH, TW, C] at uv [B, H, W, 2] (texel centres at (i + 0.5) / size) -> [B, H, W, C]. "
        "filter: 0 nearest, 1 bilinear; boundary: 0 wrap, 1 clamp, 2 zero. A NaN or infinite uv gives NaN. ValueError names a "
        "bad argument.";
    const char* bwd_doc =
        "Backward of texture_fwd: grad_out [B, H, W, C] -> (grad_tex shaped like tex, grad_uv [B, H, W, 2]; "
        "grad_uv is zero for nearest filtering).";
    m.def("texture_fwd_f32", &texture_fwd<float>, py::arg("tex"), py::arg("uv"), py::arg("filter"), py::arg("boundary"), fwd_doc);
    m.def("texture_fwd_f64", &texture_fwd<double>, py::arg("tex"), py::arg("uv"), py::arg("filter"), py::arg("boundary"), fwd_doc);
    m.def("texture_bwd_f32", &texture_bwd<float>, py::arg("tex"), py::arg("uv"), py::arg("grad_out"), py::arg("filter"),
          py::arg("boundary"), bwd_doc);
    m.def("texture_bwd_f64", &texture_bwd<double>, py::arg("tex"), py::arg("uv"), py::arg("grad_out"), py::arg("filter"),
          py::arg("boundary"), bwd_doc);
}
