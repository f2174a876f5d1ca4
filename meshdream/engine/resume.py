"""Which settings a resumed stage may change.

A resumed stage continues its checkpoint with the config saved in it. Settings the user gives again
(a config file, CLI options) are compared with the saved ones: a change to a setting in
:data:`SAFE_ON_RESUME` (how long to run, learning rates, loss weights, guidance strength, checkpoint
and preview cadence, mesh extraction) is applied; any other change (model, seed, resolution, field
layout, texture size ...) would not continue the same optimisation, so it is refused with a message
listing every such setting, its saved value and the asked one.
"""
from __future__ import annotations

from typing import Any, Mapping, Type, TypeVar

from ..config import from_dict, merge, stage_config, to_dict
from ..errors import UserInputError

T = TypeVar("T")

# dotted config keys (a trailing ".*" covers a whole section)
SAFE_ON_RESUME = (
    "iters", "lr", "mlp_lr_scale", "background_lr", "lr_texture", "lr_vertices", "checkpoint_every", "preview_every", "preview_views", "preview_resolution",
    "orientation_weight", "sparsity_weight", "border_weight", "border_width", "eikonal_weight", "normal_smooth_weight", "laplacian_weight", "normal_weight", "max_frame_fill",
    "collapse_check_every", "restarts",
    "guidance.guidance_scale", "guidance.grad_clip", "guidance.t_min", "guidance.t_max", "guidance.t_max_end", "extract.*",
)


def is_safe(key: str) -> bool:
    return any(key == s or (s.endswith(".*") and key.startswith(s[:-1])) for s in SAFE_ON_RESUME)


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def changed_settings(saved: Any, asked: Any) -> dict[str, tuple[Any, Any]]:
    """{dotted key: (saved value, asked value)} for every setting that differs between two configs."""
    a, b = _flatten(to_dict(saved)), _flatten(to_dict(asked))
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def resume_config(cls: Type[T], saved_config: Mapping[str, Any], config, overrides: Mapping[str, Any], where: str) -> T:
    """The config a resumed stage runs with.

    ``saved_config``: the checkpoint's config; ``config``: a YAML path / dataclass given again (None: not
    given); ``overrides``: CLI / API values (None: not given). Without ``config`` only the given overrides
    are compared. Safe changes are applied; others raise a UserInputError naming them (``where``: the
    checkpoint, for the message)."""
    saved = from_dict(cls, saved_config)
    given = {k: v for k, v in overrides.items() if v is not None}
    asked = stage_config(cls, config, given) if config is not None else merge(saved, given)
    changes = changed_settings(saved, asked)
    refused = {k: v for k, v in changes.items() if not is_safe(k)}
    if refused:
        listed = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in refused.items())
        raise UserInputError(
            f"--resume continues {where}, and these settings cannot change while resuming: {listed}. Resume with the "
            "saved settings (drop those options), or start the stage over without --resume. Settings that can change on "
            f"--resume: {', '.join(SAFE_ON_RESUME)}")
    return merge(saved, _unflatten({k: new for k, (_, new) in changes.items()}))


def _unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out
