"""Config loading: strict keys, types, ranges, overrides; errors name the field path."""

from __future__ import annotations

import pytest
from helpers import megameta, write_config

from megameta.config import RunConfig, load_config
from megameta.errors import ConfigError

DEMO = "configs/demo/pipeline.yaml"


def test_demo_config_loads():
    cfg = load_config(DEMO)
    assert isinstance(cfg, RunConfig)
    assert [p.name for p in cfg.phases] == ["meta", "xlingual"]
    assert cfg.phases[1].init_from == "meta"
    assert cfg.phase("xlingual").langs[0] == "en"
    assert cfg.train.deepspeed_config.startswith("ds_configs/")


def test_demo_trains_no_language_without_held_out_text():
    """The pipeline's memorization check needs held-out text for every language a phase trains."""
    cfg = load_config(DEMO)
    for phase in cfg.phases + cfg.baseline:
        assert set(phase.langs) <= set(cfg.data.valid_sources), phase.name
        for lang in phase.langs:
            assert set(cfg.data.valid_sources[lang]).isdisjoint(cfg.data.sources[lang]), lang


def test_overrides_apply_to_nested_fields_and_list_items():
    cfg = load_config(
        DEMO, ["train.micro_batch_size=8", "phases[1].alpha=0.5", "optim.betas=[0.9, 0.99]", "data.seed=3"]
    )
    assert cfg.train.micro_batch_size == 8
    assert cfg.phases[1].alpha == 0.5
    assert cfg.optim.betas == [0.9, 0.99]
    assert cfg.data.seed == 3


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "train.micro_batch_sise=8",
            "train.micro_batch_sise: unknown key (did you mean 'micro_batch_size'?)",
        ),
        ("phases[1].alpha=1.5", "phases[1].alpha: must be in (0, 1], got 1.5"),
        ("train.micro_batch_size=0", "train.micro_batch_size: must be >= 1, got 0"),
        ("train.micro_batch_size=abc", "train.micro_batch_size: expected an integer, got 'abc'"),
        ("data.alpha=0", "data.alpha: must be in (0, 1], got 0.0"),
        ("train.precision=fp8", "train.precision: must be one of fp32, bf16, fp16, got 'fp8'"),
        ("phases[1].init_from=nope", "phases[1].init_from: 'nope' is not an earlier phase (meta) nor a path"),
        ("phases[0].langs=[xx]", "phases[0].langs: language 'xx' has no entry in data.sources"),
        ("phases[5].steps=1", "override 'phases[5].steps=1': phases[5] does not exist"),
        ("optim.schedule=step", "optim.schedule: must be one of linear, cosine, constant, got 'step'"),
        (
            "optim.kernel=adam8bit",
            "optim.kernel: must be one of auto, apex, deepspeed, torch-fused, torch-foreach, got 'adam8bit'",
        ),
        ("train.guard.spike_factor=0.5", "train.guard.spike_factor: must be 0 (off) or > 1, got 0.5"),
        ("train.guard.max_bad_steps=-1", "train.guard.max_bad_steps: must be >= 0, got -1"),
    ],
)
def test_bad_values_name_the_field(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(DEMO, [override])
    assert message in str(e.value)


def test_missing_required_and_duplicate_phase(tmp_path):
    path = write_config(
        tmp_path / "c.yaml",
        {
            "data": {"sources": {"en": ["a.txt"]}},
            "phases": [
                {"name": "a", "langs": ["en"], "steps": 1},
                {"name": "a", "langs": ["en"], "steps": 1},
            ],
        },
    )
    with pytest.raises(ConfigError, match=r"phases\[1\].name: duplicate phase name 'a'"):
        load_config(str(path))
    path.write_text("data: {sources: {en: [a.txt]}}\nphases:\n  - {name: a, langs: [en]}\n")
    with pytest.raises(ConfigError, match=r"phases\[0\].steps: set steps or tokens"):
        load_config(str(path))


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("run_dir: x\ntrain:\n  micro_batch_size: [1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+:\d+: invalid YAML"):
        load_config(str(path))


def test_cli_bad_config_is_exit_2_with_one_line_and_no_traceback(tmp_path):
    proc = megameta("train", "--config", DEMO, "train.micro_batch_sise=8")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert (
        lines[-1]
        == "megameta train: error: train.micro_batch_sise: unknown key (did you mean 'micro_batch_size'?)"
    )
    proc = megameta("train", "--config", str(tmp_path / "missing.yaml"))
    assert proc.returncode == 2 and "config file not found" in proc.stderr and "Traceback" not in proc.stderr


def test_resolve_phase_fills_in_defaults_once():
    cfg = load_config(
        DEMO, ["optim.lr=3e-4", "optim.warmup_steps=7", "data.alpha=0.5", "phases[1].alpha=0.3"]
    )
    meta, xling = cfg.resolve_phase("meta"), cfg.resolve_phase("xlingual")
    assert (meta.lr, meta.warmup_steps, meta.alpha, meta.alpha_end) == (3e-4, 7, 0.5, None)
    assert xling.alpha == 0.3
    assert meta.init_from is None
    assert xling.init_from.phase == "meta" and xling.init_from.path == cfg.phase_dir("meta")
    assert cfg.phase_path("xlingual") == "phases[1]" and cfg.phase_path("baseline") == "baseline[0]"


def test_init_from_a_path_is_a_path(tmp_path):
    cfg = load_config(DEMO, [f"phases[0].init_from={tmp_path}"])
    init = cfg.resolve_phase("meta").init_from
    assert init.phase is None and init.path == tmp_path


def test_token_budget_becomes_whole_steps():
    cfg = load_config(DEMO, ["phases[0].steps=0", "phases[0].tokens=1000000", "data.max_seq_len=128"])
    assert cfg.resolve_phase("meta").total_steps(global_batch=32) == 245  # ceil(1e6 / (32 * 128))


def test_loading_a_config_imports_neither_torch_nor_the_downloader():
    import subprocess
    import sys

    code = (
        "import sys, megameta.config as c; c.load_config('configs/demo/pipeline.yaml'); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'tqdm', 'transformers', 'deepspeed')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
