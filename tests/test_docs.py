"""The documentation matches the code: the README's command reference holds every option's help, help
texts say what the code does, the configuration reference is current, links resolve, the package's long
description is the short README, and the project speaks only of itself (no words about how it was made)."""
from __future__ import annotations

import html
import importlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
README_MAX_LINES = 250

# Words about how the project was developed. Case-insensitive; each pattern is precise enough to leave
# ordinary uses alone ("leads to", pytest's scope="session", requests.Session(), setup_helpers).
DEVELOPMENT_WORDS = {
    "session": re.compile(r"(?<![.\w])sessions?\b", re.I),
    "sitting": re.compile(r"\bsittings?\b", re.I),
    "helper": re.compile(r"(?<![\w.])helpers?\b", re.I),
    "lead": re.compile(r"\blead's\b|\b(?:the|a|by|our|team|tech)\s+lead\b(?!\s+(?:to|in|into|on|up|away)\b)"
                       r"|\blead\s+(?:branch|engineer|developer|dev)\b", re.I),
    "sub-agent": re.compile(r"\bsub-?agents?\b", re.I),
    "issue number": re.compile(r"\bissues?\s*[-#]?\s*\d+\b", re.I),
}
# what other libraries call a session, removed from a line before it is searched
LIBRARY_SESSIONS = re.compile(r"""scope\s*=\s*["']session["']|\bSession\(|\bimport\s+Session\b""")
BINARY_SUFFIXES = {".png", ".gif", ".jpg", ".jpeg", ".mp4", ".glb", ".safetensors", ".so", ".pt", ".npz", ".bin",
                   ".whl", ".pyc"}
# third-party files shipped as they are (model-viewer's minified build and the licences of what it bundles)
VENDORED = ("meshdream/gallery_assets/",)


def repository_files() -> list[Path]:
    """Every file of the checkout that git tracks or would track (ignored build output left out), or, outside
    a git checkout, every file under the root but .git."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, check=True).stdout
        names = [n for n in out.decode().split("\0") if n]
    except (OSError, subprocess.CalledProcessError):
        names = [os.path.relpath(os.path.join(d, f), ROOT) for d, dirs, files in os.walk(ROOT)
                 if ".git" not in Path(d).relative_to(ROOT).parts for f in files]
    return [ROOT / n for n in sorted(set(names)) if (ROOT / n).is_file()]


def text_files() -> list[tuple[str, str]]:
    this = Path(__file__).resolve()
    out = []
    for path in repository_files():
        rel = path.relative_to(ROOT).as_posix()
        if path.resolve() == this or path.suffix.lower() in BINARY_SUFFIXES or rel.startswith(VENDORED):
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue
        out.append((rel, data.decode("utf-8", errors="replace")))
    return out


def development_words(text: str) -> list[tuple[int, str, str]]:
    """(line number, word, line) of every word about how the project was made."""
    hits = []
    for number, line in enumerate(text.splitlines(), 1):
        searched = LIBRARY_SESSIONS.sub("", line)
        for word, pattern in DEVELOPMENT_WORDS.items():
            if pattern.search(searched):
                hits.append((number, word, line.strip()))
    return hits


def test_the_word_patterns_catch_development_talk_and_leave_ordinary_uses():
    caught = ["Session 9 changed the speed", "in two sittings", "the lead's branch", "a helper's tests",
              "against issue 12's targets", "issue-11", "measured by the lead", "sub-agent", "(issue #26)"]
    for line in caught:
        assert development_words(line), line
    ordinary = ['@pytest.fixture(scope="session")', "start_new_session=True", "s = requests.Session()",
                "ort.InferenceSession(path)", "from pybind11.setup_helpers import build_ext",
                "this leads to a clear error", "lead to a box-filling ball", "the leading dimension", "misleading"]
    for line in ordinary:
        assert not development_words(line), line


def test_nothing_in_the_repository_speaks_of_how_it_was_developed():
    found = [f"{rel}:{n}: {word}: {line[:120]}" for rel, text in text_files() for n, word, line in development_words(text)]
    assert not found, ("words about how the project was made (key results by version, date or configuration; "
                       "history belongs in CHANGELOG.md and git):\n" + "\n".join(found))


def test_file_names_speak_only_of_the_project():
    names = [p.relative_to(ROOT).as_posix() for p in repository_files()]
    bad = [n for n in names if re.search(r"(^|/)(s\d+|session[^/]*|sitting[^/]*|issue[-_ ]?\d+[^/]*)(/|$)", n, re.I)]
    assert not bad, f"file names keyed by development round (key them by version, date or configuration): {bad}"


# --- the command reference -------------------------------------------------------------------------------

def _section(text: str, heading: str) -> str:
    m = re.search(rf"^## {re.escape(heading)}\s*$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert m, f"README.md has no '## {heading}' section"
    return m.group(1)


def _commands(group: click.Group, prefix: str = "meshdream"):
    """(command path, click command) of the group itself and of every command under it."""
    yield prefix, group
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from _commands(command, f"{prefix} {name}")
        else:
            yield f"{prefix} {name}", command


def _normal(text: str) -> str:
    return " ".join(html.unescape(text.replace("\\|", "|")).split())


def _reference_rows() -> list[list[str]]:
    rows = []
    for line in _section(README.read_text(encoding="utf-8"), "Command reference").splitlines():
        if line.startswith("|") and not re.match(r"^\|\s*-", line):
            rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
    return rows


def test_every_option_of_every_command_is_in_the_readme_command_reference():
    from meshdream.cli import cli

    rows = [r for r in _reference_rows() if len(r) >= 3]
    missing = []
    for path, command in _commands(cli):
        name = path.split()[-1]
        for param in command.params:
            if not isinstance(param, click.Option) or param.hidden or "--help" in param.opts:
                continue
            flag = max(param.opts, key=len)
            help_text = _normal(param.help or "")
            ok = any(re.search(rf"`{re.escape(flag)}(?![\w-])", r[0])
                     and name in [c.strip() for c in r[1].replace("`", "").split(",")]
                     and help_text in _normal(r[2]) for r in rows)
            if not ok:
                missing.append(f"| `{flag}` | {name} | {help_text} |")
    assert not missing, ("options missing from README.md's '## Command reference' table (or with another help "
                         "text there); rows to add or correct:\n" + "\n".join(missing))


def test_every_command_has_a_synopsis_line():
    from meshdream.cli import cli

    reference = _section(README.read_text(encoding="utf-8"), "Command reference")
    for path, command in _commands(cli):
        if path != "meshdream":
            assert re.search(rf"^{re.escape(path)}\b", reference, re.M), f"no synopsis line for `{path}`"


def test_render_help_says_what_render_does():
    from meshdream.cli import cli

    from meshdream.render import video as turntable  # the encoders' table: DEFAULT_VIEWS, MP4_FPS

    views = next(p for p in cli.commands["render"].params if p.name == "views")
    said = {fmt: int(n) for n, fmt in re.findall(r"(\d+) for (mp4|gif|png)", views.help)}
    assert said == turntable.DEFAULT_VIEWS, f"--views help says {said}, render draws {turntable.DEFAULT_VIEWS}"
    seconds = re.search(r"a (\d+(?:\.\d+)?) s turn", views.help)
    assert seconds and float(seconds.group(1)) == turntable.DEFAULT_VIEWS["mp4"] / turntable.MP4_FPS


# --- generated and linked documents ----------------------------------------------------------------------

def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_configuration_reference_is_up_to_date():
    gen = _load_script("gen_config_docs")
    current = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    assert current == gen.render(), "docs/config.md is out of date: run python scripts/gen_config_docs.py"


def test_the_configuration_reference_names_every_key():
    import meshdream
    from meshdream.config import config_keys

    text = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    for stage in ("coarse", "refine"):
        cls = getattr(importlib.import_module(getattr(meshdream, stage).__module__), f"{stage.capitalize()}Config")
        section = _section(text, stage)
        missing = [k for k in config_keys(cls) if f"| `{k}` |" not in section]
        assert not missing, f"docs/config.md, {stage}: keys missing: {missing}"


def test_readme_is_short_and_keeps_the_commands_ci_runs():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES})"
    for marker in ("<!-- main-command -->", "<!-- test-command -->"):
        i = lines.index(marker)
        assert lines[i + 1].startswith("```bash") and lines[i + 2].strip(), f"{marker} must precede a bash block"
    i = lines.index("<!-- test-command -->")
    assert "pytest" in lines[i + 2]


LINK = re.compile(r"\]\(([^)\s]+)\)|(?:src|href)=\"([^\"]+)\"")


def test_relative_links_in_readme_and_docs_resolve():
    documents = [README, ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").rglob("*.md"))]
    broken = []
    for doc in documents:
        for m in LINK.finditer(doc.read_text(encoding="utf-8")):
            target = (m.group(1) or m.group(2)).split("#")[0]
            if not target or re.match(r"^[a-z]+:", target):
                continue
            if not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(ROOT)} -> {target}")
    assert not broken, "links to files that do not exist:\n" + "\n".join(sorted(set(broken)))


def test_the_package_long_description_is_the_short_readme():
    out = subprocess.run([sys.executable, "setup.py", "--long-description"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    published = out.stdout.rstrip("\n")
    assert published == README.read_text(encoding="utf-8").rstrip("\n")
    assert len(published.splitlines()) <= README_MAX_LINES
    assert not development_words(published)


@pytest.mark.parametrize("path", ["CHANGELOG.md"])
def test_changelog_entries_are_versioned_and_dated(path):
    text = (ROOT / path).read_text(encoding="utf-8")
    from meshdream import __version__

    headings = re.findall(r"^## (.+)$", text, re.M)
    assert headings and any(__version__ in h for h in headings), f"{path} has no entry for {__version__}"
    dated = re.findall(r"^### (\d{4}-\d{2}-\d{2})\b", text, re.M)
    assert dated and dated == sorted(dated, reverse=True), f"{path}: dated entries, newest first: {dated}"
