"""Checkpoint store on synthetic dirs: finalize, integrity, fallback, resolve, prune (no training run)."""

from __future__ import annotations

import json

import pytest
from helpers import synthetic_checkpoint

from megameta import checkpoint as ckpt
from megameta.errors import InputError


def test_tags_sort_by_step_and_reject_other_names():
    assert ckpt.tag_for(42) == "step_00000042" and ckpt.step_of("step_00000042") == 42
    assert ckpt.step_of("step_00000042_universal") == -1 and ckpt.step_of(".staging-step_00000042") == -1


def test_finalize_is_atomic_and_records_every_file(tmp_path):
    root = tmp_path / "checkpoints"
    final = synthetic_checkpoint(root, 3, {"a.pt": b"abc", "sub/b.pt": b"defg"})
    assert final == root / "step_00000003" and (root / ckpt.LATEST).read_text() == "step_00000003\n"
    assert not list(root.glob(".staging-*"))
    meta = json.loads((final / ckpt.META).read_text())
    assert meta["tag"] == "step_00000003"
    assert {k: v["size"] for k, v in meta["files"].items()} == {"a.pt": 3, "sub/b.pt": 4}
    assert ckpt.check_integrity(final) is None


@pytest.mark.parametrize("damage", ["truncate", "delete", "bitflip", "no_meta", "corrupt_meta"])
def test_check_integrity_names_the_damage(tmp_path, damage):
    final = synthetic_checkpoint(tmp_path, 1, {"a.pt": b"0123456789"})
    victim = final / "a.pt"
    if damage == "truncate":
        victim.write_bytes(b"01234")
    elif damage == "delete":
        victim.unlink()
    elif damage == "bitflip":
        victim.write_bytes(b"0123456788")
    elif damage == "no_meta":
        (final / ckpt.META).unlink()
    else:
        (final / ckpt.META).write_text('{"step": 1, "fil')
    reason = ckpt.check_integrity(final)
    expect = {"truncate": "truncated", "delete": "a.pt missing", "bitflip": "checksum mismatch",
              "no_meta": "meta.json missing", "corrupt_meta": "meta.json is corrupt"}[damage]  # fmt: skip
    assert reason is not None and expect in reason
    # A sizes-only check cannot see a flipped bit, and sees everything else.
    assert (ckpt.check_integrity(final, full=False) is None) == (damage == "bitflip")


def test_newest_intact_falls_back_when_latest_names_a_damaged_checkpoint(tmp_path):
    for step in (2, 4, 6):
        synthetic_checkpoint(tmp_path, step)
    (tmp_path / "step_00000006" / "mp_rank_00_model_states.pt").write_bytes(b"x")
    messages = []
    assert ckpt.newest_intact(tmp_path, log=messages.append) == "step_00000004"
    assert len(messages) == 1 and "skipping step_00000006" in messages[0] and "truncated" in messages[0]


def test_newest_intact_prefers_latest_and_ignores_staging_and_universal_dirs(tmp_path):
    for step in (2, 4):
        synthetic_checkpoint(tmp_path, step)
    (tmp_path / ckpt.LATEST).write_text("step_00000002\n")  # step 4 was written but latest not yet moved
    (tmp_path / ".staging-step_00000008" / "step_00000008").mkdir(parents=True)  # a save cut short
    (tmp_path / "step_00000004_universal").mkdir()
    assert ckpt.list_tags(tmp_path) == ["step_00000002", "step_00000004"]
    assert ckpt.newest_intact(tmp_path, log=print) == "step_00000002"
    (tmp_path / ckpt.LATEST).unlink()
    assert ckpt.newest_intact(tmp_path, log=print) == "step_00000004"
    assert ckpt.newest_intact(tmp_path / "nothing", log=print) is None


def test_resolve_phase_dir_checkpoints_dir_checkpoint_and_tag(tmp_path):
    root = tmp_path / "meta" / "checkpoints"
    for step in (2, 4):
        synthetic_checkpoint(root, step)
    newest = root / "step_00000004"
    assert ckpt.resolve(tmp_path / "meta") == newest
    assert ckpt.resolve(root) == newest
    assert ckpt.resolve(root / "step_00000002") == root / "step_00000002"
    assert ckpt.resolve(tmp_path / "meta", tag="step_00000002") == root / "step_00000002"
    with pytest.raises(InputError, match=r"tag step_00000009 not found .*have: step_00000002, step_00000004"):
        ckpt.resolve(root, tag="step_00000009")
    with pytest.raises(InputError, match="checkpoint path not found"):
        ckpt.resolve(tmp_path / "nope")
    with pytest.raises(InputError, match="no complete checkpoint"):
        ckpt.resolve(tmp_path)  # a dir without checkpoints


def test_resolve_checks_sizes_always_and_checksums_when_full(tmp_path):
    for step in (2, 4):
        synthetic_checkpoint(tmp_path, step, {"a.pt": b"0123456789"})
    newest = tmp_path / "step_00000004"
    (newest / "a.pt").write_bytes(b"0123456788")  # same size, different bytes
    assert ckpt.resolve(tmp_path, full=False) == newest
    assert ckpt.resolve(tmp_path, log=lambda msg: None) == tmp_path / "step_00000002"  # falls back
    with pytest.raises(InputError, match="step_00000004 is not usable: .*checksum mismatch"):
        ckpt.resolve(newest)  # one named checkpoint: no fallback
    assert ckpt.resolve(newest, full=False) == newest
    (newest / "a.pt").write_bytes(b"01")
    with pytest.raises(InputError, match="truncated"):
        ckpt.resolve(tmp_path, tag="step_00000004", full=False)


def test_prune_keeps_the_newest_and_every_kth_and_drops_stale_universal_copies(tmp_path):
    for step in range(1, 9):
        synthetic_checkpoint(tmp_path, step)
    (tmp_path / "step_00000003_universal").mkdir()
    (tmp_path / "step_00000008_universal").mkdir()
    (tmp_path / "latest_universal").write_text("step_00000003_universal\n")
    removed = ckpt.prune(tmp_path, keep_last=2, keep_every=3)
    assert removed == ["step_00000001", "step_00000002", "step_00000004", "step_00000005"]
    assert ckpt.list_tags(tmp_path) == ["step_00000003", "step_00000006", "step_00000007", "step_00000008"]
    assert (
        not (tmp_path / "step_00000003_universal").exists()
        and (tmp_path / "step_00000008_universal").exists()
    )
    assert not (tmp_path / "latest_universal").exists()
    assert ckpt.prune(tmp_path, keep_last=1, keep_every=0) == [
        "step_00000003",
        "step_00000006",
        "step_00000007",
    ]


def test_each_file_has_one_owner_rank():
    world = 2
    owners = {name: ckpt.owner_rank(name, world) for name in (
        "mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt",
        "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_model_states.pt",
        "rng_rank0.pt", "rng_rank1.pt", "zero_pp_rank_7_mp_rank_00_optim_states.pt")}  # fmt: skip
    assert owners == {"mp_rank_00_model_states.pt": 0, "zero_pp_rank_0_mp_rank_00_optim_states.pt": 0,
                      "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt": 1,
                      "zero_pp_rank_1_mp_rank_00_model_states.pt": 1, "rng_rank0.pt": 0, "rng_rank1.pt": 1,
                      "zero_pp_rank_7_mp_rank_00_optim_states.pt": 0}  # fmt: skip


def test_finalize_uses_the_ranks_records_and_hashes_only_what_they_miss(tmp_path, monkeypatch):
    root = tmp_path / "checkpoints"
    stage = ckpt.staging_dir(root, "step_00000001") / "step_00000001"
    stage.mkdir(parents=True)
    for name, data in {
        "rng_rank0.pt": b"r0",
        "rng_rank1.pt": b"r1",
        "m.pt": b"model",
        "late.pt": b"x",
    }.items():
        (stage / name).write_bytes(data)
    records = ckpt.file_records(stage, ["rng_rank0.pt", "rng_rank1.pt", "m.pt"], workers=2)
    records["m.pt"] = {"size": 99, "sha256": "stale"}  # changed since it was hashed: re-hashed
    hashed = []
    from megameta.checkpoint import store

    real = store.sha256_file
    monkeypatch.setattr(store, "sha256_file", lambda p: (hashed.append(p.name), real(p))[1])
    meta = ckpt.CheckpointMeta(step=1, samples_seen=8, tokens_seen=256, phase="meta", world_size=2,
                               model={"vocab_size": 100}, zero_stage=1, precision="fp32", langs=["en"],
                               lang_samples=[8], lang_tokens=[256])  # fmt: skip
    final = ckpt.finalize(root, "step_00000001", meta, records)
    assert sorted(hashed) == ["late.pt", "m.pt"]
    assert ckpt.check_integrity(final) is None  # every record, given or computed, matches the bytes


def test_resume_check_compares_every_size_before_reading_any_byte(tmp_path, monkeypatch):
    final = synthetic_checkpoint(tmp_path, 1, {f"f{i}.pt": bytes([i]) * (i + 1) for i in range(8)})
    (final / "f7.pt").write_bytes(b"short")
    from megameta.checkpoint import store

    monkeypatch.setattr(store, "sha256_file", lambda p: pytest.fail(f"hashed {p.name} before checking sizes"))
    assert "f7.pt has 5 bytes, expected 8" in ckpt.check_integrity(final)


def test_parallel_hashing_finds_the_one_corrupted_file(tmp_path):
    final = synthetic_checkpoint(tmp_path, 1, {f"f{i}.pt": bytes([i]) * 1000 for i in range(12)})
    (final / "f9.pt").write_bytes(bytes([1]) * 1000)
    assert ckpt.check_integrity(final, workers=4) == f"{final / 'f9.pt'} checksum mismatch (corrupted)"
