"""The package's layering: lower layers never import the stages, and no stage imports a sibling stage."""
import ast
from pathlib import Path

import meshdream

PACKAGE = Path(meshdream.__file__).parent
# the API, the CLI and the Ray batch driver sit above the stages (they run them)
ENTRY_POINTS = {"meshdream", "meshdream.__main__", "meshdream.cli", "meshdream.batching.runner"}
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
