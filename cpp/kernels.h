// Each kernel lives in its own cpp/<name>.cpp and exposes one register_<name>() that adds its
// functions to the meshdream._C module. Python owns the autograd glue; nothing here needs torch.
#pragma once
#include <pybind11/pybind11.h>

void register_marching_cubes(pybind11::module_& m);
void register_rasterize(pybind11::module_& m);
void register_interpolate(pybind11::module_& m);
void register_texture(pybind11::module_& m);
void register_antialias(pybind11::module_& m);
void register_hash_grid(pybind11::module_& m);
void register_mlp(pybind11::module_& m);
