#!/usr/bin/env python
"""Evaluate generated assets the way a user meets them: the exported GLB, loaded back from disk.

    python scripts/eval_assets.py [--out runs/eval] [--seeds 0 1 2] [--prompts FILE]
    python scripts/eval_assets.py --runs RUN [RUN ...] [--out runs/eval_check]

Default prompts: every shape x colour prompt the embedded prior knows (30), generated with the
default settings (`python -m meshdream generate PROMPT --out OUT/seed<S>/<prompt> --seed S`), each in
its own process so its wall time and peak memory are measured. Resumable: a RUN whose
export/model.glb exists is evaluated, not regenerated; an interrupted generate continues (--resume).

For every GLB:
- topology of the welded mesh (UV-seam duplicates merged by position): components, boundary and
  non-manifold edges, watertight, Euler characteristic, genus (expected: torus 1, the others 0);
- shape and colour: the GLB rendered (its texture, lambertian with the camera's point light, 32 px,
  2x supersampled) from --views cameras drawn from the prior's camera distribution, each view labelled
  by the held-out classifier of scripts/prior_eval.py (trained on data/prior/heldout_a.npz, checked on
  heldout_b.npz; rendered here if missing, cached in data/eval_assets/); majority vote over views;
- fidelity: symmetric Chamfer distance (% of the reference's bounding-box diagonal) to the prompted
  shape's reference primitive after the best similarity alignment (ICP from 24 rotations); the floor is
  the same measurement of the reference primitives themselves, meshed by our marching cubes from their
  SDF at the pipeline's extraction resolution, moved by a random similarity and written to / read from GLB;
- roughness: mean angle between the asset's face normals and the aligned primitive's normals.

Writes OUT/eval_assets.md (table + summary against the quality targets in docs/quality.md, headed by the
meshdream version and the date), OUT/eval_assets.json and
OUT/contact_sheet.png (4 views per asset). Exit code 0 whatever the results; 2 on bad arguments.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from meshdream import __version__ as MESHDREAM_VERSION  # noqa: E402
from meshdream.asset import metrics as am  # noqa: E402
from meshdream.mesh.geometry import weld  # noqa: E402
from meshdream.render.cameras import CameraConfig, sample_cameras, turntable_cameras  # noqa: E402
from meshdream.prior.primitives import COLOURS, SHAPES  # noqa: E402

EXPECTED_GENUS = {"torus": 1}
TARGETS = {"topology": 29 / 30, "shape_and_colour": 28 / 30, "chamfer_vs_floor": 2.0}


def default_prompts() -> list[str]:
    """Every shape x colour prompt of the embedded prior's vocabulary, shape by shape."""
    return [f"{'an' if c[0] in 'aeiou' else 'a'} {c} {s}" for s in SHAPES for c in COLOURS]


def expected_labels(prompt: str) -> tuple[str | None, str | None]:
    """The vocabulary's shape and colour words in a prompt (the judge reads the prompt; the pipeline never does)."""
    words = re.findall(r"[a-z]+", prompt.lower())
    shape = next((w for w in words if w in SHAPES), None)
    colour = next((w for w in words if w in COLOURS), None)
    return shape, colour


def slug(prompt: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", prompt.lower()).strip("_") or "prompt"


# ---------------------------------------------------------------- generate, measured


def run_generate(prompt: str, seed: int, run: Path, extra: list[str]) -> dict:
    """`python -m meshdream generate` in a child process; wall time and the child's own peak RSS (wait4).
    Its log and this record go into the RUN folder (made a RUN first: meshdream refuses other non-empty folders)."""
    from meshdream.engine.run import RunDir

    RunDir.create(run)
    resumed = (run / "coarse" / "checkpoint.pt").is_file()
    cmd = [sys.executable, "-m", "meshdream", "generate", prompt, "--out", str(run), "--seed", str(seed), "--resume", "--quiet", *extra]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    start = time.time()
    with open(run / "generate.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    record = {"command": shlex.join(cmd), "exit_code": proc.returncode, "wall_s": time.time() - start,
              "peak_rss_mb": usage.ru_maxrss / 1024.0, "resumed": resumed}
    if proc.returncode != 0:
        tail = (run / "generate.log").read_text(errors="replace").strip().splitlines()[-3:]
        record["error"] = " / ".join(tail)
    (run / "eval_generate.json").write_text(json.dumps(record, indent=1))
    return record


# ---------------------------------------------------------------- classifier


def load_classifier(data: Path, log=print):
    """The held-out classifier of scripts/prior_eval.py, trained once and cached in data/eval_assets/."""
    from meshdream.prior.evaluate import Classifier, train_classifier
    from meshdream.prior.primitives import render_dataset

    cache = data.parent / "eval_assets" / "classifier.pt"
    if cache.is_file():
        state = torch.load(cache, map_location="cpu")
        model = Classifier()
        model.load_state_dict(state["weights"])
        return model.eval(), state["accuracy"]
    data.mkdir(parents=True, exist_ok=True)
    for name, seed in (("heldout_a", 2), ("heldout_b", 3)):  # the seeds scripts/prior_dataset.py uses
        path = data / f"{name}.npz"
        if not path.is_file():
            log(f"rendering {path} (3000 images, as scripts/prior_dataset.py does)")
            images, captions, shapes, colours = render_dataset(3000, seed=seed, resolution=32)
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, images=images, captions=np.array(captions), shapes=np.array(shapes), colours=np.array(colours))
            os.replace(tmp, path)
    model, acc = train_classifier(str(data / "heldout_a.npz"), str(data / "heldout_b.npz"), log=log)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    torch.save({"weights": model.state_dict(), "accuracy": acc}, tmp)
    os.replace(tmp, cache)
    return model, acc


# ---------------------------------------------------------------- judging one GLB


def judge(glb: Path, shape: str | None, colour: str | None, classifier, views: int, seed: int) -> tuple[dict, np.ndarray]:
    """Metrics of one GLB file and its 4 contact-sheet views [4, 128, 128, 3] uint8."""
    t0 = time.time()
    asset = am.load_glb(glb)
    topo = am.topology(asset.vertices, asset.faces)
    row: dict = {"topology": topo.as_dict(), "faces": int(len(asset.faces)), "textured": asset.uvs is not None}
    expected_genus = EXPECTED_GENUS.get(shape, 0) if shape else None
    row["topology_ok"] = bool(topo.watertight and topo.components == 1 and expected_genus is not None and topo.genus == expected_genus)
    if len(asset.faces) == 0:
        row["error"] = "empty mesh"
        return row, np.full((4, 128, 128, 3), 255, np.uint8)
    if classifier is not None:
        g = torch.Generator().manual_seed(seed)
        cams = sample_cameras(views, CameraConfig(), g)
        images = am.render_asset(asset, cams, 32, supersample=2, shading="lambertian")
        with torch.no_grad():
            ps, pc = classifier(images)
        shape_votes = np.bincount(ps.argmax(1).numpy(), minlength=len(SHAPES))
        colour_votes = np.bincount(pc.argmax(1).numpy(), minlength=len(COLOURS))
        row["shape_pred"], row["colour_pred"] = SHAPES[int(shape_votes.argmax())], list(COLOURS)[int(colour_votes.argmax())]
        row["shape_votes"] = float(shape_votes.max() / views)
        row["colour_votes"] = float(colour_votes.max() / views)
        row["shape_ok"] = row["shape_pred"] == shape if shape else None
        row["colour_ok"] = row["colour_pred"] == colour if colour else None
    if shape:
        wv, wf, _ = weld(asset.vertices, asset.faces)
        fit = am.fit_primitive(wv, wf, shape, seed=seed)
        row["fit"] = fit.as_dict()
    sheet = am.render_asset(asset, turntable_cameras(4, elevation_deg=20.0), 128, supersample=1, shading="lambertian")
    row["judge_s"] = time.time() - t0
    return row, (sheet.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


def reference_floor(out: Path, shapes: list[str], resolution: int, seed: int) -> dict:
    """The Chamfer / roughness / topology of the reference primitives themselves: meshed by our marching
    cubes at the extraction resolution, moved by a random similarity, written to GLB and judged by the
    same code as the assets."""
    import trimesh

    floor = {}
    rng = np.random.default_rng(seed)
    (out / "floor").mkdir(parents=True, exist_ok=True)
    for shape in shapes:
        v, f = am.primitive_mesh(shape, resolution)
        R = am.rotation_matrix(rng.normal(size=3), rng.uniform(-math.pi, math.pi))
        v = rng.uniform(0.7, 1.3) * v @ R.T + rng.uniform(-0.2, 0.2, size=3)
        path = out / "floor" / f"{shape}.glb"
        trimesh.Trimesh(v, f, process=False).export(path)
        row, _ = judge(path, shape, None, None, 0, seed)
        floor[shape] = row
    return floor


# ---------------------------------------------------------------- report


def fmt(x, spec=".2f", none="–"):
    return none if x is None else format(x, spec)


def yes(b):
    return "–" if b is None else ("yes" if b else "**no**")


def markdown(rows: list[dict], floor: dict, classifier_acc: dict | None, args) -> str:
    n = len(rows)
    lines = [f"# Asset evaluation ({n} assets)", "",
             f"meshdream {MESHDREAM_VERSION}, {time.strftime('%Y-%m-%d', time.gmtime())} (UTC).", ""]
    lines.append("| prompt | seed | comp. | boundary | non-manif. | watertight | χ | genus | topology ok | shape (votes) | colour (votes) "
                 "| Chamfer % | × floor | normal dev. ° | faces | generate s | peak MB | judge s |")
    lines.append("|---" * 18 + "|")
    for r in rows:
        t = r.get("topology") or {}
        fit = r.get("fit") or {}
        fl = (floor.get(r["shape"]) or {}).get("fit", {}).get("chamfer_pct") if r.get("shape") else None
        ratio = fit["chamfer_pct"] / fl if fit and fl else None
        gen = r.get("generate") or {}
        shape_cell = f"{r['shape_pred']} ({r['shape_votes']:.2f})" + ("" if r.get("shape_ok") else " ✗") if "shape_pred" in r else "–"
        colour_cell = f"{r['colour_pred']} ({r['colour_votes']:.2f})" + ("" if r.get("colour_ok") else " ✗") if "colour_pred" in r else "–"
        if r.get("error") and not t:
            lines.append(f"| {r['prompt']} | {r['seed']} | failed: {r['error']} |" + " |" * 16)
            continue
        lines.append(
            f"| {r['prompt']} | {r['seed']} | {t.get('components')} | {t.get('boundary_edges')} | {t.get('non_manifold_edges')} | "
            f"{yes(t.get('watertight'))} | {t.get('euler')} | {fmt(t.get('genus'), '.0f')} | {yes(r.get('topology_ok'))} | "
            f"{shape_cell} | {colour_cell} | {fmt(fit.get('chamfer_pct'))} | {fmt(ratio, '.1f')} | {fmt(fit.get('normal_deviation_deg'), '.1f')} | "
            f"{r.get('faces', '–')} | {fmt(gen.get('wall_s'), '.0f')}{' (resumed)' if gen.get('resumed') else ''} | "
            f"{fmt(gen.get('peak_rss_mb'), '.0f')} | {fmt(r.get('judge_s'), '.1f')} |")
    lines += ["", "## Summary against the quality targets", ""]
    topo_ok = sum(bool(r.get("topology_ok")) for r in rows)
    both = sum(bool(r.get("shape_ok")) and bool(r.get("colour_ok")) for r in rows)
    shape_ok = sum(bool(r.get("shape_ok")) for r in rows)
    colour_ok = sum(bool(r.get("colour_ok")) for r in rows)
    chamfers = [r["fit"]["chamfer_pct"] for r in rows if r.get("fit")]
    floors = [floor[r["shape"]]["fit"]["chamfer_pct"] for r in rows if r.get("fit")]
    med_c = float(np.median(chamfers)) if chamfers else None
    med_f = float(np.median(floors)) if floors else None
    ratio = med_c / med_f if med_c is not None and med_f else None
    rough = [r["fit"]["normal_deviation_deg"] for r in rows if r.get("fit")]
    walls = [r["generate"]["wall_s"] for r in rows if r.get("generate") and not r["generate"].get("resumed")]
    rss = [r["generate"]["peak_rss_mb"] for r in rows if r.get("generate")]
    need_t, need_s = math.ceil(TARGETS["topology"] * n - 1e-9), math.ceil(TARGETS["shape_and_colour"] * n - 1e-9)
    lines += [
        "| measure | result | target | met |", "|---|---|---|---|",
        f"| one component, watertight, expected genus | {topo_ok}/{n} | ≥ {need_t}/{n} | {yes(topo_ok >= need_t)} |",
        f"| shape and colour both right | {both}/{n} (shape {shape_ok}, colour {colour_ok}) | ≥ {need_s}/{n} | {yes(both >= need_s)} |",
        f"| median Chamfer (% diagonal) | {fmt(med_c)} (floor median {fmt(med_f, '.3f')}, {fmt(ratio, '.1f')}×) | ≤ 2× floor | "
        f"{yes(ratio is not None and ratio <= TARGETS['chamfer_vs_floor'])} |",
        f"| median normal deviation | {fmt(float(np.median(rough)) if rough else None, '.1f')}° (floor "
        f"{fmt(float(np.median([floor[s]['fit']['normal_deviation_deg'] for s in floor])) if floor else None, '.1f')}°) | – | – |",
        f"| generate wall time (median / max, fresh runs) | {fmt(float(np.median(walls)) if walls else None, '.0f')} s / "
        f"{fmt(max(walls) if walls else None, '.0f')} s | ≤ 180 s | {yes(bool(walls) and max(walls) <= 180) if walls else '–'} |",
        f"| peak memory (max) | {fmt(max(rss) if rss else None, '.0f')} MB | ≤ 1536 MB | {yes(max(rss) <= 1536) if rss else '–'} |",
        "",
        "## Reference floor (primitives meshed by our marching cubes from their SDF at resolution "
        f"{args.extract_resolution}, moved, through GLB)", "",
        "| shape | faces | watertight | genus | Chamfer % | normal dev. ° |", "|---|---|---|---|---|---|",
    ]
    for s, r in floor.items():
        lines.append(f"| {s} | {r['faces']} | {yes(r['topology']['watertight'])} | {fmt(r['topology']['genus'], '.0f')} | "
                     f"{r['fit']['chamfer_pct']:.3f} | {r['fit']['normal_deviation_deg']:.1f} |")
    if classifier_acc:
        lines += ["", f"Classifier (held-out renders): shape {classifier_acc['shape']:.3f}, colour {classifier_acc['colour']:.3f}; "
                  f"{args.views} views per asset, majority vote."]
    return "\n".join(lines) + "\n"


def atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def main(argv=None) -> None:
    from meshdream.nerf.extract import ExtractConfig

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/eval", help="where RUN folders and the report go (default runs/eval)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="generate seeds (default 0)")
    ap.add_argument("--prompts", type=Path, help="file with one prompt per line (# comments); default: the 30 shape x colour prompts")
    ap.add_argument("--runs", type=Path, nargs="+", help="judge these existing RUN folders instead of generating")
    ap.add_argument("--generate-args", default="", help="extra arguments for generate, e.g. '--coarse-iters 100' (default: none, the shipped defaults)")
    ap.add_argument("--no-generate", action="store_true", help="judge only RUNs that already have export/model.glb")
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "prior", help="held-out renders for the classifier (default data/prior)")
    ap.add_argument("--views", type=int, default=16, help="classifier views per asset (default 16)")
    ap.add_argument("--extract-resolution", type=int, default=ExtractConfig().resolution,
                    help=f"marching-cubes resolution of the reference floor (default: the pipeline's, {ExtractConfig().resolution})")
    ap.add_argument("--seed", type=int, default=0, help="seed of the judge's cameras and samples")
    args = ap.parse_args(argv)
    if args.views < 1:
        ap.error(f"--views {args.views}: need at least 1")
    if args.extract_resolution < 8:
        ap.error(f"--extract-resolution {args.extract_resolution}: need at least 8")

    jobs = []  # (prompt, seed, run folder)
    if args.runs:
        from meshdream.engine.run import RunDir, read_prompt

        for run in args.runs:
            if not run.is_dir():
                ap.error(f"--runs {str(run)!r} is not a folder")
            try:
                info = read_prompt(RunDir(run))
            except Exception as e:  # noqa: BLE001 - any unreadable RUN is a usage error naming it
                ap.error(f"--runs {str(run)!r}: cannot read its prompt ({e})")
            jobs.append((info["prompt"], info.get("seed"), run))
    else:
        if args.prompts:
            if not args.prompts.is_file():
                ap.error(f"--prompts {str(args.prompts)!r} is not a file")
            prompts = [ln.strip() for ln in args.prompts.read_text().splitlines() if ln.strip() and not ln.strip().startswith("#")]
            if not prompts:
                ap.error(f"--prompts {str(args.prompts)!r} holds no prompts")
        else:
            prompts = default_prompts()
        jobs = [(p, s, Path(args.out) / f"seed{s}" / slug(p)) for s in args.seeds for p in prompts]
    extra = shlex.split(args.generate_args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    torch.set_num_threads(1)  # the judge's small batches; generate runs in its own process with its own threads
    shapes = sorted({expected_labels(p)[0] for p, _, _ in jobs} - {None}, key=SHAPES.index)
    judge_state: dict = {}

    def ready():
        """Classifier and floor, made on first need (the first generate runs meanwhile on a fresh machine)."""
        if not judge_state:
            classifier, clf_acc = load_classifier(args.data)
            print(f"classifier: shape {clf_acc['shape']:.3f}, colour {clf_acc['colour']:.3f} on held-out renders", flush=True)
            floor = reference_floor(out, shapes, args.extract_resolution, args.seed)
            for s, r in floor.items():
                print(f"floor {s}: Chamfer {r['fit']['chamfer_pct']:.3f}%, normal dev {r['fit']['normal_deviation_deg']:.1f}°, "
                      f"watertight {r['topology']['watertight']}, genus {r['topology']['genus']}", flush=True)
            judge_state.update(classifier=classifier, clf_acc=clf_acc, floor=floor)
        return judge_state

    rows, sheet_rows = [], []
    for i, (prompt, seed, run) in enumerate(jobs):
        shape, colour = expected_labels(prompt)
        glb = run / "export" / "model.glb"
        row = {"prompt": prompt, "seed": seed, "run": str(run), "shape": shape, "colour": colour}
        gen_record = run / "eval_generate.json"
        if not glb.is_file() and not args.runs and not args.no_generate:
            print(f"[{i + 1}/{len(jobs)}] generate {prompt!r} seed {seed} -> {run}", flush=True)
            row["generate"] = run_generate(prompt, seed, run, extra)
        elif gen_record.is_file():
            row["generate"] = json.loads(gen_record.read_text())
        if not glb.is_file():
            row["error"] = (row.get("generate") or {}).get("error") or "no export/model.glb"
            rows.append(row)
            print(f"[{i + 1}/{len(jobs)}] {prompt!r}: {row['error']}", flush=True)
            continue
        state = ready()
        metrics, views = judge(glb, shape, colour, state["classifier"], args.views, args.seed)
        row.update(metrics)
        rows.append(row)
        t = row["topology"]
        fit = row.get("fit") or {}
        print(f"[{i + 1}/{len(jobs)}] {prompt!r} seed {seed}: components {t['components']}, watertight {t['watertight']}, "
              f"genus {t['genus']}, shape {row.get('shape_pred')}, colour {row.get('colour_pred')}, "
              f"Chamfer {fit.get('chamfer_pct', float('nan')):.2f}%, normal dev {fit.get('normal_deviation_deg', float('nan')):.1f}°, "
              f"judged in {row['judge_s']:.1f}s", flush=True)
        ok = "OK" if row.get("topology_ok") and row.get("shape_ok") and row.get("colour_ok") else "FAIL"
        # ASCII only: PIL's default font has no check marks or dashes
        label = (f"{prompt} (seed {seed}): {ok}\nlooks like: {row.get('colour_pred')} {row.get('shape_pred')}\n"
                 f"{t['components']} part(s), {'watertight' if t['watertight'] else 'open'}, genus {fmt(t['genus'], '.0f', '-')}\n"
                 f"Chamfer {fmt(fit.get('chamfer_pct'))}%, normals {fmt(fit.get('normal_deviation_deg'), '.0f')} deg")
        sheet_rows.append((label, views))
        # the report is rewritten after every asset: an interrupted evaluation still leaves one
        atomic_write(out / "eval_assets.md", markdown(rows, state["floor"], state["clf_acc"], args).encode())
    state = ready()
    atomic_write(out / "eval_assets.md", markdown(rows, state["floor"], state["clf_acc"], args).encode())
    atomic_write(out / "eval_assets.json", json.dumps({"rows": rows, "floor": state["floor"], "classifier": state["clf_acc"]},
                                                      indent=1, default=float).encode())
    from PIL import Image

    sheet = am.contact_sheet(sheet_rows)
    Image.fromarray(sheet).save(out / "contact_sheet.png.tmp.png")
    os.replace(out / "contact_sheet.png.tmp.png", out / "contact_sheet.png")
    print((out / "eval_assets.md").read_text())
    print(f"wrote {out / 'eval_assets.md'}, {out / 'eval_assets.json'}, {out / 'contact_sheet.png'}")


if __name__ == "__main__":
    main()
