import numpy as np
import trimesh

from meshdream.mesh import clean_mesh, marching_cubes


def sphere_mesh(n=40):
    x = np.linspace(-1, 1, n)
    X, Y, Z = np.meshgrid(x, x, x, indexing="ij")
    field = np.maximum(0.6 - np.sqrt(X ** 2 + Y ** 2 + Z ** 2), 0.06 - np.sqrt((X - 0.85) ** 2 + (Y - 0.85) ** 2 + (Z - 0.85) ** 2))
    return marching_cubes(field, 0.0, bounds=((-1, -1, -1), (1, 1, 1)))


def test_floater_is_dropped_and_colours_kept():
    v, f = sphere_mesh()
    big = trimesh.Trimesh(v, f, process=False).split(only_watertight=False)
    assert len(big) == 2
    colours = np.tile([[1.0, 0.0, 0.0]], (len(v), 1))
    v2, f2, c2 = clean_mesh(v, f, colours)
    parts = trimesh.Trimesh(v2, f2, process=False).split(only_watertight=False)
    assert len(parts) == 1 and parts[0].is_watertight
    assert c2.shape == (len(v2), 3) and np.allclose(c2, [1, 0, 0], atol=1e-2)


def test_decimation_hits_target_and_stays_closed():
    v, f = sphere_mesh(48)
    v2, f2, _ = clean_mesh(v, f, target_faces=1000)
    assert 800 <= len(f2) <= 1000
    m = trimesh.Trimesh(v2, f2, process=False)
    assert m.is_watertight and m.volume > 0


def test_duplicate_vertices_and_degenerate_faces_go():
    box = trimesh.creation.box()
    v = np.concatenate([box.vertices, box.vertices])  # every vertex twice
    f = np.concatenate([box.faces, box.faces[:4] + len(box.vertices), [[0, 0, 1]]])
    v2, f2, _ = clean_mesh(v, f, min_component_fraction=0)
    assert len(v2) == 8 and len(f2) == 12
    assert trimesh.Trimesh(v2, f2, process=False).is_watertight


def test_empty_mesh_passes_through():
    v, f, c = clean_mesh(np.zeros((0, 3)), np.zeros((0, 3), int))
    assert v.shape == (0, 3) and f.shape == (0, 3) and c is None


def test_small_diameter_components_go():
    big = trimesh.creation.icosphere(subdivisions=2, radius=1.0)
    small = trimesh.creation.icosphere(subdivisions=4, radius=0.05)  # more faces than the big one, but tiny
    small.apply_translation([3.0, 0, 0])
    both = trimesh.util.concatenate([big, small])
    v, f, _ = clean_mesh(both.vertices, both.faces, min_component_fraction=0)
    assert len(trimesh.Trimesh(v, f, process=False).split(only_watertight=False)) == 2
    v, f, _ = clean_mesh(both.vertices, both.faces, min_component_fraction=0, min_component_diameter=0.1)
    parts = trimesh.Trimesh(v, f, process=False).split(only_watertight=False)
    assert len(parts) == 1 and len(f) == len(big.faces)


def test_bad_input_names_the_value():
    """Bad arguments are a caller's bug (ValueError naming the value), not a user's input error."""
    import pytest

    from meshdream.errors import MeshdreamError

    for args, match in (((np.zeros((4, 2)), np.zeros((1, 3), int)), r"\[V, 3\]"),
                        ((np.zeros((3, 3)), np.array([[0, 1, 5]])), "only 3 vertices"),
                        ((np.zeros((3, 3)), np.array([[0, 1, 2]]), np.zeros((2, 3))), "colors")):
        with pytest.raises(ValueError, match=match) as e:
            clean_mesh(*args)
        assert not isinstance(e.value, MeshdreamError)
