"""Stage records: nothing stale or mixed is used, and every refusal says what to rerun."""
import shutil

import pytest
import yaml
from click.testing import CliRunner

from meshdream.cli import cli
from meshdream.stages.coarse import coarse
from meshdream.stages.export import export
from meshdream.stages.refine import refine
from meshdream.engine.provenance import StaleStageError, read_record, verified
from meshdream.engine.run import RunDir
from meshdream.engine.stage_loop import step_hook


@pytest.fixture(scope="module")
def refined_run(tmp_path_factory, coarse_run, tiny_configs):
    run = tmp_path_factory.mktemp("refined") / "run"
    shutil.copytree(coarse_run, run)
    refine(run, config=tiny_configs["refine"], progress=False)
    return run


def copy(run, tmp_path):
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run"


def test_records_chain_the_stages(refined_run):
    run = RunDir(refined_run)
    c, r = verified(run, "coarse"), verified(run, "refine")
    assert c["prompt"] == r["prompt"] == "a red cube" and r["upstream"] == {"coarse": c["fingerprint"]}
    assert set(c["outputs"]) == {"mesh.ply", "field.pt"} and {"mesh.obj", "texture.png"} <= set(r["outputs"])


def test_a_new_coarse_result_makes_refine_stale_for_export_and_generate_resume(tmp_path, refined_run, tiny_configs):
    run = copy(refined_run, tmp_path)
    coarse("a blue sphere", run, config=tiny_configs["coarse"], progress=False)  # coarse again, with another prompt
    with pytest.raises(StaleStageError, match=rf"made from an earlier coarse result.*`meshdream refine {run}`"):
        export(run)
    r = CliRunner().invoke(cli, ["generate", "a blue sphere", "--out", str(run), "--resume", "--coarse-config",
                                 tiny_configs["coarse"], "--quiet"])
    assert r.exit_code == 1 and "earlier coarse result" in r.output and f"meshdream refine {run}" in r.output, r.output
    refine(run, config=tiny_configs["refine"], progress=False)  # what the message says to do works
    assert export(run).is_file()


def test_changed_outputs_are_refused_and_resume_writes_them_again(tmp_path, refined_run, tiny_configs):
    run = copy(refined_run, tmp_path)
    mesh = run / "coarse" / "mesh.ply"
    good = mesh.read_bytes()
    mesh.write_bytes(good[: len(good) // 2])  # e.g. a disk filled up while it was written
    with pytest.raises(StaleStageError, match="incomplete or was changed"):
        refine(run, config=tiny_configs["refine"], progress=False)
    r = CliRunner().invoke(cli, ["export", str(run)])
    assert r.exit_code == 1 and "coarse" in r.output and "incomplete or was changed" in r.output
    coarse("a red cube", run, resume=True, progress=False)  # extracts the mesh again from the finished checkpoint
    assert mesh.read_bytes() == good and verified(RunDir(run), "refine")


def test_an_unfinished_stage_is_refused_with_how_to_continue(tmp_path, tiny_configs):
    class Killed(Exception):
        pass

    def die(stage, done):
        if done == 3:
            raise Killed()

    with step_hook(die), pytest.raises(Killed):
        coarse("a red cube", tmp_path / "run", config=tiny_configs["coarse"], progress=False)
    assert read_record(RunDir(tmp_path / "run"), "coarse") == {"stage": "coarse", "finished": False}
    r = CliRunner().invoke(cli, ["refine", str(tmp_path / "run"), "--config", tiny_configs["refine"]])
    assert r.exit_code == 1 and "has not finished" in r.output and "--resume" in r.output, r.output


def test_resume_with_changed_settings_lists_what_cannot_change(tmp_path, refined_run, tiny_configs):
    run = copy(refined_run, tmp_path)
    r = CliRunner().invoke(cli, ["refine", str(run), "--resume", "--texture-size", "64", "--seed", "3"])
    assert r.exit_code == 2 and "seed: 0 -> 3; texture_size: 32 -> 64" in r.output
    cfg = yaml.safe_load((run / "refine" / "config.yaml").read_text())
    cfg["iters"] += 2
    path = tmp_path / "more.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = CliRunner().invoke(cli, ["refine", str(run), "--resume", "--config", str(path), "--quiet"])
    assert r.exit_code == 0, r.output  # iters is safe: two more steps
    assert yaml.safe_load((run / "refine" / "config.yaml").read_text())["iters"] == cfg["iters"]
