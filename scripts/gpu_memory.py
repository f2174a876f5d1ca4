"""GPU memory of the coarse and refine stages of each preset, estimated on a machine without a GPU.

    python scripts/gpu_memory.py [--json OUT.json] [--steps 4] [--device cuda]

Every number is bytes of tensors (each storage rounded up to the CUDA caching allocator's 512-byte blocks), the
most alive at once, which is what ``torch.cuda.max_memory_allocated`` reports on a GPU. How:

1. **The code path CUDA runs, on the CPU.** The hash grid and the field's MLP have C++ kernels for CPU tensors
   only (``_use_kernel`` in meshdream/nerf/hash_grid.py and mlp.py); on CUDA they run as plain PyTorch
   (``hash_grid_reference``, the ``nn.Linear`` stack), whose per-level corner indices, weights and features are
   tensors, several of them saved for backward. On the CPU the kernels keep all of that inside C++, out of the
   tracker's sight. So the tracked runs turn the kernels off (both ``_use_kernel`` return False while they
   run) and cast the guidance to fp16 as ``half_precision`` does on CUDA. The rasteriser stays our C++ one:
   its outputs have nvdiffrast's shapes (what nvdiffrast adds on CUDA is listed below).
2. **The whole stage, phase by phase.** ``coarse`` / ``refine`` run for real on the CPU, every tensor passing
   through torch's dispatcher tracked, with each part of the stage named as it runs: setup (guidance, prompt,
   field), the steps (each one's peak, and the SDS call inside it), occupancy updates, frame checks, previews,
   checkpoints, extraction (coarse), the mesh load + UV unwrap + texture bake (refine) and the outputs.
   ``--steps`` steps run, shaded ``lambertian`` (the most expensive mode a run takes), with the cadence shortened
   so that one preview, checkpoint and frame check fall among them; every phase keeps the stage's real sizes.
   ``--whole-stages`` runs the default stages as configured instead (all 400 + 200 steps, ~30 min each here):
   the step's peak is steady over a run, and the short runs give the same stage peaks within 3-7 % (docs/gpu.md).
3. **Guidance at real size** (presets): the models built on the meta device from their published
   architectures (scripts/sd_smoke.py) and counted in fp16; one SDS call (VAE encode with gradient for SD,
   the classifier-free-guided UNet on [uncond; cond], the loss and its backward to the images) traced under
   FakeTensorMode in fp16 at the preset's sizes. The preset's scene runs as in 2 with the embedded prior
   standing in for the model. Step = weights + max(scene at the SDS call + SDS peak, scene's peak from the SDS
   call until the backward has gone back through it + what the SDS call keeps for that backward (the VAE
   encoder's activations for SD), the scene's peak in the rest of the step); any other phase = weights + its
   scene peak.
4. **What CUDA allocates beyond the tensors**, through the caching allocator (so ``max_memory_allocated`` counts
   it), after PyTorch's sources: cuBLAS's workspace, 32 MiB per cuBLAS handle and stream on sm_90
   (CUDABlasHandlePool.cpp; the H200 is sm_90), handles being per thread: one for the forward ops, one for
   autograd's device thread, which runs the backward: 64 MiB, added to every stage; and the temporaries of ops
   whose CPU kernels need none (``cuda_temporary_bytes``): the backward of indexing (the hash grid's table
   gradient) sorts its indices, 48 bytes per index, and ``nonzero`` writes its result twice.
5. **Validation** against the H200 run of scripts/gpu_check.py (embedded prior, ``torch.cuda.max_memory_allocated``
   from the start of each stage: coarse 400 steps 589 MB, refine 200 steps 131 MB): the default coarse and
   refine stages tracked as in 1-2, the estimate / measurement ratio printed.

``--device cuda`` runs the same on a GPU and prints ``torch.cuda.max_memory_allocated`` of each phase beside
the tracked estimate (scripts/gpu_check.sh).

Not seen: cuDNN's convolution workspaces, the caching allocator's rounding of a request into a larger cached
block (up to 1 MiB each above 1 MiB), nvdiffrast's extra CUDA-path tensors (``rast_db``, ``uv_da`` and the
texture's mip stack: under 1 MB at the default refine's 64 px / 256 px, ~12 MB at the sd preset's 512 px / 1024
px) and buffers it allocates outside PyTorch (never counted by ``max_memory_allocated`` either), and small host
tensors a CUDA run keeps on the CPU (random draws before ``.to(device)``, checkpoint copies; under 1 MB).
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
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
CUBLAS_WORKSPACE_MB = 2 * 32.0  # 32 MiB per handle on sm_90; the forward thread's and autograd's (item 4 above)
CARDS_GB = (8, 12, 24, 40, 80)
STEP_PHASES = ("step", "sds")
# every step shades with normals (lambertian): the most expensive mode a run takes (after albedo_only_steps)
# a preset's scene with the embedded prior standing in for its guidance model (whose cost is traced apart)
STAND_IN = ["guidance.name=embedded", "guidance.guidance_scale=null", "guidance.t_max=null", "guidance.t_max_end=null"]
LAMBERTIAN = ["shading.albedo_only_steps=0", "shading.albedo=0", "shading.lambertian=1", "shading.textureless=0"]


def _block(nbytes: int) -> int:
    return 512 * math.ceil(nbytes / 512) if nbytes else 0


def _mb(nbytes: float) -> float:
    return round(nbytes / MB, 1)


def cuda_temporary_bytes(func, args: tuple, kwargs: dict, out) -> int:
    """Bytes an op allocates for itself on CUDA (through the caching allocator) and frees before it returns,
    after PyTorch's CUDA sources; the CPU op allocates none of it, so the tracker adds it for the op's duration.

    - ``index_put`` with accumulate (the backward of indexing: the hash grid's table lookup): the linear index, the
      sorted indices, their original order and an arange, 4 x int64 per index, and the radix sort's alternate key
      and value buffers, 2 x int64 more (index_put_with_sort_kernel, Indexing.cu): 48 bytes per index.
    - ``nonzero``: the result is written transposed ([ndim, M] int64) and then copied: its size again (Nonzero.cu)."""
    name = func.__name__
    if name.startswith(("index_put", "_index_put_impl_")):
        accumulate = args[3] if len(args) > 3 else (kwargs or {}).get("accumulate", False)
        if accumulate:
            return 48 * max((t.numel() for t in args[1] if isinstance(t, torch.Tensor)), default=0)
    if name.startswith("nonzero") and isinstance(out, torch.Tensor):
        return _block(out.numel() * out.element_size())
    return 0


class LiveBytes(TorchDispatchMode):
    """Bytes of tensor storage alive, op by op: every tensor an op reads or writes is registered by its storage
    (a weak reference) and forgotten once the storage is freed. The peak is kept per phase (``in_phase``) and per
    step (``new_step``); on CUDA (``cuda=True``) ``torch.cuda.max_memory_allocated`` is read per phase as well."""

    def __init__(self, cuda: bool = False):
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.ignored: set[int] = set()
        self.current = self.peak = 0
        self.phase = "other"  # guidance load, prompt, field, saving: what no phase below names
        self.phase_peaks: dict[str, int] = {}
        # per step: peak; live at the SDS call; peak from the SDS call until the backward has gone back through it
        # (``held``: the guidance model's saved activations are alive then) and peak outside that window
        self.steps: list[dict[str, int]] = []
        self.holding = False
        self.cuda = cuda
        self.cuda_phase_peaks: dict[str, float] = {}
        self.cuda_step_peaks: list[float] = []

    def ignore(self, tensors) -> None:
        """Never count these storages (a stand-in model's weights)."""
        self.ignored.update(t.untyped_storage()._cdata for t in tensors)

    def register(self, tensors) -> None:
        for t in tensors:
            if not isinstance(t, torch.Tensor):
                continue
            s = t.untyped_storage()
            key = s._cdata
            if key not in self.live and key not in self.ignored:
                n = _block(s.nbytes())
                self.live[key] = (StorageWeakRef(s), n)
                self.current += n
        self._note()

    def _note(self) -> None:
        self.peak = max(self.peak, self.current)
        self.phase_peaks[self.phase] = max(self.phase_peaks.get(self.phase, 0), self.current)
        if self.steps and self.phase in STEP_PHASES:
            step = self.steps[-1]
            step["peak"] = max(step["peak"], self.current)
            window = "held" if self.holding else "outside_sds"  # what the guidance keeps for the backward is alive?
            step[window] = max(step[window], self.current)

    def sweep(self) -> None:
        for key in [k for k, (ref, _) in self.live.items() if ref.expired()]:
            self.current -= self.live.pop(key)[1]

    def _flush_cuda(self) -> None:
        """Attribute the CUDA peak since the last phase change to the phase running until now."""
        if not self.cuda:
            return
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / MB
        self.cuda_phase_peaks[self.phase] = max(self.cuda_phase_peaks.get(self.phase, 0.0), peak)
        if self.steps and self.phase in STEP_PHASES:
            self.cuda_step_peaks[-1] = max(self.cuda_step_peaks[-1], peak)
        torch.cuda.reset_peak_memory_stats()

    @contextlib.contextmanager
    def in_phase(self, name: str) -> Iterator[None]:
        """Count what happens inside the block as phase ``name`` (phases nest: the SDS call inside a step)."""
        self.sweep()
        self._flush_cuda()
        outer, self.phase = self.phase, name
        self._note()
        try:
            yield
        finally:
            self.sweep()
            self._flush_cuda()
            self.phase = outer

    def new_step(self) -> None:
        self.sweep()
        self.steps.append({"peak": self.current, "outside_sds": self.current, "at_sds": 0, "held": 0})
        self.holding = False
        self.cuda_step_peaks.append(0.0)

    def at_sds(self) -> None:
        self.sweep()
        if self.steps:
            self.steps[-1]["at_sds"] = max(self.steps[-1]["at_sds"], self.current)

    def finish(self) -> None:
        self.sweep()
        self._flush_cuda()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.sweep()
        self.register(tree_flatten((args, kwargs))[0])
        out = func(*args, **(kwargs or {}))
        self.register(tree_flatten(out)[0])
        extra = cuda_temporary_bytes(func, args, kwargs, out)
        if extra:  # alive with the op's inputs and outputs, gone when it returns
            self.current += extra
            self._note()
            self.current -= extra
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
    """One SDS call + its backward to the images [batch, 3, render, render], in fp16, above the weights: its peak
    and what it keeps alive for the step's backward (``retained_mb``: the VAE encoder's saved activations for SD).
    Traced under FakeTensorMode (``device`` None), or run for real on ``device`` ("cuda": also
    torch.cuda.max_memory_allocated above the weights)."""
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
            del eps, grad, noise
            tracker.sweep()
            retained = tracker.current - base
            loss.backward()
        out = {"transient_mb": _mb(tracker.peak - base), "retained_mb": _mb(retained), "input": list(x.shape)}
        if cuda:
            torch.cuda.synchronize()
            out["cuda_measured_transient_mb"] = _mb(torch.cuda.max_memory_allocated() - cuda_base)
        return out


# ---- the stages, tracked on the code path CUDA runs ------------------------------------------------------------

@contextlib.contextmanager
def cuda_code_path() -> Iterator[None]:
    """Inside the block the hash grid and the MLP run their PyTorch implementations on CPU tensors too, as on CUDA
    (their C++ kernels would hide every intermediate tensor from the tracker)."""
    from meshdream.nerf import hash_grid, mlp

    with contextlib.ExitStack() as stack:
        for module in (hash_grid, mlp):
            stack.callback(setattr, module, "_use_kernel", module._use_kernel)
            module._use_kernel = lambda *args: False
        yield


def half_precision_as_on_cuda(guide) -> None:
    """The embedded prior as ``half_precision`` loads it on CUDA: UNet and text encoder in fp16 (a CPU load
    keeps fp32)."""
    from meshdream.guidance.pixel import PixelGuidance
    from meshdream.guidance.text import load_text_model

    if not isinstance(guide, PixelGuidance) or guide.dtype == torch.float16 or not guide.config.half_precision:
        return
    guide.unet.half()
    guide.dtype = torch.float16
    path, device, _, _ = guide._text_args
    guide._text_args = (path, device, torch.float16, "fp16")
    guide.tokenizer, guide._encode = load_text_model(*guide._text_args)


def _in_phase(tracker: LiveBytes, name: str, fn: Callable, new_step: bool = False) -> Callable:
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        if new_step:
            tracker.new_step()
        with tracker.in_phase(name):
            return fn(*args, **kwargs)

    return wrapped


class _HeldForBackward(torch.autograd.Function):
    """Identity on the SDS images [B, 3, H, W] that marks the window in which a guidance model's activations saved
    for the backward are alive: from the SDS call until the step's backward has gone back through it."""

    @staticmethod
    def forward(ctx, images, tracker):
        ctx.tracker = tracker
        tracker.holding = True
        return images.view_as(images)

    @staticmethod
    def backward(ctx, grad):
        ctx.tracker.holding = False
        return grad, None


def _guidance_loader(tracker: LiveBytes, real_load: Callable, stand_in: bool) -> Callable:
    """load_guidance, with the SDS call marked as a phase, fp16 as on CUDA; a ``stand_in``'s weights uncounted."""

    def load(config, device):
        guide = real_load(config, device)
        half_precision_as_on_cuda(guide)
        if stand_in:
            tracker.ignore(guide.unet.parameters())
        real_sds = guide.sds_loss

        def sds(images, *args, **kwargs):
            tracker.at_sds()
            with tracker.in_phase("sds"):
                return real_sds(_HeldForBackward.apply(images, tracker), *args, **kwargs)

        guide.sds_loss = sds
        return guide

    return load


@contextlib.contextmanager
def phases_marked(tracker: LiveBytes, stand_in: bool) -> Iterator[None]:
    """Name the parts of coarse and refine as they run (module attributes patched within the block)."""
    from meshdream.engine import stage_loop
    from meshdream.nerf.volume_render import OccupancyGrid
    from meshdream.stages import coarse, refine

    real_run = stage_loop.StageLoop.run

    def run(loop, compute_loss, optimizer, preview, after_step=None):
        return real_run(loop, _in_phase(tracker, "step", compute_loss, new_step=True), optimizer,
                        _in_phase(tracker, "previews", preview),
                        None if after_step is None else _in_phase(tracker, "frame checks", after_step))

    patches = [(stage_loop.StageLoop, "run", run),
               (stage_loop, "optimizer_step", _in_phase(tracker, "step", stage_loop.optimizer_step)),
               (stage_loop.StageLoop, "checkpoint", _in_phase(tracker, "checkpoints", stage_loop.StageLoop.checkpoint)),
               (OccupancyGrid, "update", _in_phase(tracker, "occupancy updates", OccupancyGrid.update)),
               (coarse, "extract_mesh", _in_phase(tracker, "extraction", coarse.extract_mesh)),
               (coarse, "_save_mesh", _in_phase(tracker, "outputs", coarse._save_mesh)),
               # coarse mesh -> decimation, UV unwrap -> texture baked from the coarse field
               (refine, "_load_coarse", _in_phase(tracker, "mesh + bake", refine._load_coarse)),
               (refine, "save_textured_obj", _in_phase(tracker, "outputs", refine.save_textured_obj))]
    for module in (coarse, refine):
        patches.append((module, "load_guidance", _guidance_loader(tracker, module.load_guidance, stand_in)))
    with contextlib.ExitStack() as stack:
        for owner, name, value in patches:
            stack.callback(setattr, owner, name, getattr(owner, name))
            setattr(owner, name, value)
        yield


def cadence(stage: str, steps: int) -> list[str]:
    """Overrides that fit one of each periodic phase into ``steps`` steps (a preview, a checkpoint, and for coarse a
    frame check); their sizes stay the config's."""
    half = max(1, steps // 2)
    out = [f"iters={steps}", f"preview_every={half}", f"checkpoint_every={half}"]
    return out + ([f"collapse_check_every={max(1, half - 1)}"] if stage == "coarse" else [])


def track_stage(stage: str, preset: str | None, run_dir: Path, steps: int, device: str = "cpu", whole: bool = False) -> dict:
    """Run ``steps`` steps of ``stage`` (preset ``preset``, or the embedded defaults) and everything around them
    on the code path CUDA runs, tracked; ``whole``: the stage as configured (all its steps, its cadence and
    shading). A preset's guidance is the embedded prior standing in (uncounted).

    Returns MB per phase, per step (peak, peak outside the SDS call, live at the SDS call) and the stage peak;
    on CUDA also torch.cuda.max_memory_allocated per phase."""
    from meshdream.stages.coarse import coarse
    from meshdream.stages.refine import refine

    tracker = LiveBytes(cuda=torch.device(device).type == "cuda")
    # trace_unet: the CPU TorchScript trace of a pixel UNet cannot run under a dispatch mode (CUDA never traces)
    overrides = ["guidance.trace_unet=false"] + ([] if whole else cadence(stage, steps) + LAMBERTIAN)
    if preset is not None:
        overrides += STAND_IN
    if stage == "coarse":
        call = functools.partial(coarse, "a red cube", run_dir)
    else:
        call = functools.partial(refine, run_dir)
    t0 = time.perf_counter()
    if tracker.cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    with cuda_code_path(), phases_marked(tracker, stand_in=preset is not None), tracker:
        call(preset=preset, overrides=overrides, device=device, progress=False)
        tracker.finish()
    return summarise(tracker, time.perf_counter() - t0)


def summarise(tracker: LiveBytes, seconds: float) -> dict:
    steps = tracker.steps
    out = {"phases_mb": {k: _mb(v) for k, v in tracker.phase_peaks.items()},
           "steps_mb": [_mb(s["peak"]) for s in steps],
           "step_peak_mb": _mb(max(s["peak"] for s in steps)),
           "step_outside_sds_mb": _mb(max(s["outside_sds"] for s in steps)),
           "step_held_mb": _mb(max(s["held"] for s in steps)),
           "live_at_sds_mb": _mb(max(s["at_sds"] for s in steps)),
           "stage_peak_mb": _mb(tracker.peak), "seconds": round(seconds, 1)}
    if tracker.cuda:
        out["cuda_phases_mb"] = {k: round(v, 1) for k, v in tracker.cuda_phase_peaks.items()}
        out["cuda_steps_mb"] = [round(v, 1) for v in tracker.cuda_step_peaks]
        out["cuda_stage_peak_mb"] = round(max(tracker.cuda_phase_peaks.values()), 1)
    return out


def coarse_run_for_refine(run_dir: Path, preset: str | None, device: str = "cpu", whole: bool = False) -> None:
    """A finished coarse stage to refine, untracked (C++ kernels on the CPU). 4 steps (``whole``: all): the refine
    cost depends on the mesh limits, the texture size and the field's size, not on how well the field is trained."""
    from meshdream.stages.coarse import coarse

    overrides = ["preview_every=0", "checkpoint_every=1000"] + ([] if whole else ["iters=4"])
    if preset is not None:
        overrides += STAND_IN + ["nerf.kind=sdf", "sdf_beta_start=0.3"]  # an sdf field gives a mesh after 4 steps
    coarse("a red cube", run_dir, preset=preset, overrides=overrides, device=device, progress=False)


# ---- the report --------------------------------------------------------------------------------------------------

def validate(steps: int, device: str, whole: bool = False) -> dict:
    """The default (embedded prior) coarse and refine stages tracked, every phase, against the H200's stage peaks."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        out["coarse"] = track_stage("coarse", None, Path(tmp) / "run", steps, device, whole)
        run2 = Path(tmp) / "run2"
        coarse_run_for_refine(run2, None, device, whole)
        out["refine"] = track_stage("refine", None, run2, steps, device, whole)
    for stage, v in out.items():
        v["cublas_workspace_mb"] = CUBLAS_WORKSPACE_MB
        v["estimate_mb"] = round(v["stage_peak_mb"] + CUBLAS_WORKSPACE_MB, 1)
        v["h200_measured_mb"] = H200_MEASURED_MB[stage]
        v["ratio_estimate_to_measured"] = round(v["estimate_mb"] / H200_MEASURED_MB[stage], 2)
    return out


def preset_entry(kind: str, stage: str, weights: dict, transient: dict, scene: dict) -> dict:
    """One preset stage: weights + each phase of the tracked scene, the step with the traced SDS call."""
    w = weights[kind]
    resident = sum(v for n, v in w.items() if not (kind == "deepfloyd-if" and n == "text_encoder"))
    g = transient[(kind, stage)]
    # the scene at the SDS call + the call's peak; the scene while the call's saved activations wait for the backward
    # + those; the rest of the step
    step = resident + max(scene["live_at_sds_mb"] + g["transient_mb"], scene["step_held_mb"] + g["retained_mb"],
                          scene["step_outside_sds_mb"])
    phases = {"step": round(step, 1)}
    for name, mb in scene["phases_mb"].items():
        if name not in STEP_PHASES:
            phases[name] = round(resident + mb, 1)
    if kind == "deepfloyd-if":  # T5-XXL is loaded beside the UNet until the prompt is encoded
        phases["prompt encoding"] = round(w["unet"] + w["text_encoder"], 1)
    peak_phase = max(phases, key=phases.get)
    stage_peak = round(phases[peak_phase] + CUBLAS_WORKSPACE_MB, 1)
    return {"weights_mb": round(resident, 1), "scene_at_sds_mb": scene["live_at_sds_mb"], "sds_peak_mb": g["transient_mb"],
            "sds_retained_mb": g["retained_mb"], "scene_held_mb": scene["step_held_mb"],
            "scene_outside_mb": scene["step_outside_sds_mb"], "phases_mb": phases,
            "peak_phase": peak_phase, "stage_peak_mb": stage_peak, "fits": fits(stage_peak)}


def fits(total_mb: float) -> str:
    ok = [f"{g} GB" for g in CARDS_GB if total_mb <= g * 1024 * 0.92]  # ~8 % of a card is the CUDA context and reserve
    return ", ".join(ok) if ok else "none of 8-80 GB"


def presets(steps: int, device: str) -> dict:
    weights = {}
    with torch.device("meta"):
        for kind in ("stable-diffusion", "deepfloyd-if"):
            weights[kind] = parameter_mb(build_models(kind))
    real = None if device == "cpu" else device
    transient = {("stable-diffusion", "coarse"): guidance_transient_mb("stable-diffusion", 1, 64, real),
                 ("stable-diffusion", "refine"): guidance_transient_mb("stable-diffusion", 1, 512, real),
                 ("deepfloyd-if", "coarse"): guidance_transient_mb("deepfloyd-if", 1, 64, real)}
    print(json.dumps({"weights_fp16_mb": weights, "guidance_transient": {f"{k[0]}/{k[1]}": v for k, v in transient.items()}},
                     indent=1), flush=True)
    scene = {}
    with tempfile.TemporaryDirectory() as tmp:
        scene["coarse"] = track_stage("coarse", "sd", Path(tmp) / "c", steps, device)
        print(json.dumps({"scene/coarse": scene["coarse"]}, indent=1), flush=True)
        run = Path(tmp) / "r"
        coarse_run_for_refine(run, "sd", device)
        scene["refine"] = track_stage("refine", "sd", run, steps, device)
        print(json.dumps({"scene/refine": scene["refine"]}, indent=1), flush=True)
    entries = {}
    for preset, kinds in (("sd", {"coarse": "stable-diffusion", "refine": "stable-diffusion"}),
                          ("if", {"coarse": "deepfloyd-if", "refine": "stable-diffusion"})):
        for stage, kind in kinds.items():
            entries[f"{preset}/{stage}"] = preset_entry(kind, stage, weights, transient, scene[stage])
    return {"presets": entries, "weights_fp16_mb": weights, "scene": scene,
            "guidance_transient": {f"{k[0]}/{k[1]}": v for k, v in transient.items()}}


def print_validation(validation: dict) -> None:
    print("\n| stage | phase peaks (MB, tracked) | steps (MB) | + cuBLAS | estimate | H200 | ratio |")
    print("|---|---|---|---|---|---|---|")
    for stage, v in validation.items():
        phases = ", ".join(f"{k} {mb:.0f}" for k, mb in v["phases_mb"].items())
        print(f"| {stage} | {phases} | {min(v['steps_mb']):.0f}-{max(v['steps_mb']):.0f} | {v['cublas_workspace_mb']:.0f} | "
              f"{v['estimate_mb']:.0f} | {v['h200_measured_mb']:.0f} | {v['ratio_estimate_to_measured']:.2f} |")


def print_presets(entries: dict) -> None:
    print("\n| preset / stage | weights | step | peak phase | stage peak (+ cuBLAS) | fits |")
    print("|---|---|---|---|---|---|")
    for key, e in entries.items():
        print(f"| {key} | {e['weights_mb']:.0f} MB | {e['phases_mb']['step']:.0f} MB | {e['peak_phase']} "
              f"{e['phases_mb'][e['peak_phase']]:.0f} MB | {e['stage_peak_mb']:.0f} MB | {e['fits']} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", default=None)
    ap.add_argument("--steps", type=int, default=4, help="tracked steps per stage (at least 2: a preview comes at half)")
    ap.add_argument("--device", default="cpu", help="cuda: also run every part on the GPU and print the CUDA peaks")
    ap.add_argument("--validation-only", action="store_true", help="the embedded prior's stages only")
    ap.add_argument("--whole-stages", action="store_true",
                    help="validation: all 400 + 200 steps as configured (~40 min on a 2-core CPU, against ~1 min)")
    a = ap.parse_args()
    torch.manual_seed(0)
    report: dict = {"validation": validate(a.steps, a.device, a.whole_stages)}
    print(json.dumps(report["validation"], indent=1), flush=True)
    print_validation(report["validation"])
    if not a.validation_only:
        report.update(presets(a.steps, a.device))
        print_presets(report["presets"])
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
