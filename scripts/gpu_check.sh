#!/usr/bin/env bash
# One prepared check of meshdream's CUDA path on a machine with an NVIDIA GPU and no network (<= 8 min).
#
#   bash scripts/gpu_check.sh            # from the repository root; results under $OUT (default ./gpu_check_out)
#
# 1. installs the wheels brought along in .whl/ (those the machine's image lacks: diffusers, trimesh,
#    xatlas, rtree, a slim pymeshlab, diffrp-nvdiffrast) into /tmp/site, without network or dependencies;
# 2. builds meshdream's C++ extension in place and nvdiffrast's CUDA plugin (JIT, ninja + nvcc), timed;
# 3. runs the tests marked `cuda` (nvdiffrast vs our CPU rasteriser and vs tests/nvdiffrast_antialias.py, the
#    CPU port of its antialias kernel; fp16 SDS with tiny SD and IF) and the CPU glue tests against nvdiffrast's API;
# 4. validates the memory estimates of scripts/gpu_memory.py: the same parts (embedded-prior coarse / refine
#    steps, each preset's scene steps, the SD / IF SDS call at real size in fp16) run for real on CUDA, with
#    torch.cuda.max_memory_allocated beside each estimate (OUT/gpu_memory.json; docs/gpu.md has the CPU estimates);
# 5. runs `generate "a red cube"` on CUDA with the embedded prior, then a CPU baseline if time is left,
#    and prints a table (stage times, s/step, peak GPU memory, GLB check).
# Each step's log is in $OUT; a failing step is reported and the later steps still run.
# Environment: OUT, GPU_CHECK_SKIP_INSTALL=1 (use what is installed), GPU_CHECK_BUDGET (seconds, default 470).
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
OUT=${OUT:-$ROOT/gpu_check_out}
mkdir -p "$OUT"
START=$(date +%s)
BUDGET=${GPU_CHECK_BUDGET:-470}
export GPU_CHECK_DEADLINE=$((START + BUDGET))
PY=${PYTHON:-python3}
SUMMARY=$OUT/summary.txt
: >"$SUMMARY"

note() { echo "[gpu_check $(($(date +%s) - START))s] $*" | tee -a "$SUMMARY"; }

step() {  # step NAME LOGFILE COMMAND...: run, log, record status and seconds
  local name=$1 log=$2 t0 rc
  shift 2
  t0=$(date +%s)
  "$@" >"$log" 2>&1
  rc=$?
  note "$name: exit $rc in $(($(date +%s) - t0))s (log: $(basename "$log"))"
  tail -n 15 "$log"
  return $rc
}

note "start; $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo 'no nvidia-smi')"
"$PY" -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())' | tee -a "$SUMMARY"

if [ "${GPU_CHECK_SKIP_INSTALL:-0}" != 1 ]; then
  if compgen -G ".whl/*.whl" >/dev/null; then
    step install "$OUT/install.log" "$PY" -m pip install --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl
  else
    note "install: no .whl/ folder; using what is installed"
  fi
  export PYTHONPATH=$ROOT:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
else
  export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
fi

step build "$OUT/build.log" "$PY" setup.py build_ext --inplace -q

# nvdiffrast builds its plugin on first use: do it once here, for this GPU's architecture only, timed
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$("$PY" -c 'import torch; c = torch.cuda.get_device_capability() if torch.cuda.is_available() else (9, 0); print(f"{c[0]}.{c[1]}")')}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
step nvdiffrast_plugin "$OUT/nvdiffrast.log" "$PY" -c '
import time, torch
t = time.time()
import nvdiffrast
from meshdream import raster
if torch.cuda.is_available():
    raster.get_context("cuda")  # builds the plugin on first use (and finds it: see raster._nvdiffrast)
    print("nvdiffrast", getattr(nvdiffrast, "__version__", "?"), "plugin ready in %.1fs" % (time.time() - t))
else:
    print("no CUDA device: plugin not built")
'

step cuda_tests "$OUT/cuda_tests.log" "$PY" -m pytest -q -rs -m cuda -p no:cacheprovider tests/test_raster.py tests/test_guidance.py
step glue_tests "$OUT/glue_tests.log" "$PY" -m pytest -q -rs -p no:cacheprovider tests/test_nvdiffrast_glue.py \
  -k "not refine_and_export"

# estimate vs measurement, part by part (bounded: the generate step below still needs its time)
step memory "$OUT/memory.log" timeout "${GPU_CHECK_MEMORY_SECONDS:-200}" "$PY" scripts/gpu_memory.py --device cuda \
  --json "$OUT/gpu_memory.json"

step generate "$OUT/generate.log" "$PY" scripts/gpu_check.py --out "$OUT"
cat "$OUT/gpu_check.md" 2>/dev/null

note "done; summary:"
cat "$SUMMARY"
