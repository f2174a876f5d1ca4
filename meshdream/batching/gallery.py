"""DIR/index.html: a gallery of a batch, one interactive 3D view per asset (Google's <model-viewer>).

DIR/index.html            the page (prompt, status, seed, times, peak memory, turntable, GLB link per prompt)
DIR/gallery/              model-viewer's JS and licences (copied from meshdream/gallery_assets/)
DIR/gallery/models/*.js   each GLB as base64 in a classic script, for file://

It works offline from a local server (the viewer fetches DIR/<slug>/export/model.glb) and from file://,
where browsers refuse fetch() of local files but still run classic scripts: there each GLB is read from its
script and handed to the viewer as a blob: URL.
"""
from __future__ import annotations

import base64
import html
import json
import os
import shutil
from pathlib import Path
from urllib.parse import quote

from ..atomic_files import atomic_write_bytes

ASSETS = Path(__file__).parent.parent / "gallery_assets"  # package data, next to presets/
VIEWER_JS = "model-viewer-umd.min.js"
STATUS_COLOURS = {"done": "#1a7f37", "failed": "#cf222e", "running": "#9a6700", "pending": "#57606a"}


def copy_viewer(out: Path) -> Path:
    """DIR/gallery/ with model-viewer's JS and its licences (copied once, or again when the package's copy changed)."""
    folder = out / "gallery"
    folder.mkdir(parents=True, exist_ok=True)
    for src in ASSETS.iterdir():
        if src.is_file():
            dst = folder / src.name
            if not dst.is_file() or dst.stat().st_size != src.stat().st_size:
                shutil.copyfile(src, dst)
    return folder


def embed_model(out: Path, slug: str, glb: Path) -> Path:
    """DIR/gallery/models/<slug>.js: the GLB as base64 in a script (rewritten when the GLB is newer)."""
    path = out / "gallery" / "models" / f"{slug}.js"
    if path.is_file() and path.stat().st_mtime_ns >= glb.stat().st_mtime_ns:
        return path
    data = base64.b64encode(glb.read_bytes()).decode("ascii")
    text = f"(window.meshdreamModels = window.meshdreamModels || {{}})[{json.dumps(slug)}] = \"{data}\";\n"
    atomic_write_bytes(path, text.encode("ascii"))
    return path


def _url(rel: str) -> str:
    return quote(Path(rel).as_posix())


def _times(entry: dict) -> str:
    times = entry.get("times") or {}
    parts = [f"{k} {v:.1f} s" for k, v in times.items() if isinstance(v, (int, float)) and k != "total"]
    if "total" in times:
        parts.append(f"total {times['total']:.1f} s")
    return ", ".join(parts)


def _card(out: Path, entry: dict) -> str:
    e = html.escape
    status = entry.get("status", "pending")
    rows = [("seed", entry.get("seed")), ("attempts", entry.get("attempts")), ("times", _times(entry)),
            ("peak memory", f"{entry['peak_memory_mb']:.0f} MB" if entry.get("peak_memory_mb") else None),
            ("peak GPU memory", f"{entry['peak_cuda_memory_mb']:.0f} MB" if entry.get("peak_cuda_memory_mb") else None)]
    meta = "".join(f"<dt>{e(k)}</dt><dd>{e(str(v))}</dd>" for k, v in rows if v not in (None, ""))
    view = ""
    asset = entry.get("asset")
    if status == "done" and asset and (out / asset).is_file():
        if asset.endswith(".glb"):
            embedded = embed_model(out, entry["slug"], out / asset)
            view = (f'<model-viewer data-slug="{e(entry["slug"])}" data-model="{e(_url(asset))}" '
                    f'data-embedded="{e(_url(os.path.relpath(embedded, out)))}" alt="{e(entry["prompt"])}" camera-controls '
                    'auto-rotate shadow-intensity="1" exposure="1.1" interaction-prompt="none"></model-viewer>')
        else:
            view = f'<p class="note">{e(Path(asset).suffix)} asset: no 3D view (the gallery shows GLB files)</p>'
        links = f'<a href="{e(_url(asset))}">{e(Path(asset).name)}</a>'
        if entry.get("turntable"):
            links += (f' · <a href="{e(_url(entry["turntable"]))}">turntable</a>'
                      f'<img class="turntable" src="{e(_url(entry["turntable"]))}" alt="turntable of {e(entry["prompt"])}">')
        view += f'<p class="links">{links}</p>'
    error = f'<pre class="error">{e(entry["error"])}</pre>' if entry.get("error") else ""
    return (f'<article class="card" id="{e(entry["slug"])}" data-status="{e(status)}">{view}'
            f'<h2>{e(entry["prompt"])}</h2>'
            f'<p><span class="status" style="background:{STATUS_COLOURS.get(status, "#57606a")}">{e(status)}</span> '
            f'<code>{e(entry["slug"])}/</code></p><dl>{meta}</dl>{error}</article>')


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>meshdream batch: {title}</title>
<link rel="icon" href="data:,">
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5rem; background: #fff; color: #1f2328; }}
header p {{ color: #57606a; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); gap: 1rem; }}
.card {{ border: 1px solid #d0d7de; border-radius: 8px; padding: 0.8rem; }}
.card h2 {{ font-size: 1.05rem; margin: 0.5rem 0; }}
model-viewer {{ width: 100%; height: 280px; background-color: #eef1f4; border-radius: 6px; }}
/* the turntable is a lit and a normals view side by side: a fixed width and automatic height keep its aspect ratio */
.turntable {{ display: block; width: 192px; max-width: 100%; height: auto; margin-top: 0.4rem; image-rendering: auto; }}
.status {{ color: #fff; border-radius: 1em; padding: 0.1em 0.6em; font-size: 0.85em; }}
dl {{ display: grid; grid-template-columns: auto 1fr; gap: 0.1rem 0.8rem; font-size: 0.85rem; margin: 0.5rem 0; }}
dt {{ color: #57606a; }} dd {{ margin: 0; }}
.error {{ white-space: pre-wrap; background: #ffebe9; padding: 0.5rem; font-size: 0.8rem; border-radius: 6px; }}
.links, .note {{ font-size: 0.85rem; }}
</style>
<script src="gallery/{viewer}"></script>
</head>
<body>
<header><h1>meshdream batch</h1><p>{summary}</p></header>
<main class="grid">
{cards}
</main>
<script>
(function () {{
  // From a server the viewer fetches each GLB; from file:// browsers refuse fetch(), so each GLB comes from
  // a classic script that carries it as base64 and is handed over as a blob: URL.
  var fromFile = location.protocol === "file:";
  window.meshdreamModels = window.meshdreamModels || {{}};
  document.querySelectorAll("model-viewer[data-model]").forEach(function (viewer) {{
    if (!fromFile) {{ viewer.src = viewer.dataset.model; return; }}
    var script = document.createElement("script");
    script.src = viewer.dataset.embedded;
    script.onload = function () {{
      var text = atob(window.meshdreamModels[viewer.dataset.slug]);
      var bytes = new Uint8Array(text.length);
      for (var i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
      viewer.src = URL.createObjectURL(new Blob([bytes], {{ type: "model/gltf-binary" }}));
    }};
    document.head.appendChild(script);
  }});
}})();
</script>
</body>
</html>
"""


def write_gallery(out: str | os.PathLike, index: dict) -> Path:
    """Write DIR/index.html (atomically) for the batch ``index`` (the dict of DIR/index.json). Returns its path."""
    out = Path(out)
    copy_viewer(out)
    jobs = index.get("jobs", [])
    counts = {}
    for entry in jobs:
        counts[entry.get("status", "pending")] = counts.get(entry.get("status", "pending"), 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no prompts"
    if index.get("updated"):
        summary += f" · updated {index['updated']}"
    page = PAGE.format(title=html.escape(out.name), viewer=VIEWER_JS, summary=html.escape(summary),
                       cards="\n".join(_card(out, entry) for entry in jobs))
    path = out / "index.html"
    atomic_write_bytes(path, page.encode("utf-8"))
    return path
