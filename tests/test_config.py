import copy
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import change_config, copy_workflow, snakemake

from fem.config import check_config, deep_update, load_yaml
from fem.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def config() -> dict:
    return copy.deepcopy(load_yaml(ROOT / "config" / "config.yaml"))


def test_default_and_micro_configs_are_valid(config):
    check_config(config)
    check_config(load_yaml(ROOT / "tests" / "configs" / "micro.yaml"))


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda c: c["pretrain"].update(mask_ratio=1.5), "pretrain.mask_ratio: 1.5 is not allowed; expected masking ratio"),
        (lambda c: c["pretrain"].update(strategies=["random", "bogus"]), "pretrain.strategies[1]: 'bogus' is not allowed; expected one of random, random_k, fe, fe_contiguous, span, fe_span, whole_word"),
        (lambda c: c["pretrain"].update(steps=-5), "pretrain.steps: -5 is not allowed; expected optimizer steps, a positive integer"),
        (lambda c: c["pretrain"].update(steps="many"), "pretrain.steps: 'many' is not allowed"),
        (lambda c: c["pretrain"].update(steps=300.0), "pretrain.steps: 300.0 is not allowed"),
        (lambda c: c["seeds"].update(pretrain=[1.0]), "seeds.pretrain[0]: 1.0 is not allowed"),
        (lambda c: c.update(typo_key=1), "typo_key: unknown key; allowed keys here:"),
        (lambda c: c["model"].update(hidden=64), "model.hidden: unknown key"),
        (lambda c: c["finetune"].pop("epochs"), "finetune.epochs: missing; expected passes over the training set"),
        (lambda c: c["finetune"].update(tasks=["squad3"]), "finetune.tasks[0]: 'squad3' is not allowed; expected one of cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli, squad, squad_v2"),
        # a task's metrics are the registry's (Task.metrics): the old key is named as removed
        (lambda c: c["finetune"].update(metrics={"sst2": ["accuracy"]}), "finetune.metrics: removed: a task's metrics are its entry's in fem/registry.py (Task.metrics); delete the key"),
        (lambda c: c["continual"]["finetune"].update(metrics={"bbc_news": ["macro_f1"]}), "continual.finetune.metrics: unknown key; allowed keys here:"),
        (lambda c: c["finetune"].update(learning_rates=[]), "finetune.learning_rates: [] is not allowed; expected peak AdamW learning rate(s)"),
        (lambda c: c["finetune"]["squad"].update(doc_stride=400), "finetune.squad.doc_stride: 400 must be below finetune.squad.max_length = 384"),
        (lambda c: c["pretrain"].update(steps=1200, save_steps=[300, 1200]), "pretrain.save_steps: [1200] not below pretrain.steps = 1200"),
        (lambda c: c["pretrain"]["replacement"].update(mask=0.5), "pretrain.replacement: mask + random + keep = 0.7"),
        (lambda c: c["pretrain"]["block"].update(min_length=5, max_length=3), "pretrain.block.min_length: 5 exceeds pretrain.block.max_length = 3; expected min_length <= max_length"),
        (lambda c: c["model"].update(num_attention_heads=3), "model.num_attention_heads: 3 does not divide"),
        (lambda c: c["pretrain"].update(rows_per_step=50), "pretrain.rows_per_step: 50 is not a multiple of K = 7"),
        (lambda c: c["pretrain"].update(segments=1), "pretrain.segments: 1 is not allowed"),
        (lambda c: c["model"].update(dropout=1.0), "model.dropout: 1.0 is not allowed; expected hidden and attention dropout"),
        (lambda c: c.update(resources={"pretrain": {"gpu": 2, "tasks": 2}}), "resources.pretrain.tasks: unknown key"),
        (lambda c: c.update(resources={"pretrian": {"gpu": 2}}), "resources.pretrian: unknown key"),
        (lambda c: c.update(resources={"pretrain": {"gpu": 0}}), "resources.pretrain.gpu: 0 is not allowed; expected GPUs per job"),
        # 14 rows: fe has 2 sequences per step and Table 4's K = 14 only one; 2 processes cannot share it
        (lambda c: c.update(resources={"pretrain": {"gpu": 2}}), "resources.pretrain.gpu: 2 processes but only 1 sequences per step (14 rows / K = 14); expected at most 1 GPUs"),
        (lambda c: c.update(resources={"variance": {"gpu": 2}}), "resources.variance.gpu: 2; variance runs on one GPU at most"),
        (lambda c: c["implementation"].update(pretrain_attention="flash"), "implementation.pretrain_attention: 'flash' is not allowed; expected one of sdpa, eager"),
        (lambda c: c["pretrain"].update(match="tokens"), "pretrain.match: 'tokens' is not allowed; expected one of rows, sequences"),
        (lambda c: c["pretrain"].pop("match"), "pretrain.match: missing; expected what every masking strategy gets equal"),
        (lambda c: c["continual"]["pretrain"].update(match="both"), "continual.pretrain.match: 'both' is not allowed"),
        # under match sequences K does not divide the count, but every process still needs a sequence
        (lambda c: c["pretrain"].update(match="sequences", rows_per_step=3) or c.update(resources={"pretrain": {"gpu": 4}}),
         "resources.pretrain.gpu: 4 processes but only 3 sequences per step; expected at most 3 GPUs"),
    ],
)  # fmt: skip
def test_bad_values_are_named_with_what_is_allowed(config, change, expected):
    change(config)
    with pytest.raises(ConfigError) as raised:
        check_config(config)
    assert expected in str(raised.value)


def test_match_sequences_lifts_the_multiple_of_k_rule(config):
    """Under match: sequences every strategy takes rows_per_step sequences, so any count works for
    the K-copy strategies, Table 4's K values and the processes; under match: rows it must be a
    multiple of every K."""
    config["pretrain"].update(strategies=["random", "random_k", "fe"], rows_per_step=10)
    config["continual"]["pretrain"]["rows_per_step"] = 10
    config["resources"] = {"pretrain": {"gpu": 10}, "pretrain_continual": {"gpu": 10}}
    with pytest.raises(ConfigError) as raised:
        check_config(config)
    for expected in ("pretrain.rows_per_step: 10 is not a multiple of K = 7",
                     "segment_counts.segments: [7, 14] do not divide pretrain.rows_per_step = 10",
                     "resources.pretrain.gpu: 10 processes but only 0 sequences per step (10 rows / K = 14)",
                     "continual.pretrain.rows_per_step: 10 is not a multiple of K = 7"):  # fmt: skip
        assert expected in str(raised.value)
    config["pretrain"]["match"] = "sequences"  # the continual runs inherit it
    check_config(config)


def test_snakemake_refuses_a_bad_config_fast_and_starts_no_job(tmp_path):
    bad = load_yaml(ROOT / "config" / "config.yaml")
    bad["pretrain"]["mask_ratio"] = 1.5
    bad["pretrain"]["strategies"] = ["random", "unknown_strategy"]
    bad["finetune"]["epochs"] = -1
    bad["model"]["hidden_size"] = "big"
    bad["unknown_section"] = {"x": 1}
    bad_file = tmp_path / "bad.yaml"
    import yaml

    bad_file.write_text(yaml.safe_dump(bad))
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "1", "results/table2.csv", "--configfile", str(bad_file),
         "--directory", str(tmp_path), "--snakefile", str(ROOT / "Snakefile")],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert elapsed < 30, (
        f"took {elapsed:.1f}s"
    )  # at plan time: a job would take minutes (loose for busy 2-core machines)
    assert "pretrain.mask_ratio: 1.5 is not allowed" in output
    assert "pretrain.strategies[1]: 'unknown_strategy' is not allowed" in output
    assert "finetune.epochs: -1 is not allowed" in output
    assert "model.hidden_size: 'big' is not allowed; expected width of the encoder, a positive integer" in output
    assert "unknown_section: unknown key; allowed keys here:" in output
    assert "Traceback" not in output
    assert not (tmp_path / "logs").exists() and not (tmp_path / "data").exists()


def test_schema_documents_every_key():
    schema = load_yaml(ROOT / "workflow" / "schemas" / "config.schema.yaml")
    undocumented = []

    def walk(node: dict, path: str) -> None:
        for key, child in node.get("properties", {}).items():
            if not isinstance(child.get("description"), str) or not child["description"].strip():
                undocumented.append(f"{path}{key}")
            assert None not in child.values(), f"{path}{key}: a null value (unquoted comma in a YAML flow mapping?)"
            walk(child, f"{path}{key}.")

    walk(schema, "")
    for name, definition in schema["$defs"].items():  # keys shared by several sections (pretrain_keys, ...)
        walk(definition, f"$defs.{name}.")
    assert undocumented == []


def test_finetune_per_task_values_reach_only_that_tasks_jobs_and_its_dvc_params(tmp_path, mirror):
    """finetune.per_task.<task> replaces the general finetune values in that task's jobs only,
    and dvc.yaml names it among that stage's params (so changing it reruns only that task)."""

    from fem.rule_settings import keys_read

    work = copy_workflow(tmp_path)
    per_task = {"stsb": {"max_train_examples": 7, "learning_rates": [0.01]}}
    change_config(work, {"finetune": {"per_task": per_task}})
    output = snakemake(work, "-n", "-p", "results/table2.csv", mirror=mirror)
    commands = [line for line in output.splitlines() if line.startswith("Shell command: fem finetune ")]
    stsb = [c for c in commands if "--task stsb " in c]
    sst2 = [c for c in commands if "--task sst2 " in c]
    assert stsb and sst2
    assert all("--max-train-examples 7 " in c and "--learning-rates '[0.01]'" in c for c in stsb)
    assert all("--max-train-examples 48 " in c and "--learning-rates '[0.0001]'" in c for c in sst2)

    config = yaml.safe_load((work / "micro.yaml").read_text())
    deep_update(config, {"finetune": {"per_task": per_task}})
    stsb_keys = keys_read(config, "finetune", {"task": "stsb", "setting": "scratch"})
    assert "finetune.per_task.stsb.max_train_examples" in stsb_keys
    assert not [k for k in keys_read(config, "finetune", {"task": "sst2", "setting": "scratch"}) if "per_task" in k]
