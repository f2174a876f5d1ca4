import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshdream.errors import UserInputError
from meshdream.batching.prompts_file import jobs_from_list, read_prompts, slugify


def test_text_file_one_prompt_a_line(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("# props for level 1\na red cube\n\n  a   blue sphere  \nA Green Torus!\n")
    jobs = read_prompts(path)
    assert [j.prompt for j in jobs] == ["a red cube", "a blue sphere", "A Green Torus!"]
    assert [j.slug for j in jobs] == ["a-red-cube", "a-blue-sphere", "a-green-torus"]
    assert jobs[1].where == "prompts.txt line 4" and jobs[0].seed is None


def test_yaml_and_jsonl_overrides(tmp_path):
    (tmp_path / "fast.yaml").write_text("iters: 10\n")
    yaml_file = tmp_path / "prompts.yaml"
    yaml_file.write_text("- a red cube\n"
                         "- prompt: a blue sphere\n  seed: 7\n  coarse_iters: 20\n  refine_iters: 5\n  slug: ball\n"
                         "  coarse_config: fast.yaml\n  coarse: {extract: {resolution: 64}}\n  negative_prompt: blurry\n")
    jobs = read_prompts(yaml_file)
    ball = jobs[1]
    assert (ball.slug, ball.seed, ball.coarse_iters, ball.refine_iters, ball.negative_prompt) == ("ball", 7, 20, 5, "blurry")
    assert ball.coarse_config == str((tmp_path / "fast.yaml").resolve()) and ball.coarse == {"extract": {"resolution": 64}}
    jsonl = tmp_path / "prompts.jsonl"
    jsonl.write_text('"a red cube"\n{"prompt": "a blue sphere", "seed": 3, "refine": {"texture_size": 64}}\n')
    jobs = read_prompts(jsonl)
    assert jobs[1].seed == 3 and jobs[1].refine == {"texture_size": 64} and jobs[1].where == "prompts.jsonl line 2"


@pytest.mark.parametrize("name, text, message", [
    ("empty.txt", "\n# only a comment\n", "holds no prompts"),
    ("dup.txt", "a red cube\nA red cube!\n", "slug 'a-red-cube' is already used by dup.txt line 1"),
    ("key.yaml", "- prompt: a red cube\n  iterations: 5\n", "unknown key 'iterations'"),
    ("seed.jsonl", '{"prompt": "a red cube", "seed": "seven"}\n', "seed must be an integer"),
    ("iters.yaml", "- prompt: a red cube\n  coarse_iters: 0\n", "coarse_iters must be an integer >= 1"),
    ("noprompt.yaml", "- seed: 1\n", "no 'prompt' given"),
    ("list.yaml", "prompt: a red cube\n", "must hold a YAML list"),
    ("json.jsonl", "{not json}\n", "json.jsonl line 1: not valid JSON"),
    ("slug.yaml", "- prompt: a red cube\n  slug: ../escape\n", "slug '../escape' is not allowed"),
    ("conf.yaml", "- prompt: a red cube\n  coarse_config: missing.yaml\n", "does not exist"),
])
def test_bad_prompts_files(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(UserInputError, match=None) as e:
        read_prompts(path)
    assert message in str(e.value)


def test_unreadable_files(tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        read_prompts(tmp_path / "nope.txt")
    binary = tmp_path / "prompts.txt"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(UserInputError, match="cannot be read"):
        read_prompts(binary)


def test_python_list():
    jobs = jobs_from_list(["a red cube", {"prompt": "a red cube", "slug": "cube-2", "seed": 1}])
    assert [j.slug for j in jobs] == ["a-red-cube", "cube-2"]
    with pytest.raises(UserInputError, match="no prompts"):
        jobs_from_list([])


@given(st.text(max_size=200))
def test_slugs_are_safe_folder_names(prompt):
    slug = slugify(prompt)
    assert 0 < len(slug) <= 60 and slug == slug.strip("-")
    assert all(c.isascii() and (c.isalnum() or c == "-") for c in slug) and slug not in (".", "..")
    assert json.loads(json.dumps(slug)) == slug
