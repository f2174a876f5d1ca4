"""Every GPU preset as it resolves (--preset, --config configs/*.yaml with extends:, generate's routing), row by row
against the sourced table in docs/presets.md."""
from pathlib import Path

import pytest

from meshdream.config import build_config, load_config, preset_names, route_overrides
from meshdream.guidance.base import resolve_settings
from meshdream.guidance.pixel import IF_RECOMMENDED
from meshdream.guidance.stable_diffusion import SD_RECOMMENDED
from meshdream.stages.coarse import CoarseConfig
from meshdream.stages.refine import RefineConfig

ROOT = Path(__file__).resolve().parents[1]
STAGES = {"coarse": CoarseConfig, "refine": RefineConfig}
RECOMMENDED = {"stable-diffusion": SD_RECOMMENDED, "deepfloyd-if": IF_RECOMMENDED}


def doc_table() -> list[dict]:
    text = (ROOT / "docs" / "presets.md").read_text()
    body = text.split("<!-- preset-table -->")[1].split("<!-- /preset-table -->")[0]
    lines = [ln.strip() for ln in body.strip().splitlines()]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [dict(zip(header, (c.strip() for c in ln.strip("|").split("|")))) for ln in lines[2:]]
    assert rows and all(r["source"] for r in rows), "every row cites a source"
    return rows


def resolved(cfg) -> dict:
    """The settings the table lists, as the stage will use them (None guidance fields -> the model's recommendation)."""
    s = resolve_settings(cfg.guidance, RECOMMENDED[cfg.guidance.name])
    out = {"guidance.name": cfg.guidance.name, "resolution": cfg.resolution, "guidance_scale": s.guidance_scale, "t_min": s.t_min,
           "t_max": s.t_max, "t_max_end": s.t_max_end, "iters": cfg.iters, "checkpoint_every": cfg.checkpoint_every}
    if isinstance(cfg, CoarseConfig):
        out["nerf.kind"] = cfg.nerf.kind
    else:
        out["texture_size"] = cfg.texture_size
    return out


def ways_to_build(preset: str, stage: str) -> dict:
    """Every route a user has to the preset's stage config."""
    cls = STAGES[stage]
    ways = {f"--preset {preset}": build_config(cls, preset=preset),
            f"generate --preset {preset}": build_config(cls, None, preset, route_overrides([], STAGES)[stage])}
    path = ROOT / "configs" / f"{stage}-{preset}.yaml"
    if path.is_file():
        ways[f"--config {path.name}"] = load_config(cls, path)
    return ways


def _value(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def test_the_table_covers_every_preset_stage_and_setting():
    rows = doc_table()
    assert {r["preset"] for r in rows} == set(preset_names()) == {"sd", "if"}
    for preset in preset_names():
        for stage, cls in STAGES.items():
            listed = {r["setting"] for r in rows if (r["preset"], r["stage"]) == (preset, stage)}
            assert listed == set(resolved(build_config(cls, preset=preset))), (preset, stage)
    # the configs/ files are one-line extends of the presets
    assert {p.name for p in (ROOT / "configs").glob("*-*.yaml")} >= {"coarse-sd.yaml", "coarse-if.yaml", "refine-sd.yaml"}


@pytest.mark.parametrize("row", doc_table(), ids=lambda r: f"{r['preset']}-{r['stage']}-{r['setting']}")
def test_resolved_preset_matches_the_table(row):
    for way, cfg in ways_to_build(row["preset"], row["stage"]).items():
        got = resolved(cfg)[row["setting"]]
        want = _value(row["value"])
        assert (float(got) if isinstance(want, float) else got) == want, f"{way}: {row['setting']} = {got!r}, docs/presets.md says {want!r}"
