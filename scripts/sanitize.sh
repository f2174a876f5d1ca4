#!/usr/bin/env bash
# Build meshdream._C with AddressSanitizer + UndefinedBehaviorSanitizer into build/sanitize/ (the in-place module is
# left alone) and run the kernel tests and the native fuzz against it. Any sanitizer report aborts the process, so a
# report is a failed run. See docs/native.md.
#
#   scripts/sanitize.sh                     build, then pytest the kernel tests + fuzz (the default test list)
#   scripts/sanitize.sh tests/test_x.py ... build, then pytest these instead
#   scripts/sanitize.sh --probes            build, then run each crash probe of tests/native_probes.py in its own process
#   scripts/sanitize.sh --cpp-from REV --probes
#                                           the same with cpp/ as it is in git revision REV (e.g. an older main) to show
#                                           what each probe did before; probes that would allocate gigabytes are skipped
#
# Environment: MESHDREAM_SANITIZE_DIR (default build/sanitize, or build/sanitize-REV), MESHDREAM_BUILD_JOBS (default 0:
# one compiler per CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

rev="" probes=0 tests=()
while [ $# -gt 0 ]; do
  case "$1" in
    --cpp-from) rev="$2"; shift 2 ;;
    --probes) probes=1; shift ;;
    *) tests+=("$1"); shift ;;
  esac
done
[ ${#tests[@]} -gt 0 ] || tests=(tests/test_native_fuzz.py tests/test_raster.py tests/test_hash_grid.py tests/test_mlp.py
                                  tests/test_marching_cubes.py)

out="${MESHDREAM_SANITIZE_DIR:-build/sanitize${rev:+-$(echo "$rev" | tr -c 'A-Za-z0-9._\n' _)}}"
mkdir -p "$out"
out=$(cd "$out" && pwd)

# 1. build: this checkout's setup.py flags (MESHDREAM_SANITIZE=1) on this checkout's cpp/ or on REV's
start=$(date +%s)
src=$ROOT
if [ -n "$rev" ]; then
  # REV's cpp/ next to this setup.py; files that did not change keep their time, so a rerun does not recompile
  src="$out/src"
  rm -rf "$out/src.new" && mkdir -p "$out/src.new/meshdream" "$src"
  git archive "$rev" cpp | tar -x -C "$out/src.new"
  cp setup.py README.md "$out/src.new/" && cp meshdream/__init__.py "$out/src.new/meshdream/"
  (cd "$out/src.new" && find . -type f) | while read -r f; do
    cmp -s "$out/src.new/$f" "$src/$f" || { mkdir -p "$(dirname "$src/$f")"; cp "$out/src.new/$f" "$src/$f"; }
  done
  rm -rf "$out/src.new"
fi
(cd "$src" && MESHDREAM_SANITIZE=1 MESHDREAM_BUILD_JOBS="${MESHDREAM_BUILD_JOBS:-0}" \
  python setup.py -q build_ext --build-lib "$out/lib" --build-temp "$out/temp" >"$out/build.log" 2>&1) \
  || { cat "$out/build.log"; exit 1; }
echo "sanitizer build: $(( $(date +%s) - start )) s ($out/lib)"

# 2. a package tree that is this checkout's meshdream/ (links) with the sanitized _C in place of the normal one
tree="$out/tree/meshdream"
rm -rf "$out/tree" && mkdir -p "$tree"
for entry in meshdream/*; do
  case "$entry" in meshdream/_C.*) ;; *) ln -s "$ROOT/$entry" "$tree/" ;; esac
done
cp "$out"/lib/meshdream/_C.* "$tree/"

# 3. run with the runtime preloaded (python itself is not instrumented); python's own allocations leak by design
# libstdc++ too: python does not link it, and ASan's __cxa_throw interceptor must find the real one when the first
# C++ exception (a ValueError from the argument checks) is thrown
export LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(readlink -f "$(g++ -print-file-name=libstdc++.so)")"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:allocator_may_return_null=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
export PYTHONPATH="$out/tree${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONSAFEPATH=1  # the current folder (this checkout, with its own meshdream/_C) must not come first on sys.path
loaded=$(python -c "import meshdream._C as c; print(c.__file__)")
case "$loaded" in "$out"/tree/*) ;; *) echo "the sanitized module did not load (got $loaded)" >&2; exit 1 ;; esac

start=$(date +%s)
if [ $probes = 1 ]; then
  names=$(python -c "import sys; sys.path.insert(0, 'tests'); import native_probes as p; print(' '.join(n for n in p.PROBES if not ('$rev' and n in p.UNSAFE_BEFORE)))")
  failed=0
  for name in $names; do
    log="$out/probe-$name.log"
    if python tests/native_probes.py "$name" >"$log" 2>&1; then
      echo "$name: $(sed -n "s/^RESULT $name //p" "$log" | cut -c1-150)"
    else
      failed=$((failed + 1))
      report=$(grep -m1 -E "ERROR: AddressSanitizer|runtime error|AssertionError|Fatal Python error|Error" "$log" || true)
      echo "$name: CRASH / REPORT: $(echo "$report" | sed "s|$ROOT/||g" | cut -c1-170) (log: $log)"
    fi
  done
  echo "probes: $(echo $names | wc -w) run, $failed ended in a sanitizer report, a crash or a wrong result ($(( $(date +%s) - start )) s)"
  [ $failed = 0 ]
else
  python -m pytest -q -p no:cacheprovider "${tests[@]}"
  echo "sanitized tests: $(( $(date +%s) - start )) s"
fi
