"""The prompts file of ``meshdream batch``: one job per prompt, with optional per-prompt overrides.

Formats (chosen by the file's extension):

* ``.txt`` (or anything else): one prompt a line; blank lines and lines starting with ``#`` are skipped.
* ``.yaml`` / ``.yml``: a list whose items are a prompt string or a mapping ``{prompt: ..., <overrides>}``.
* ``.jsonl``: one JSON value a line, a prompt string or an object like the YAML mapping.

Overrides (all optional): ``slug`` (the job's folder name), ``seed``, ``coarse_iters``, ``refine_iters``,
``negative_prompt``, ``guidance``, ``coarse_config`` / ``refine_config`` (YAML paths, relative to the
prompts file) and ``coarse`` / ``refine`` (mappings of config keys, e.g. ``{extract: {resolution: 128}}``).
Everything is checked here, before any work: a bad file is a UserInputError naming the line.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..errors import UserInputError

SLUG_MAX = 60
OVERRIDE_KEYS = ("slug", "seed", "coarse_iters", "refine_iters", "negative_prompt", "guidance", "coarse_config",
                 "refine_config", "coarse", "refine")


@dataclass(frozen=True)
class PromptJob:
    """One prompt of a batch and its overrides (None: the batch's value)."""

    prompt: str
    slug: str
    where: str  # "prompts.txt line 3", for messages
    seed: int | None = None
    coarse_iters: int | None = None
    refine_iters: int | None = None
    negative_prompt: str | None = None
    guidance: str | None = None
    coarse_config: str | None = None  # absolute YAML path
    refine_config: str | None = None
    coarse: Mapping[str, Any] = field(default_factory=dict)  # config key overrides
    refine: Mapping[str, Any] = field(default_factory=dict)


def slugify(prompt: str) -> str:
    """Folder name of a prompt: lower case ASCII letters, digits and dashes ("A red cube!" -> "a-red-cube")."""
    slug = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")
    return slug[:SLUG_MAX].rstrip("-") or "prompt"


def _check_slug(slug: Any, where: str) -> str:
    if not isinstance(slug, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", slug):
        raise UserInputError(f"{where}: slug {slug!r} is not allowed; use letters, digits, '.', '_' and '-' "
                             "(starting with a letter or digit, at most 100 characters)")
    return slug


def _positive_int(value: Any, key: str, where: str, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (maximum is not None and value > maximum):
        limits = f">= {minimum}" + ("" if maximum is None else f" and <= {maximum}")
        raise UserInputError(f"{where}: {key} must be an integer {limits}, got {value!r}")
    return value


def _text(value: Any, key: str, where: str) -> str:
    from ..guidance.base import control_characters

    if not isinstance(value, str) or not value.strip():
        raise UserInputError(f"{where}: {key} must be a non-empty string, got {value!r}")
    bad = control_characters(value)
    if bad:
        raise UserInputError(f"{where}: {key} holds the control character {bad!r}; write plain text")
    return value


def _config_path(value: Any, key: str, where: str, base: Path) -> str:
    path = Path(_text(value, key, where)).expanduser()
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        raise UserInputError(f"{where}: {key} {str(path)!r} does not exist")
    return str(path.resolve())


def job_from_entry(entry: Any, where: str, base: Path) -> PromptJob:
    """A PromptJob from a prompt string or a mapping of a prompt and overrides."""
    if isinstance(entry, str):
        entry = {"prompt": entry}
    if not isinstance(entry, Mapping):
        raise UserInputError(f"{where}: expected a prompt string or a mapping with 'prompt', got {entry!r}")
    unknown = sorted(set(entry) - {"prompt", *OVERRIDE_KEYS})
    if unknown:
        raise UserInputError(f"{where}: unknown key {unknown[0]!r}; allowed keys: prompt, {', '.join(OVERRIDE_KEYS)}")
    if "prompt" not in entry:
        raise UserInputError(f"{where}: no 'prompt' given")
    prompt = " ".join(_text(entry["prompt"], "prompt", where).split())
    kw: dict[str, Any] = {}
    if "seed" in entry:
        kw["seed"] = _positive_int(entry["seed"], "seed", where, 0)
    for key in ("coarse_iters", "refine_iters"):
        if key in entry:
            from ..config import ITERS_MAX

            kw[key] = _positive_int(entry[key], key, where, 1, ITERS_MAX)
    for key in ("negative_prompt", "guidance"):
        if key in entry:
            kw[key] = _text(entry[key], key, where)
    for key in ("coarse_config", "refine_config"):
        if key in entry:
            kw[key] = _config_path(entry[key], key, where, base)
    for key in ("coarse", "refine"):
        if key in entry:
            if not isinstance(entry[key], Mapping):
                raise UserInputError(f"{where}: {key} must be a mapping of {key} config keys, got {entry[key]!r}")
            kw[key] = dict(entry[key])
    slug = _check_slug(entry["slug"], where) if "slug" in entry else slugify(prompt)
    return PromptJob(prompt=prompt, slug=slug, where=where, **kw)


def _entries(path: Path, text: str) -> Iterable[tuple[Any, str]]:
    """(entry, where) pairs of the file's format."""
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise UserInputError(f"prompts file {str(path)!r} is not valid YAML: {e}") from None
        if data is None:
            return []
        if not isinstance(data, list):
            raise UserInputError(f"prompts file {str(path)!r} must hold a YAML list of prompts, got {type(data).__name__}")
        return [(item, f"{path.name} item {i + 1}") for i, item in enumerate(data)]
    lines = [(i + 1, line.strip()) for i, line in enumerate(text.splitlines())]
    lines = [(n, line) for n, line in lines if line and not line.startswith("#")]
    if suffix == ".jsonl":
        out = []
        for n, line in lines:
            try:
                out.append((json.loads(line), f"{path.name} line {n}"))
            except json.JSONDecodeError as e:
                raise UserInputError(f"{path.name} line {n}: not valid JSON ({e.msg})") from None
        return out
    return [(line, f"{path.name} line {n}") for n, line in lines]


def read_prompts(path: str | os.PathLike) -> list[PromptJob]:
    """Jobs of a prompts file; an empty or unreadable file, a bad override or two jobs with one slug is a UserInputError."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"prompts file {str(path)!r} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserInputError(f"prompts file {str(path)!r} cannot be read: {getattr(e, 'strerror', None) or e}") from None
    base = path.resolve().parent
    jobs = [job_from_entry(entry, where, base) for entry, where in _entries(path, text)]
    if not jobs:
        raise UserInputError(f"prompts file {str(path)!r} holds no prompts; write one prompt a line")
    return check_unique_slugs(jobs)


def jobs_from_list(prompts: Iterable[Any], base: str | os.PathLike = ".") -> list[PromptJob]:
    """Jobs from Python values (prompt strings or mappings), checked like a prompts file."""
    jobs = [job_from_entry(entry, f"prompt {i + 1}", Path(base).resolve()) for i, entry in enumerate(prompts)]
    if not jobs:
        raise UserInputError("no prompts given")
    return check_unique_slugs(jobs)


def check_unique_slugs(jobs: list[PromptJob]) -> list[PromptJob]:
    seen: dict[str, PromptJob] = {}
    for job in jobs:
        key = job.slug.lower()  # case-insensitive file systems would merge them
        if key in seen:
            first = seen[key]
            raise UserInputError(f"{job.where}: slug {job.slug!r} is already used by {first.where} ({first.prompt!r}); "
                                 "give one of them another 'slug' (YAML/JSONL prompts file) or change the prompt")
        seen[key] = job
    return jobs
