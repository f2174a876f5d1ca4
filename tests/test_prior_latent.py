import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from meshdream.prior import shards
from meshdream.prior.latent import LatentArchitecture
from meshdream.prior.latent_train import LatentTrainConfig, export, loss_curve, train

TINY = LatentArchitecture(resolution=32, vae_blocks=(8, 8, 16), unet_blocks=(16, 32), norm_groups=8, vae_norm_groups=4,
                          text_dim=32, text_layers=1, attention_head_dim=8)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("world"))
    for i in range(2):
        shards.make_shard(folder, "train", i, 6, 32)
    return folder


def tiny_config(data, work, **kw) -> LatentTrainConfig:
    settings = dict(data=data, work=str(work), export=str(work) + "-export", arch=TINY, vae_shards=1, train_shards=2, vae_steps=3,
                    vae_batch=4, unet_steps=4, batch_size=4, warmup=2, checkpoint_every=1, log_every=1, threads=1, wait_seconds=0.1)
    return LatentTrainConfig(**dict(settings, **kw))


def _weights(folder):
    from safetensors.torch import load_file

    return {sub: load_file(os.path.join(folder, sub, name)) for sub, name in
            (("unet", "diffusion_pytorch_model.safetensors"), ("vae", "diffusion_pytorch_model.safetensors"),
             ("text_encoder", "model.safetensors"))}


def test_training_killed_with_sigkill_resumes_bit_identically(tiny_data, tmp_path):
    straight = tiny_config(tiny_data, tmp_path / "straight")
    train(straight, log=lambda s: None)
    export(straight, log=lambda s: None)

    killed = tiny_config(tiny_data, tmp_path / "killed")
    # a real kill -9 in the middle of the UNet stage: after step 3's update, before its checkpoint
    script = textwrap.dedent(f"""
        import os, signal
        from tests.test_prior_latent import tiny_config
        from meshdream.prior.latent_train import train
        def log(line):
            if line.startswith("unet step 3/"):
                os.kill(os.getpid(), signal.SIGKILL)
        train(tiny_config({tiny_data!r}, {str(tmp_path / 'killed')!r}), log=log)
    """)
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.run([sys.executable, "-c", script], env=env, cwd=os.getcwd(), capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr[-2000:]
    logs = []
    train(killed, log=logs.append)
    assert any(line.startswith("unet: resumed from") and line.endswith("at step 2") for line in logs)
    export(killed, log=lambda s: None)
    a, b = _weights(straight.export), _weights(killed.export)
    for sub in a:
        assert a[sub].keys() == b[sub].keys() and all(torch.equal(a[sub][k], b[sub][k]) for k in a[sub]), sub
    meta = json.loads(open(os.path.join(killed.export, "meshdream_prior.json")).read())
    assert meta["training"]["unet_steps"] == 4 and meta["kind"] == "latent"
    assert [s for s, _ in loss_curve(killed, "unet", every=1)] == [1, 2, 3, 4]  # the replayed step counted once


def test_exported_prior_guides_through_the_stable_diffusion_path(tiny_data, tmp_path):
    import warnings

    from meshdream.guidance import GuidanceConfig, StableDiffusionGuidance, UnknownWordsWarning, load_guidance

    cfg = tiny_config(tiny_data, tmp_path / "w", unet_steps=2, vae_steps=2)
    train(cfg, log=lambda s: None)
    folder = export(cfg, log=lambda s: None)
    index = json.loads(open(os.path.join(folder, "model_index.json")).read())
    assert index["_class_name"] == "StableDiffusionPipeline" and index["vae"] == ["diffusers", "AutoencoderKL"]
    size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(folder) for f in fs)
    assert size < 40e6
    guide = load_guidance(GuidanceConfig(name=folder))
    assert isinstance(guide, StableDiffusionGuidance) and guide.resolution == 32
    assert guide.settings.guidance_scale == 7.5  # the folder's recommended settings, not SD's
    assert guide.vae.config.scaling_factor != 1.0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        emb = guide.encode_prompt("a red cube next to a teapot")
    assert any(issubclass(w.category, UnknownWordsWarning) and "teapot" in str(w.message) for w in caught)
    images = torch.rand(2, 3, 24, 24, requires_grad=True)  # the NeRF renders smaller; upsampled like SD pipelines
    out = guide.sds_loss(images, emb, torch.tensor([0.0, 180.0]), torch.tensor([20.0, 20.0]), 0.3,
                         torch.Generator().manual_seed(0))
    out.loss.backward()
    assert images.grad is not None and images.grad.abs().sum() > 0 and torch.isfinite(images.grad).all()


def test_training_continues_from_an_exported_folder(tiny_data, tmp_path):
    """``init``: the exported VAE is kept as it is and the UNet stage starts from the exported EMA weights."""
    first = tiny_config(tiny_data, tmp_path / "first", unet_steps=2)
    train(first, log=lambda s: None)
    export(first, log=lambda s: None)
    logs = []
    second = tiny_config(tiny_data, tmp_path / "second", init=first.export, unet_steps=0, threads=torch.get_num_threads() + 1)
    threads = torch.get_num_threads()
    train(second, log=logs.append)  # no UNet step: the exported weights come back unchanged
    assert torch.get_num_threads() == threads  # its own thread count only while it trains
    assert "vae: taken from " + first.export in logs and "unet: starting from " + first.export in logs
    assert not any(line.startswith("vae step") for line in logs)
    export(second, log=lambda s: None)
    a, b = _weights(first.export), _weights(second.export)
    for sub in a:
        assert all(torch.equal(a[sub][k], b[sub][k]) for k in a[sub]), sub
    meta = json.loads(open(os.path.join(second.export, "meshdream_prior.json")).read())
    assert meta["training"]["continued_from"]["unet_steps"] == 2
