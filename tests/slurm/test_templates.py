"""The SLURM templates against a real SLURM cluster started on this machine (one node used here;
the two-node tests are in test_multihost.py).

End to end with 2 tasks: ``slurm/submit_pipeline.sh`` submits the chain; a CPU job prepares the
data, phase 1 trains; a USR1 delivered mid-run (as ``--signal=B:USR1@grace`` does) makes it checkpoint,
exit for requeue and requeue itself; the requeued job resumes at the saved step; phase 2 starts
only after phase 1 finished and from its weights; convert/evaluate run last. Also: a failing phase
cancels its dependants, an unset required variable fails at once naming it, the multi-node
rendezvous for node lists such as ``gpu[01-04]`` (with the real ``scontrol show hostnames``), and
shellcheck on every script.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
from helpers import make_corpus, tiny_config, write_config

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SLURM_DIR = REPO / "slurm"
SCRIPTS = sorted([*SLURM_DIR.glob("*.sh"), *SLURM_DIR.glob("*.sbatch")])
# Each node of the test cluster has 2 CPUs and no GPU: 2 ranks on one node here.
SBATCH_ARGS = "--nodes=1 --ntasks-per-node=2 --cpus-per-task=1 --gpus-per-node=0 --time=20"
PREP_SBATCH_ARGS = "--cpus-per-task=1 --time=20"
TWO_HOSTS = "--nodes=2 --ntasks-per-node=1 --cpus-per-task=1 --gpus-per-node=0 --time=20"


# ------------------------------------------------------------------ helpers
def job_env(cluster, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in cluster.env.items() if not k.startswith(("SLURM_JOB", "SLURM_PROC", "RANK"))}
    for key in (
        "CONFIG",
        "EXTRA_ARGS",
        "PHASE",
        "LAUNCH_MODE",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "MASTER_PORT",
        "MASTER_ADDR",
    ):
        env.pop(key, None)
    env.update(
        {
            "PYTHON": sys.executable,
            "SBATCH_ARGS": SBATCH_ARGS,
            "PREP_SBATCH_ARGS": PREP_SBATCH_ARGS,
            "OMP_NUM_THREADS": "1",
            # one build of DeepSpeed's shared-memory op per session, not shared with other runs
            # (it is rebuilt when flags differ, 45-65 s)
            "TORCH_EXTENSIONS_DIR": str(cluster.root / "torch_extensions"),
            "PYTHONPATH": str(REPO),
            **extra,
        }
    )
    return env


def job(cluster, job_id: str) -> dict[str, str]:
    """``scontrol show job`` as a dict (JobState, Reason, ExitCode, Restarts, StartTime, ...)."""
    out = subprocess.run(
        ["scontrol", "-o", "show", "job", job_id], env=cluster.env, capture_output=True, text=True
    ).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def wait_for(what: str, predicate, timeout: float, poll: float = 0.5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def wait_state(cluster, job_id: str, states: set[str], timeout: float) -> dict[str, str]:
    return wait_for(
        f"job {job_id} to reach {states}",
        lambda: (info := job(cluster, job_id)).get("JobState") in states and info,
        timeout,
    )


def submit_pipeline(cluster, config: Path, *overrides: str, cwd: Path, **env: str) -> tuple[str, list[str]]:
    proc = subprocess.run(
        [str(SLURM_DIR / "submit_pipeline.sh"), str(config), *overrides],
        env=job_env(cluster, **env), cwd=cwd, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout, re.findall(r"(?:submitted job|queued as job) (\d+)", proc.stdout)


def log_time(line: str) -> float:
    return time.mktime(time.strptime(line[1:20], "%Y-%m-%d %H:%M:%S"))


STEPS = 120  # phase 1 steps in the cluster runs


@pytest.fixture(scope="module")
def run_root(tmp_path_factory):
    """A tiny two-phase config on a tiny corpus (data prep included), run from its own dir."""
    root = tmp_path_factory.mktemp("slurm_run")
    corpus = make_corpus(root / "corpus")
    cfg = tiny_config(root / "run", corpus)
    # long enough to signal mid-run even on a quiet machine (a step takes 0.05-0.3 s here)
    cfg["phases"][0]["steps"] = STEPS
    cfg["phases"][1]["steps"] = 6
    cfg["train"].update(
        log_every=1, save_every=25, eval_every=0, deepspeed_config=str(REPO / "ds_configs" / "zero1.json")
    )
    cfg["evaluate"].update(classify=False, mlm_max_docs=10)
    write_config(root / "config.yaml", cfg)
    return root


# ------------------------------------------------------------------ no training
def test_shellcheck_passes_on_every_script(slurm_packages):
    assert {p.name for p in SCRIPTS} >= {
        "phase1_meta.sbatch",
        "phase2_xlingual.sbatch",
        "convert_evaluate.sbatch",
        "submit_pipeline.sh",
    }
    proc = subprocess.run(
        ["shellcheck", "-x", *[str(p.relative_to(REPO)) for p in SCRIPTS]],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_templates_document_the_required_headers():
    for name in (
        "prepare_data.sbatch",
        "phase1_meta.sbatch",
        "phase2_xlingual.sbatch",
        "convert_evaluate.sbatch",
    ):
        text = (SLURM_DIR / name).read_text()
        for option in (
            "--nodes=",
            "--ntasks-per-node=",
            "--gpus-per-node=",
            "--time=",
            "--requeue",
            "--signal=B:USR1@",
        ):
            assert re.search(rf"^#SBATCH {re.escape(option)}.*#", text, re.M), (
                f"{name}: no documented {option}"
            )
        assert "/work/" not in text and "/home/" not in text, f"{name}: site-specific path"


@pytest.mark.parametrize(
    "template",
    ["prepare_data.sbatch", "phase1_meta.sbatch", "phase2_xlingual.sbatch", "convert_evaluate.sbatch"],
)
def test_unset_required_variable_fails_at_once_naming_it(template, tmp_path):
    t = time.time()
    proc = subprocess.run(
        ["bash", str(SLURM_DIR / template)],
        env={"PATH": os.environ["PATH"], "MEGAMETA_HOME": str(REPO)}, cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "CONFIG" in proc.stderr and "not set" in proc.stderr
    assert time.time() - t < 5


def test_unset_config_fails_the_submitted_job(slurm_cluster, tmp_path):
    env = job_env(slurm_cluster, MEGAMETA_HOME=str(REPO))
    out = subprocess.run(
        ["sbatch", "--parsable", *SBATCH_ARGS.split(), f"--output={tmp_path}/%j.out", str(SLURM_DIR / "phase1_meta.sbatch")],
        env=env, cwd=tmp_path, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    info = wait_state(slurm_cluster, out, {"FAILED", "COMPLETED"}, 60)
    assert info["JobState"] == "FAILED" and info["ExitCode"] == "2:0" and info["Restarts"] == "0"
    assert "required variable CONFIG is not set" in (tmp_path / f"{out}.out").read_text()


def test_rendezvous_for_multi_node_lists_uses_scontrol(slurm_cluster):
    """MASTER_ADDR/PORT and rank variables for node lists this machine cannot run."""
    for nodelist, first in (
        ("gpu[01-04]", "gpu01"),
        ("node[7,9-10],big1", "node7"),
        ("a100-x[003-004]", "a100-x003"),
    ):
        env = {
            **slurm_cluster.env,
            "SLURM_JOB_ID": "73311",
            "SLURM_JOB_NODELIST": nodelist,
            "SLURM_PROCID": "13",
            "SLURM_LOCALID": "5",
            "SLURM_NTASKS": "32",
        }
        hosts = subprocess.run(
            ["scontrol", "show", "hostnames", nodelist], env=env, capture_output=True, text=True, check=True
        ).stdout.split()
        assert hosts[0] == first and len(hosts) >= 2
        out = subprocess.run(
            [sys.executable, str(REPO / "tools" / "slurm_env.py"), "rendezvous", "--ranks", "--probe-port"],
            env=env, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        got = {k: shlex.split(v)[0] for k, v in re.findall(r"^export (\w+)=(.+)$", out, re.M)}
        port = 20000 + zlib.crc32(b"73311") % 20000  # the same port megameta.train.dist derives
        assert got == {
            "MASTER_ADDR": first,  # SLURM does not know these nodes: no NodeAddr, the name itself
            "MASTER_PORT": str(port),
            "MM_NODE_NAMES": " ".join(hosts),
            "MM_NODE_ADDRS": " ".join(hosts),
            "RANK": "13",
            "LOCAL_RANK": "5",
            "WORLD_SIZE": "32",
        }


@pytest.mark.parametrize("mode", ["srun", "torchrun", "deepspeed"])
def test_launch_command_per_mode_for_four_nodes(slurm_cluster, tmp_path, mode):
    """The command each mode runs on gpu[01-04] x 8 GPUs, and the per-node rank substitution."""
    script = f"""
        set -u
        source "{SLURM_DIR}/common.sh"
        LAUNCH_MODE={mode} NNODES=4 NPROC_PER_NODE=8 MASTER_ADDR=gpu01 MASTER_PORT=29411
        SLURM_JOB_NODELIST='gpu[01-04]' SLURM_CPUS_ON_NODE=64 SLURM_CPUS_PER_TASK=8
        LOG_DIR={tmp_path} PYTHON=python3 CONFIG=c.yaml PHASE=meta MM_OVERRIDES=(optim.lr=1e-4) SLURM_JOB_ID=41
        mm_train_command
        printf '%s\\n' "${{MM_CMD[@]}}"
    """
    cmd = subprocess.run(
        ["bash", "-c", script], env=slurm_cluster.env, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert cmd[0] == "srun" and cmd[-6:] == [
        "train",
        "--config",
        "c.yaml",
        "--phase",
        "meta",
        "optim.lr=1e-4",
    ]
    if mode == "srun":  # one task per GPU; ranks from SLURM's variables, per task
        assert "--nodes=4" not in cmd and any("RANK=$SLURM_PROCID" in c for c in cmd)
        task = cmd[cmd.index("bash") :]
        env = {"PATH": os.environ["PATH"], "SLURM_PROCID": "13", "SLURM_LOCALID": "5", "SLURM_NTASKS": "32"}
        shown = subprocess.run(
            [*task[:4], "bash", "-c", 'echo "$RANK $LOCAL_RANK $WORLD_SIZE"'],
            env=env,
            capture_output=True,
            text=True,
        ).stdout
        assert shown.split() == ["13", "5", "32"]
        return
    assert {"--nodes=4", "--ntasks=4", "--ntasks-per-node=1", "--cpus-per-task=64"} <= set(cmd)
    if mode == "torchrun":  # c10d rendezvous at the master; each node offers its own address
        assert {"torch.distributed.run", "--nnodes=4", "--nproc_per_node=8", "--rdzv_backend=c10d"} <= set(
            cmd
        )
        assert {"--rdzv_endpoint=gpu01:29411", "--rdzv_id=41", "--local_addr=@NODE_ADDR@"} <= set(cmd)
    else:
        assert "--master_addr=gpu01" in cmd and "--master_port=29411" in cmd
        assert "--node_rank=@NODE_RANK@" in cmd
        assert {"deepspeed.launcher.runner", "--no_ssh"} <= set(cmd)
        hostfile = (tmp_path / "hostfile").read_text().split("\n")
        assert hostfile[:4] == [f"gpu0{i} slots=8" for i in range(1, 5)]
    # The per-node shell puts this node's SLURM_NODEID and address in and ignores USR1 (its workers
    # handle it).
    node = cmd[cmd.index("bash") : cmd.index("bash") + 4]
    shown = subprocess.run(
        [*node, "bash", "-c", 'echo "$1 $2"; trap -p USR1', "x", "--node_rank=@NODE_RANK@", "--local_addr=@NODE_ADDR@"],
        env={"PATH": os.environ["PATH"], "SLURM_NODEID": "3", "MM_NODE_ADDRS": "10.0.0.1 10.0.0.2 10.0.0.3 10.0.0.4"},
        capture_output=True, text=True,
    ).stdout  # fmt: skip
    assert shown.splitlines()[0] == "--node_rank=3 --local_addr=10.0.0.4" and "USR1" in shown


def test_submit_rejects_a_bad_config_before_queueing(slurm_cluster, run_root):
    proc = subprocess.run(
        [str(SLURM_DIR / "submit_pipeline.sh"), str(run_root / "config.yaml"), "phases[0].langs=[xx]"],
        env=job_env(slurm_cluster), cwd=run_root, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2 and "phases[0].langs" in proc.stderr
    assert "submitted" not in proc.stdout


# ------------------------------------------------------------------ on the cluster
def test_failed_phase_cancels_its_dependants(slurm_cluster, run_root):
    # The data prep job fails (the corpus dir does not exist): exit 2, never requeued.
    out, ids = submit_pipeline(
        slurm_cluster, run_root / "config.yaml", f"run_dir={run_root}/failing", "corpus.dir=/nonexistent/corpus", cwd=run_root
    )  # fmt: skip
    assert len(ids) == 4, out
    first = wait_state(slurm_cluster, ids[0], {"FAILED", "COMPLETED"}, 90)
    assert first["JobState"] == "FAILED" and first["ExitCode"] == "2:0" and first["Restarts"] == "0"
    for dependant in ids[1:]:
        info = wait_state(slurm_cluster, dependant, {"CANCELLED", "COMPLETED", "FAILED"}, 30)
        assert info["JobState"] == "CANCELLED" and info["Reason"] == "DependencyNeverSatisfied", info
    log = (run_root / "failing" / "logs" / f"mm-prep-{ids[0]}.out").read_text()
    assert "corpus.dir" in log and "tokenizer failed (exit 2)" in log


def test_pipeline_end_to_end_with_preemption_and_requeue(slurm_cluster, run_root):
    """The chain as docs/cluster.md walks through it: data prep on one node, then two hosts."""
    config = run_root / "config.yaml"
    run = run_root / "run"
    out, ids = submit_pipeline(slurm_cluster, config, cwd=run_root, SBATCH_ARGS=TWO_HOSTS)
    assert len(ids) == 4, out
    prep_id, meta_id, xl_id, eval_id = ids
    assert f"submitted job {meta_id} (starts after job {prep_id} succeeds)" in out
    assert f"submitted job {xl_id} (starts after job {meta_id} succeeds)" in out
    assert f"submitted job {eval_id} (starts after job {xl_id} succeeds)" in out

    # Rerunning while the chain is queued reuses the queued jobs instead of submitting twice.
    again, again_ids = submit_pipeline(slurm_cluster, config, cwd=run_root, SBATCH_ARGS=TWO_HOSTS)
    assert again_ids == ids and again.count("already queued") == 4, again

    # Phase 1 trains; USR1 to the batch shell mid-run, as --signal=B:USR1@<grace> sends it.
    rank0 = run / "logs" / f"mm-meta-{meta_id}" / "rank0.log"
    wait_for(
        "phase 1 step 2", lambda: rank0.exists() and f"step 2/{STEPS}" in rank0.read_text(), 240, poll=0.1
    )
    subprocess.run(["scancel", "--signal=USR1", "--batch", meta_id], env=slurm_cluster.env, check=True)
    assert job(slurm_cluster, xl_id)["JobState"] == "PENDING"
    assert job(slurm_cluster, xl_id)["Reason"] == "Dependency"

    # It checkpoints, exits with the requeue code and requeues itself; the requeue resumes.
    wait_for("the requeued attempt", lambda: int(job(slurm_cluster, meta_id).get("Restarts", 0)) >= 1, 120)
    assert job(slurm_cluster, xl_id)["JobState"] == "PENDING"
    meta = wait_state(slurm_cluster, meta_id, {"COMPLETED", "FAILED", "CANCELLED"}, 240)
    job_log = (run / "logs" / f"mm-meta-{meta_id}.out").read_text()
    assert meta["JobState"] == "COMPLETED" and meta["Restarts"] == "1", job_log
    assert meta["NumNodes"] == "2" and "2 node(s) x 1 rank(s), mode srun" in job_log
    assert "received SIGUSR1" in job_log and "training stopped for requeue (exit 3" in job_log
    assert "attempt 2 on" in job_log and "tokenizer:" not in job_log  # data prep is its own job
    prep = job(slurm_cluster, prep_id)
    assert (
        prep["JobState"] == "COMPLETED"
        and "data ready" in (run / "logs" / f"mm-prep-{prep_id}.out").read_text()
    )
    meta_start = log_time(next(line for line in job_log.splitlines() if "attempt 1 on" in line))
    assert meta_start >= int((run / "shards" / "manifest.json").stat().st_mtime)

    text = rank0.read_text()
    saved = re.search(r"saving checkpoint at step (\d+) and exiting for requeue", text)
    assert saved, text[-3000:]
    stop = int(saved.group(1))
    assert 2 <= stop < STEPS
    assert re.search(rf"resumed meta from \S+ \(step {stop},", text), text[-3000:]
    steps = [int(s) for s in re.findall(rf"^step (\d+)/{STEPS} ", text, re.M)]
    assert steps == list(range(1, STEPS + 1)), (
        f"steps logged across both attempts: {steps}"
    )  # none repeated or lost
    assert json.loads((run / "meta" / "DONE.json").read_text())["step"] == STEPS
    assert (run / "logs" / f"mm-meta-{meta_id}" / "rank1.log").exists()

    # Phase 2 ran only after phase 1 completed, from its weights; then convert/evaluate.
    for job_id in (xl_id, eval_id):
        info = wait_state(slurm_cluster, job_id, {"COMPLETED", "FAILED", "CANCELLED"}, 240)
        assert info["JobState"] == "COMPLETED", "\n".join(
            p.read_text()[-2000:] for p in (run / "logs").glob("*.out")
        )
    xl_log = (run / "logs" / f"mm-xlingual-{xl_id}.out").read_text()
    xl_start = log_time(next(line for line in xl_log.splitlines() if "attempt 1 on" in line))
    assert xl_start >= int((run / "meta" / "DONE.json").stat().st_mtime)
    xl_done = json.loads((run / "xlingual" / "DONE.json").read_text())
    assert f"meta/checkpoints/step_{STEPS:08d}" in json.dumps(xl_done["init_from"]) and xl_done["step"] == 6
    xl_rank0 = (run / "logs" / f"mm-xlingual-{xl_id}" / "rank0.log").read_text()
    assert re.search(rf"xlingual: initialized from \S*meta/checkpoints/step_{STEPS:08d}", xl_rank0), xl_rank0[
        -2000:
    ]
    eval_log = (run / "logs" / f"mm-eval-{eval_id}.out").read_text()
    eval_start = log_time(next(line for line in eval_log.splitlines() if "attempt 1 on" in line))
    assert eval_start >= int((run / "xlingual" / "DONE.json").stat().st_mtime)
    report = json.loads((run / "xlingual" / "eval" / "report.json").read_text())
    assert report
    assert (run / "xlingual" / "hf" / "config.json").exists()

    # Safe to rerun: everything is complete, nothing is submitted.
    rerun, rerun_ids = submit_pipeline(slurm_cluster, config, cwd=run_root)
    assert rerun_ids == [] and "nothing to submit" in rerun and rerun.count("skipped") == 4, rerun


def test_cluster_fixture_is_a_real_slurm(slurm_cluster):
    out = subprocess.run(
        ["sinfo", "-h", "-o", "%P %D %c"], env=slurm_cluster.env, capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.split() == ["debug*", "2", "2"]  # two nodes, 2 CPUs each
    assert shutil.which("slurmctld") or Path("/usr/sbin/slurmctld").exists()


@pytest.mark.parametrize("mode", ["torchrun", "deepspeed"])
def test_launcher_per_node_mode_checkpoints_and_requeues_on_usr1(slurm_cluster, run_root, tmp_path, mode):
    """LAUNCH_MODE=torchrun|deepspeed: one launcher per node; USR1 reaches the ranks, not the launcher.

    (Resuming is the trainer's and the same in every mode: the end-to-end test covers it.)
    """
    run = tmp_path / "run"
    prepared = run_root / "run"
    prepare = "1"
    if (prepared / "shards" / "manifest.json").exists():  # reuse the end-to-end run's data prep
        run.mkdir()
        for sub in ("tokenizer", "shards"):
            shutil.copytree(prepared / sub, run / sub)
        prepare = "0"
    env = job_env(
        slurm_cluster,
        CONFIG=str(run_root / "config.yaml"),
        EXTRA_ARGS=f"run_dir={run}",
        LAUNCH_MODE=mode,
        PREPARE_DATA=prepare,
        MEGAMETA_HOME=str(REPO),
    )
    job_id = subprocess.run(
        ["sbatch", "--parsable", *SBATCH_ARGS.split(), f"--output={tmp_path}/%j.out", str(SLURM_DIR / "phase1_meta.sbatch")],
        env=env, cwd=tmp_path, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    node0 = run / "logs" / f"mm-meta-{job_id}" / "node0.log"
    wait_for("step 2", lambda: node0.exists() and f"step 2/{STEPS}" in node0.read_text(), 240, poll=0.1)
    subprocess.run(["scancel", "--signal=USR1", "--batch", job_id], env=slurm_cluster.env, check=True)
    wait_for("the requeue", lambda: int(job(slurm_cluster, job_id).get("Restarts", 0)) >= 1, 120)
    subprocess.run(["scancel", job_id], env=slurm_cluster.env, check=True)  # resume: see the end-to-end test
    job_log = (tmp_path / f"{job_id}.out").read_text()
    assert f"mode {mode}" in job_log and "received SIGUSR1" in job_log and "requeueing job" in job_log, (
        job_log
    )
    saved = re.search(r"saving checkpoint at step (\d+) and exiting for requeue", node0.read_text())
    assert saved, node0.read_text()[-3000:]
    tag = f"step_{int(saved.group(1)):08d}"
    assert (run / "meta" / "checkpoints" / tag).is_dir()
    assert (run / "meta" / "checkpoints" / "latest").read_text().strip() == tag


def test_scancel_is_not_undone_by_a_requeue(slurm_cluster, run_root, tmp_path):
    """SIGTERM (scancel) stops the job for good; only USR1 or a rank's exit 3 requeues."""
    env = job_env(
        slurm_cluster,
        CONFIG=str(run_root / "config.yaml"),
        EXTRA_ARGS=f"run_dir={tmp_path / 'run'}",
        MEGAMETA_HOME=str(REPO),
        PREPARE_DATA="1",  # prepare inside the job: the tokenizer step is where we cancel it
    )
    job_id = subprocess.run(
        ["sbatch", "--parsable", *SBATCH_ARGS.split(), f"--output={tmp_path}/%j.out", str(SLURM_DIR / "phase1_meta.sbatch")],
        env=env, cwd=tmp_path, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    out = tmp_path / f"{job_id}.out"
    wait_for("the data prep step", lambda: out.exists() and "tokenizer:" in out.read_text(), 60, poll=0.1)
    subprocess.run(["scancel", job_id], env=slurm_cluster.env, check=True)
    wait_for("the job log", lambda: "not requeueing" in out.read_text(), 30)
    time.sleep(2)
    info = job(slurm_cluster, job_id)
    assert info["JobState"] == "CANCELLED" and info["Restarts"] == "0", info


def test_prep_pieces_submit_an_array_between_tokenizer_and_merge(slurm_cluster, run_root, tmp_path):
    """PREP_PIECES=3: tokenizer job -> 3-task array of preprocess pieces -> merge -> phase 1 (dry run).

    (The pieces themselves need `megameta preprocess --num-shards/--shard-index`; the one-piece chain
    runs for real in the end-to-end test.)
    """
    proc = subprocess.run(
        [str(SLURM_DIR / "submit_pipeline.sh"), str(run_root / "config.yaml"), f"run_dir={tmp_path}/run"],
        env=job_env(slurm_cluster, DRY_RUN="1", PREP_PIECES="3"), cwd=run_root, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stderr.splitlines()
    assert [re.search(r"--job-name=(\S+)", line).group(1) for line in lines] == [
        "mm-prep-tokenizer", "mm-prep-pieces", "mm-prep", "mm-meta", "mm-xlingual", "mm-eval",
    ]  # fmt: skip
    steps = [re.search(r"PREP_STEP=(\w+)", line) for line in lines[:3]]
    assert [m.group(1) for m in steps if m] == ["tokenizer", "piece", "finish"]
    assert "--array=0-2" in lines[1] and "--array" not in lines[0] + lines[2]
    # the prep jobs take PREP_SBATCH_ARGS, the GPU jobs SBATCH_ARGS; each job after the first waits
    assert all(PREP_SBATCH_ARGS in line and SBATCH_ARGS not in line for line in lines[:3])
    assert all(SBATCH_ARGS in line for line in lines[3:])
    assert all("--dependency=afterok:" in line for line in lines[1:]) and "--dependency" not in lines[0]
