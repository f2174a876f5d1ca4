"""The end-to-end part of scripts/gpu_check.sh: ``generate "a red cube"`` on CUDA with the embedded prior,
timed per stage with the peak GPU memory of each, the GLB checked, and (time permitting) the same
stages on the CPU of the same machine at fewer steps for a per-step baseline. Writes a markdown
table to stdout and OUT/gpu_check.md, the numbers to OUT/gpu_check.json.

    python scripts/gpu_check.py --out OUT [--coarse-iters 400] [--refine-iters 200] [--cpu-budget 120]

Without a CUDA device it says so and exits 0 (nothing to check here).
"""
from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import tempfile
import time
from pathlib import Path


def check_glb(path: Path) -> dict:
    """GLB container, glTF 2.0 JSON with a textured PBR material, and trimesh loads the mesh."""
    import trimesh

    data = path.read_bytes()
    magic, version, length = struct.unpack("<4sII", data[:12])
    chunk_len, chunk_type = struct.unpack("<I4s", data[12:20])
    doc = json.loads(data[20:20 + chunk_len])
    mesh = trimesh.load(str(path), force="mesh")
    ok = (magic == b"glTF" and version == 2 and length == len(data) and chunk_type == b"JSON"
          and bool(doc.get("images")) and bool(doc.get("materials")) and len(mesh.faces) > 0)
    return {"ok": ok, "bytes": len(data), "faces": int(len(mesh.faces)), "vertices": int(len(mesh.vertices)),
            "images": len(doc.get("images", [])), "materials": len(doc.get("materials", []))}


def run_stages(run: Path, device: str, coarse_iters: int, refine_iters: int) -> dict:
    """coarse, refine, export (+ turntable) of "a red cube" on ``device``: seconds, s/step, peak GPU MB."""
    import torch

    from meshdream import coarse, export, refine

    cuda = device == "cuda"
    out: dict = {}
    for name, fn, iters in (("coarse", lambda: coarse("a red cube", run, iters=coarse_iters, device=device, progress=False), coarse_iters),
                            ("refine", lambda: refine(run, iters=refine_iters, device=device, progress=False), refine_iters),
                            ("export", lambda: export(run, format="glb"), 0)):
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        result = fn()
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        out[name] = {"seconds": round(seconds, 2), "iters": iters,
                     "s_per_step": round(seconds / iters, 4) if iters else None,
                     "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2 ** 20, 1) if cuda else None,
                     "result": str(result)}
    ckpt = run / "coarse" / "checkpoint.pt"
    out["coarse_checkpoint_mb"] = round(ckpt.stat().st_size / 2 ** 20, 2) if ckpt.is_file() else None
    out["glb"] = check_glb(Path(out["export"]["result"]))
    return out


def table(results: dict, env: dict) -> str:
    lines = [f"GPU check on {env['gpu']} (torch {env['torch']}, CUDA {env['cuda']}), {env['cpus']} CPU cores", "",
             "| run | stage | steps | seconds | s/step (incl. load, extraction) | peak GPU MB |", "|---|---|---|---|---|---|"]
    for run_name, res in results.items():
        if not isinstance(res, dict) or "coarse" not in res:
            continue
        for stage in ("coarse", "refine", "export"):
            r = res[stage]
            lines.append(f"| {run_name} | {stage} | {r['iters'] or '-'} | {r['seconds']} | {r['s_per_step'] or '-'} | "
                         f"{r['peak_gpu_mb'] if r['peak_gpu_mb'] is not None else '-'} |")
    cuda = results.get("cuda")
    if cuda:
        g = cuda["glb"]
        lines += ["", f"GLB: {'OK' if g['ok'] else 'FAILED'} ({g['bytes']} bytes, {g['faces']} faces, {g['images']} image(s), "
                      f"{g['materials']} material(s)); coarse checkpoint {cuda['coarse_checkpoint_mb']} MB"]
    for k, v in results.items():
        if isinstance(v, str):
            lines.append(f"{k}: {v}")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "gpu_check_out"))
    ap.add_argument("--coarse-iters", type=int, default=400)
    ap.add_argument("--refine-iters", type=int, default=200)
    ap.add_argument("--cpu-iters", type=int, nargs=2, default=(100, 50), metavar=("COARSE", "REFINE"))
    ap.add_argument("--cpu-budget", type=float, default=120.0, help="skip the CPU baseline when less than this many seconds "
                                                                     "of the overall deadline are left")
    ap.add_argument("--deadline", type=float, default=float(os.environ.get("GPU_CHECK_DEADLINE", "0")) or None,
                    help="unix time by which everything must be done")
    args = ap.parse_args()
    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; nothing to check (skipped)")
        return 0
    env = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda, "cpus": os.cpu_count()}
    results: dict = {"env": env}
    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    status = 0
    try:
        results["cuda"] = run_stages(work / "cuda", "cuda", args.coarse_iters, args.refine_iters)
        status = 0 if results["cuda"]["glb"]["ok"] else 1
    except Exception as e:  # report, do not hide: the table says what failed
        import traceback

        traceback.print_exc()
        results["cuda_error"] = f"{type(e).__name__}: {str(e)[:500]}"
        status = 1
    left = (args.deadline - time.time()) if args.deadline else float("inf")
    if left > args.cpu_budget:
        try:
            results["cpu"] = run_stages(work / "cpu", "cpu", *args.cpu_iters)
        except Exception as e:
            results["cpu_error"] = f"{type(e).__name__}: {str(e)[:500]}"
    else:
        results["cpu_baseline"] = f"skipped ({left:.0f} s left before the deadline)"
    text = table(results, env)
    print(text)
    (out / "gpu_check.md").write_text(text)
    (out / "gpu_check.json").write_text(json.dumps(results, indent=1))
    return status


if __name__ == "__main__":
    sys.exit(main())
