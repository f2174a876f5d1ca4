"""`meshdream batch` on a local Ray with 2 CPUs: real workers, real RUN folders, tiny configs."""
import json
import os
import signal
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trimesh
import yaml
from click.testing import CliRunner

import meshdream
from meshdream.cli import cli
from test_export import gltf_validator  # noqa: F401  (the Khronos validator fixture)



def _descendants(pid: int) -> set[int]:
    """PIDs of all processes below ``pid`` (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def _ray_workers(pids) -> list[int]:
    """Those of ``pids`` that are Ray task workers (process titles 'ray::run_job', 'ray::IDLE')."""
    alive = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().startswith((b"ray::run_job", b"ray::IDLE")):
                    alive.append(pid)
        except OSError:
            pass
    return alive


@pytest.fixture(scope="module")
def batch_run(tmp_path_factory, tiny_configs):
    """3 short prompts and 1 made to fail (its surface threshold is unreachable), 2 workers of 1 CPU, 1 retry; no MP4
    turntables (the GIF is enough here; the --address test makes one)."""
    out = tmp_path_factory.mktemp("batch") / "out"
    prompts = ["a red cube", "a blue sphere", {"prompt": "a green torus", "seed": 5, "coarse_iters": 4, "refine_iters": 2},
               {"prompt": "a yellow cone", "coarse": {"extract": {"threshold": 1.0e9}}}]
    t = time.time()
    index = meshdream.batch(prompts, out, workers=2, cpus_per_job=1, retries=1, coarse_config=tiny_configs["coarse"],
                            refine_config=tiny_configs["refine"], video=False, progress=False)
    return out, index, time.time() - t


def test_three_prompts_give_three_valid_glbs_and_index_entries(batch_run, gltf_validator):  # noqa: F811
    out, index, _ = batch_run
    on_disk = json.loads((out / "index.json").read_text())
    assert on_disk["jobs"] == index["jobs"]
    done = {e["slug"]: e for e in index["jobs"] if e["status"] == "done"}
    assert sorted(done) == ["a-blue-sphere", "a-green-torus", "a-red-cube"]
    for slug, entry in done.items():
        glb = out / entry["asset"]
        assert glb == out / slug / "export" / "model.glb" and glb.is_file()
        report = gltf_validator(glb)
        assert report["numErrors"] == 0, report["messages"]
        assert len(trimesh.load(glb, force="mesh").faces) > 0
        # a normal RUN folder, as `generate` makes it
        for f in ("coarse/mesh.ply", "coarse/checkpoint.pt", "refine/mesh.obj", "refine/texture.png", "turntable.gif"):
            assert (out / slug / f).is_file(), f
        assert not (out / slug / "turntable.mp4").exists()  # video=False reached generate
        assert entry["turntable"] == f"{slug}/turntable.gif" and entry["error"] is None and entry["attempts"] == 1
        assert set(entry["times"]) == {"coarse", "refine", "export", "turntable", "total"}
        assert all(v > 0 for v in entry["times"].values())
        assert entry["peak_memory_mb"] > 50  # a whole worker process with torch loaded
        # workers are pinned to their CPU share so they do not fight over the cores
        assert entry["worker"]["threads"] == 1 and entry["worker"]["omp_num_threads"] == "1"
    assert done["a-green-torus"]["seed"] == 5 and done["a-red-cube"]["seed"] == 0
    assert yaml.safe_load((out / "a-green-torus" / "coarse" / "config.yaml").read_text())["iters"] == 4
    assert len({e["worker"]["pid"] for e in done.values()}) == 3  # a fresh process per job


def test_a_failing_prompt_is_retried_and_reported_without_stopping_the_others(batch_run):
    out, index, _ = batch_run
    failed = [e for e in index["jobs"] if e["status"] != "done"]
    assert len(failed) == 1
    entry = failed[0]
    assert entry["slug"] == "a-yellow-cone" and entry["status"] == "failed" and entry["attempts"] == 2
    assert "extraction threshold" in entry["error"] and entry["asset"] is None
    # the retry resumed from the first attempt's checkpoint instead of starting over
    assert entry["resumed_from"].get("coarse", 0) > 0


def test_gallery_lists_every_prompt(batch_run):
    out, index, _ = batch_run
    page = (out / "index.html").read_text()
    assert page.count("<model-viewer ") == 3 and "extraction threshold" in page
    assert (out / "gallery" / "model-viewer-umd.min.js").is_file() and (out / "gallery" / "LICENSE-model-viewer.txt").is_file()


def test_existing_batch_needs_resume_and_a_finished_batch_resumes_instantly(batch_run, tiny_configs):
    out, index, _ = batch_run
    r = CliRunner().invoke(cli, ["batch", str(out / ".." / "p.txt"), "--out", str(out)])
    assert r.exit_code == 2  # the prompts file does not exist
    prompts = out.parent / "p.txt"
    prompts.write_text("a red cube\n")
    r = CliRunner().invoke(cli, ["batch", str(prompts), "--out", str(out)])
    assert r.exit_code == 2 and "--resume" in r.output and "Traceback" not in r.output
    before = (out / "a-red-cube" / "export" / "model.glb").stat().st_mtime_ns
    t = time.time()
    r = CliRunner().invoke(cli, ["batch", str(prompts), "--out", str(out), "--resume"])
    assert r.exit_code == 1 and "a-yellow-cone" in r.output  # the old failure is still reported
    assert time.time() - t < 10  # nothing to run: Ray is not even started
    assert (out / "a-red-cube" / "export" / "model.glb").stat().st_mtime_ns == before


def test_bad_prompts_files_are_usage_errors_before_any_work(tmp_path, tiny_configs):
    cases = {"empty.txt": ("", "holds no prompts"),
             "dup.txt": ("a red cube\na red cube\n", "already used"),
             "over.yaml": ("- prompt: a red cube\n  coarse: {iterz: 3}\n", "unknown config key coarse.iterz"),
             "seed.jsonl": ('{"prompt": "a red cube", "seed": -1}\n', "seed must be an integer >= 0")}
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        out = tmp_path / f"out-{name}"
        r = CliRunner().invoke(cli, ["batch", str(tmp_path / name), "--out", str(out)])
        assert r.exit_code == 2 and message in r.output and name in r.output and "Traceback" not in r.output, r.output
        assert not out.exists()  # before any work
    r = CliRunner().invoke(cli, ["batch", str(tmp_path / "dup.txt"), "--out", str(tmp_path / "o"), "--retries", "-1"])
    assert r.exit_code == 2 and "--retries" in r.output
    r = CliRunner().invoke(cli, ["batch", str(tmp_path / "dup.txt"), "--out", str(tmp_path / "o"), "--cpus-per-job", "0"])
    assert r.exit_code == 2 and "--cpus-per-job" in r.output


def test_sigkill_of_the_driver_then_resume_redoes_nothing_finished(tmp_path, tiny_configs):
    cfg = yaml.safe_load(open(tiny_configs["coarse"]))
    cfg.update(iters=60, checkpoint_every=2)
    slow = tmp_path / "slow.yaml"
    slow.write_text(yaml.safe_dump(cfg))
    prompts = tmp_path / "prompts.yaml"
    prompts.write_text(yaml.safe_dump([{"prompt": "a red cube", "coarse_iters": 4},
                                       {"prompt": "a blue sphere", "coarse_config": str(slow)},
                                       "a green torus"]))
    out = tmp_path / "out"
    args = [sys.executable, "-m", "meshdream", "batch", str(prompts), "--out", str(out), "--workers", "1",
            "--coarse-config", tiny_configs["coarse"], "--refine-config", tiny_configs["refine"], "--quiet", "--no-video"]
    log = tmp_path / "driver.log"
    with open(log, "wb") as f:
        driver = subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT)
    ckpt = out / "a-blue-sphere" / "coarse" / "checkpoint.pt"
    deadline = time.time() + 1200  # generous: the 2 cores may be shared by many
    while time.time() < deadline and driver.poll() is None and not ckpt.exists():
        time.sleep(0.1)
    if not ckpt.exists():
        driver.kill()
        pytest.fail(f"no checkpoint of the 2nd prompt in time; driver log:\n{log.read_text()[-3000:]}")
    time.sleep(1.0)
    workers = _ray_workers(_descendants(driver.pid))
    assert workers  # the job runs in a Ray worker of the driver's own local Ray
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    index = json.loads((out / "index.json").read_text())
    status = {e["slug"]: e["status"] for e in index["jobs"]}
    assert status == {"a-red-cube": "done", "a-blue-sphere": "running", "a-green-torus": "pending"}, status
    finished = (out / "a-red-cube" / "export" / "model.glb").stat().st_mtime_ns
    r = subprocess.run(args + ["--resume"], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    index = json.loads((out / "index.json").read_text())
    entries = {e["slug"]: e for e in index["jobs"]}
    assert all(e["status"] == "done" for e in entries.values())
    assert (out / "a-red-cube" / "export" / "model.glb").stat().st_mtime_ns == finished  # not redone
    assert entries["a-red-cube"]["attempts"] == 1
    assert entries["a-blue-sphere"]["resumed_from"]["coarse"] >= 2  # continued from its checkpoint
    assert entries["a-green-torus"]["resumed_from"] == {}
    # the killed driver's local Ray goes down too (a worker still finishing its step holds the RUN's lock meanwhile)
    deadline = time.time() + 120
    while _ray_workers(workers) and time.time() < deadline:
        time.sleep(0.5)
    assert not _ray_workers(workers)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head():
    """docs/batch.md's recipe on one machine: `ray start --head` with a Ray Client server, 1 CPU and 1 GPU declared.

    The GPU is a logical resource (`--num-gpus 1`); CUDA_VISIBLE_DEVICES=7 when the head starts makes Ray hand out
    the id "7", a device no torch here can use (this machine has none, a GPU machine has no 8th GPU)."""
    import shutil
    import uuid

    port, client_port = _free_port(), _free_port()
    ray_cli = shutil.which("ray") or os.path.join(os.path.dirname(sys.executable), "ray")
    # Ray clusters authenticate drivers with a token; the head and the drivers share it here through the environment
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=uuid.uuid4().hex + uuid.uuid4().hex)
    head = subprocess.Popen([ray_cli, "start", "--head", "--block", f"--port={port}", f"--ray-client-server-port={client_port}",
                             "--node-ip-address=127.0.0.1", "--num-cpus=1", "--num-gpus=1", "--include-dashboard=false",
                             "--disable-usage-stats"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env=dict(env, CUDA_VISIBLE_DEVICES="7"))
    try:
        yield {"address": f"127.0.0.1:{port}", "client": f"ray://127.0.0.1:{client_port}", "env": env}
    finally:
        _stop_process_group(head)


def _stop_process_group(head: subprocess.Popen, grace_s: float = 5.0) -> None:
    """SIGTERM to `ray start --block` and everything it started (its own process group: GCS, raylet, workers, agents);
    whatever is still there after ``grace_s`` (the graceful stop takes 30 s and more on a busy machine) gets SIGKILL."""
    os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(head.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    head.wait(timeout=60)


def _batch_on_cluster(tmp_path, tiny_configs, head, address, *extra):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red cube\n")
    out = tmp_path / "out"
    args = [sys.executable, "-m", "meshdream", "batch", str(prompts), "--out", str(out), "--address", address,
            "--coarse-config", tiny_configs["coarse"], "--refine-config", tiny_configs["refine"], "--quiet", *extra]
    deadline = time.time() + 300
    while True:  # the head takes a while to come up on a busy machine
        r = subprocess.run(args, capture_output=True, text=True, timeout=900, env=head["env"])
        if r.returncode == 0 or time.time() > deadline or "could not connect" not in r.stderr:
            break
        shutil.rmtree(out, ignore_errors=True)
        time.sleep(2)
    return r, out


def test_joins_an_existing_ray_cluster_with_address(tmp_path, tiny_configs, ray_head):
    r, out = _batch_on_cluster(tmp_path, tiny_configs, ray_head, ray_head["address"])
    assert r.returncode == 0, r.stderr[-3000:]
    entry = json.loads((out / "index.json").read_text())["jobs"][0]
    assert entry["status"] == "done" and (out / entry["asset"]).is_file()
    assert entry["worker"]["device"] == "cpu" and entry["worker"]["gpu_ids"] == []
    assert (out / "a-red-cube" / "turntable.mp4").is_file()  # batch makes generate's MP4 turntable by default


def test_joins_a_cluster_through_ray_client(tmp_path, tiny_configs, ray_head):
    """`--address ray://host:port`: the driver talks to the cluster's Ray Client server only (ray[client], grpcio)."""
    r, out = _batch_on_cluster(tmp_path, tiny_configs, ray_head, ray_head["client"], "--no-video")
    assert r.returncode == 0, r.stderr[-3000:]
    entry = json.loads((out / "index.json").read_text())["jobs"][0]
    assert entry["status"] == "done" and (out / entry["asset"]).is_file()
    assert entry["worker"]["pid"] != os.getpid() and entry["worker"]["threads"] == 1


def test_gpu_jobs_get_the_gpu_ray_assigns_and_fail_clearly_when_torch_cannot_use_it(tmp_path, tiny_configs, ray_head):
    """--gpus-per-job 1 on a cluster declaring 1 GPU: the job asks Ray for it, Ray assigns id "7" and sets
    CUDA_VISIBLE_DEVICES, the index records both; torch cannot use that device, so the job fails at once
    with a message naming the assignment (not a hang, not a silent CPU run)."""
    t = time.time()
    r, out = _batch_on_cluster(tmp_path, tiny_configs, ray_head, ray_head["address"], "--gpus-per-job", "1")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    entry = json.loads((out / "index.json").read_text())["jobs"][0]
    assert entry["status"] == "failed" and entry["asset"] is None
    assert entry["worker"]["device"] == "cuda"
    assert entry["worker"]["gpu_ids"] == ["7"] and entry["worker"]["cuda_visible_devices"] == "7"
    assert "Ray assigned GPU(s) ['7'] (CUDA_VISIBLE_DEVICES='7')" in entry["error"] and "cannot use them" in entry["error"]
    assert "a-red-cube" in r.stderr and "Ray assigned GPU" in r.stderr
    assert entry["times"]["total"] < 5  # failed before any stage ran
    assert time.time() - t < 300
