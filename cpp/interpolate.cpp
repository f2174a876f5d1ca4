// interpolate: per-pixel attributes from the rasteriser's barycentrics (nvdiffrast layout).
// out = u * a0 + v * a1 + (1 - u - v) * a2 for covered pixels, 0 elsewhere. attr is [B, V, C] or,
// shared by all images, [1, V, C]. Backward: dL/dattr (per-thread buffers, no races) and dL/d(u, v).
// Shapes, dtypes and vertex indices are checked first (cpp/checks.h); raster ids outside [1, F] read as empty.
#include "kernels.h"
#include "raster_common.h"

namespace py = pybind11;
using namespace raster;

namespace {

// attr [B or 1, V, C], rast [B, H, W, 4] and tri [F, 3] (indices into attr's V), checked and converted.
template <typename T>
struct Inputs {
    Array<T> attr, rast;
    Array<int32_t> tri;
    int64_t AB, V, C, B, H, W, F;
    Inputs(const py::array& attr_in, const py::array& rast_in, const py::array& tri_in)
        : attr(checks::floats<T>(attr_in, "attr", 3, "[B or 1, V, C]")), rast(raster_of<T>(rast_in)),
          tri(checks::triangles(tri_in, attr.shape(1))) {
        AB = attr.shape(0), V = attr.shape(1), C = attr.shape(2);
        B = rast.shape(0), H = rast.shape(1), W = rast.shape(2), F = tri.shape(0);
        if (AB != 1 && AB != B)
            checks::fail("attr batch must be 1 or match rast's B = " + std::to_string(B) + ", got attr shape " +
                         checks::shape_of(attr) + " and rast shape " + checks::shape_of(rast));
        checks::buffer_elements({B, H, W, C}, sizeof(T), "the output [B, H, W, C]");
    }
};

template <typename T>
Array<T> interpolate_fwd(const py::array& attr_in, const py::array& rast_in, const py::array& tri_in) {
    const Inputs<T> in(attr_in, rast_in, tri_in);
    const int64_t AB = in.AB, V = in.V, C = in.C, B = in.B, H = in.H, W = in.W, F = in.F;
    const T* A = in.attr.data();
    const T* R = in.rast.data();
    const int32_t* I = in.tri.data();
    Array<T> out({B, H, W, C});
    T* O = out.mutable_data();
    {
        py::gil_scoped_release release;
#pragma omp parallel for schedule(static)
        for (int64_t pix = 0; pix < B * H * W; ++pix) {
            const T* r = R + 4 * pix;
            T* o = O + C * pix;
            const int64_t f = triangle_of(r[3], F);
            if (f < 0) { std::fill(o, o + C, T(0)); continue; }
            const int64_t b = AB == 1 ? 0 : pix / (H * W);
            const int32_t* vi = I + 3 * f;
            const T u = r[0], v = r[1], w = T(1) - r[0] - r[1];
            const T* a0 = A + (b * V + vi[0]) * C;
            const T* a1 = A + (b * V + vi[1]) * C;
            const T* a2 = A + (b * V + vi[2]) * C;
            for (int64_t c = 0; c < C; ++c) o[c] = u * a0[c] + v * a1[c] + w * a2[c];
        }
    }
    return out;
}

template <typename T>
py::tuple interpolate_bwd(const py::array& attr_in, const py::array& rast_in, const py::array& tri_in, const py::array& grad_in) {
    const Inputs<T> in(attr_in, rast_in, tri_in);
    const int64_t AB = in.AB, V = in.V, C = in.C, B = in.B, H = in.H, W = in.W, F = in.F;
    const Array<T> grad_out = checks::floats<T>(grad_in, "grad_out", 4, "[B, H, W, C]");
    if (grad_out.shape(0) != B || grad_out.shape(1) != H || grad_out.shape(2) != W || grad_out.shape(3) != C)
        checks::fail("grad_out must be [B, H, W, C] = [" + std::to_string(B) + ", " + std::to_string(H) + ", " + std::to_string(W) +
                     ", " + std::to_string(C) + "] (the output's shape), got " + checks::shape_of(grad_out));
    const T* A = in.attr.data();
    const T* R = in.rast.data();
    const T* G = grad_out.data();
    const int32_t* I = in.tri.data();
    Array<T> grad_attr({AB, V, C});
    Array<T> grad_rast({B, H, W, (int64_t)4});
    T* GA = grad_attr.mutable_data();
    T* GR = grad_rast.mutable_data();
    {
        py::gil_scoped_release release;
        ThreadBuffers<double> acc((size_t)AB * V * C);
#pragma omp parallel for schedule(static)
        for (int64_t pix = 0; pix < B * H * W; ++pix) {
            const T* r = R + 4 * pix;
            T* gr = GR + 4 * pix;
            gr[0] = gr[1] = gr[2] = gr[3] = T(0);
            const int64_t f = triangle_of(r[3], F);
            if (f < 0) continue;
            const int64_t b = AB == 1 ? 0 : pix / (H * W);
            const int32_t* vi = I + 3 * f;
            const double u = r[0], v = r[1], w = 1.0 - u - v;
            const T* g = G + C * pix;
            const T* a0 = A + (b * V + vi[0]) * C;
            const T* a1 = A + (b * V + vi[1]) * C;
            const T* a2 = A + (b * V + vi[2]) * C;
            double* acc_b = acc.get() + b * V * C;
            double gu = 0, gv = 0;
            for (int64_t c = 0; c < C; ++c) {
                gu += g[c] * (a0[c] - a2[c]);
                gv += g[c] * (a1[c] - a2[c]);
                acc_b[vi[0] * C + c] += u * g[c];
                acc_b[vi[1] * C + c] += v * g[c];
                acc_b[vi[2] * C + c] += w * g[c];
            }
            gr[0] = (T)gu;
            gr[1] = (T)gv;
        }
        std::vector<double> sum((size_t)AB * V * C, 0.0);
        acc.reduce_into(sum.data(), sum.size());
        for (size_t i = 0; i < sum.size(); ++i) GA[i] = (T)sum[i];
    }
    return py::make_tuple(grad_attr, grad_rast);
}

}  // namespace

void register_interpolate(py::module_& m) {
    const char* fwd_doc =
        "Interpolate vertex attributes at every pixel: attr [B or 1, V, C], rast [B, H, W, 4] (u, v, z/w, "
        "triangle_id + 1), tri [F, 3] integer vertex indices in [0, V) -> out [B, H, W, C] = u*a0 + v*a1 + (1-u-v)*a2, 0 where "
        "rast is empty (ids outside 1 .. F count as empty). ValueError names a bad argument.";
    const char* bwd_doc =
        "Backward of interpolate_fwd: grad_out [B, H, W, C] -> (grad_attr shaped like attr, grad_rast [B, H, W, 4] "
        "with dL/du, dL/dv in channels 0, 1 and zeros in 2, 3).";
    m.def("interpolate_fwd_f32", &interpolate_fwd<float>, py::arg("attr"), py::arg("rast"), py::arg("tri"), fwd_doc);
    m.def("interpolate_fwd_f64", &interpolate_fwd<double>, py::arg("attr"), py::arg("rast"), py::arg("tri"), fwd_doc);
    m.def("interpolate_bwd_f32", &interpolate_bwd<float>, py::arg("attr"), py::arg("rast"), py::arg("tri"), py::arg("grad_out"),
          bwd_doc);
    m.def("interpolate_bwd_f64", &interpolate_bwd<double>, py::arg("attr"), py::arg("rast"), py::arg("tri"), py::arg("grad_out"),
          bwd_doc);
}
