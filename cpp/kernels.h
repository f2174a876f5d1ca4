// Each kernel lives in its own cpp/<name>.cpp and exposes one register_<name>() that adds its
// functions to the meshdream._C module. Python owns the autograd glue; nothing here needs torch.
#pragma once
#include <pybind11/pybind11.h>

#ifdef MESHDREAM_OPENMP
#include <omp.h>
#endif

// OpenMP threads for one call: the caller's count (Python passes torch.get_num_threads(), so the kernels
// follow torch.set_num_threads and Ray's per-job CPUs), or OpenMP's default for 0
inline int omp_team(int threads) {
#ifdef MESHDREAM_OPENMP
    return threads > 0 ? threads : omp_get_max_threads();
#else
    (void)threads;
    return 1;
#endif
}

void register_marching_cubes(pybind11::module_& m);
void register_rasterize(pybind11::module_& m);
void register_interpolate(pybind11::module_& m);
void register_texture(pybind11::module_& m);
void register_antialias(pybind11::module_& m);
void register_hash_grid(pybind11::module_& m);
void register_mlp(pybind11::module_& m);
