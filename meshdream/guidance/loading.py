"""Finding a guidance model: the embedded prior, a local diffusers folder, or a hub id.

Hub access is checked quickly up front (a DNS look-up), so an id that cannot be loaded offline gives a
clear error at once instead of minutes of retries.
"""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from ..errors import MeshdreamError, UserInputError

ALIASES = {
    "stable-diffusion": "stabilityai/stable-diffusion-2-1-base",
    "deepfloyd-if": "DeepFloyd/IF-I-XL-v1.0",
}


def embedded_prior_path() -> Path:
    return Path(__file__).resolve().parent / "embedded_prior"


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False
    finally:
        socket.setdefaulttimeout(old)


def unloadable(name: str, reason: str) -> UserInputError:
    return UserInputError(
        f"cannot load guidance model {name!r}: {reason}. Pass a local folder with the model in diffusers format "
        "(e.g. a downloaded snapshot: --guidance /path/to/stable-diffusion-2-1-base), or use the offline embedded "
        "prior: --guidance embedded"
    )


def resolve(name: str) -> tuple[str, dict]:
    """Map a guidance name to (path or hub id, model_index.json contents)."""
    if not name or not name.strip():
        raise UserInputError("the guidance name is empty; use 'embedded', 'stable-diffusion', 'deepfloyd-if', a hub id or a folder")
    if name == "embedded":
        path = embedded_prior_path()
        if not (path / "model_index.json").is_file():
            raise MeshdreamError(f"the embedded prior is missing from {path}; reinstall meshdream")
        return str(path), read_index(path / "model_index.json")
    target = ALIASES.get(name, name)
    local = Path(os.path.expanduser(target))
    if local.is_dir():
        index = local / "model_index.json"
        if not index.is_file():
            raise UserInputError(f"guidance folder {str(local)!r} has no model_index.json; it must be a diffusers pipeline folder")
        refuse_untrusted_files(local)
        index_data = read_index(index)
        check_model_files(local)
        return str(local), index_data
    looks_like_path = target.startswith((".", "/", "~")) or target.count("/") != 1
    if looks_like_path:
        raise UserInputError(f"guidance {name!r} is not a folder and not a hub id; use 'embedded', 'stable-diffusion', "
                             "'deepfloyd-if', an 'owner/name' hub id or a local diffusers folder")
    from huggingface_hub import hf_hub_download

    try:  # already in the local cache?
        return target, read_index(Path(hf_hub_download(target, "model_index.json", local_files_only=True)))
    except Exception:
        pass
    if not _hub_reachable():
        raise unloadable(target, "the Hugging Face hub is not reachable from here and the model is not in the local cache")
    try:
        return target, read_index(Path(hf_hub_download(target, "model_index.json")))
    except UserInputError:
        raise
    except Exception as e:
        raise unloadable(target, f"{type(e).__name__}: {str(e).splitlines()[0][:200]}") from None


def read_index(path: Path) -> dict:
    """model_index.json as a mapping, or a UserInputError naming the file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UserInputError(f"guidance model index {str(path)!r} cannot be read as JSON: {e}") from None
    if not isinstance(data, dict):
        raise UserInputError(f"guidance model index {str(path)!r} must hold a JSON object (a diffusers pipeline index), "
                             f"got a {type(data).__name__}")
    return data


def read_prior_meta(path: str) -> dict | None:
    """meshdream_prior.json of a local model folder (the embedded priors': vocabulary, recommended SDS
    settings), or None for folders without one (SD, IF, hub ids)."""
    meta_file = Path(path) / "meshdream_prior.json"
    if not (os.path.isdir(path) and meta_file.is_file()):
        return None
    data = read_index(meta_file)
    return data


# Files in which transformers / diffusers name Python code of the model folder itself ("auto_map",
# custom pipeline or component classes). meshdream never runs such code.
_CODE_KEYS = ("auto_map", "custom_pipeline")


def refuse_untrusted_files(folder: Path) -> None:
    """Refuse a local model folder whose configs ask to run the folder's own Python code, or whose weights
    exist only as pickles (.bin / .pt / .ckpt: loading a pickle can run code; meshdream reads safetensors)."""
    for part in sorted(p for p in Path(folder).iterdir() if p.is_dir()):
        pickles = [p.name for p in part.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl")]
        if pickles and not any(part.glob("*.safetensors")):
            raise UserInputError(
                f"guidance folder {str(folder)!r}: {part.name}/ holds its weights only as pickled files ({', '.join(sorted(pickles))}); "
                "meshdream loads weights from .safetensors only, because loading a pickle can run code. Convert them "
                "(safetensors.torch.save_file) or download the model's safetensors files")
    for cfg in sorted(Path(folder).glob("*/*config*.json")) + sorted(Path(folder).glob("*.json")):
        try:
            data = json.loads(cfg.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            continue  # unreadable files get their own message when loaded
        if isinstance(data, dict) and any(k in data for k in _CODE_KEYS):
            key = next(k for k in _CODE_KEYS if k in data)
            raise UserInputError(
                f"guidance folder {str(folder)!r} asks to run its own Python code ({key!r} in {cfg.relative_to(folder)}); "
                "meshdream never runs code from model folders (trust_remote_code is always off). Use a standard "
                "diffusers Stable Diffusion / DeepFloyd IF folder, or --guidance embedded")


def damaged(folder: str | os.PathLike, path: str | os.PathLike, error: BaseException | str) -> UserInputError:
    """The one message for a model-folder file a library cannot read (truncated, corrupted, not what it should be)."""
    detail = error if isinstance(error, str) else f"{type(error).__name__}: {str(error).strip().splitlines()[0][:200] if str(error).strip() else ''}"
    return unloadable(str(folder), f"its file {str(path)!r} is damaged or incomplete ({detail}); download or save the "
                                   "model again")


_TEXT_FILES = ("merges.txt", "vocab.txt")


def check_model_files(folder: str | os.PathLike) -> None:
    """Read every file of a local model folder the loaders will read (JSON configs and tokenizers, safetensors
    headers and sizes, tokenizer text files) and refuse the first damaged one with :func:`damaged`, before any
    model is built: the libraries' own errors (safetensors' SafetensorError, JSON and tokenizer errors) name no
    file, and some are not even exceptions a caller expects. Only headers are read (no weights)."""
    folder = Path(folder)
    parts = [folder] + sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    for part in parts:
        for path in sorted(part.iterdir()):
            if not path.is_file():
                continue
            try:
                if path.suffix == ".json":
                    data = json.loads(path.read_bytes().decode("utf-8"))
                    if not isinstance(data, dict):
                        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
                elif path.suffix == ".safetensors":
                    _check_safetensors(path)
                elif path.name in _TEXT_FILES:
                    path.read_bytes().decode("utf-8")
            except UserInputError:
                raise
            except Exception as e:  # whatever the parser raises: the file is not what its name says
                raise damaged(folder, path, e) from None


def _check_safetensors(path: Path) -> None:
    """The header of a safetensors file parses and its tensors cover the file exactly (a truncated file does not)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        f.keys()
