#!/usr/bin/env python
"""Write docs/config.md, the configuration reference, from the config dataclasses themselves.

    python scripts/gen_config_docs.py            # rewrite docs/config.md
    python scripts/gen_config_docs.py --check    # exit 1 when docs/config.md is out of date

Every key of every stage config (nested sections expanded, dotted as on the command line), with its
type, its default (the CPU / embedded-prior settings), its allowed range (the same limits the config
loader checks), what the shipped presets set it to, and the comments written beside the field in the
code. tests/test_docs.py fails when the file differs from what this script writes.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import inspect
import io
import sys
import textwrap
import tokenize
import typing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

OUTPUT = ROOT / "docs" / "config.md"


def stage_configs() -> list[tuple[str, type, str]]:
    """(stage, config class, how it is set) of every stage with a YAML config, found through the public API so
    the script follows the modules wherever they live."""
    import meshdream

    out = []
    for stage in ("coarse", "refine"):
        module = importlib.import_module(getattr(meshdream, stage).__module__)
        cls = getattr(module, f"{stage.capitalize()}Config")
        out.append((stage, cls, f"`meshdream {stage} --config FILE`, `generate --{stage}-config FILE`, "
                                f"`{stage}.KEY=VALUE` in `generate`, section `{stage}:` of a preset"))
    return out


def _comments(cls: type) -> dict[str, str]:
    """{field name: the comment lines right above it and the comment on its own line(s)}, read from the
    class's source with the tokenizer (a '#' inside a string is not a comment)."""
    try:
        lines, _ = inspect.getsourcelines(cls)
    except (OSError, TypeError):
        return {}
    source = textwrap.dedent("".join(lines))
    by_line: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            by_line[tok.start[0]] = tok.string.lstrip("#").strip()
    text_lines = source.splitlines()
    out = {}
    body = ast.parse(source).body[0].body
    for node in body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above = []
        row = node.lineno - 1
        while row >= 1 and text_lines[row - 1].strip().startswith("#"):
            above.insert(0, by_line.get(row, ""))
            row -= 1
        inline = [by_line[r] for r in range(node.lineno, (node.end_lineno or node.lineno) + 1)
                  if r in by_line and not text_lines[r - 1].strip().startswith("#")]
        out[node.target.id] = " ".join(part for part in above + inline if part)
    return out


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is type(None):
        return "null"
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", typing.Union)):
        return " or ".join(_type_name(a) for a in args)
    if origin in (tuple, list):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return "[" + ", ".join(_type_name(a) for a in args) + "]"
        return f"list of {_type_name(args[0])}" if args else "list"
    return getattr(tp, "__name__", str(tp))


def _limits(field: dataclasses.Field) -> str:
    ge, gt, le = field.metadata.get("limits", (None, None, None))
    parts = [f"≥ {_num(ge)}" if ge is not None else "", f"> {_num(gt)}" if gt is not None else "",
             f"≤ {_num(le)}" if le is not None else ""]
    return ", ".join(p for p in parts if p)


def _num(v: Any) -> str:
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 1 << 16 and (v & (v - 1)) == 0:
        return f"2^{v.bit_length() - 1}"
    if isinstance(v, int) and not isinstance(v, bool) and v > 1 << 32:
        return f"2^64 - 1" if v == 2**64 - 1 else str(v)
    return str(v)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "`true`" if v else "`false`"
    if v is None:
        return "`null`"
    if v == "":
        return '`""`'
    if isinstance(v, (list, tuple)):
        return "`[" + ", ".join(_plain(x) for x in v) + "]`"
    return f"`{_plain(v)}`"


def _plain(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return f"{v:.1f}"
    return _num(v) if isinstance(v, int) else str(v)


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix[:-1]: data}
    out = {}
    for k, v in data.items():
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _rows(instance: Any, prefix: str = "") -> list[tuple[str, Any, dataclasses.Field, Any, str]]:
    """(dotted key, default value, field, type hint, description) of every field of dataclass ``instance``,
    nested sections expanded after their own row."""
    cls = type(instance)
    hints = typing.get_type_hints(cls)
    notes = _comments(cls)
    rows = []
    for f in dataclasses.fields(cls):
        value = getattr(instance, f.name)
        doc = notes.get(f.name, "")
        if dataclasses.is_dataclass(value):
            class_doc = inspect.getdoc(type(value)) or ""
            if class_doc.startswith(type(value).__name__ + "("):  # the signature dataclasses write, not a description
                class_doc = ""
            doc = doc or class_doc.split("\n")[0]
            rows.append((f"{prefix}{f.name}", value, f, hints[f.name], doc))
            rows += _rows(value, f"{prefix}{f.name}.")
        else:
            rows.append((f"{prefix}{f.name}", value, f, hints[f.name], doc))
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render() -> str:
    from meshdream.config import preset_data, preset_names

    out = [
        "# Configuration reference",
        "",
        "<!-- Written by scripts/gen_config_docs.py from the config dataclasses; do not edit by hand. "
        "tests/test_docs.py fails when it is out of date: run `python scripts/gen_config_docs.py`. -->",
        "",
        "Every setting of every stage, as a dotted key. Set them in a YAML file (nested sections, "
        "`extends: PRESET` to start from a preset), with `--preset NAME`, or as `KEY=VALUE` after a command's "
        "options (`iters=100 guidance.guidance_scale=50`); the order is defaults < preset < file < `KEY=VALUE`. "
        "Unknown keys and values outside the allowed range are usage errors that name the key. A stage records "
        "what it ran with in `RUN/<stage>/config.yaml`.",
        "",
        "Defaults are the CPU settings with the embedded prior; the preset columns show what "
        + ", ".join(f"`--preset {p}`" for p in preset_names()) + " set (blank: the default).",
        "",
    ]
    for title, cls, how in stage_configs():
        instance = cls()
        module = inspect.getsourcefile(cls)
        rel = Path(module).resolve().relative_to(ROOT).as_posix() if module else cls.__module__
        section = getattr(cls, "preset_section", None)
        presets = {p: _flatten(preset_data(p, section)) for p in preset_names()} if section else {}
        out += [f"## {title}", "", f"`{cls.__name__}` in `{rel}`; set with {how}.", ""]
        doc = inspect.getdoc(cls)
        if doc and not doc.startswith(cls.__name__ + "("):
            out += [_cell(" ".join(doc.split())), ""]
        head = ["key", "type", "default", "allowed"] + [f"`{p}`" for p in presets] + ["what it does"]
        out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for key, value, f, tp, doc in _rows(instance):
            if dataclasses.is_dataclass(value):
                cells = [f"**`{key}`**", "section", "", ""] + ["" for _ in presets] + [_cell(doc)]
            else:
                cells = [f"`{key}`", _type_name(tp), _value(value), _limits(f)]
                cells += [_value(presets[p][key]) if key in presets[p] else "" for p in presets]
                cells.append(_cell(doc))
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/config.md is out of date")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="file to write (default docs/config.md)")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.is_file() else ""
        if current != text:
            print(f"{args.output} is out of date: run python scripts/gen_config_docs.py", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
