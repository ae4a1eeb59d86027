"""Training across two hosts: the SLURM templates on the two-node namespace cluster.

Each node (``mmn1``, ``mmn2``) is its own network namespace with a management network (SLURM,
``NodeAddr``) and a data network (``mm1``) that the jobs here pin training to with
``GLOO_SOCKET_IFNAME=mm1``; node names resolve only on the node itself, so the rendezvous must
use SLURM's addresses. One rank per node (2 ranks), the smallest model.

- every launch mode (srun per rank, torchrun per node with c10d, deepspeed per node with a
  per-job hostfile and no ssh) gives the loss log of a one-host run with the same global batch;
  the data comes from ``slurm/prepare_data.sbatch`` run as its own CPU job;
- the preflight reports each node, its interface and the all-reduce bandwidth, and a node that
  does not answer fails the job within seconds, naming it;
- a host killed mid-run: SLURM marks it down and requeues the job, which resumes exactly once
  the host is back (loss log and sample audit log equal to the uninterrupted run's);
- a network partition (the data link of one host down, its processes alive): the job ends within
  ``train.dist_timeout_s`` plus a margin naming the node and rank, requeues, and resumes exactly
  once the link is back.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest
from helpers import make_corpus, tiny_config, write_config
from test_templates import REPO, SLURM_DIR, TWO_HOSTS, job, job_env, wait_for, wait_state

pytestmark = pytest.mark.slow

STEPS = 30
DIST_TIMEOUT_S = 15  # train.dist_timeout_s of these runs
PARTITION_MARGIN_S = 20  # job end after the link is cut: at most dist_timeout_s + this
ONE_HOST = "--nodes=1 --ntasks-per-node=2 --cpus-per-task=1 --gpus-per-node=0 --time=20"
MEASURED: dict[str, float] = {}  # printed at the end of the module (README's reliability table)


@pytest.fixture(scope="module")
def mh(slurm_cluster, tmp_path_factory):
    """A tiny config whose data is prepared by ``slurm/prepare_data.sbatch`` on the cluster."""
    root = tmp_path_factory.mktemp("multihost")
    corpus = make_corpus(root / "corpus")
    cfg = tiny_config(root / "data", corpus)
    cfg["phases"][0]["steps"] = STEPS
    cfg["model"].update(hidden_dropout=0, attention_dropout=0)
    cfg["train"].update(
        log_every=1,
        save_every=5,
        eval_every=0,
        log_samples=True,
        dist_timeout_s=DIST_TIMEOUT_S,
        deepspeed_config=str(REPO / "ds_configs" / "zero1.json"),
    )
    config = write_config(root / "config.yaml", cfg)
    env = job_env(slurm_cluster, CONFIG=str(config), MEGAMETA_HOME=str(REPO))
    job_id = sbatch(slurm_cluster, "prepare_data.sbatch", root, env, "--cpus-per-task=1", "--time=20")
    info = wait_state(slurm_cluster, job_id, {"COMPLETED", "FAILED", "CANCELLED"}, 300)
    log = (root / f"{job_id}.out").read_text()
    assert info["JobState"] == "COMPLETED", log[-3000:]
    assert "tokenizer:" in log and "preprocess:" in log and "data ready" in log
    assert (root / "data" / "shards" / "manifest.json").exists()
    yield {"root": root, "config": config, "runs": {}}
    if MEASURED:
        print(
            "\nmeasured on the two-node cluster: " + ", ".join(f"{k} {v:.0f}s" for k, v in MEASURED.items())
        )


def sbatch(cluster, template: str, cwd: Path, env: dict[str, str], *options: str) -> str:
    return subprocess.run(
        ["sbatch", "--parsable", f"--output={cwd}/%j.out", *options, str(SLURM_DIR / template)],
        env=env, cwd=cwd, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


def submit_phase1(cluster, mh, name: str, placement: str, **env: str) -> tuple[str, Path]:
    """Phase 1 in run dir ``name`` (data linked from the prep job's), submitted with ``placement``."""
    run = mh["root"] / name
    run.mkdir()
    for part in ("tokenizer", "shards"):
        (run / part).symlink_to(mh["root"] / "data" / part)
    variables = job_env(
        cluster,
        CONFIG=str(mh["config"]),
        EXTRA_ARGS=f"run_dir={run}",
        MEGAMETA_HOME=str(REPO),
        GLOO_SOCKET_IFNAME="mm1",  # training on the data network
        **env,
    )
    return sbatch(cluster, "phase1_meta.sbatch", mh["root"], variables, *placement.split()), run


def loss_log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "meta" / "train_log.jsonl").read_text().splitlines()]


def sample_logs(run: Path) -> dict[str, list[str]]:
    return {
        p.name: p.read_text().splitlines() for p in sorted((run / "meta" / "samples").glob("rank*.jsonl"))
    }


def finished(cluster, mh, job_id: str, timeout: float = 300) -> tuple[dict[str, str], str]:
    info = wait_state(cluster, job_id, {"COMPLETED", "FAILED", "CANCELLED"}, timeout)
    log = (mh["root"] / f"{job_id}.out").read_text()
    assert info["JobState"] == "COMPLETED", log[-4000:]
    return info, log


def rank_log_text(run: Path, job_id: str) -> str:
    return "".join(p.read_text() for p in sorted((run / "logs").glob(f"mm-meta-{job_id}/*.log")))


def reached_step(run: Path, job_id: str, step: int) -> bool:
    return f"step {step}/{STEPS} " in rank_log_text(run, job_id)


# ------------------------------------------------------------------ every launch mode
def test_every_launch_mode_across_two_hosts_matches_one_host(slurm_cluster, mh):
    jobs = {
        "one-host": submit_phase1(slurm_cluster, mh, "one_host", ONE_HOST),
        "srun": submit_phase1(slurm_cluster, mh, "srun", TWO_HOSTS, LAUNCH_MODE="srun"),
        "torchrun": submit_phase1(slurm_cluster, mh, "torchrun", TWO_HOSTS, LAUNCH_MODE="torchrun"),
        "deepspeed": submit_phase1(slurm_cluster, mh, "deepspeed", TWO_HOSTS, LAUNCH_MODE="deepspeed"),
    }
    logs = {}
    for mode, (job_id, run) in jobs.items():
        info, logs[mode] = finished(slurm_cluster, mh, job_id, timeout=600)
        assert info["NumNodes"] == ("1" if mode == "one-host" else "2"), info
        assert json.loads((run / "meta" / "DONE.json").read_text())["step"] == STEPS
    ref = loss_log(jobs["one-host"][1])
    assert len(ref) == STEPS
    for mode in ("srun", "torchrun", "deepspeed"):
        job_id, run = jobs[mode]
        assert loss_log(run) == ref, f"{mode} across two hosts: a different loss log than on one host"
        log = logs[mode]
        # The rendezvous address is SLURM's NodeAddr of the first node: mmn1 does not resolve on mmn2.
        assert f"master {slurm_cluster.addr['mmn1']}:" in log, log
        # Preflight: each node reports itself and the pinned interface; one all-reduce measures bandwidth.
        for node in ("mmn1", "mmn2"):
            assert re.search(rf"preflight: node {node}: no GPU, \d+ CPUs; interface mm1 \(pinned\) "
                             rf"{re.escape(slurm_cluster.data_addr[node])} ", log), log  # fmt: skip
        assert re.search(
            r"preflight: all-reduce of 4 MiB across 2 rank\(s\) .*bus bandwidth [\d.]+ GB/s \(gloo\)", log
        )
        assert "world 2" in rank_log_text(run, job_id)
    torchrun = logs["torchrun"]
    assert "--rdzv_backend=c10d" in torchrun and "--local_addr=@NODE_ADDR@" in torchrun
    hostfile = (jobs["deepspeed"][1] / "logs" / f"mm-meta-{jobs['deepspeed'][0]}" / "hostfile").read_text()
    assert hostfile.split("\n")[:2] == ["mmn1 slots=1", "mmn2 slots=1"] and "--no_ssh" in logs["deepspeed"]
    # the uninterrupted two-host reference for the fault tests below
    mh["runs"]["reference"] = jobs["srun"][1]
    assert sample_logs(jobs["srun"][1]).keys() == {"rank0.jsonl", "rank1.jsonl"}


def test_preflight_names_an_unreachable_node_within_seconds(slurm_cluster, mh):
    """mmn2 stops answering just after the job started: the preflight ends it, naming mmn2."""
    job_id, run = submit_phase1(slurm_cluster, mh, "preflight", TWO_HOSTS, SETUP="sleep 3")
    wait_state(slurm_cluster, job_id, {"RUNNING"}, 120)
    cut = time.time()
    slurm_cluster.link("mmn2", up=False, iface="mm0")
    job_log = mh["root"] / f"{job_id}.out"
    try:
        # The batch script ends at once; SLURM completes the job only once it has heard from mmn2
        # (or marked it down), so the job's end is timed from its log.
        wait_for("the preflight to fail", lambda: "preflight failed" in job_log.read_text(), 60, poll=0.1)
        ended = time.time() - cut
    finally:
        slurm_cluster.link("mmn2", up=True, iface="mm0")
    info = wait_state(slurm_cluster, job_id, {"FAILED", "COMPLETED", "CANCELLED"}, 120)
    log = job_log.read_text()
    assert info["JobState"] == "FAILED" and info["Restarts"] == "0", log
    assert re.search(
        rf"node mmn2 \(rank 1\) unreachable at {re.escape(slurm_cluster.addr['mmn2'])} \(NodeAddr\)", log
    ), log
    assert "preflight failed" in log and "train:" not in log
    assert ended < 3 + 15, f"the job ended {ended:.0f}s after mmn2 was cut off"  # SETUP's sleep + seconds
    MEASURED["preflight: unreachable node -> batch script ends"] = ended
    slurm_cluster.wait_nodes_up(60)


# ------------------------------------------------------------------ faults
def test_node_loss_requeues_and_resumes_exactly(slurm_cluster, mh):
    """The batch host dies mid-run; SLURM requeues the job; it resumes exactly when the host is back."""
    reference = mh["runs"].get("reference")
    if reference is None:
        pytest.skip("needs the uninterrupted two-host run of the launch-mode test")
    job_id, run = submit_phase1(slurm_cluster, mh, "node_loss", TWO_HOSTS)
    wait_for("step 7", lambda: reached_step(run, job_id, 7), 300, poll=0.1)
    killed = time.time()
    slurm_cluster.kill_node("mmn1")  # every process of the host, slurmd and the batch script included
    try:
        wait_for("the requeue", lambda: int(job(slurm_cluster, job_id).get("Restarts", 0)) >= 1, 120)
        requeued = time.time() - killed
    finally:
        slurm_cluster.start_node("mmn1")  # the host is back
        slurm_cluster.wait_nodes_up(60)
    back = time.time()
    wait_for("resumed training", lambda: "resumed meta from" in rank_log_text(run, job_id), 300, poll=0.2)
    resumed = time.time() - back
    info, log = finished(slurm_cluster, mh, job_id)
    assert info["Restarts"] == "1" and "attempt 2 on" in log, log
    text = rank_log_text(run, job_id)
    assert re.search(r"resumed meta from step_000000(05|10|15|20|25) ", text), text[-3000:]
    assert loss_log(run) == loss_log(reference)
    assert sample_logs(run) == sample_logs(reference)
    MEASURED["node death -> job requeued"] = requeued
    MEASURED["host back -> training resumed"] = resumed
    assert requeued < 60, f"the dead node's job was requeued only after {requeued:.0f}s"


def test_network_partition_ends_the_job_naming_the_node_then_resumes(slurm_cluster, mh):
    """mmn2's data link goes down, its processes stay alive; SLURM still sees both nodes healthy."""
    reference = mh["runs"].get("reference")
    if reference is None:
        pytest.skip("needs the uninterrupted two-host run of the launch-mode test")
    job_id, run = submit_phase1(slurm_cluster, mh, "partition", TWO_HOSTS, PREFLIGHT_RETRY_WAIT="3")
    wait_for("step 7", lambda: reached_step(run, job_id, 7), 300, poll=0.1)
    cut = time.time()
    slurm_cluster.link("mmn2", up=False, iface="mm1")
    job_log = mh["root"] / f"{job_id}.out"
    try:
        wait_for("the job to end", lambda: "node stopped answering: requeueing" in job_log.read_text(),
                 DIST_TIMEOUT_S + PARTITION_MARGIN_S + 30, poll=0.2)  # fmt: skip
        ended = time.time() - cut
    finally:
        slurm_cluster.link("mmn2", up=True, iface="mm1")
    back = time.time()
    log = job_log.read_text()
    assert re.search(
        rf"node mmn2 \(rank 1\) unreachable at {re.escape(slurm_cluster.data_addr['mmn2'])} \(training interface mm1\)",
        log,
    ), log
    assert ended <= DIST_TIMEOUT_S + PARTITION_MARGIN_S, f"job ended {ended:.0f}s after the cut"
    text = rank_log_text(run, job_id)
    assert "collective failed" in text and f"train.dist_timeout_s={DIST_TIMEOUT_S}s" in text, text[-3000:]
    wait_for("resumed training", lambda: "resumed meta from" in rank_log_text(run, job_id), 300, poll=0.2)
    resumed = time.time() - back
    info, log = finished(slurm_cluster, mh, job_id)
    assert int(info["Restarts"]) >= 1, log
    assert loss_log(run) == loss_log(reference)
    assert sample_logs(run) == sample_logs(reference)
    MEASURED["partition -> job end"] = ended
    MEASURED["link back -> training resumed"] = resumed
