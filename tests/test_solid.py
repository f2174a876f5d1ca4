import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from meshdream.mesh.solid import close_ball


def _ball(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    x, y, z = np.meshgrid(r, r, r, indexing="ij")
    return (x * x + y * y + z * z) <= radius * radius


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 4), st.integers(0, 2**31 - 1), st.floats(0.2, 0.7))
def test_close_ball_is_binary_closing_with_a_ball(radius, seed, fill):
    # random blobs that touch the box border too: the distance-transform closing must give exactly the
    # voxels of scipy's closing by the same ball on a padded grid (plus the input)
    rng = np.random.default_rng(seed)
    smooth = ndimage.gaussian_filter(rng.random((20, 22, 18)), 1.5)
    inside = smooth > np.quantile(smooth, 1 - fill)
    pad = radius + 1
    want = ndimage.binary_closing(np.pad(inside, pad), structure=_ball(radius))[pad:-pad, pad:-pad, pad:-pad] | inside
    np.testing.assert_array_equal(close_ball(inside, radius), want)


def test_close_ball_keeps_a_wide_hole_and_shuts_a_narrow_one():
    n = 64
    x, y, z = np.meshgrid(*[np.arange(n)] * 3, indexing="ij")
    slab = (np.abs(z - n // 2) <= 3)
    wide = slab & ((x - 20) ** 2 + (y - 32) ** 2 > 10 ** 2)  # a hole of radius 10 voxels
    narrow = slab & ((x - 20) ** 2 + (y - 32) ** 2 > 3 ** 2)  # radius 3
    assert not close_ball(wide, 6)[20, 32, n // 2]
    assert close_ball(narrow, 6)[20, 32, n // 2]
