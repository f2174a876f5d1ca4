"""GPU memory of one coarse and one refine step of each preset, estimated on a machine without a GPU.

    python scripts/gpu_memory.py [--json OUT.json] [--validate-steps 3]

How (nothing here needs CUDA; every number is bytes of tensors, rounded up to the CUDA caching allocator's
512-byte blocks, at the moment of the step where the most are alive):

1. **Guidance weights**: the preset's models built on the meta device from their published architectures
   (scripts/sd_smoke.py: SD 2.1-base UNet + VAE, the OpenCLIP ViT-H text tower (23 layers, 1024 wide),
   IF stage I at XL size with T5 v1.1 XXL (24 layers, 4096 wide)), counted in fp16 (``half_precision``).
2. **Guidance transient**: one SDS call (VAE encode with gradient for SD, classifier-free-guided UNet on
   [uncond; cond], the SDS loss and its backward to the rendered images) traced under FakeTensorMode in fp16 at
   the preset's sizes, through meshdream's own ``encode_images`` / ``guided_eps`` / ``predict_eps``.
3. **Scene**: the stage itself (``coarse`` / ``refine``, the preset's field, render sizes, texture and mesh
   limits) run for a few real steps on the CPU with a small stand-in guidance, every tensor that passes
   through torch's dispatcher tracked (parameters, Adam moments, gradients, the activations saved for
   backward): the live bytes when the guidance is called, and the peak outside the guidance call.
   Estimate = weights + max(scene live at the SDS call + guidance transient, scene peak outside it).
4. **Validation** against the two measurements taken on an H200 with the embedded prior (the CUDA run of
   scripts/gpu_check.py: coarse 400 steps 589 MB peak, refine 200 steps 131 MB peak, torch.cuda.max_memory_allocated):
   the same tracking of the default (embedded prior) coarse and refine steps, guidance included.

What this does not see, stated rather than hidden: cuDNN / cuBLAS workspaces and the caching allocator's
fragmentation (segments of 2 MB / 20 MB), nvdiffrast's own buffers (our CPU rasteriser stands in for it),
and memory outside the steps (marching cubes, xatlas, previews, the turntable).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import tempfile
from pathlib import Path

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

MB = 2 ** 20
H200_MEASURED_MB = {"coarse": 589.0, "refine": 131.0}  # embedded prior, 400 + 200 steps (scripts/gpu_check.py on an H200)
CARDS_GB = (8, 12, 24, 40, 80)


def _block(nbytes: int) -> int:
    return 512 * math.ceil(nbytes / 512) if nbytes else 0


class LiveBytes(TorchDispatchMode):
    """Bytes of tensor storage alive, op by op: every tensor an op reads or writes is registered by its storage
    (a weak reference), and forgotten once the storage is freed."""

    def __init__(self):
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.current = self.peak = 0
        self.in_guidance = False
        self.peak_outside_guidance = 0

    def register(self, tensors) -> None:
        for t in tensors:
            if not isinstance(t, torch.Tensor):
                continue
            s = t.untyped_storage()
            key = s._cdata
            if key not in self.live:
                n = _block(s.nbytes())
                self.live[key] = (StorageWeakRef(s), n)
                self.current += n
        self.peak = max(self.peak, self.current)
        if not self.in_guidance:
            self.peak_outside_guidance = max(self.peak_outside_guidance, self.current)

    def sweep(self) -> None:
        for key in [k for k, (ref, _) in self.live.items() if ref.expired()]:
            self.current -= self.live.pop(key)[1]

    def reset_peaks(self) -> None:
        self.sweep()
        self.peak = self.peak_outside_guidance = self.current

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.sweep()
        self.register(tree_flatten((args, kwargs))[0])
        out = func(*args, **(kwargs or {}))
        self.register(tree_flatten(out)[0])
        return out


# ---- guidance models at real size -------------------------------------------------------------------------------

def _clip_h_text():
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_attention_heads=16,
                                        num_hidden_layers=23, max_position_embeddings=77, hidden_act="gelu", projection_dim=512))


def _t5_xxl():
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                                   feed_forward_proj="gated-gelu", is_encoder_decoder=False))


def if_unet_config(size: str) -> dict:
    """IF stage I UNet: IF-I-M as in sd_smoke.py; XL with its model channels 512 (x 1, 2, 3, 4) and a 2048-wide
    cross-attention (the published XL has 4.3 B parameters; the count is printed beside it)."""
    from sd_smoke import IF_I_M_UNET

    if size == "M":
        return dict(IF_I_M_UNET)
    return dict(IF_I_M_UNET, block_out_channels=(512, 1024, 1536, 2048), cross_attention_dim=2048)


def build_models(kind: str) -> dict[str, torch.nn.Module]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from sd_smoke import SD21_BASE_UNET, SD_VAE

    if kind == "stable-diffusion":
        return {"unet": UNet2DConditionModel(**SD21_BASE_UNET), "vae": AutoencoderKL(**SD_VAE), "text_encoder": _clip_h_text()}
    return {"unet": UNet2DConditionModel(**if_unet_config("XL")), "text_encoder": _t5_xxl()}


def parameter_mb(modules: dict, bytes_per: int = 2) -> dict[str, float]:
    return {n: round(sum(p.numel() for p in m.parameters()) * bytes_per / MB, 1) for n, m in modules.items()}


def guidance_transient_mb(kind: str, batch: int, render: int, device: str | None = None) -> dict:
    """Peak bytes above the weights of one SDS call + its backward to the images, in fp16: traced under FakeTensorMode
    (``device`` None), or run for real on ``device`` ("cuda": also torch.cuda.max_memory_allocated above the weights)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from meshdream.guidance.base import GuidanceConfig, guided_eps, resize, resolve_settings
    from meshdream.guidance.pixel import IF_RECOMMENDED, PixelGuidance
    from meshdream.guidance.stable_diffusion import SD_RECOMMENDED, StableDiffusionGuidance

    cuda = device is not None and torch.device(device).type == "cuda"
    mode = FakeTensorMode(allow_non_fake_inputs=True) if device is None else torch.device(device)
    with mode:
        default = torch.get_default_dtype()
        torch.set_default_dtype(torch.float16)  # built in fp16 (half_precision on CUDA)
        try:
            models = build_models(kind)
        finally:
            torch.set_default_dtype(default)
        models.pop("text_encoder")  # kept resident (SD) or released after the prompt (IF): counted as weights
        for m in models.values():
            m.eval().requires_grad_(False)
        tracker = LiveBytes()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            cuda_base = torch.cuda.memory_allocated()
        with tracker:
            tracker.register(t for m in models.values() for t in list(m.parameters()) + list(m.buffers()))
            base = tracker.current
            images = torch.rand(batch, 3, render, render, requires_grad=True)
            ctx_dim, ctx_len = (1024, 77) if kind == "stable-diffusion" else (4096, 77)
            cond = torch.randn(batch, ctx_len, ctx_dim)
            uncond = torch.randn(batch, ctx_len, ctx_dim)
            alphas = torch.linspace(0.999, 0.01, 1000)
            if kind == "stable-diffusion":
                g = object.__new__(StableDiffusionGuidance)
                g.vae, g.unet, g.dtype, g.resolution = models["vae"], models["unet"], torch.float16, 512
                settings = resolve_settings(GuidanceConfig(), SD_RECOMMENDED)
                x = g.encode_images(images)

                def predict(x_t, t, context):
                    return g.unet(x_t.to(g.dtype), t, encoder_hidden_states=context.to(g.dtype)).sample.float()
            else:
                g = object.__new__(PixelGuidance)
                g.unet, g._unet_call, g.dtype, g.resolution = models["unet"], None, torch.float16, 64
                settings = resolve_settings(GuidanceConfig(), IF_RECOMMENDED)
                x = resize(images, g.resolution) * 2 - 1
                predict = g.predict_eps
            t = torch.randint(20, 980, (batch,))
            noise = torch.randn(x.shape)
            eps = guided_eps(x, t, noise, cond, uncond, predict, alphas, settings.guidance_scale)
            grad = 0.5 * (eps - noise)
            loss = 0.5 * ((x.float() - (x.float() - grad).detach()) ** 2).sum() / batch
            loss.backward()
        out = {"transient_mb": round((tracker.peak - base) / MB, 1), "input": list(x.shape)}
        if cuda:
            torch.cuda.synchronize()
            out["cuda_measured_transient_mb"] = round((torch.cuda.max_memory_allocated() - cuda_base) / MB, 1)
        return out


# ---- the scene: real stage steps on the CPU ------------------------------------------------------------------

class _Stop(Exception):
    pass


def scene_step_mb(stage: str, preset: str | None, run_dir: Path, steps: int = 3, guidance_in_estimate: bool = False,
                  device: str = "cpu") -> dict:
    """Run ``steps`` steps of ``stage`` (preset ``preset``, or the embedded defaults) on the CPU under LiveBytes.

    Returns, for the last step: the peak outside the guidance call, the live bytes when the guidance is called,
    and (guidance_in_estimate) the peak including the guidance (the embedded prior's own run)."""
    from meshdream import guidance as guidance_module
    from meshdream.stages.coarse import coarse
    from meshdream.stages.refine import refine
    from meshdream.engine.stage_loop import step_hook

    tracker = LiveBytes()
    at_sds: list[int] = []
    real_load = guidance_module.load_guidance

    def load_wrapped(config, device):
        g = real_load(config, device)
        real_sds = g.sds_loss

        def sds(*a, **k):
            tracker.sweep()
            at_sds.append(tracker.current)
            tracker.in_guidance = not guidance_in_estimate
            try:
                return real_sds(*a, **k)
            finally:
                tracker.in_guidance = False

        g.sds_loss = sds
        return g

    cuda_peaks: list[float] = []

    def hook(name: str, done: int) -> None:
        if device == "cuda":
            torch.cuda.synchronize()
            cuda_peaks.append(torch.cuda.max_memory_allocated() / MB)
            torch.cuda.reset_peak_memory_stats()
        if done == steps:
            raise _Stop()
        tracker.reset_peaks()  # measure the next step on its own

    # trace_unet: the CPU TorchScript trace of a pixel UNet cannot run under a dispatch mode (CUDA never traces)
    overrides = [f"iters={steps + 10}", "preview_every=0", "checkpoint_every=1000", "guidance.trace_unet=false"]
    if preset is not None:
        # the preset's scene, with the embedded prior standing in for the guidance model (its cost is traced apart)
        overrides += ["guidance.name=embedded", "guidance.guidance_scale=null", "guidance.t_max=null", "guidance.t_max_end=null"]
    fn = coarse if stage == "coarse" else refine
    args = ("a red cube", run_dir) if stage == "coarse" else (run_dir,)
    stage_modules = [sys.modules["meshdream.stages.coarse"], sys.modules["meshdream.stages.refine"]]
    with contextlib.ExitStack() as stack:
        for mod in stage_modules:
            stack.callback(setattr, mod, "load_guidance", getattr(mod, "load_guidance"))
            setattr(mod, "load_guidance", load_wrapped)
        with step_hook(hook), tracker:
            try:
                fn(*args, preset=preset, overrides=overrides, device=device, progress=False)
            except _Stop:
                pass
    out = {"peak_outside_guidance_mb": round(tracker.peak_outside_guidance / MB, 1),
           "live_at_guidance_mb": round(at_sds[-1] / MB, 1), "peak_mb": round(tracker.peak / MB, 1)}
    if cuda_peaks:
        out["cuda_measured_step_peak_mb"] = round(cuda_peaks[-1], 1)
    return out


def coarse_run_for_refine(run_dir: Path, preset: str | None, device: str = "cpu") -> None:
    """A finished coarse stage to refine (few steps: the refine cost depends on the mesh limits, not on quality)."""
    from meshdream.stages.coarse import coarse

    overrides = ["iters=4", "preview_every=0", "checkpoint_every=1000"]
    if preset is not None:
        overrides += ["guidance.name=embedded", "guidance.guidance_scale=null", "guidance.t_max=null", "guidance.t_max_end=null",
                      "nerf.kind=sdf", "sdf_beta_start=0.3"]  # an sdf field gives a mesh after 4 steps
    coarse("a red cube", run_dir, preset=preset, overrides=overrides, device=device, progress=False)


def fits(total_mb: float) -> str:
    ok = [f"{g} GB" for g in CARDS_GB if total_mb <= g * 1024 * 0.92]  # ~8 % of a card is the CUDA context and reserve
    return ", ".join(ok) if ok else "none of 8-80 GB"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", default=None)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--device", default="cpu", help="cuda: also run every traced part for real and print the CUDA peaks")
    a = ap.parse_args()
    dev = a.device
    torch.manual_seed(0)
    report: dict = {"validation": {}, "presets": {}}

    # 4. validation: the embedded prior's own steps, guidance included
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        report["validation"]["coarse"] = scene_step_mb("coarse", None, run, a.steps, guidance_in_estimate=True, device=dev)
        run2 = Path(tmp) / "run2"
        coarse_run_for_refine(run2, None, dev)
        report["validation"]["refine"] = scene_step_mb("refine", None, run2, a.steps, guidance_in_estimate=True, device=dev)
    for stage, v in report["validation"].items():
        v["h200_measured_mb"] = H200_MEASURED_MB[stage]
        v["ratio_estimate_to_measured"] = round(v["peak_mb"] / H200_MEASURED_MB[stage], 2)
    print(json.dumps(report["validation"], indent=1), flush=True)

    # 1-3. the presets
    weights = {}
    with torch.device("meta"):
        for kind in ("stable-diffusion", "deepfloyd-if"):
            weights[kind] = parameter_mb(build_models(kind))
    real = None if dev == "cpu" else dev
    transient = {("stable-diffusion", "coarse"): guidance_transient_mb("stable-diffusion", 1, 64, real),
                 ("stable-diffusion", "refine"): guidance_transient_mb("stable-diffusion", 1, 512, real),
                 ("deepfloyd-if", "coarse"): guidance_transient_mb("deepfloyd-if", 1, 64, real)}
    print(json.dumps({"weights_fp16_mb": weights, "guidance_transient": {f"{k[0]}/{k[1]}": v for k, v in transient.items()}},
                     indent=1), flush=True)
    scene = {}
    with tempfile.TemporaryDirectory() as tmp:
        scene["coarse"] = scene_step_mb("coarse", "sd", Path(tmp) / "c", a.steps, device=dev)
        run = Path(tmp) / "r"
        coarse_run_for_refine(run, "sd", dev)
        scene["refine"] = scene_step_mb("refine", "sd", run, a.steps, device=dev)
    print(json.dumps({"scene": scene}, indent=1), flush=True)
    for preset, kinds in (("sd", {"coarse": "stable-diffusion", "refine": "stable-diffusion"}),
                          ("if", {"coarse": "deepfloyd-if", "refine": "stable-diffusion"})):
        for stage, kind in kinds.items():
            w = weights[kind]
            resident = sum(v for n, v in w.items() if not (kind == "deepfloyd-if" and n == "text_encoder"))
            s, g = scene[stage], transient[(kind, stage)]["transient_mb"]
            step = resident + max(s["live_at_guidance_mb"] + g, s["peak_outside_guidance_mb"])
            entry = {"weights_mb": round(resident, 1), "scene_at_sds_mb": s["live_at_guidance_mb"], "guidance_transient_mb": g,
                     "scene_peak_mb": s["peak_outside_guidance_mb"], "step_peak_mb": round(step, 1)}
            if kind == "deepfloyd-if":  # T5-XXL is loaded beside the UNet until the prompt is encoded
                entry["prompt_encoding_peak_mb"] = round(w["unet"] + w["text_encoder"], 1)
            entry["stage_peak_mb"] = max(entry["step_peak_mb"], entry.get("prompt_encoding_peak_mb", 0))
            entry["fits"] = fits(entry["stage_peak_mb"])
            report["presets"][f"{preset}/{stage}"] = entry
    report["weights_fp16_mb"] = weights
    report["guidance_transient"] = {f"{k[0]}/{k[1]}": v for k, v in transient.items()}
    report["scene"] = scene
    print("\n| preset / stage | weights | scene at SDS | SDS transient | scene peak | step peak | stage peak | fits |")
    print("|---|---|---|---|---|---|---|---|")
    for key, e in report["presets"].items():
        print(f"| {key} | {e['weights_mb']:.0f} MB | {e['scene_at_sds_mb']:.0f} MB | {e['guidance_transient_mb']:.0f} MB | "
              f"{e['scene_peak_mb']:.0f} MB | {e['step_peak_mb']:.0f} MB | {e['stage_peak_mb']:.0f} MB | {e['fits']} |")
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
