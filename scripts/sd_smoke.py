"""A real-size smoke run of the GPU presets on the CPU: Stable Diffusion 2.1-base-sized and DeepFloyd IF-I-M-sized
components with random weights, saved as diffusers folders and driven through ``meshdream generate`` (the CLI,
in this process) for a few steps at the presets' real resolutions. Not a quality check (the weights are
random): it shows that every shape, dtype and file on the way from the prompt to a GLB fits at real size, and
what a step and a stage cost in time and memory on this machine.

    nice -n 10 python scripts/sd_smoke.py [--work DIR] [--only sd|if] [--coarse-iters 2] [--refine-iters 2]

Components (random weights, published architectures):
- sd: UNet2DConditionModel with stable-diffusion-2-1-base's unet config (865.9 M parameters), the SD VAE
  (AutoencoderKL, 4 levels 128-512 channels, 83.7 M), a CLIPTextModel of the OpenCLIP ViT-H text tower's width
  (hidden 1024, 16 heads, MLP 4096, 77 positions) with 2 of its 23 layers, a character-level CLIP tokenizer
  built offline (the real BPE vocabulary is not here), SD's DDPM schedule (scaled_linear 0.00085-0.012, epsilon).
- if: a pixel-space stage-I UNet of IF-I-M's size (64 px, 3 -> 6 channels, model channels 192 x (1, 2, 3, 4),
  3 res blocks per level, 64-channel heads, T5 width 4096 projected to 768; 371.6 M parameters against the
  400 M the DeepFloyd IF README lists: the config is written after diffusers' IF conversion, not read from the
  hub), a T5EncoderModel of T5 v1.1 XXL's width (d_model 4096, 64 heads of 64, gated-GELU FFN 10240) with 2
  of its 24 layers, an offline Unigram tokenizer, IF's squaredcos DDPM schedule with learned variance.

``--preset sd`` runs with ``--guidance SD_DIR``; ``--preset if`` (IF for coarse, SD for refine, as Magic3D)
with ``coarse.guidance.name=IF_DIR refine.guidance.name=SD_DIR``. Every stage runs at the preset's sizes
(coarse: 64 px NeRF renders -> 512 px -> 64x64 latents for SD, 64 px pixels for IF; refine: 512 px mesh
renders, a 1024 px texture, up to 100k faces); only the step counts are cut. Printed per stage: wall seconds,
seconds per step (each step) and the peak resident memory of this process (VmHWM, reset at each stage's
start); the GLB is checked (glTF 2.0 container, textured material, trimesh loads it) and, where the Khronos
validator is installed (the tests' cache), validated.
"""
from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SD21_BASE_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",), up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True, norm_num_groups=32, act_fn="silu",
    flip_sin_to_cos=True, freq_shift=0, upcast_attention=False)
SD_VAE = dict(in_channels=3, out_channels=3, block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
              up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4, norm_num_groups=32, sample_size=512,
              scaling_factor=0.18215)
IF_I_M_UNET = dict(
    sample_size=64, in_channels=3, out_channels=6, layers_per_block=3, block_out_channels=(192, 384, 576, 768),
    down_block_types=("ResnetDownsampleBlock2D",) + ("SimpleCrossAttnDownBlock2D",) * 3,
    up_block_types=("SimpleCrossAttnUpBlock2D",) * 3 + ("ResnetUpsampleBlock2D",), mid_block_type="UNetMidBlock2DSimpleCrossAttn",
    cross_attention_dim=768, attention_head_dim=64, encoder_hid_dim=4096, encoder_hid_dim_type="text_proj", addition_embed_type="text",
    addition_embed_type_num_heads=64, act_fn="gelu", time_embedding_act_fn="gelu", resnet_time_scale_shift="scale_shift",
    resnet_skip_time_act=True, resnet_out_scale_factor=1.414, upcast_attention=True, only_cross_attention=False, norm_num_groups=32)


def millions(module: torch.nn.Module) -> float:
    return round(sum(p.numel() for p in module.parameters()) / 1e6, 1)


def clip_tokenizer(folder: Path):
    """A CLIPTokenizer with a character vocabulary (no merges), 77 positions: built offline."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz,":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77, pad_token="<|endoftext|>")


def save_sd(folder: Path, text_layers: int) -> dict:
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    tok = clip_tokenizer(folder.parent / "_clip_tok")
    text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_attention_heads=16,
                                        num_hidden_layers=text_layers, max_position_embeddings=77, hidden_act="gelu",
                                        projection_dim=512, bos_token_id=0, eos_token_id=1, pad_token_id=1))
    unet = UNet2DConditionModel(**SD21_BASE_UNET)
    vae = AutoencoderKL(**SD_VAE)
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                          prediction_type="epsilon", steps_offset=1, clip_sample=False)
    StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=sched, safety_checker=None,
                            feature_extractor=None, requires_safety_checker=False).save_pretrained(str(folder))
    return {"unet_M": millions(unet), "vae_M": millions(vae), "text_encoder_M": millions(text)}


def save_if(folder: Path, text_layers: int) -> dict:
    from diffusers import DDPMScheduler, IFPipeline, UNet2DConditionModel
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import T5Config, T5EncoderModel, T5TokenizerFast

    torch.manual_seed(0)
    words = ["a", "red", "cube", "front", "side", "back", "overhead", "view", ","]
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [("\u2581" + w, -1.0) for w in words]
    pieces += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz,\u2581"]
    tk = Tokenizer(models.Unigram(pieces, unk_id=2))
    tk.pre_tokenizer = pre_tokenizers.Metaspace()
    tok = T5TokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=77,
                          extra_ids=0)
    text = T5EncoderModel(T5Config(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=text_layers, num_heads=64,
                                   feed_forward_proj="gated-gelu", is_encoder_decoder=False))
    unet = UNet2DConditionModel(**IF_I_M_UNET)
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", variance_type="learned_range")
    IFPipeline(tokenizer=tok, text_encoder=text, unet=unet, scheduler=sched, safety_checker=None, feature_extractor=None,
               watermarker=None, requires_safety_checker=False).save_pretrained(str(folder))
    return {"unet_M": millions(unet), "text_encoder_M": millions(text)}


def _hwm_reset() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
    except OSError:
        pass


def _status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


class StageMeter:
    """Per stage of generate: wall seconds, each step's seconds (from the stage loop's step hook) and the peak RSS."""

    def __init__(self):
        self.stages: dict[str, dict] = {}
        self._last = None

    def wrap(self, name: str, fn):
        def run(*args, **kwargs):
            _hwm_reset()
            entry = self.stages.setdefault(name, {"steps_s": []})
            entry["rss_start_mb"] = _status_mb("VmRSS")
            t0 = self._last = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                entry["seconds"] = round(time.perf_counter() - t0, 1)
                entry["peak_rss_mb"] = _status_mb("VmHWM")

        return run

    def step(self, stage: str, done: int) -> None:
        now = time.perf_counter()
        self.stages.setdefault(stage, {"steps_s": []})["steps_s"].append(round(now - self._last, 2))
        self._last = now


def check_glb(path: Path) -> dict:
    import trimesh

    data = path.read_bytes()
    magic, version, length = struct.unpack("<4sII", data[:12])
    chunk_len, chunk_type = struct.unpack("<I4s", data[12:20])
    doc = json.loads(data[20:20 + chunk_len])
    mesh = trimesh.load(str(path), force="mesh")
    out = {"ok": magic == b"glTF" and version == 2 and length == len(data) and chunk_type == b"JSON" and bool(doc.get("images"))
           and bool(doc.get("materials")) and len(mesh.faces) > 0,
           "bytes": len(data), "faces": int(len(mesh.faces)), "images": len(doc.get("images", []))}
    prefix = Path(os.environ.get("MESHDREAM_CACHE", Path.home() / ".cache" / "meshdream")) / "gltf-validator"
    if (prefix / "node_modules" / "gltf-validator").is_dir():
        r = subprocess.run(["node", str(ROOT / "tests" / "gltf_validate.js"), str(prefix), str(path)], capture_output=True, text=True,
                           timeout=300)
        if r.returncode == 0:
            report = json.loads(r.stdout)
            out["khronos_errors"], out["khronos_warnings"] = report["numErrors"], report["numWarnings"]
        else:
            out["khronos"] = r.stderr[-300:]
    return out


def run_generate(args: list[str]) -> tuple[StageMeter, Path]:
    """``meshdream generate ARGS`` through the CLI, timed per stage and step."""
    from meshdream.cli import cli
    from meshdream.stages import generate as generate_module
    from meshdream.engine.stage_loop import step_hook

    meter = StageMeter()
    originals = {name: getattr(generate_module, name) for name in ("coarse", "refine", "export")}
    for name, fn in originals.items():
        setattr(generate_module, name, meter.wrap(name, fn))
    try:
        with step_hook(meter.step):
            cli.main(args, standalone_mode=False)
    finally:
        for name, fn in originals.items():
            setattr(generate_module, name, fn)
    out = Path(args[args.index("--out") + 1])
    return meter, out / "export" / "model.glb"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default="sd_smoke_work", help="folder for the model folders and the RUNs")
    ap.add_argument("--only", choices=("sd", "if"), default=None)
    ap.add_argument("--coarse-iters", type=int, default=2)
    ap.add_argument("--refine-iters", type=int, default=2)
    ap.add_argument("--text-layers", type=int, default=2)
    a = ap.parse_args()
    work = Path(a.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    report: dict = {"torch": torch.__version__, "threads": torch.get_num_threads(), "presets": {}}
    sd_dir, if_dir = work / "sd21-base-random", work / "if-i-m-random"
    t0 = time.perf_counter()
    if not (sd_dir / "model_index.json").is_file():
        report["sd_components"] = save_sd(sd_dir, a.text_layers)
    if a.only != "sd" and not (if_dir / "model_index.json").is_file():
        report["if_components"] = save_if(if_dir, a.text_layers)
    report["build_seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps({k: v for k, v in report.items() if k != "presets"}), flush=True)
    common = ["--coarse-iters", str(a.coarse_iters), "--refine-iters", str(a.refine_iters), "--device", "cpu", "--no-video",
              "--quiet"]
    runs = {"sd": ["--preset", "sd", "--guidance", str(sd_dir)],
            "if": ["--preset", "if", f"coarse.guidance.name={if_dir}", f"refine.guidance.name={sd_dir}"]}
    for preset, extra in runs.items():
        if a.only and preset != a.only:
            continue
        run = work / f"run-{preset}"
        if run.exists():
            import shutil

            shutil.rmtree(run)
        t0 = time.perf_counter()
        meter, glb = run_generate(["generate", "a red cube", "--out", str(run), *extra, *common])
        entry = {"seconds": round(time.perf_counter() - t0, 1), "stages": meter.stages, "glb": check_glb(glb)}
        report["presets"][preset] = entry
        print(f"\n== --preset {preset}: {entry['seconds']} s, GLB {entry['glb']}")
        for stage, s in meter.stages.items():
            print(f"  {stage:7s} {s.get('seconds', '?'):>7} s  steps {s['steps_s']} s  peak RSS {s.get('peak_rss_mb', '?')} MB "
                  f"(at start {s.get('rss_start_mb', '?')} MB)", flush=True)
    (work / "sd_smoke.json").write_text(json.dumps(report, indent=1))
    print(f"\nwritten {work / 'sd_smoke.json'}")
    return 0 if all(p["glb"]["ok"] for p in report["presets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
