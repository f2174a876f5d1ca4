import math

import pytest
import torch

from meshdream.prior import shards, world
from meshdream.prior import world_eval as E
from meshdream.prior.latent import (LatentArchitecture, build_scheduler, build_text_encoder, build_unet, build_vae,
                                    build_world_tokenizer, default_meta, save_latent_prior)

TINY = LatentArchitecture(resolution=32, vae_blocks=(8, 8, 16), unet_blocks=(16, 32), norm_groups=8, vae_norm_groups=4,
                          text_dim=32, text_layers=1, attention_head_dim=8)


@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("latent-prior") / "prior")
    torch.manual_seed(0)
    tok = build_world_tokenizer()
    vae = build_vae(TINY)
    vae.register_to_config(scaling_factor=0.5)
    save_latent_prior(folder, vae, build_unet(TINY), build_text_encoder(TINY, len(tok)), tok, build_scheduler(), default_meta(TINY))
    return folder


def _perfect_outputs(prompts):
    """Logits that name exactly what each prompt asks for."""
    n = len(prompts)
    out = {"cls": torch.zeros(n, len(world.CLASSES)), "colour": torch.zeros(n, E.N_COLOURS),
           "presence": torch.full((n, E.N_SHAPES * E.N_COLOURS), -5.0), "view": torch.zeros(n, len(world.VIEWS))}
    for i, p in enumerate(prompts):
        out["cls"][i, p.cls] = 5
        if p.colour >= 0:
            out["colour"][i, p.colour] = 5
            out["presence"][i, p.cls * E.N_COLOURS + p.colour] = 5
        if p.pair[0] >= 0:
            a, ca, b, cb = p.pair
            out["presence"][i, a * E.N_COLOURS + ca] = out["presence"][i, b * E.N_COLOURS + cb] = 5
        if p.view >= 0:
            out["view"][i, p.view] = 5
    return out


def test_evaluation_prompts_cover_the_world_and_score_counts_what_it_should():
    prompts = E.evaluation_prompts(scenes_per_relation=3)
    kinds = {k: [p for p in prompts if p.kind == k] for k in ("primitive", "object", "scene", "asymmetric")}
    assert len(kinds["primitive"]) == 50 and len(kinds["object"]) == len(world.OBJECTS)
    assert len(kinds["scene"]) == 6 and len(kinds["asymmetric"]) == 2 * len(world.ASYMMETRIC)
    words = set(world.vocabulary())
    assert all(w in words for p in prompts for w in p.text.replace(",", " ").split())
    perfect = _perfect_outputs(prompts)
    assert E.score(perfect, prompts) == {"class": 1.0, "colour": 1.0, "both_present": 1.0, "asymmetric_view": 1.0}
    # a prior that always shows the front: half of the asymmetric prompts (the back views) fail
    front_only = dict(perfect, view=torch.zeros_like(perfect["view"]))
    front_only["view"][:, world.VIEWS.index("front")] = 5
    assert E.score(front_only, prompts)["asymmetric_view"] == 0.5
    # the second object of every scene missing
    missing = dict(perfect, presence=perfect["presence"].clone())
    for i, p in enumerate(prompts):
        if p.kind == "scene":
            missing["presence"][i, p.pair[2] * E.N_COLOURS + p.pair[3]] = -5
    assert E.score(missing, prompts)["both_present"] == 0.0


def test_classifier_and_sampled_evaluation_recomputed_on_a_tiny_sample(tiny_prior, tmp_path):
    for split in ("heldout_a", "heldout_b"):
        shards.make_shard(str(tmp_path), split, 0, 8, 32)
    clf, acc = E.train_world_classifier(shards.list_shards(str(tmp_path), "heldout_a"),
                                        shards.list_shards(str(tmp_path), "heldout_b"), epochs=1, width=8, log=lambda s: None)
    assert all(math.isnan(v) or 0.0 <= v <= 1.0 for v in acc.values())
    every = E.evaluation_prompts(scenes_per_relation=1)
    prompts = [next(p for p in every if p.kind == k) for k in ("primitive", "object", "scene", "asymmetric")]
    measures, images, expanded = E.evaluate_world(tiny_prior, clf, samples_per_prompt=2, steps=2, prompts=prompts)
    assert images.shape == (2 * len(prompts), 3, 32, 32) and 0 <= float(images.min()) and float(images.max()) <= 1
    assert set(measures) == set(E.TARGETS)
    again, images2, _ = E.evaluate_world(tiny_prior, clf, samples_per_prompt=2, steps=2, prompts=prompts)
    assert torch.equal(images, images2) and repr(again) == repr(measures)  # seeded (nan-safe comparison)
    with torch.no_grad():
        assert repr(E.score(clf(images), expanded)) == repr(measures)  # the numbers come from these images
    E.save_grid(images, str(tmp_path / "samples.png"), columns=2)
    from PIL import Image

    assert Image.open(tmp_path / "samples.png").size == (64, 32 * len(prompts))
