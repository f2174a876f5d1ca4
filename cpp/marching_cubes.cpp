// placeholder until the marching cubes kernel lands (being written now)
#include "kernels.h"
void register_marching_cubes(pybind11::module_& m) { (void)m; }
