"""fem/rule_settings.py: the rules' settings built in one place, and the record of the config keys
each rule reads that becomes dvc.yaml's params (no second, hand-written list to drift)."""

import copy
import re
import shutil
from pathlib import Path

import pytest
import yaml

from fem import rule_settings
from fem.dvc_stages import SnakemakeJob, build_dvc_yaml, dry_run_jobs, stage_name
from fem.errors import ConfigError
from fem.rule_settings import RecordedConfig, SpeedFlags, keys_read

ROOT = Path(__file__).resolve().parent.parent
CONFIG = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
PRETRAIN_JOB = SnakemakeJob(
    "pretrain",
    inputs=["data/tokenized/bbc/train.npy"],
    outputs=["results/scratch/pretrain/fe-s1/model", "results/scratch/pretrain/fe-s1/metrics.json"],
    log="logs/scratch/pretrain/fe-s1.log",
    wildcards={"setting": "scratch", "strategy": "fe", "seed": "1"},
)


def stage_params(stage: dict) -> dict[str, list[str]]:
    """{config file: keys} of a dvc.yaml stage."""
    return {file: keys for entry in stage.get("params", []) for file, keys in entry.items()}


def test_a_key_a_builder_reads_becomes_a_param_without_touching_dvc_stages(tmp_path, monkeypatch):
    """The drift guard: a rule's builder starts reading a new config key; the generated
    dvc.yaml lists it as a param of that rule's stages, and of no other."""
    config = copy.deepcopy(CONFIG)
    config["pretrain"]["new_knob"] = 3
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    shutil.copytree(ROOT / "workflow" / "rules", tmp_path / "workflow" / "rules")
    builder = rule_settings.RULE_SETTINGS["pretrain"]

    def reads_the_new_knob(config, strategy):
        return builder(config, strategy) + f" --new-knob {config['pretrain']['new_knob']}"

    monkeypatch.setitem(rule_settings.RULE_SETTINGS, "pretrain", reads_the_new_knob)
    table4 = SnakemakeJob("table4", outputs=["results/table4.csv"], log="logs/tables/table4.log")
    stages = build_dvc_yaml([PRETRAIN_JOB, table4], [], tmp_path)["stages"]
    assert "pretrain.new_knob" in stage_params(stages["pretrain-fe-s1"])["config/config.yaml"]
    assert "pretrain.new_knob" not in stage_params(stages["table4"])["config/config.yaml"]


def test_keys_are_the_leaves_read_and_a_mapping_used_whole_owns_its_leaves():
    pretrain = keys_read(CONFIG, "pretrain", {"strategy": "fe-k2"})
    assert "pretrain.learning_rate" in pretrain and "model.hidden_size" in pretrain
    assert {"pretrain.replacement.mask", "pretrain.span.geometric_p"} <= set(pretrain)  # flags given whole
    assert "pretrain.strategies" not in pretrain  # adding a strategy must not invalidate the others
    finetune = keys_read(CONFIG, "finetune", {"task": "stsb", "setting": "scratch"})
    assert "finetune.per_task.stsb.learning_rates" in finetune and "finetune.learning_rates" in finetune
    assert not [key for key in finetune if key.startswith(("finetune.per_task.cola", "finetune.tasks", "continual"))]
    continual = keys_read(CONFIG, "finetune", {"task": "sst2", "setting": "continual"})
    assert "continual.finetune.epochs" in continual and "finetune.epochs" not in continual  # the key on top only
    assert keys_read(CONFIG, "download_task", {"task": "sst2"}) == []  # where from (hub_mirror) is not a param


def test_table1_reads_the_general_learning_rate_only_when_continual_leaves_it_out():
    assert "finetune.learning_rates" not in keys_read(CONFIG, "table1", {})
    config = copy.deepcopy(CONFIG)
    del config["continual"]["finetune"]["learning_rates"]
    table1 = keys_read(config, "table1", {})
    assert "finetune.learning_rates" in table1 and "continual.finetune.epochs" not in table1


def test_speed_settings_are_never_params():
    for rule in rule_settings.RULE_SETTINGS:
        wildcards = {"strategy": "fe", "task": "sst2", "setting": "scratch", "corpus": "bbc"}
        assert not [
            key for key in keys_read(CONFIG, rule, wildcards) if key.startswith(("implementation", "resources"))
        ]
    with pytest.raises(ConfigError, match="implementation is a speed setting, not a param"):
        RecordedConfig({"implementation": {"pretrain_bf16": True}})["implementation"]["pretrain_bf16"]
    assert str(rule_settings.launcher(CONFIG, "pretrain")) == "fem"


def test_speed_flags_are_left_out_of_snakemakes_params_record():
    """Snakemake reruns a job whose recorded params changed, and records only builtin values."""
    from snakemake.persistence import UNREPRESENTABLE, PersistenceBase

    assert PersistenceBase._serialize_param_builtin(None, SpeedFlags("--bf16 true")) is UNREPRESENTABLE
    assert PersistenceBase._serialize_param_builtin(None, "--mask-ratio 0.15") == "'--mask-ratio 0.15'"


def test_a_rule_without_an_entry_stops_generation():
    with pytest.raises(ConfigError, match="rule 'new_rule' has no entry in fem.rule_settings.RULE_SETTINGS"):
        keys_read(CONFIG, "new_rule", {})


def test_rule_files_read_the_config_only_through_rule_settings():
    """Outside common.smk (config checks, the corpus folder, threads) no rule file reads a
    config key itself: a read there would be missing from dvc.yaml's params."""
    for path in sorted((ROOT / "workflow" / "rules").glob("*.smk")):
        if path.name != "common.smk":
            assert not re.findall(r"\bconfig\s*(\[|\.get)", path.read_text()), path.name


def test_keys_read_by_every_job_of_the_default_dag_are_the_committed_params(tmp_path, mirror, monkeypatch):
    for name in ["Snakefile", "profiles", "workflow", "config", "fem"]:
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, tmp_path / name)
    monkeypatch.setenv("FEM_HUB_MIRROR", str(mirror))
    jobs = dry_run_jobs(["results/report.md"], [], tmp_path)
    committed = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert {stage_name(job) for job in jobs} == set(committed)
    for job in jobs:
        expected = stage_params(committed[stage_name(job)]).get("config/config.yaml", [])
        assert keys_read(CONFIG, job.rule, job.wildcards) == expected, stage_name(job)
