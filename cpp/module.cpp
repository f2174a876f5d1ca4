// meshdream._C: the project's C++ kernels (marching cubes, CPU rasteriser, hash-grid encoding, field MLP), bound with pybind11.
#include "kernels.h"

#ifdef MESHDREAM_OPENMP
#include <omp.h>
#endif

PYBIND11_MODULE(_C, m) {
    m.doc() = "meshdream C++ kernels";
#ifdef MESHDREAM_OPENMP
    m.attr("openmp") = true;
    m.def("max_threads", []() { return omp_get_max_threads(); });
#else
    m.attr("openmp") = false;
    m.def("max_threads", []() { return 1; });
#endif
    register_marching_cubes(m);
    register_rasterize(m);
    register_interpolate(m);
    register_texture(m);
    register_antialias(m);
    register_hash_grid(m);
    register_mlp(m);
}
