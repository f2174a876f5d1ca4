"""Build meshdream and its C++ extension ``meshdream._C`` (C++17, -O3, OpenMP when available)."""
from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
import tempfile

from pybind11.setup_helpers import ParallelCompile, Pybind11Extension, build_ext
from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def read_version() -> str:
    with open(os.path.join(HERE, "meshdream", "__init__.py"), encoding="utf-8") as f:
        return re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)


def compiler_supports_openmp() -> bool:
    """Try to compile and link a tiny OpenMP program with the default C++ compiler."""
    if os.environ.get("MESHDREAM_NO_OPENMP"):
        return False
    cxx = os.environ.get("CXX", "c++")
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "omp.cpp")
        with open(src, "w") as f:
            f.write("#include <omp.h>\nint main(){return omp_get_max_threads() > 0 ? 0 : 1;}\n")
        cmd = [cxx, "-fopenmp", src, "-o", os.path.join(tmp, "omp")]
        try:
            return subprocess.run(cmd, capture_output=True).returncode == 0
        except OSError:
            return False


# MESHDREAM_SANITIZE=1: AddressSanitizer + UndefinedBehaviorSanitizer build for scripts/sanitize.sh (-O1 with frame
# pointers for readable reports; -fno-wrapv undoes Python's -fwrapv so signed overflow is reported; float-cast-overflow
# is not part of -fsanitize=undefined in GCC). Never for a wheel: the module then needs libasan preloaded.
SANITIZE_FLAGS = ["-fsanitize=address,undefined,float-cast-overflow", "-fno-sanitize-recover=undefined,float-cast-overflow",
                  "-fno-omit-frame-pointer", "-fno-wrapv", "-g", "-O1"]


class BuildExt(build_ext):
    def build_extensions(self):
        openmp = sys.platform != "win32" and compiler_supports_openmp()
        sanitize = os.environ.get("MESHDREAM_SANITIZE") == "1"
        for ext in self.extensions:
            if openmp:
                ext.extra_compile_args.append("-fopenmp")
                ext.extra_link_args.append("-fopenmp")
                ext.define_macros.append(("MESHDREAM_OPENMP", "1"))
            if sanitize:
                ext.extra_compile_args = [a for a in ext.extra_compile_args if a != "-O3"] + SANITIZE_FLAGS
                ext.extra_link_args.append("-fsanitize=address,undefined,float-cast-overflow")
        super().build_extensions()


# MESHDREAM_BUILD_JOBS=N compiles the kernels' sources N at a time (0: one per CPU); unset: one at a time
ParallelCompile("MESHDREAM_BUILD_JOBS", default=1).install()


sources = sorted(glob.glob(os.path.join("cpp", "*.cpp")))
ext_modules = [
    Pybind11Extension(
        "meshdream._C",
        sources,
        include_dirs=["cpp"],
        cxx_std=17,
        extra_compile_args=["-O3"] if sys.platform != "win32" else ["/O2"],
    )
]

# What the wheel holds besides the Python modules: everything the README uses after `pip install meshdream-*.whl`
# (tests/test_wheel_contents.py checks this list against setuptools' own build_py; scripts/check_wheel.sh installs it).
PACKAGE_DATA = {
    "meshdream": [
        "guidance/embedded_prior/*",  # the prior's index, metadata, samples.png and LICENSE
        "guidance/embedded_prior/**/*",  # its weights, tokenizer and scheduler
        "gallery_assets/*",  # model-viewer's UMD build and its licences (copied next to each gallery)
        "presets/*.yaml",  # --preset sd|if
    ]
}
# Licence texts, recorded in the wheel's metadata (dist-info/licenses/); the package data above holds them too.
LICENSE_FILES = ["LICENSE", "NOTICE", "meshdream/guidance/embedded_prior/LICENSE", "meshdream/gallery_assets/LICENSE-*.txt"]

setup(
    name="meshdream",
    version=read_version(),
    author="meshdream developers",
    # no project URL: meshdream has no public home page or repository address yet
    description="Text prompt to textured 3D asset (GLB) by score distillation of a 2D diffusion prior: "
                "hash-grid NeRF, C++ marching cubes, mesh and texture refinement through a differentiable rasteriser.",
    long_description=open(os.path.join(HERE, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license_expression="Apache-2.0",  # SPDX; code and the embedded prior's weights
    license_files=LICENSE_FILES,
    keywords=["text-to-3d", "score distillation sampling", "dreamfusion", "magic3d", "nerf", "diffusion",
              "marching cubes", "differentiable rendering", "glb", "3d asset generation"],
    classifiers=[
        "Development Status :: 3 - Alpha",
        "Environment :: Console",
        "Environment :: GPU :: NVIDIA CUDA",
        "Intended Audience :: Developers",
        "Intended Audience :: Science/Research",
        "Operating System :: POSIX :: Linux",
        "Programming Language :: C++",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.11",
        "Topic :: Multimedia :: Graphics :: 3D Modeling",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
    packages=find_packages(include=["meshdream", "meshdream.*"]),
    package_data=PACKAGE_DATA,  # exactly these (no include_package_data: the wheel does not depend on VCS plugins)
    ext_modules=ext_modules,
    cmdclass={"build_ext": BuildExt},
    # 3.10: the dataclass configs use `X | None` hints, evaluated at runtime by the config loader
    python_requires=">=3.10",
    install_requires=[
        # 2.13.0 (CPU wheel on disk here) satisfies this range, so nothing more is pulled once it is installed.
        "torch>=2.1",
        "numpy>=1.23",
        "click>=8.1",
        "pyyaml>=6",
        "filelock>=3.12",  # the RUN lock (meshdream.engine.run.run_lock)
        "tqdm>=4.60",
        "diffusers>=0.27",
        "transformers>=4.38",
        "safetensors>=0.4",
        "tokenizers>=0.15",
        "pillow>=9",
        "imageio>=2.28",
        "imageio-ffmpeg>=0.4.9",  # ships an ffmpeg binary: RUN/turntable.mp4 (H.264)
        "xatlas>=0.0.9",
        "trimesh>=4",
        "pymeshlab>=2023.12",
        "scikit-image>=0.21",
        "rtree>=1.0",  # trimesh closest-point queries (texture resampling on decimation)
        "lxml>=4.9",  # trimesh's 3MF writer (export --format 3mf)
    ],
    extras_require={
        # ray[client]: `meshdream batch` (grpcio for ray://); playwright drives Debian's chromium in the gallery test (no browser download)
        # setuptools + pybind11: tests/test_wheel_contents.py runs setup.py itself (pip builds in an isolated env)
        # gradio: tests/test_app.py drives `meshdream app` in headless Chromium
        # diffrp-nvdiffrast: nvdiffrast's Python API (pure Python, needs only numpy; its CUDA plugin is built on first
        # use, never on install): tests/test_nvdiffrast_glue.py checks our calls against it and runs refine through it
        "test": ["pytest>=7", "hypothesis>=6", "PyMCubes>=0.1.4", "pygltflib>=1.16", "ray[client]>=2.9", "playwright>=1.40",
                 "setuptools>=77", "pybind11>=2.11", "gradio>=6", "diffrp-nvdiffrast>=0.3.3"],
        "app": ["gradio>=6"],  # `meshdream app`: the local web page (its frontend, 3D viewer included, ships in the wheel)
        "cluster": ["ray[client]>=2.9"],  # `meshdream batch` (ray[client] for --address ray://host:port)
        "bench": ["PyMCubes>=0.1.4"],
        # DeepFloyd IF's T5 tokenizer (spiece.model) needs these; SD and the embedded prior do not
        "if": ["sentencepiece>=0.1.99", "protobuf>=3.20"],
    },
    entry_points={"console_scripts": ["meshdream=meshdream.cli:main"]},
)
