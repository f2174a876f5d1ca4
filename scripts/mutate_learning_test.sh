#!/usr/bin/env bash
# usage: scripts/mutate_learning_test.sh NAME  (baseline | sds_zero | no_step | other_prompt_a_green_torus)
# Copies the package and tests to a scratch folder, applies one mutation there and runs tests/test_learning.py on it
# (docs/testing.md, "Mutations it catches"); the working tree is not touched.
set -u
name=$1
src=$(cd "$(dirname "$0")/.." && pwd)
dst=${TMPDIR:-/tmp}/meshdream-mutation/$name
rm -rf "$dst"; mkdir -p "$dst"
cp -r "$src/meshdream" "$src/tests" "$src/pyproject.toml" "$src/configs" "$dst"/
cd "$dst"
case $name in
  baseline) ;;
  sds_zero) python - <<'PY'
p = "meshdream/guidance/base.py"; s = open(p).read()
old = "grad = (1 - a) * (eps_pred - noise)  # w(t) = 1 - alpha_bar(t) (DreamFusion)"
assert s.count(old) == 1; open(p, "w").write(s.replace(old, "grad = 0 * (1 - a) * (eps_pred - noise)  # MUTATION: SDS gradient zeroed"))
PY
  ;;
  no_step) python - <<'PY'
p = "meshdream/engine/stage_loop.py"; s = open(p).read()
old = "    loss.backward()\n    optimizer.step()\n"
assert s.count(old) == 1; open(p, "w").write(s.replace(old, "    loss.backward()\n    # optimizer.step()  MUTATION: step skipped\n"))
PY
  ;;
  other_prompt_*) other=${name#other_prompt_}; OTHER="${other//_/ }" python - <<'PY'
import os
other = os.environ["OTHER"]
for p in ("meshdream/stages/coarse.py", "meshdream/stages/refine.py"):
    s = open(p).read()
    old = {"meshdream/stages/coarse.py": "    embeddings = guide.encode_prompt(prompt, negative_prompt)\n",
           "meshdream/stages/refine.py": "    embeddings = guide.encode_prompt(info[\"prompt\"], negative_prompt or None)\n"}[p]
    assert s.count(old) == 1, p
    new = old + f"    embeddings = guide.encode_prompt({other!r}, negative_prompt or None)  # MUTATION: another prompt guides\n"
    open(p, "w").write(s.replace(old, new))
PY
  ;;
  *) echo "unknown mutation $name"; exit 2;;
esac
git -C "$src" diff --no-index --stat "$src/meshdream" "$dst/meshdream" 2>/dev/null | tail -3
export PYTHONPATH=$dst
start=$(date +%s)
/usr/bin/time -f "cpu user %U s sys %S s wall %e s" nice -n 10 python -m pytest -q -p no:cacheprovider tests/test_learning.py 2>&1 | grep -E "passed|failed|FAILED|Error|assert|cpu user" | head -40
