#!/usr/bin/env bash
# Build meshdream's wheel, install it into a fresh virtual environment and use it from another folder, as a
# user who ran `pip install meshdream-*.whl` would (no source tree on sys.path). Too slow for the test suite
# (the C++ build, the dependencies' install, a short generate): run it before a release, or after changing
# setup.py, package data or licences.   usage: bash scripts/check_wheel.sh [WORKDIR]   (default: a temp folder)
#
# How, and why:
# - `pip wheel --no-deps --no-build-isolation .`, in a clean copy of the source tree, builds the wheel with this interpreter's setuptools and pybind11
#   (pyproject's build requirements), so the build itself downloads nothing; `python -m build` would make an
#   isolated environment and fetch them.
# - The venv is fresh (no --system-site-packages), so the wheel's install_requires are really checked. torch comes
#   first, from `pip install torch==2.13.0`: here that resolves to the CPU wheel on this machine's disk (pip's
#   find-links), and meshdream's `torch>=2.1` is then met, so no other (CUDA) torch is pulled. The rest of the
#   dependencies come from PyPI (or pip's cache). The script checks the venv's torch is the one it installed.
# - Everything then runs with the venv's python from WORKDIR/elsewhere, never from the repository.
# - The GLB is checked by the Khronos glTF Validator through tests/gltf_validate.js when node and the validator
#   the tests install (~/.cache/meshdream/gltf-validator) are there (0 errors and 0 warnings required), and
#   always by loading it back with trimesh (faces, UVs).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=${1:-$(mktemp -d "${TMPDIR:-/tmp}/meshdream-wheel.XXXXXX")}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
PY=${PYTHON:-python3}
step() { printf '\n== %s (%s)\n' "$1" "$(date +%T)"; }
fail() { echo "check_wheel: FAILED: $*" >&2; exit 1; }
t0=$(date +%s)

step "build the wheel from a clean copy of the source into $WORK/dist"
# a copy of the files git knows (tracked or not ignored): no stale build/ folder can slip files into the wheel
mkdir -p "$WORK/src"
(cd "$REPO" && git ls-files -co --exclude-standard | while IFS= read -r f; do [ -e "$f" ] && printf '%s\n' "$f"; done \
  | tar -cf - --files-from=-) | tar -xf - -C "$WORK/src"
(cd "$WORK/src" && "$PY" -m pip wheel --no-deps --no-build-isolation -q -w "$WORK/dist" .)
WHEEL=$(ls "$WORK"/dist/meshdream-*.whl)
echo "$WHEEL ($(du -h "$WHEEL" | cut -f1))"
t_build=$(date +%s)

step "fresh venv: torch==2.13.0 first, then the wheel"
"$PY" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
"$VPY" -m pip install -q torch==2.13.0
"$VPY" -m pip install -q "$WHEEL"
"$VPY" -c "import torch; v = torch.__version__; print('torch', v); assert v.startswith('2.13.0'), v"
"$VPY" -m pip check || fail "pip check"
t_install=$(date +%s)

ELSEWHERE="$WORK/elsewhere"
mkdir -p "$ELSEWHERE"
cd "$ELSEWHERE"  # no meshdream source here: everything below uses the installed wheel

step "what the installed package holds"
"$VPY" - <<'EOF'
import importlib.metadata as md
import pathlib

import meshdream
from meshdream.config import preset_names
from meshdream.guidance import embedded_prior_path

root = pathlib.Path(meshdream.__file__).parent
assert "site-packages" in str(root), f"meshdream imported from {root}, not from the venv"
print("meshdream", meshdream.__version__, "from", root)
prior = embedded_prior_path()
for rel in ("model_index.json", "meshdream_prior.json", "LICENSE", "unet/diffusion_pytorch_model.safetensors",
            "text_encoder/model.safetensors", "tokenizer/tokenizer.json", "scheduler/scheduler_config.json"):
    assert (prior / rel).is_file(), f"the prior's {rel} is not in the wheel"
for rel in ("model-viewer-umd.min.js", "LICENSE-model-viewer.txt", "LICENSE-three.txt", "LICENSE-lit.txt",
            "LICENSE-gainmap-js.txt"):
    assert (root / "gallery_assets" / rel).is_file(), f"gallery_assets/{rel} is not in the wheel"
assert set(preset_names()) >= {"sd", "if"}, preset_names()
meta = md.metadata("meshdream")
licences = sorted(str(f) for f in md.files("meshdream") if "licenses/" in str(f))
print("License-Expression:", meta.get("License-Expression"), "| Author:", meta.get("Author"),
      "| Requires-Python:", meta.get("Requires-Python"))
print("licence files in dist-info:", ", ".join(licences))
assert meta.get("License-Expression") == "Apache-2.0" and meta.get("Author") == "meshdream developers"
assert any(f.endswith("licenses/LICENSE") for f in licences) and any("embedded_prior/LICENSE" in f for f in licences)
assert meta.get("Description-Content-Type") == "text/markdown" and "# meshdream" in meta.get_payload()
EOF

step "meshdream --help, --version, presets"
MD="$WORK/venv/bin/meshdream"
"$MD" --version
"$MD" --help | grep -q 'meshdream generate "a red cube"' || fail "--help shows no example"
"$MD" generate --help | grep -- "--preset \[" | grep -q "sd" || fail "generate --help does not list the presets"
"$VPY" - <<'EOF'
from meshdream.config import build_config
from meshdream.stages.coarse import CoarseConfig
from meshdream.stages.refine import RefineConfig

for preset, coarse_guidance in (("sd", "stable-diffusion"), ("if", "deepfloyd-if")):
    c = build_config(CoarseConfig, None, preset, [])
    r = build_config(RefineConfig, None, preset, [])
    assert c.guidance.name == coarse_guidance and r.guidance.name == "stable-diffusion", (preset, c.guidance, r.guidance)
    print(f"--preset {preset}: coarse {c.guidance.name}, {c.iters} iters; refine {r.guidance.name}, texture {r.texture_size}")
EOF

step "meshdream generate from another folder (embedded prior, CPU)"
"$MD" generate "a red cube" --out runs/red_cube --coarse-iters 20 --refine-iters 10 --no-video --quiet
t_generate=$(date +%s)
GLB="$ELSEWHERE/runs/red_cube/export/model.glb"
[ -s "$GLB" ] || fail "no $GLB"
[ -s runs/red_cube/turntable.gif ] || fail "no turntable.gif"
ls -l "$GLB" runs/red_cube/turntable.gif

step "the GLB"
"$VPY" - "$GLB" <<'EOF'
import sys

import trimesh

mesh = trimesh.load(sys.argv[1], process=False, force="mesh")
assert len(mesh.faces) > 0 and mesh.visual.uv is not None, "no faces or no UVs"
print(f"trimesh: {len(mesh.vertices)} vertices, {len(mesh.faces)} faces, UVs, texture {mesh.visual.material.baseColorTexture.size}")
EOF
VALIDATOR="${MESHDREAM_CACHE:-$HOME/.cache/meshdream}/gltf-validator"
if command -v node >/dev/null && [ -d "$VALIDATOR/node_modules/gltf-validator" ]; then
  node "$REPO/tests/gltf_validate.js" "$VALIDATOR" "$GLB" > "$WORK/validator.json"
  "$VPY" - "$WORK/validator.json" <<'EOF'
import json
import sys

r = json.load(open(sys.argv[1]))
print(f"Khronos glTF Validator: {r['numErrors']} errors, {r['numWarnings']} warnings, {r['numInfos']} infos, {r['numHints']} hints")
assert r["numErrors"] == 0 and r["numWarnings"] == 0, r["messages"][:5]
EOF
else
  echo "Khronos glTF Validator not installed (run tests/test_export.py once to install it): skipped"
fi

echo
echo "check_wheel: OK  build $((t_build - t0)) s, venv + install $((t_install - t_build)) s, generate $((t_generate - t_install)) s, total $(( $(date +%s) - t0 )) s"
echo "work folder: $WORK (delete it when done)"
