import json

import numpy as np
import pytest
import torch

from meshdream.guidance import embedded_prior_path
from meshdream.prior.model import build_scheduler, build_text_encoder, build_tokenizer, build_unet, default_meta, save_prior
from meshdream.prior.primitives import COLOURS, SHAPES, caption, render_dataset


def test_renders_show_the_asked_colour_on_white():
    images, captions, shapes, colours = render_dataset(24, seed=5, resolution=32)
    assert images.shape == (24, 32, 32, 3) and images.dtype == np.uint8
    names = list(COLOURS)
    for img, cap, ci in zip(images, captions, colours):
        assert f" {names[ci]} " in cap
        corners = img[[0, 0, -1, -1], [0, -1, 0, -1]]
        assert (corners > 240).all()  # white background
        obj = img[(img < 235).any(-1)].astype(float)
        assert len(obj) > 20
        # the most saturated object pixels (not edges blended with the white background) carry the hue; shading
        # scales the albedo, so the direction of their mean names the colour: the asked one is the nearest of the
        # six (red and orange are 0.94 apart by this cosine, so a fixed threshold could not tell them apart)
        sat = obj.max(1) - obj.min(1)
        v = obj[sat >= np.percentile(sat, 80)].mean(0)
        cosines = [np.dot(v / np.linalg.norm(v), np.array(c) / np.linalg.norm(c)) for c in COLOURS.values()]
        assert int(np.argmax(cosines)) == ci, (names[ci], dict(zip(names, np.round(cosines, 3))))


def test_captions_and_views():
    assert caption("red", "cube", 0, 10) == "a red cube, front view"
    assert caption("orange", "torus", 170, 10) == "an orange torus, back view"
    _, captions, shapes, _ = render_dataset(12, seed=1, resolution=16)
    assert all(c.endswith(" view") for c in captions) and set(shapes) <= set(range(len(SHAPES)))


def test_tokenizer_and_save_load_round_trip(tmp_path):
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextModel

    tok = build_tokenizer()
    ids = tok("A Red cube, side view").input_ids
    assert tok.unk_token_id not in ids and len(ids) == 6
    assert tok("a teapot").input_ids[1] == tok.unk_token_id
    unet, text, sched = build_unet(32), build_text_encoder(len(tok)), build_scheduler()
    assert 1e6 < sum(p.numel() for p in unet.parameters()) < 3e6
    save_prior(tmp_path / "prior", unet, text, tok, sched, default_meta())
    (tmp_path / "prior" / "LICENSE").write_text("licence of these weights")
    save_prior(tmp_path / "prior", unet, text, tok, sched, default_meta())  # a new export keeps the folder's licence
    assert (tmp_path / "prior" / "LICENSE").read_text() == "licence of these weights"
    folder = str(tmp_path / "prior")
    u2 = UNet2DConditionModel.from_pretrained(folder, subfolder="unet")
    t2 = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder")
    tok2 = AutoTokenizer.from_pretrained(folder, subfolder="tokenizer")
    DDPMScheduler.from_pretrained(folder, subfolder="scheduler")
    assert tok2("a red cube").input_ids == tok("a red cube").input_ids
    x, t = torch.randn(1, 3, 32, 32), torch.tensor([10])
    e = t2(torch.tensor([tok("a red cube", padding="max_length", max_length=12).input_ids])).last_hidden_state
    assert torch.allclose(u2(x, t, e).sample, unet(x, t, text(torch.tensor([tok("a red cube", padding="max_length", max_length=12).input_ids])).last_hidden_state).sample, atol=1e-5)


def test_shipped_prior_is_small_and_described():
    folder = embedded_prior_path()
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size < 25 * 2 ** 20
    meta = json.loads((folder / "meshdream_prior.json").read_text())
    assert meta["resolution"] == 32 and set(SHAPES) <= set(meta["vocabulary"]) and meta["training"]["steps"] > 0
    # new weights drop the table (prior export): the shipped ones carry the evaluation of these weights (its
    # accuracy is recomputed, on a small sample, by test_shipped_prior_samples_show_the_prompted_shape_and_colour)
    ev = meta["evaluation"]
    assert ev["sampler"] in ("ddpm", "ddim") and len(ev["table"]) == len(SHAPES) * len(COLOURS)


def _renders(path, n, seed):
    images, _, shapes, colours = render_dataset(n, seed=seed, resolution=32)
    np.savez(path, images=images, shapes=np.array(shapes), colours=np.array(colours))
    return str(path)


@pytest.fixture(scope="module")
def judge(tmp_path_factory):
    """prior/evaluate.py's classifier, trained on a small set of renders; (classifier, accuracy on other renders)."""
    from meshdream.prior.evaluate import train_classifier

    folder = tmp_path_factory.mktemp("renders")
    return train_classifier(_renders(folder / "train.npz", 480, 101), _renders(folder / "check.npz", 120, 202), epochs=10,
                            log=lambda _: None)


def test_shipped_prior_samples_show_the_prompted_shape_and_colour(judge):
    """scripts/prior_eval.py's measurement, recomputed on a small sample: the held-out classifier reads the
    prompted shape and colour from images sampled from the shipped prior (2 prompts per colour, every shape),
    and reads only chance from the same prior sampled without the prompt (guidance scale 0)."""
    from meshdream.prior.evaluate import sample_prior
    from meshdream.prior.primitives import caption

    classifier, held_out = judge
    assert held_out["shape"] >= 0.85 and held_out["colour"] >= 0.95  # the judge is right on renders it never saw
    labels = [(i % len(SHAPES), i % len(COLOURS)) for i in range(2 * len(COLOURS))]
    prompts = [caption(list(COLOURS)[c], SHAPES[s], 45.0 * i, 30.0) for i, (s, c) in enumerate(labels)]
    shapes, colours = torch.tensor([s for s, _ in labels]), torch.tensor([c for _, c in labels])

    def accuracy(guidance_scale):
        images = sample_prior(str(embedded_prior_path()), prompts, guidance_scale=guidance_scale, steps=20, seed=0)
        with torch.no_grad():
            ps, pc = classifier(images)
        return float((ps.argmax(1) == shapes).float().mean()), float((pc.argmax(1) == colours).float().mean())

    shape, colour = accuracy(3.0)  # scripts/prior_eval.py's guidance scale
    assert shape >= 0.75 and colour >= 0.9, (shape, colour)
    _, unprompted = accuracy(0.0)
    assert unprompted <= 0.5, unprompted


def test_evaluation_table_of_a_prior(judge, tmp_path):
    """prior.evaluate.evaluate and markdown_table on a random 32 px prior: one row per shape x colour prompt,
    accuracies read by the classifier from that prior's own samples."""
    from tiny_models import save_tiny_pixel_prior

    from meshdream.prior.evaluate import evaluate, markdown_table

    table, images = evaluate(save_tiny_pixel_prior(str(tmp_path / "prior"), resolution=32), judge[0], samples_per_prompt=1, steps=2)
    assert images.shape == (len(SHAPES) * len(COLOURS), 3, 32, 32)
    assert set(table) == {f"{c} {s}" for s in SHAPES for c in COLOURS}
    with torch.no_grad():
        ps, pc = judge[0](images)
    for i, (key, (shape_acc, colour_acc)) in enumerate(table.items()):
        assert (shape_acc, colour_acc) == (float(ps[i].argmax() == SHAPES.index(key.split()[1])),
                                           float(pc[i].argmax() == list(COLOURS).index(key.split()[0])))
    md = markdown_table(table)
    assert md.count("\n") == len(SHAPES) + 2 and "| **all** |" in md


def test_prior_sampling_is_seeded_and_conditioned(tiny_prior):
    import pytest

    from meshdream.prior.evaluate import sample_prior

    prompts = ["a red cube, side view", "a blue sphere, front view"]
    a = sample_prior(tiny_prior, prompts, steps=3, seed=1)
    R = json.load(open(f"{tiny_prior}/unet/config.json"))["sample_size"]
    assert a.shape == (2, 3, R, R) and torch.isfinite(a).all()
    assert torch.equal(a, sample_prior(tiny_prior, prompts, steps=3, seed=1))
    # the prompt reaches the sampler through classifier-free guidance: same seed (same noise), another prompt,
    # another image; with guidance scale 0 only the unconditional branch is used, so the prompt cannot matter
    red, blue = ["a red cube, side view"], ["a blue sphere, front view"]
    assert not torch.equal(sample_prior(tiny_prior, red, steps=3, seed=1), sample_prior(tiny_prior, blue, steps=3, seed=1))
    assert torch.equal(sample_prior(tiny_prior, red, guidance_scale=0.0, steps=3, seed=1),
                       sample_prior(tiny_prior, blue, guidance_scale=0.0, steps=3, seed=1))
    assert not torch.equal(a, sample_prior(tiny_prior, prompts, steps=3, seed=1, sampler="ddim"))
    with pytest.raises(ValueError, match="'euler' is not one of ddpm, ddim"):
        sample_prior(tiny_prior, prompts, steps=3, sampler="euler")


def test_sds_background_drift_is_measured_per_timestep(tiny_prior, tmp_path):
    from meshdream.prior.evaluate import sds_background_drift

    images, captions, shapes, colours = render_dataset(36, seed=4, resolution=16)
    data = tmp_path / "heldout.npz"
    np.savez(data, images=images, captions=np.array(captions), shapes=np.array(shapes), colours=np.array(colours))
    drift = sds_background_drift(tiny_prior, str(data), fractions=(0.2, 0.8), per_colour=2, draws=1)
    assert list(drift) == [0.2, 0.8]
    assert all(np.isfinite(v).all() for v in drift.values())
    assert drift == sds_background_drift(tiny_prior, str(data), fractions=(0.2, 0.8), per_colour=2, draws=1)  # seeded
    assert drift != sds_background_drift(tiny_prior, str(data), guidance_scale=1.0, fractions=(0.2, 0.8), per_colour=2, draws=1)


def test_training_stops_mid_schedule_and_resumes_bit_identically(tmp_path):
    from safetensors.torch import load_file

    from meshdream.prior.train import PriorTrainConfig, train

    images, captions, _, _ = render_dataset(16, seed=6, resolution=16)
    np.savez(tmp_path / "train.npz", images=images, captions=np.array(captions))

    def run(name, **kw):
        cfg = PriorTrainConfig(data=str(tmp_path / "train.npz"), work=str(tmp_path / name / "work"), export=str(tmp_path / name / "prior"),
                               resolution=16, steps=4, batch_size=4, warmup=1, checkpoint_every=1, export_every=100, threads=1, **kw)
        logs = []
        train(cfg, log=logs.append)
        meta = json.loads((tmp_path / name / "prior" / "meshdream_prior.json").read_text())
        return logs, meta, load_file(str(tmp_path / name / "prior" / "unet" / "diffusion_pytorch_model.safetensors"))

    _, meta, _ = run("split", stop_at=2)
    assert meta["training"]["steps"] == 2  # exported at the stop, mid-schedule
    logs, meta, resumed = run("split")
    assert "resumed from" in logs[0] and meta["training"]["steps"] == 4
    _, _, straight = run("straight")
    assert resumed.keys() == straight.keys() and all(torch.equal(resumed[k], straight[k]) for k in straight)
