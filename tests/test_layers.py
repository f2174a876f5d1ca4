"""The package's layering: lower layers never import the stages, no stage imports a sibling stage, the base
folders (engine, mesh, raster, texture) never import the model, guidance or application folders, and there
are no import circles."""
import ast
import subprocess
import sys
from pathlib import Path

import meshdream

PACKAGE = Path(meshdream.__file__).parent
# the API, the CLI, the Ray batch driver and the web app sit above the stages (they run them)
ENTRY_POINTS = {"meshdream", "meshdream.__main__", "meshdream.cli", "meshdream.batching.runner", "meshdream.app",
                "meshdream.app.page", "meshdream.app.runs"}
ORCHESTRATOR = "meshdream.stages.generate"  # runs the other stages


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """meshdream modules ``path`` imports (at the top or inside functions), relative imports resolved."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("meshdream")}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("meshdream"):
                out.add(target)
                out |= {f"{target}.{a.name}" for a in node.names if is_module(f"{target}.{a.name}")}
    return out


def is_module(name: str) -> bool:
    path = PACKAGE.parent / name.replace(".", "/")
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def import_graph() -> dict[str, set[str]]:
    """module -> the meshdream modules it imports (itself left out)."""
    return {name: imports_of(p) - {name} for p in sorted(PACKAGE.rglob("*.py")) for name in [module_name(p)]}


def is_stage(module: str) -> bool:
    return module.startswith("meshdream.stages.")


def test_lower_layers_never_import_a_stage():
    upward = sorted((m, t) for m, targets in import_graph().items() for t in targets
                    if not is_stage(m) and m not in ENTRY_POINTS and t.startswith("meshdream.stages"))
    assert upward == []


def test_no_stage_imports_a_sibling_stage():
    sideways = sorted((m, t) for m, targets in import_graph().items() if is_stage(m) and m != ORCHESTRATOR
                      for t in targets if is_stage(t) and t != m)
    assert sideways == []


# folders every other part builds on, and the folders they must never reach up to
BASE_FOLDERS = ("engine", "mesh", "raster", "texture")
UPPER_FOLDERS = ("nerf", "guidance", "stages", "batching")


def folder(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_base_folders_never_import_models_guidance_stages_or_batching():
    upward = sorted((m, t) for m, targets in import_graph().items() if folder(m) in BASE_FOLDERS
                    for t in targets if folder(t) in UPPER_FOLDERS)
    assert upward == []


def test_no_import_circles():
    """No module reaches itself through the modules it imports (at the top or inside functions). The package
    root is left out: every module may import it for ``__version__`` and ``_C``."""
    full = import_graph()
    graph = {m: {t for t in targets if t != "meshdream" and t in full} for m, targets in full.items()}
    circles, state = [], {}

    def visit(m, path):
        state[m] = "open"
        for t in sorted(graph.get(m, ())):
            if state.get(t) == "open":
                circles.append(path[path.index(t):] + [t])
            elif t not in state:
                visit(t, path + [t])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state and m != "meshdream":
            visit(m, [m])
    assert circles == []


def test_light_modules_do_not_load_torch():
    """The CLI (its --help and choices), the Ray driver, the config and the atomic file writes load without torch."""
    code = ("import sys, meshdream.cli, meshdream.batching.runner, meshdream.config, meshdream.atomic_files, "
            "meshdream.engine.run, meshdream.engine.provenance; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PACKAGE.parent)
    assert out.stdout.strip() == "False"
