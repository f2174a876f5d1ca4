import json
import os
import time
import warnings

import pytest
import torch

from meshdream.errors import UserInputError
from meshdream.guidance import GUIDANCE_KINDS, Guidance, GuidanceConfig, UnknownWordsWarning, load_guidance, register_guidance
from meshdream.guidance.base import ResolvedSettings, annealed_t_max, sample_timesteps
from meshdream.guidance.registry import kind_of
from tiny_models import save_tiny_deepfloyd_if, save_tiny_pixel_prior, save_tiny_stable_diffusion


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {"pixel": save_tiny_pixel_prior(str(root / "pixel")), "sd": save_tiny_stable_diffusion(str(root / "sd")),
            "sd_v": save_tiny_stable_diffusion(str(root / "sd_v"), prediction_type="v_prediction"),
            "if": save_tiny_deepfloyd_if(str(root / "if"))}


def sds_grad(guide, seed=0, scale_images=32, progress=0.3):
    emb = guide.encode_prompt("a red cube")
    img = torch.rand(2, 3, scale_images, scale_images, generator=torch.Generator().manual_seed(1))
    img = img.to(getattr(guide, "device", "cpu")).requires_grad_(True)  # renders live on the guidance's device
    out = guide.sds_loss(img, emb, torch.tensor([0.0, 120.0]), torch.tensor([10.0, 20.0]), progress, torch.Generator().manual_seed(seed))
    out.loss.backward()
    return img.grad, out


@pytest.mark.parametrize("kind, cls, res", [("sd", "StableDiffusionGuidance", 16), ("sd_v", "StableDiffusionGuidance", 16),
                                            ("if", "PixelGuidance", 16), ("pixel", "PixelGuidance", 16)])
def test_models_load_and_give_finite_nonzero_gradients(folders, kind, cls, res):
    guide = load_guidance(GuidanceConfig(name=folders[kind]))
    assert type(guide).__name__ == cls and guide.resolution == res
    grad, out = sds_grad(guide)
    assert grad.shape == (2, 3, 32, 32) and torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert out.timesteps.shape == (2,) and out.grad_norm > 0
    assert not any(p.requires_grad for p in guide.unet.parameters())  # frozen


def test_pixel_gradient_is_weighted_eps_difference(folders):
    """d loss / d x == w(t) (eps_cfg - eps) computed directly from the UNet, for the same draws."""
    guide = load_guidance(GuidanceConfig(name=folders["if"], guidance_scale=5.0))
    emb = guide.encode_prompt("a blue sphere")
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    az, el = torch.tensor([0.0]), torch.tensor([10.0])
    out = guide.sds_loss(x, emb, az, el, 0.0, torch.Generator().manual_seed(3))
    out.loss.backward()
    g = torch.Generator().manual_seed(3)
    t = sample_timesteps(1, guide.settings, 0.0, 1000, g)
    noise = torch.randn((1, 3, 16, 16), generator=g)
    a = guide.alphas_cumprod[t].view(1, 1, 1, 1)
    xin = x.detach() * 2 - 1
    xt = a.sqrt() * xin + (1 - a).sqrt() * noise
    cond, uncond = emb.select(az, el)
    with torch.no_grad():
        e_c = guide.unet(xt, t, encoder_hidden_states=cond).sample[:, :3]
        e_u = guide.unet(xt, t, encoder_hidden_states=uncond).sample[:, :3]
    expected = (1 - a) * (e_u + 5.0 * (e_c - e_u) - noise) * 2  # chain rule of x -> 2x - 1
    assert torch.allclose(x.grad, expected, atol=1e-4, rtol=1e-3)


def test_guidance_scale_and_clipping_change_the_gradient(folders):
    g1, _ = sds_grad(load_guidance(GuidanceConfig(name=folders["pixel"], guidance_scale=1.0)))
    g2, _ = sds_grad(load_guidance(GuidanceConfig(name=folders["pixel"], guidance_scale=50.0)))
    assert not torch.allclose(g1, g2)
    g3, out = sds_grad(load_guidance(GuidanceConfig(name=folders["pixel"], guidance_scale=50.0, grad_clip=1e-3)))
    # the clipped gradient w.r.t. model pixels is at most 1e-3; x -> 2x - 1 doubles it, resize spreads it
    assert g3.abs().max() <= 2e-3 + 1e-7


def test_view_dependent_embeddings(folders):
    guide = load_guidance(GuidanceConfig(name=folders["pixel"]))
    emb = guide.encode_prompt("a red cube")
    assert set(emb.cond) == {"front", "side", "back", "overhead"}
    cond, uncond = emb.select(torch.tensor([0.0, 90.0, 180.0, 0.0]), torch.tensor([0.0, 0.0, 0.0, 80.0]))
    for i, label in enumerate(["front", "side", "back", "overhead"]):
        assert torch.equal(cond[i], emb.cond[label][0])
    assert not torch.equal(emb.cond["front"], emb.cond["back"])
    flat = load_guidance(GuidanceConfig(name=folders["pixel"], view_dependent=False)).encode_prompt("a red cube")
    assert set(flat.cond) == {""}


def test_timestep_annealing():
    s = ResolvedSettings(guidance_scale=1, t_min=0.02, t_max=0.98, t_max_end=0.5)
    assert annealed_t_max(s, 0) == 0.98 and annealed_t_max(s, 1) == 0.5
    g = torch.Generator().manual_seed(0)
    late = sample_timesteps(2000, s, 1.0, 1000, g)
    early = sample_timesteps(2000, s, 0.0, 1000, g)
    assert late.min() >= 20 and late.max() <= 500 and early.max() > 900


def test_bad_timestep_range(folders):
    with pytest.raises(UserInputError, match="t_min"):
        load_guidance(GuidanceConfig(name=folders["pixel"], t_min=0.9, t_max=0.5))


def test_embedded_prior_loads_and_gives_gradient():
    guide = load_guidance("embedded")
    assert guide.resolution == guide.meta["resolution"]
    grad, _ = sds_grad(guide)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_unknown_words_warn_with_known_list():
    guide = load_guidance("embedded")
    with pytest.warns(UnknownWordsWarning, match=r"'teapot'.*it knows: .*cube"):
        guide.encode_prompt("a shiny teapot")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        guide.encode_prompt("a red cube")


@pytest.mark.parametrize("prompt, word", [("a red 立方体", "立方体"), ("a red cube 🧊", "🧊"), ("a röd cube", "röd")])
def test_non_ascii_unknown_words_are_warned(prompt, word):
    guide = load_guidance("embedded")
    with pytest.warns(UnknownWordsWarning, match=word):
        guide.encode_prompt(prompt)


def test_truncated_prompt_is_warned_with_what_was_kept():
    from meshdream.guidance.base import PromptTruncatedWarning

    guide = load_guidance("embedded")
    with pytest.warns(PromptTruncatedWarning, match=r"reads 12; only 'a red cube a red cube a red cube a red cube' is used"):
        guide.encode_prompt("a red cube " * 5)


@pytest.mark.parametrize("prompt", ["", "   "])
def test_empty_prompt_is_an_error(folders, prompt):
    with pytest.raises(UserInputError, match="empty"):
        load_guidance(GuidanceConfig(name=folders["pixel"])).encode_prompt(prompt)


def test_unloadable_hub_id_fails_fast_with_advice():
    t = time.time()
    with pytest.raises(UserInputError, match=r"stabilityai/stable-diffusion-2-1-base.*local folder.*--guidance embedded"):
        load_guidance("stable-diffusion")
    assert time.time() - t < 10


@pytest.mark.parametrize("name, match", [("./no/such/folder", "not a folder"), ("", "empty")])
def test_bad_guidance_names(name, match):
    with pytest.raises(UserInputError, match=match):
        load_guidance(name)


def test_folder_without_index(tmp_path):
    with pytest.raises(UserInputError, match="model_index.json"):
        load_guidance(str(tmp_path))


class _ToyGuidance(Guidance):
    """A guidance family a user might add: it claims folders of its own pipeline class."""

    built: list = []

    @classmethod
    def accepts(cls, index):
        return index.get("_class_name") == "ToyPipeline"

    def __init__(self, path, config, device="cpu"):
        type(self).built.append(path)
        self.config, self.resolution = config, 8


def _toy_folder(tmp_path, class_name="ToyPipeline"):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": class_name}))
    return str(tmp_path)


def test_a_registered_family_is_the_one_loaded(tmp_path, folders):
    path = _toy_folder(tmp_path)
    register_guidance("toy")(_ToyGuidance)
    try:
        assert kind_of(json.loads((tmp_path / "model_index.json").read_text()), path) == "toy"
        guide = load_guidance(path)
        assert isinstance(guide, _ToyGuidance) and _ToyGuidance.built == [path]
        assert type(load_guidance(folders["pixel"])).__name__ == "PixelGuidance"  # the built-ins still route
    finally:
        GUIDANCE_KINDS.pop("toy")
    with pytest.raises(UserInputError, match="no registered family accepts it"):
        load_guidance(path)


def test_each_family_declares_the_folders_it_accepts(folders):
    kinds = {name: kind_of(json.loads(open(os.path.join(path, "model_index.json")).read()), path) for name, path in folders.items()}
    assert kinds == {"pixel": "pixel", "sd": "latent", "sd_v": "latent", "if": "pixel"}
    assert GUIDANCE_KINDS["latent"].accepts({"_class_name": "StableDiffusionPipeline", "vae": [], "unet": []})
    assert not GUIDANCE_KINDS["pixel"].accepts({"_class_name": "StableDiffusionPipeline", "vae": [], "unet": []})


def test_a_constructor_bug_is_not_reported_as_an_unloadable_model(tmp_path):
    class Buggy(_ToyGuidance):
        @classmethod
        def accepts(cls, index):
            return index.get("_class_name") == "BuggyPipeline"

        def __init__(self, path, config, device="cpu"):
            return {}["a key the code forgot"]

    register_guidance("buggy")(Buggy)
    try:
        with pytest.raises(KeyError, match="a key the code forgot") as e:
            load_guidance(_toy_folder(tmp_path, "BuggyPipeline"))
        assert not isinstance(e.value, UserInputError)
    finally:
        GUIDANCE_KINDS.pop("buggy")


def test_a_folder_the_libraries_cannot_read_is_unloadable(folders, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(folders["pixel"], broken)
    (broken / "scheduler" / "scheduler_config.json").write_text("{ not json")
    with pytest.raises(UserInputError, match=f"cannot load guidance model '{broken}'.*--guidance embedded"):
        load_guidance(str(broken))


@pytest.mark.cuda
def test_fp16_on_cuda(folders):
    guide = load_guidance(GuidanceConfig(name=folders["sd"]), "cuda")
    assert guide.unet.dtype == torch.float16
    grad, _ = sds_grad(guide)
    assert torch.isfinite(grad).all()


@pytest.mark.cuda
def test_fp16_deepfloyd_if_on_cuda_frees_t5(folders):
    """IF stage I in fp16 on CUDA: finite SDS gradient, and the T5 encoder is dropped after encoding."""
    guide = load_guidance(GuidanceConfig(name=folders["if"]), "cuda")
    assert guide.unet.dtype == torch.float16 and guide.release_text_encoder
    grad, _ = sds_grad(guide)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert guide._encode is None  # the T5 encoder is gone after the prompt was encoded


# ---------------------------------------------------------------- hand derivations (latent, v-prediction, negative prompt)

def _text_states(folder, texts):
    """The folder's own tokenizer and text encoder, loaded here (not through meshdream): [N, L, D]."""
    from transformers import AutoTokenizer, CLIPTextModel

    tok = AutoTokenizer.from_pretrained(folder, subfolder="tokenizer")
    text = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder").eval()
    ids = tok(texts, padding="max_length", max_length=min(tok.model_max_length, 77), truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        return text(ids).last_hidden_state


def _view_texts(prompt, azimuths, elevations):
    from meshdream.render.cameras import view_label, view_prompt

    return [view_prompt(prompt, view_label(float(a), float(e))) for a, e in zip(azimuths, elevations)]


def _latents_of(folder):
    """images [B, 3, 16, 16] in [0, 1] -> SD latents, through the VAE's encoder modules directly (the mean of
    the posterior is the first half of quant_conv's moments), loaded here from the folder."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae").eval().requires_grad_(False)
    return lambda img: vae.quant_conv(vae.encoder(img * 2 - 1))[:, :4] * vae.config.scaling_factor


def _eps_from_v(folder, v, x_t, t):
    """eps from a v-prediction through diffusers' own scheduler (x0 from its step), then the forward process
    x_t = sqrt(a) x0 + sqrt(1 - a) eps solved for eps."""
    from diffusers import DDPMScheduler

    sched = DDPMScheduler.from_pretrained(folder, subfolder="scheduler")
    assert sched.config.prediction_type == "v_prediction" and not sched.config.clip_sample
    out = []
    for i in range(len(t)):
        x0 = sched.step(v[i:i + 1], int(t[i]), x_t[i:i + 1], generator=torch.Generator().manual_seed(0)).pred_original_sample
        a = sched.alphas_cumprod[int(t[i])]
        out.append((x_t[i:i + 1] - a.sqrt() * x0) / (1 - a).sqrt())
    return torch.cat(out)


@pytest.mark.parametrize("kind", ["sd", "sd_v"])
def test_latent_gradient_is_the_encoders_vjp_of_the_weighted_eps_difference(folders, kind):
    """d loss / d images == J_enc^T w(t) (eps_cfg - eps) / B, with the VAE encoder's Jacobian J_enc, eps_cfg from
    the UNet called here on both contexts (v-prediction converted through diffusers' scheduler), and the
    negative prompt's encoding as the unconditional context."""
    from diffusers import UNet2DConditionModel

    folder, scale, B = folders[kind], 5.0, 2
    guide = load_guidance(GuidanceConfig(name=folder, guidance_scale=scale))
    assert guide.v_prediction == (kind == "sd_v")
    emb = guide.encode_prompt("red", negative_prompt="blue")  # short: the tiny tokenizer reads 16 characters
    az, el = torch.tensor([0.0, 120.0]), torch.tensor([10.0, 20.0])
    img = torch.rand(B, 3, 16, 16, generator=torch.Generator().manual_seed(1), requires_grad=True)
    guide.sds_loss(img, emb, az, el, 0.2, torch.Generator().manual_seed(3)).loss.backward()

    g = torch.Generator().manual_seed(3)  # the same draws, in the documented order: timesteps, then noise
    t = sample_timesteps(B, guide.settings, 0.2, 1000, g)
    latents_of = _latents_of(folder)
    z, pullback = torch.func.vjp(latents_of, img.detach())
    noise = torch.randn(z.shape, generator=g)
    a = guide.scheduler.alphas_cumprod[t].view(B, 1, 1, 1).float()
    z_t = a.sqrt() * z + (1 - a).sqrt() * noise
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet").eval()
    cond = _text_states(folder, _view_texts("red", az, el))
    uncond = _text_states(folder, ["blue"]).expand(B, -1, -1)
    with torch.no_grad():
        out_c = unet(z_t, t, encoder_hidden_states=cond).sample
        out_u = unet(z_t, t, encoder_hidden_states=uncond).sample
    if kind == "sd_v":
        out_c, out_u = _eps_from_v(folder, out_c, z_t, t), _eps_from_v(folder, out_u, z_t, t)
    grad_z = (1 - a) * (out_u + scale * (out_c - out_u) - noise)
    (expected,) = pullback(grad_z / B)
    assert expected.abs().max() > 1e-4  # a gradient worth comparing
    assert torch.allclose(img.grad, expected, atol=1e-5, rtol=1e-3), float((img.grad - expected).abs().max())


def test_negative_prompt_is_the_unconditional_context(folders):
    """The negative prompt (argument, else GuidanceConfig.negative_prompt, else empty) is what the UNet's
    unconditional half sees: the gradient matches the hand derivation with its encoding, and differs from
    the one without it."""
    folder = folders["pixel"]
    assert torch.allclose(load_guidance(GuidanceConfig(name=folder)).encode_prompt("a red cube").uncond,
                          _text_states(folder, [""]), atol=1e-6)
    from_config = load_guidance(GuidanceConfig(name=folder, negative_prompt="blue sphere"))
    assert torch.allclose(from_config.encode_prompt("a red cube").uncond, _text_states(folder, ["blue sphere"]), atol=1e-6)
    assert torch.allclose(from_config.encode_prompt("a red cube", negative_prompt="green torus").uncond,
                          _text_states(folder, ["green torus"]), atol=1e-6)

    guide = load_guidance(GuidanceConfig(name=folder, guidance_scale=5.0, trace_unet=False))
    x = torch.rand(1, 3, 16, 16)
    az, el = torch.tensor([0.0]), torch.tensor([10.0])

    def grad(negative):
        xi = x.clone().requires_grad_(True)
        guide.sds_loss(xi, guide.encode_prompt("a red cube", negative), az, el, 0.0, torch.Generator().manual_seed(3)).loss.backward()
        return xi.grad

    g = torch.Generator().manual_seed(3)
    t = sample_timesteps(1, guide.settings, 0.0, 1000, g)
    noise = torch.randn((1, 3, 16, 16), generator=g)
    a = guide.alphas_cumprod[t].view(1, 1, 1, 1)
    xt = a.sqrt() * (x * 2 - 1) + (1 - a).sqrt() * noise
    with torch.no_grad():
        e_c = guide.unet(xt, t, encoder_hidden_states=_text_states(folder, _view_texts("a red cube", az, el))).sample
        e_u = guide.unet(xt, t, encoder_hidden_states=_text_states(folder, ["blue sphere"])).sample
    expected = (1 - a) * (e_u + 5.0 * (e_c - e_u) - noise) * 2
    with_negative = grad("blue sphere")
    assert torch.allclose(with_negative, expected, atol=1e-5, rtol=1e-3)
    assert (with_negative - grad(None)).abs().max() > 1e-3  # the empty unconditional context gives another gradient


# ------------------------------------------------------------------ Perp-Neg


def _view_embeddings(L=3, D=4):
    from meshdream.guidance.base import PromptEmbeddings

    g = torch.Generator().manual_seed(0)
    cond = {v: torch.randn(1, L, D, generator=g) for v in ("front", "side", "back", "overhead")}
    return PromptEmbeddings("p", cond, torch.randn(1, L, D, generator=g), view_dependent=True)


def test_perp_neg_contexts_interpolate_the_views_and_weight_the_other_ones():
    """In front: the front prompt, the side pushed away (weight -(4 e^-0.5 ... ) = -1.574), the front not at all;
    behind: the back prompt, the front pushed away hardest; at 45 degrees halfway between front and side;
    overhead: its own prompt, no negative."""
    import math

    from meshdream.guidance.base import perp_neg_contexts

    emb = _view_embeddings()
    c = emb.cond
    pos, uncond, neg = perp_neg_contexts(emb, torch.tensor([0.0, 180.0, -45.0, 30.0]), torch.tensor([20.0, 20.0, 20.0, 80.0]))
    assert pos.shape == (4, 3, 4) and uncond.shape == (4, 3, 4) and neg.contexts.shape == (4, 2, 3, 4)
    assert torch.allclose(pos[0], c["front"][0]) and torch.allclose(pos[1], c["back"][0])
    assert torch.allclose(pos[2], 0.5 * c["front"][0] + 0.5 * c["side"][0]) and torch.allclose(pos[3], c["overhead"][0])
    f = lambda a, b, cc, r: a * math.exp(-b * r) + cc  # noqa: E731
    expected = [[-f(4, 0.5, -2.426, 1.0), -f(4, 0.5, -2.426, 0.0)], [-f(1, 0.5, -0.606, 0.0), -f(1, 0.5, 0.967, 0.0)],
                [-f(4, 0.5, -2.426, 0.5), -f(4, 0.5, -2.426, 0.5)], [0.0, 0.0]]
    assert torch.allclose(neg.weights, torch.tensor(expected), atol=1e-6)
    assert abs(neg.weights[0, 0]) < 1e-3 and neg.weights[1, 1] < neg.weights[1, 0] < 0  # behind: away from the front most
    assert torch.equal(neg.contexts[0, 0], c["front"][0]) and torch.equal(neg.contexts[0, 1], c["side"][0])
    assert torch.equal(neg.contexts[1, 0], c["side"][0]) and torch.equal(neg.contexts[1, 1], c["front"][0])


def test_perp_neg_guided_eps_against_a_hand_derivation():
    """eps = eps_u + s (e_pos + sum_k w_k (e_k - <e_k, e_pos> / |e_pos|^2 e_pos)), e = eps(context) - eps_u, on a toy
    model whose eps depends on the context; a negative parallel to the prompt's guidance changes nothing."""
    from meshdream.guidance.base import PerpNegatives, guided_eps

    g = torch.Generator().manual_seed(3)
    B, L, D = 2, 3, 4
    x, noise = torch.randn(B, 2, 5, 5, generator=g), torch.randn(B, 2, 5, 5, generator=g)
    t = torch.tensor([100, 700])
    alphas = torch.linspace(0.999, 0.01, 1000)
    mix = torch.randn(L * D, 2 * 5 * 5, generator=g)

    def predict_eps(x_t, tt, ctx):  # a different eps for every context, linear in it
        return x_t * 0.5 + (ctx.reshape(len(ctx), -1) @ mix).view(x_t.shape)

    cond, uncond = torch.randn(B, L, D, generator=g), torch.randn(B, L, D, generator=g)
    negs = torch.randn(B, 2, L, D, generator=g)
    w = torch.tensor([[-0.3, -1.5], [-2.0, 0.0]])
    out = guided_eps(x, t, noise, cond, uncond, predict_eps, alphas, 7.5, PerpNegatives(negs, w))

    a = alphas[t].view(B, 1, 1, 1)
    x_t = a.sqrt() * x + (1 - a).sqrt() * noise
    eu, ep = predict_eps(x_t, t, uncond), predict_eps(x_t, t, cond) - predict_eps(x_t, t, uncond)
    expected = ep.clone()
    for b in range(B):
        for k in range(2):
            ek = (predict_eps(x_t, t, negs[:, k]) - eu)[b]
            expected[b] += w[b, k] * (ek - (ek * ep[b]).sum() / (ep[b] * ep[b]).sum() * ep[b])
    assert torch.allclose(out, eu + 7.5 * expected, atol=1e-4)
    plain = guided_eps(x, t, noise, cond, uncond, predict_eps, alphas, 7.5)
    parallel = PerpNegatives(torch.stack([cond, cond], 1), w)  # the prompt itself as its negative: no perpendicular part
    assert torch.allclose(guided_eps(x, t, noise, cond, uncond, predict_eps, alphas, 7.5, parallel), plain, atol=1e-4)


@pytest.mark.parametrize("kind", ["sd", "pixel"])
def test_perp_neg_setting_reaches_the_model(folders, kind):
    """guidance.perp_neg: the model sees 4 contexts per image (uncond, prompt, two negatives), and the gradient
    differs from plain classifier-free guidance for the same draws."""
    plain = load_guidance(GuidanceConfig(name=folders[kind], trace_unet=False))
    perp = load_guidance(GuidanceConfig(name=folders[kind], trace_unet=False, perp_neg=True))
    batches = []
    forward = perp.unet.forward
    perp.unet.forward = lambda sample, *a, **k: batches.append(len(sample)) or forward(sample, *a, **k)
    g_plain, _ = sds_grad(plain)
    g_perp, _ = sds_grad(perp)
    assert batches == [8]  # 2 images x 4 contexts
    assert torch.isfinite(g_perp).all() and not torch.allclose(g_plain, g_perp)
