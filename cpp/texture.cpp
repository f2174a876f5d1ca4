// texture: bilinear (or nearest) lookups of tex [B, TH, TW, C] at uv [B, H, W, 2], nvdiffrast's
// convention: uv (0, 0) is the corner of texel row 0, texel centres at (i + 0.5) / size. Boundary
// modes: wrap, clamp, zero. Backward: dL/dtex (per-thread buffers) and dL/duv (bilinear only).
#include <cmath>

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
    t.x[0] = texel((int64_t)x0, TW, boundary);
    t.x[1] = texel((int64_t)x0 + 1, TW, boundary);
    t.y[0] = texel((int64_t)y0, TH, boundary);
    t.y[1] = texel((int64_t)y0 + 1, TH, boundary);
    return t;
}

template <typename T>
Array<T> texture_fwd(Array<T> tex, Array<T> uv, int filter, int boundary) {
    const int64_t TB = tex.shape(0), TH = tex.shape(1), TW = tex.shape(2), C = tex.shape(3);
    const int64_t B = uv.shape(0), H = uv.shape(1), W = uv.shape(2);
    if (TB != 1 && TB != B) throw std::invalid_argument("tex batch must be 1 or match uv");
    const T* X = tex.data();
    const T* U = uv.data();
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
            if (filter == 0) {  // nearest
                const int64_t x = texel((int64_t)std::floor(u * TW), TW, boundary), y = texel((int64_t)std::floor(v * TH), TH, boundary);
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
py::tuple texture_bwd(Array<T> tex, Array<T> uv, Array<T> grad_out, int filter, int boundary) {
    const int64_t TB = tex.shape(0), TH = tex.shape(1), TW = tex.shape(2), C = tex.shape(3);
    const int64_t B = uv.shape(0), H = uv.shape(1), W = uv.shape(2);
    const T* X = tex.data();
    const T* U = uv.data();
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
            if (filter == 0) {
                const int64_t x = texel((int64_t)std::floor(u * TW), TW, boundary), y = texel((int64_t)std::floor(v * TH), TH, boundary);
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
        "filter: 0 nearest, 1 bilinear; boundary: 0 wrap, 1 clamp, 2 zero.";
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
