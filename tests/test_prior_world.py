import random

import numpy as np
import torch
from hypothesis import given, settings, strategies as st

from meshdream.render.cameras import view_label
from meshdream.prior import world as W
from meshdream.prior.primitives import SHAPES


def test_the_world_has_the_promised_variety():
    assert len(W.COLOURS) >= 10 and set(W.COLOURS) <= set(W.PALETTE)
    assert len(W.OBJECTS) >= 20
    parts = {name: fn() for name, fn in W.OBJECTS.items()}
    assert all(len(p) >= 2 for p in parts.values())
    assert sum(len({q.colour for q in p}) >= 2 for p in parts.values()) >= 8
    assert len(W.ASYMMETRIC) >= 4 and set(W.ASYMMETRIC) <= set(W.OBJECTS)
    assert all(q.shape in SHAPES and q.colour in W.PALETTE for p in parts.values() for q in p)
    assert len(W.CLASSES) == len(set(W.CLASSES)) == len(SHAPES) + len(W.OBJECTS) + len(W.RELATIONS)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2 ** 31 - 1))
def test_samples_fit_the_box_and_their_captions_use_the_vocabulary(seed):
    s = W.sample_content(random.Random(seed), synonym_rate=0.5)
    words = set(W.vocabulary())
    assert all(w in words for w in s.text.replace(",", " ").split())
    packed = W.pack([s.parts])
    distance, _ = W.parts_field(packed)
    sphere = torch.randn(2000, 3, generator=torch.Generator().manual_seed(0))
    for radius in (1.25, float(W.bounding_radius(packed)[0])):  # the object is inside both spheres
        on = sphere / sphere.norm(dim=1, keepdim=True) * radius
        assert (distance(on, torch.zeros(2000, dtype=torch.long)) > 0).all()
    colours, shapes = list(W.COLOURS), list(SHAPES)
    if s.kind == "primitive":
        assert len(s.parts) == 1 and colours[s.colour] in s.text and W.CLASSES[s.cls] == s.parts[0].shape
    elif s.kind == "object":
        assert W.CLASSES[s.cls] in W.OBJECTS and s.colour == -1
    else:
        a, ca, b, cb = s.pair
        relation = W.CLASSES[s.cls].removeprefix("scene ")
        first, second = s.text.split(f" {relation} ")
        assert colours[ca] in first and colours[cb] in second and (a, ca) != (b, cb)
        assert [p.shape for p in s.parts] == [shapes[a], shapes[b]]
        if relation == "on top of":
            assert s.parts[0].centre[1] > s.parts[1].centre[1]


def test_synonyms_appear_in_captions():
    rng = random.Random(0)
    texts = " ".join(W.sample_content(rng, synonym_rate=1.0).text for _ in range(300))
    for word in ("ball", "box", "doughnut", "burger", "cup"):
        assert f" {word}" in texts


def test_render_batch_is_seeded_captioned_by_view_and_on_white():
    images, captions, labels = W.render_batch(6, seed=3, resolution=32)
    again, captions2, _ = W.render_batch(6, seed=3, resolution=32)
    assert images.shape == (6, 32, 32, 3) and images.dtype == np.uint8
    assert np.array_equal(images, again) and captions == captions2
    assert (images[:, [0, 0, -1, -1], [0, -1, 0, -1]] > 240).all()
    for cap, az, el, v in zip(captions, labels["azimuth"], labels["elevation"], labels["view"]):
        assert W.VIEWS[v] == view_label(float(az), float(el))
        if cap.endswith(" view"):
            assert cap.endswith(f", {W.VIEWS[v]} view")
    assert ((labels["elevation"] > -10.5) & (labels["elevation"] < 60.5)).all()


def _front_and_back(names, resolution=40):
    """{name: (front image, back image)} [R, R, 3], flat colours (albedo shading), one batch."""
    cams = W.front_view_cameras([0.0, 180.0] * len(names), elevation=10.0)
    objects = [W.canonical(n) for n in names for _ in range(2)]
    images = W.render_objects(objects, cams, resolution, shading=["albedo"] * len(objects)).permute(0, 2, 3, 1)
    return {n: (images[2 * i], images[2 * i + 1]) for i, n in enumerate(names)}


def _pixels_of(image, colour, tol=0.08):
    return ((image - torch.tensor(W.PALETTE[colour])).abs().max(-1).values < tol)


def test_asymmetric_objects_show_their_feature_on_the_captioned_side():
    views = _front_and_back(["snowman", "house", "robot", "car", "mug", "chair"])
    for name, colour in (("snowman", "orange"), ("house", "brown"), ("robot", "red"), ("car", "yellow")):
        front, back = (_pixels_of(im, colour).sum() for im in views[name])
        assert front > 3 and back == 0, (name, int(front), int(back))
    # the mug's handle is on the right from the front and on the left from the back
    for image, right in zip(views["mug"], (True, False)):
        cols = _pixels_of(image, "blue").float().sum(0).nonzero().squeeze(1)
        centre = image.shape[1] / 2
        assert (cols.max() - centre > centre - cols.min()) == right
    # the chair's backrest (brown) hides most of its seat (red) from the back
    front, back = (_pixels_of(im, "red").sum() for im in views["chair"])
    assert back < 0.6 * front


def test_ground_truth_meshes_are_closed_and_coloured():
    for name in ("cube", "mug", "snowman"):
        v, f, c = W.ground_truth_mesh(name, resolution=40)
        assert len(f) > 100 and v.shape[1] == 3 and c.shape == v.shape
        assert np.abs(v).max() < 1.2
        edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
        _, counts = np.unique(edges, axis=0, return_counts=True)
        assert (counts == 2).all()  # watertight
    v, f, c = W.ground_truth_mesh("snowman", resolution=40)
    assert (np.abs(c - np.array(W.PALETTE["orange"])).max(1) < 1e-6).any()  # the nose keeps its colour
