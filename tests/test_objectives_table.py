"""Table 6 (objectives): its runs and settings (fem/objective_settings.py), its table
(fem/tables/objectives.py, Table 2's statistics one row per run), the config check of
objectives.runs, and the table built end to end on the micro config."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from helpers import change_config, copy_workflow, planned, snakemake, snakemake_report

from fem.config import check_config, load_yaml
from fem.errors import ConfigError, DataError
from fem.objective_settings import counterpart, objective_comparisons, objective_pretrain_flags
from fem.recompute import recompute_problems
from fem.rule_settings import keys_read
from fem.tables.objectives import load_objective_runs, objectives_table
from fem.tables.scores import glue_table, load_runs

ROOT = Path(__file__).resolve().parent.parent
CONFIG = load_yaml(ROOT / "config" / "config.yaml")
OBJECTIVES = CONFIG["objectives"]
T975_DF2 = 4.302652729749462  # scipy.stats.t.ppf(0.975, 2): three pre-training seeds

# sst2 accuracy per pre-training seed 1..3, and validation MLM loss
SCORES = {"random": (0.70, 0.72, 0.74), "random_k": (0.71, 0.75, 0.76), "fe": (0.73, 0.74, 0.80),
          "pmlm.block": (0.69, 0.73, 0.71), "pmlm.fe": (0.72, 0.70, 0.75), "random.decay": (0.71, 0.74, 0.74)}  # fmt: skip
LOSSES = {"random": 7.0, "random_k": 6.9, "fe": 6.8, "pmlm.block": 7.2, "pmlm.fe": 7.4, "random.decay": 6.95}
RUNS = list(SCORES)


def write_finetune(folder: Path, name: str, seed: int, score: float) -> Path:
    """A fine-tuning run's metrics.json (fem finetune's keys), labelled with run name `name`."""
    path = folder / "finetune" / f"sst2-{name}-s{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "task": "sst2", "metric_names": ["accuracy"], "score": score, "metrics": {"accuracy": score},
        "run": {"strategy": name, "pretrain_seed": seed, "finetune_seed": 1, "setting": "objectives"},
        "trivial_metrics": {"accuracy": 0.5}, "trivial_score": 0.5,
    }))  # fmt: skip
    return path


def write_pretrain(folder: Path, name: str, seed: int, loss: float) -> Path:
    """A pre-training run's metrics.json with the keys fem pretrain records, in a folder whose
    name is NOT the run's (the table must name it from objective, strategy and schedule)."""
    from fem.registry import parse_run_label

    run = parse_run_label(name)
    path = folder / "pretrain" / f"run{len(list(folder.glob('pretrain/*')))}" / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({
        "strategy": run.strategy, "objective": run.objective, "seed": seed, "segments": 7,
        "mask_ratio_schedule": {"start": 0.3, "end": 0.15} if run.decay else None,
        "validation_mlm_loss": loss + 0.01 * seed, "validation_masked_accuracy": 0.1, "unigram_validation_loss": 7.5,
        "unigram_validation_accuracy": 0.06, "match": "rows", "rows_per_step": 21 if run.objective == "pmlm" else 63,
        "sequences_per_step": 9, "predictions_per_step": 150.0, "flops_per_step": 2.0e10,
        "flops_ratio_to_mlm": 0.98 if run.objective == "pmlm" else 1.0, "tokens_per_step": 8064,
        "masking_ratio_per_row": 0.15, "clipped_share": 0.0, "wall_seconds": 90.0 + seed,
    }))  # fmt: skip
    return path


@pytest.fixture
def objective_runs(tmp_path) -> tuple[list[Path], list[Path]]:
    finetune = [write_finetune(tmp_path, name, seed + 1, v) for name, vs in SCORES.items() for seed, v in enumerate(vs)]
    pretrain = [write_pretrain(tmp_path, name, seed, loss) for name, loss in LOSSES.items() for seed in (1, 2, 3)]
    return finetune, pretrain


def test_runs_are_compared_with_the_control_and_fe_variants_with_their_counterpart():
    assert [counterpart(name, 7) for name in ("fe", "pmlm.fe", "plm.fe", "mpnet.fe", "fe-k4", "fe_salient_span",
                                              "random", "pmlm.block", "salient_span", "kgplm.salient_span")
            ] == ["random_k", "pmlm.block", "plm.random", "mpnet.random", "random_k-k4", "salient_span",
                  None, None, None, None]  # fmt: skip
    assert objective_comparisons(["random", "fe", "pmlm.fe", "random_k"], 7) == [
        ("fe", "random"), ("pmlm.fe", "random"), ("random_k", "random"), ("fe", "random_k")]  # fmt: skip


def test_a_run_name_sets_objective_strategy_k_and_schedule_on_top_of_the_pretrain_keys():
    flags = objective_pretrain_flags(CONFIG, "pmlm.fe")
    for flag in ("--objective '\"pmlm\"'", "--strategy '\"fe\"'", "--save-steps '[]'", "--mask-ratio-schedule null",
                 f"--rows-per-step {OBJECTIVES['rows_per_step']}", f"--steps {OBJECTIVES['steps']}",
                 f"--warmup-steps {OBJECTIVES['warmup_steps']}", "--learning-rate 0.002"):  # fmt: skip
        assert flag in flags
    assert '--mask-ratio-schedule \'{"end": 0.15, "start": 0.3}\'' in objective_pretrain_flags(CONFIG, "random.decay")
    assert "--segments 4" in objective_pretrain_flags(CONFIG, "fe-k4")
    keys = keys_read(CONFIG, "pretrain", {"setting": "objectives", "strategy": "random.decay", "seed": "1"})
    assert {"objectives.steps", "objectives.decay_schedule.start", "pretrain.block.min_length"} <= set(keys)
    assert not {"pretrain.steps", "pretrain.save_steps", "pretrain.objective", "pretrain.strategies"} & set(keys)
    plain = keys_read(CONFIG, "pretrain", {"setting": "objectives", "strategy": "pmlm.block", "seed": "1"})
    assert "objectives.decay_schedule.start" not in plain and "pretrain.mask_ratio_schedule" in plain
    table = keys_read(CONFIG, "table6", {})
    assert {"objectives.runs", "objectives.tasks", "seeds.pretrain"} <= set(table)
    assert not [key for key in table if key.startswith(("implementation", "resources"))]


def test_table6_is_table2s_statistics_one_row_per_run(objective_runs):
    finetune, pretrain = objective_runs
    runs, comparisons = load_runs(finetune), objective_comparisons(RUNS, 7)
    table = objectives_table(runs, load_objective_runs(pretrain, 7), ["sst2"], RUNS, "random", comparisons)
    assert table.run.tolist() == RUNS
    row = table.set_index("run")
    # the same numbers as Table 2's code gives with the runs as strategies
    table2 = glue_table(runs, ["sst2"], RUNS, comparisons).iloc[0]
    for name, other, role in (("fe", "random", "control"), ("fe", "random_k", "counterpart"),
                              ("pmlm.fe", "pmlm.block", "counterpart"), ("random.decay", "random", "control")):  # fmt: skip
        for suffix in ("", "_lo", "_hi", "_sd", "_mdd", "_p_sign", "_p_t"):
            assert row.loc[name, f"sst2_minus_{role}{suffix}"] == table2[f"{name}_minus_{other}{suffix}"], (
                name,
                suffix,
            )
    # by hand: fe - random_k per seed (2, -1, 4): mean 5/3, sd sqrt(19/3)
    sd = math.sqrt(19 / 3)
    assert row.loc["fe", "sst2_minus_counterpart"] == pytest.approx(5 / 3, abs=1e-4)
    assert row.loc["fe", "sst2_minus_counterpart_hi"] == pytest.approx(5 / 3 + T975_DF2 * sd / math.sqrt(3), abs=1e-4)
    assert (row.loc["fe", "control"], row.loc["fe", "counterpart"]) == ("random", "random_k")
    assert row.loc["pmlm.fe", "counterpart"] == "pmlm.block" and row.loc["pmlm.block", "counterpart"] == ""
    assert math.isnan(row.loc["random", "sst2_minus_control"]) and row.loc["random", "significance"] == ""
    assert row.loc["random", "sst2"] == pytest.approx(72.0) and row.loc["random", "sst2_trivial"] == 50.0
    assert row.loc["random.decay", "validation_mlm_loss"] == pytest.approx(6.97, abs=1e-4)  # named from its schedule
    assert row.loc["pmlm.fe", "validation_mlm_loss_minus_control"] == pytest.approx(0.4, abs=1e-4)
    assert row.loc["pmlm.fe", "rows_per_step"] == 21 and row.loc["pmlm.fe", "flops_ratio_to_mlm"] == 0.98
    assert row.loc["fe", "wall_seconds"] == pytest.approx(92.0)
    assert "cannot go below 0.25" in row.loc["fe", "significance"] and row.loc["fe", "pairs"] == 3
    assert len(row.loc["fe", "runs"].split(";")) == 3 * 2 * 3  # its own, random's and random_k's, both kinds


def test_fem_table6_writes_the_table_and_the_audit_rebuilds_it(objective_runs, tmp_path):
    finetune, pretrain = objective_runs
    comparisons = [f"{a}:{b}" for a, b in objective_comparisons(RUNS, 7)]
    csv, md = tmp_path / "table6.csv", tmp_path / "table6.md"
    done = subprocess.run(
        [sys.executable, "-m", "fem", "table6", "--csv", str(csv), "--md", str(md), "--caption", "A caption.",
         "--tasks", "sst2", "--runs", *RUNS, "--control", "random", "--comparisons", *comparisons,
         "--pretrain-metrics", *map(str, pretrain), "--default-segments", "7", *map(str, finetune)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    text = md.read_text()
    assert "A caption." in text and "| pmlm.fe | counterpart pmlm.block | sst2 |" in text
    assert "Significance: 3 pairs: the sign-flip p cannot go below 0.25" in text
    record_path = tmp_path / "table6.provenance.json"
    record = json.loads(record_path.read_text())
    assert recompute_problems(str(csv), str(record_path), record)[0] == []
    edited = pd.read_csv(csv)
    edited.loc[2, "sst2"] += 1
    edited.to_csv(csv, index=False)
    problems, _ = recompute_problems(str(csv), str(record_path), record)
    assert len(problems) == 1 and "row run fe, column sst2" in problems[0]["message"]


def test_a_pretraining_run_without_the_objective_keys_is_one_line_naming_it(objective_runs):
    _, pretrain = objective_runs
    data = json.loads(pretrain[0].read_text())
    del data["flops_ratio_to_mlm"]
    pretrain[0].write_text(json.dumps(data))
    with pytest.raises(DataError, match=f"{pretrain[0]}: no key 'flops_ratio_to_mlm'"):
        load_objective_runs(pretrain, 7)


@pytest.mark.parametrize(
    "runs, expected",
    [
        (["random", "fe", "bogus"], "objectives.runs: run name 'bogus': expected [<objective>.]<strategy>"),
        (["random", "plm.block"], "objectives.runs: plm.block: objective plm does not run with strategy block"),
        (["random", "fe.decay"], "objectives.runs: fe.decay: a masking-rate schedule needs objective mlm"),
        (["random", "pmlm.random.decay"], "objectives.runs: pmlm.random.decay: a masking-rate schedule needs"),
        (["fe", "pmlm.block"], "objectives.runs: no random; expected it among the runs"),
        (["random", "fe-k4"], "objectives.rows_per_step: 63 is not a multiple of K = 4 (run fe-k4"),
    ],
)  # fmt: skip
def test_the_config_check_refuses_bad_objective_runs(runs, expected):
    config = copy.deepcopy(CONFIG)
    config["objectives"]["runs"] = runs
    with pytest.raises(ConfigError) as raised:
        check_config(config)
    assert expected in str(raised.value)


def test_the_config_check_refuses_non_glue_tasks_and_a_late_warmup():
    config = copy.deepcopy(CONFIG)
    config["objectives"].update(tasks=["sst2", "squad"], warmup_steps=500)
    with pytest.raises(ConfigError) as raised:
        check_config(config)
    assert "objectives.tasks: ['squad'] are not GLUE tasks" in str(raised.value)
    assert f"objectives.warmup_steps: 500 exceeds objectives.steps = {OBJECTIVES['steps']}" in str(raised.value)


@pytest.mark.slow
def test_table6_builds_on_the_micro_config_and_its_audit_passes(tmp_path, mirror):
    """Acceptance: `snakemake results/table6.csv` from a fresh copy; `fem audit --verify` passes."""
    work = copy_workflow(tmp_path)
    micro = load_yaml(ROOT / "tests" / "configs" / "micro.yaml")["objectives"]
    runs, seeds = micro["runs"], 2
    targets = ["results/table6.csv", "results/figures/pretrain_curves_objectives.png"]
    assert planned(snakemake(work, "-n", *targets, mirror=mirror)) == {
        "download_corpus": 1, "download_task": 1, "tokenize": 1, "coarse_vocab": 1, "entities": 1, "pretrain": len(runs) * seeds,
        "finetune": len(runs) * len(micro["tasks"]) * seeds, "table6": 1, "pretrain_curves": 1}  # fmt: skip
    start = time.perf_counter()
    snakemake(work, *targets, mirror=mirror)
    print(f"micro table6: {time.perf_counter() - start:.0f} s")
    table = pd.read_csv(work / "results" / "table6.csv").set_index("run")
    assert table.index.tolist() == runs
    assert (
        table.loc[runs[1:], ["sst2", "sst2_minus_control_sd", "validation_mlm_loss_minus_control"]].notna().all().all()
    )
    augmented = [name for name in runs if "." in name and not name.endswith(".decay")]  # and MASS, LICHEE, KgPLM
    assert table.loc[augmented, "flops_ratio_to_mlm"].between(0.95, 1.05).all()  # matched; mlm keeps its rows
    assert table.loc["random.decay", "flops_ratio_to_mlm"] > 1.05 and table.loc["random", "flops_ratio_to_mlm"] == 1
    assert table.loc["pmlm.fe", "counterpart"] == "pmlm.block"
    decay = json.loads((work / "results/objectives/pretrain/random.decay-s1/metrics.json").read_text())
    assert decay["mask_ratio_schedule"] == {"start": 0.3, "end": 0.15} and decay["objective"] == "mlm"
    pmlm = json.loads((work / "results/objectives/pretrain/pmlm.block-s1/metrics.json").read_text())
    assert (pmlm["objective"], pmlm["strategy"]) == ("pmlm", "block")
    assert not (work / "results/objectives/pretrain/fe-s1/checkpoints/step-0").exists()  # save_steps []
    mass = json.loads((work / "results/objectives/pretrain/mass.fragment-s1/metrics.json").read_text())
    assert (mass["objective"], mass["strategy"]) == ("mass", "fragment") and mass["sequences_per_step"] < 70
    lichee = json.loads((work / "results/objectives/pretrain/lichee.whole_word-s1/provenance.json").read_text())
    assert "coarse_vocab.json" in json.dumps(lichee["inputs"])  # its coarse vocabulary, hashed
    lichee = json.loads((work / "results/objectives/pretrain/lichee.whole_word-s1/metrics.json").read_text())
    random = json.loads((work / "results/objectives/pretrain/random-s1/metrics.json").read_text())
    assert lichee["row_length"] == 32 and lichee["sequences_per_step"] == random["sequences_per_step"]  # plain rows
    kgplm = json.loads((work / "results/objectives/pretrain/kgplm.salient_span-s1/metrics.json").read_text())
    assert kgplm["objective"] == "kgplm" and kgplm["sequences_per_step"] < 70  # two encoder passes per row
    audit = subprocess.run(
        [sys.executable, "-m", "fem", "audit", "results/table6.csv", "--verify", "--allow-dirty"],
        cwd=work, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert audit.returncode == 0, (audit.stdout + audit.stderr)[-3000:]
    assert "every number recomputed from its runs" in audit.stdout + audit.stderr
    report = snakemake_report(work, *targets, mirror=mirror)  # Snakemake's HTML report of both
    assert set(report) == {"results/table6.csv", "results/table6.md", targets[1]}
    caption = (work / "results" / "table6.md").read_text().split("\n\n")[1][:60]  # the table's own caption ...
    assert caption.startswith("Scale 'micro'") and report["results/table6.md"]["caption"].startswith(f"<p>{caption}")
    assert report[targets[1]]["mime_type"] == "image/png" and report[targets[1]]["rule"] == "pretrain_curves"
    assert "Table 6" in report[targets[1]]["caption"]  # ... and the figure's, with its title
    change_config(work, {"objectives": {"decay_schedule": {"start": 0.25}}})  # only the .decay runs read it
    assert planned(snakemake(work, "-n", "results/table6.csv", mirror=mirror)) == {
        "pretrain": seeds, "finetune": len(micro["tasks"]) * seeds, "table6": 1}  # fmt: skip


def test_the_caption_names_the_parameters_that_mass_and_kgplm_add_counted_on_the_real_modules():
    """Table 6's caption says how many parameters MASS's decoder and KgPLM's discriminator head
    add: the counts it gives equal those of the modules pre-training builds (parameters shared
    with the encoder not counted), and it describes the entity-span strategies."""
    from fem.kgplm import DiscriminatorHead
    from fem.mass import build_decoder
    from fem.modeling import build_bert
    from fem.objective_settings import objective_notes

    config = copy.deepcopy(CONFIG)
    config["model"].update(hidden_size=32, intermediate_size=48)
    config["pretrain"]["mass"]["decoder_layers"] = 2
    model = build_bert(100, 32, 1, 2, 48, max_position_embeddings=64)
    shared = {id(p) for p in model.parameters()}
    decoder = sum(p.numel() for p in build_decoder(model, 2).parameters() if id(p) not in shared)
    head = sum(p.numel() for p in DiscriminatorHead(32).parameters())
    notes = objective_notes(config, ["random", "mass.fragment", "fe_salient_span", "kgplm.salient_span"])
    assert f"({decoder:,} more parameters" in notes and f"({head:,} more parameters" in notes
    assert config["entities"]["spacy_model"] in notes and "one-token fragment" in notes
    assert objective_notes(config, ["random", "pmlm.block"]) == ""
