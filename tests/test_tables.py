import json
import math
import subprocess
import sys

import pandas as pd
import pytest
from scipy import stats

from fem.cli import main
from fem.errors import DataError
from fem.registry import parse_strategy_label
from fem.tables.intrinsic import load_pretrain_runs
from fem.tables.scores import glue_table, load_runs, to_markdown

T975_DF2 = 4.302652729749462  # scipy.stats.t.ppf(0.975, 2): three pre-training seeds
T80_DF2 = 1.0606601717798214  # scipy.stats.t.ppf(0.80, 2)


def write_run(folder, task, strategy, seed, ftseed, score, metrics=("accuracy",), values=None, trivial=0.5, step=None):
    path = folder / f"{task}-{strategy}-{seed}-{ftseed}{'' if step is None else f'-{step}'}.json"
    run = {"strategy": strategy, "pretrain_seed": seed, "finetune_seed": ftseed} | ({"step": step} if step else {})
    path.write_text(json.dumps({
        "task": task, "metric_names": list(metrics), "score": score,
        "metrics": values or {m: score for m in metrics}, "run": run,
        "trivial_metrics": {m: trivial for m in metrics}, "trivial_score": trivial,
    }))  # fmt: skip
    return path


def write_pretrain(folder, strategy, seed, loss, accuracy, segments=7, predictions=252.0, **changes):
    """A pre-training run's metrics.json with the keys of fem pretrain (interfaces15.md §1);
    `strategy` a table name ("fe-k2": fe with K = 2, `segments` its default K)."""
    run = folder / "pretrain" / f"{strategy}-s{seed}"
    run.mkdir(parents=True)
    base, k = parse_strategy_label(strategy)
    metrics = {"strategy": base, "seed": seed, "segments": k or segments, "validation_mlm_loss": loss, "validation_masked_accuracy": accuracy, "unigram_validation_loss": 7.5,
               "unigram_validation_accuracy": 0.06, "match": "rows", "rows_per_step": 14,
               "sequences_per_step": 14 if strategy == "random" else 14 // segments,
               "predictions_per_step": predictions, "flops_per_step": 1.5e9,
               "masking_ratio_per_row": 0.15 if strategy == "random" else 1 / segments, "clipped_share": 0.05}  # fmt: skip
    metrics.update(changes)
    (run / "metrics.json").write_text(json.dumps({k: v for k, v in metrics.items() if v is not None}))
    return run / "metrics.json"


SCORES = {"random": (0.70, 0.72, 0.74), "random_k": (0.71, 0.75, 0.76), "fe": (0.73, 0.74, 0.80)}
LOSSES = {"random": (7.0, 7.1, 7.2), "random_k": (6.9, 7.0, 7.3), "fe": (6.8, 6.9, 7.0)}
STRATEGIES = ["random", "random_k", "fe"]


@pytest.fixture
def three_strategies(tmp_path):
    """sst2 runs of three strategies x three pre-training seeds (one fine-tuning seed each)
    with a trivial (majority-class) accuracy of 0.5, and their pre-training metrics."""
    runs = [write_run(tmp_path, "sst2", s, seed + 1, 1, v) for s, vs in SCORES.items() for seed, v in enumerate(vs)]
    pretrain = [write_pretrain(tmp_path, s, seed + 1, loss, 0.05 + 0.01 * seed)
                for s, losses in LOSSES.items() for seed, loss in enumerate(losses)]  # fmt: skip
    return runs, pretrain


def test_intervals_differences_and_trivial_baselines_by_hand(three_strategies):
    runs, pretrain = three_strategies
    table = glue_table(load_runs(runs), ["sst2"], STRATEGIES, pretrain=load_pretrain_runs(pretrain))
    assert list(zip(table.task, table.metric, strict=True)) == [
        ("sst2", "accuracy"), ("glue average", "mean of task scores"), ("mlm validation", "loss"),
        ("mlm validation", "masked-token accuracy")]  # fmt: skip
    sst2, loss, accuracy = (table.iloc[i] for i in (0, 2, 3))
    # random: 70, 72, 74 -> mean 72, sd 2, interval 72 -+ t_0.975,2 * 2 / sqrt(3)
    assert (sst2.random, sst2.random_std, sst2.trivial) == (pytest.approx(72.0), pytest.approx(2.0), 50.0)
    assert sst2.random_lo == pytest.approx(72 - T975_DF2 * 2 / math.sqrt(3), abs=1e-4)
    assert sst2.random_hi == pytest.approx(76.9683, abs=1e-4)
    assert sst2.random_above_trivial and sst2.fe_above_trivial and sst2.pairs == 3
    # fe - random_k per seed: (2, -1, 4): mean 5/3, sd sqrt(19/3)
    sd = math.sqrt(19 / 3)
    assert sst2.fe_minus_random_k == pytest.approx(5 / 3, abs=1e-4)
    assert sst2.fe_minus_random_k_sd == pytest.approx(sd, abs=1e-4)
    assert sst2.fe_minus_random_k_lo == pytest.approx(5 / 3 - T975_DF2 * sd / math.sqrt(3), abs=1e-4)
    assert sst2.fe_minus_random_k_hi == pytest.approx(5 / 3 + T975_DF2 * sd / math.sqrt(3), abs=1e-4)
    assert sst2.fe_minus_random_k_mdd == pytest.approx((T975_DF2 + T80_DF2) * sd / math.sqrt(3), abs=1e-4)
    # sums of the 8 sign flips of (2, -1, 4): +-7, +-5, +-1, +-3; 4 reach |5|
    assert sst2.fe_minus_random_k_p_sign == 0.5
    assert sst2.fe_minus_random_k_p_t == pytest.approx(2 * stats.t.sf((5 / 3) / (sd / math.sqrt(3)), 2), abs=1e-6)
    # fe - random per seed: (3, 2, 6), all positive: p = 2/8
    assert sst2.fe_minus_random == pytest.approx(11 / 3, abs=1e-4) and sst2.fe_minus_random_p_sign == 0.25
    assert "random_k_minus_random" not in table.columns  # default comparisons: fe:random_k, fe:random
    # the loss is lower-is-better, in nats: every interval lies below the unigram model's 7.5
    assert (loss.unit, loss.better, loss.trivial, loss.random) == ("nats per masked token", "lower", 7.5, 7.1)
    assert loss.random_hi == pytest.approx(7.1 + T975_DF2 * 0.1 / math.sqrt(3), abs=1e-4)
    assert loss.random_above_trivial and loss.fe_above_trivial
    assert loss.fe_minus_random == pytest.approx(-0.2, abs=1e-4) and loss.fe_minus_random_sd == pytest.approx(0.0)
    # masked-token accuracy x 100: 5, 6, 7 against the unigram 6: not beyond the interval
    assert accuracy.random == pytest.approx(6.0) and accuracy.trivial == 6.0 and not accuracy.fe_above_trivial
    assert accuracy.runs.count(";") == 8 and "pretrain/fe-s2/metrics.json" in accuracy.runs

    markdown = to_markdown(table, "Table 2", "Caption text.")
    assert "| sst2 | accuracy | 50.00 | 72.00 [67.03, 76.97] |" in markdown
    assert "| mlm validation | loss | 7.500 | 7.100 [6.852, 7.348] |" in markdown
    assert markdown.count("| random, random_k, fe |") == 2  # sst2 and its average
    assert "| 6.900 [6.652, 7.148] | random, fe |" in markdown  # random_k's loss interval reaches 7.584
    assert "| sst2 | accuracy | fe − random_k | +1.67 [-4.58, 7.92] | 2.52 | 7.79 | 0.5 | 0.37 | 3 |" in markdown


def test_fem_score_table_writes_the_step_of_each_strategy(three_strategies, tmp_path):
    runs, pretrain = three_strategies
    out = tmp_path / "results"
    main(["score-table", "--csv", str(out / "t2.csv"), "--md", str(out / "t2.md"), "--tasks", "sst2", "--strategies",
          *STRATEGIES, "--comparisons", "fe:random_k", "--caption", "C.", "--pretrain-metrics", *map(str, pretrain),
          "--", *map(str, runs)])  # fmt: skip
    table = pd.read_csv(out / "t2.csv")
    assert [c for c in table.columns if "_minus_" in c][0] == "fe_minus_random_k" and "fe_minus_random" not in table
    markdown = (out / "t2.md").read_text()
    assert "| fe | rows | 14 | 2 | 252.0 | 1.5e+09 | 0.143 | 5% |" in markdown
    assert "| random | rows | 14 | 14 | 252.0 | 1.5e+09 | 0.150 | 5% |" in markdown
    provenance = json.loads((out / "t2.provenance.json").read_text())
    assert provenance["parameters"]["comparisons"] == ["fe:random_k"] and str(pretrain[0]) in provenance["inputs"]


def fem(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fem", *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize("broken", ["finetune", "pretrain", "comparison"])
def test_a_missing_key_or_unknown_comparison_is_one_line_naming_it(three_strategies, tmp_path, broken):
    runs, pretrain = three_strategies
    comparisons = ["fe:random_k"]
    if broken == "finetune":
        data = json.loads(runs[4].read_text())
        del data["trivial_score"]
        runs[4].write_text(json.dumps(data))
        message = f"{runs[4]}: no key 'trivial_score'; expected the metrics.json of a fine-tuning run"
    elif broken == "pretrain":
        write_pretrain(tmp_path / "other", "fe", 1, 7.0, 0.05, flops_per_step=None)
        pretrain[-1] = tmp_path / "other" / "pretrain" / "fe-s1" / "metrics.json"
        message = f"{pretrain[-1]}: no key 'flops_per_step'; expected the metrics.json of a `fem pretrain` run"
    else:
        comparisons = ["fe:span"]
        message = "comparison 'fe:span': 'span' is not among the strategies ['random', 'random_k', 'fe']"
    done = fem("score-table", "--csv", str(tmp_path / "t.csv"), "--md", str(tmp_path / "t.md"), "--tasks", "sst2",
               "--strategies", *STRATEGIES, "--comparisons", *comparisons, "--caption", "C.", "--pretrain-metrics",
               *map(str, pretrain), "--", *map(str, runs))  # fmt: skip
    assert done.returncode != 0 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "t.csv").exists()


def test_glue_average_squad_rows_and_their_trivial_baselines(tmp_path):
    files = []
    for strategy, shift in (("random", 0.0), ("fe", 0.02)):
        for seed in (1, 2):
            files.append(write_run(tmp_path, "sst2", strategy, seed, 1, 0.80 + shift + 0.01 * seed, trivial=0.5))
            files.append(write_run(tmp_path, "wnli", strategy, seed, 1, 0.20, trivial=0.56))
            files.append(write_run(tmp_path, "mrpc", strategy, seed, 1, 0.60 + shift, ("f1", "accuracy"), trivial=0.7))
            files.append(write_run(tmp_path, "squad", strategy, seed, 1, 0.5, ("exact_match", "f1"),
                                   {"exact_match": 0.40 + shift, "f1": 0.60 + shift}, trivial=0.0))  # fmt: skip
    table = glue_table(load_runs(files), ["sst2", "wnli", "mrpc", "squad"], ["random", "fe"])
    assert list(zip(table.task, table.metric, strict=True)) == [
        ("sst2", "accuracy"), ("wnli", "accuracy"), ("mrpc", "f1/accuracy"), ("glue average", "mean of task scores"),
        ("squad", "exact_match"), ("squad", "f1"),
    ]  # fmt: skip
    assert table.random.tolist() == pytest.approx([81.5, 20.0, 60.0, 70.75, 40.0, 60.0])
    assert table.trivial.tolist() == pytest.approx([50.0, 56.0, 70.0, 60.0, 0.0, 0.0])  # average: sst2, mrpc
    assert table.fe_minus_random.tolist() == pytest.approx([2.0, 0.0, 2.0, 2.0, 2.0, 2.0])
    assert table.fe_minus_random_sd.tolist() == pytest.approx([0.0] * 6, abs=1e-9)
    assert table.fe_minus_random_p_sign.tolist() == [0.5, 1.0, 0.5, 0.5, 0.5, 0.5]  # 2 seeds: 2/4 at best
    assert table.random_above_trivial.tolist() == [True, False, False, True, True, True]
    assert table.pretrain_seeds.tolist() == [2] * 6 and table.finetune_seeds.tolist() == [1] * 6
    with_wnli = glue_table(load_runs(files), ["sst2", "wnli"], ["random", "fe"], average_exclude=())
    assert with_wnli.random.tolist()[-1] == pytest.approx(50.75)


def test_fine_tuning_seeds_are_averaged_within_a_pretraining_seed(tmp_path):
    """Per pre-training seed, fe - random averaged over the two fine-tuning seeds is seed 1:
    0.85 - 0.70 = 0.15; seed 2: 0.61 - 0.59 = 0.02; seed 3: 0.55 - 0.50 = 0.05. Of the 8 sign
    flips of (15, 2, 5) only all-plus and all-minus reach |22|, so p = 2/8 = 0.25."""
    scores = {
        ("fe", 1): (0.90, 0.80), ("random", 1): (0.70, 0.70),
        ("fe", 2): (0.60, 0.62), ("random", 2): (0.60, 0.58),
        ("fe", 3): (0.55, 0.55), ("random", 3): (0.50, 0.50),
    }  # fmt: skip
    files = [write_run(tmp_path, "rte", strategy, seed, ftseed + 1, value)
             for (strategy, seed), values in scores.items() for ftseed, value in enumerate(values)]  # fmt: skip
    row = glue_table(load_runs(files), ["rte"], ["random", "fe"]).iloc[0]
    assert row.fe_minus_random_p_sign == 0.25 and row.pairs == 3 and row.finetune_seeds == 2
    assert row.fe_minus_random == pytest.approx(22 / 3, abs=1e-4)
    assert row.fe_std == pytest.approx(pd.Series([85.0, 61.0, 55.0]).std(), abs=1e-4)  # sd of the seed means


def test_missing_runs_are_an_error(tmp_path):
    runs = load_runs([write_run(tmp_path, "sst2", "random", 1, 1, 0.8)])
    with pytest.raises(DataError, match=r"\('sst2', 'fe'\)"):
        glue_table(runs, ["sst2"], ["random", "fe"])


def test_table3_intervals_trivial_baselines_and_comparisons_per_step(three_strategies, tmp_path):
    """`fem table3`: steps 3 and 6 (final) of three strategies x three seeds; the score at step
    3 is the final score minus 0.1, the loss at step 3 the final loss plus 1."""
    runs, pretrain = three_strategies
    runs += [write_run(tmp_path, "sst2", s, seed + 1, 1, v - 0.1, step=3) for s, vs in SCORES.items()
             for seed, v in enumerate(vs)]  # fmt: skip
    logs = []
    for metrics in pretrain:
        final = json.loads(metrics.read_text())["validation_mlm_loss"]
        log = {"validation": {"step": [0, 3, 6], "loss": [9.0, final + 1, final]}}
        logs.append(metrics.parent / "train_log.json")
        logs[-1].write_text(json.dumps(log))
    out = tmp_path / "results"
    main(["table3", "--csv", str(out / "t3.csv"), "--md", str(out / "t3.md"), "--figure", str(out / "eff.png"),
          "--task", "sst2", "--strategies", *STRATEGIES, "--steps", "3", "6", "--total-steps", "6", "--caption", "C.",
          "--train-logs", *map(str, logs), "--pretrain-metrics", *map(str, pretrain), "--", *map(str, runs)])  # fmt: skip
    table = pd.read_csv(out / "t3.csv")
    assert table[["strategy", "step"]].values.tolist() == [[s, step] for s in STRATEGIES for step in (3, 6)]
    fe_3 = table.iloc[4]
    assert fe_3.score == pytest.approx(65.6667, abs=1e-4) and fe_3.score_trivial == 50.0
    assert fe_3.validation_mlm_loss == pytest.approx(7.9) and fe_3.validation_mlm_loss_trivial == 7.5
    assert not fe_3.validation_mlm_loss_above_trivial and table.iloc[5].validation_mlm_loss_above_trivial
    assert fe_3.score_fe_minus_random_k == pytest.approx(5 / 3, abs=1e-4)  # as the final difference: (2, -1, 4)
    assert fe_3.score_fe_minus_random_k_mdd == pytest.approx((T975_DF2 + T80_DF2) * math.sqrt(19 / 3) / math.sqrt(3),
                                                             abs=1e-4)  # fmt: skip
    assert fe_3.validation_mlm_loss_fe_minus_random == pytest.approx(-0.2) and fe_3.fe_minus_random_pairs == 3
    assert table.score_fe_minus_random_k_p_t[:4].isna().all()  # random and random_k rows: not compared
    markdown = (out / "t3.md").read_text()
    assert "| fe | 3 | 50% | 65.67 [56.26, 75.07] | 7.900 [7.652, 8.148] | task score |" in markdown
    assert "| 6 | fe − random_k | task score | +1.67 [-4.58, 7.92] | 2.52 | 7.79 | 0.5 | 0.37 | 3 |" in markdown
    assert "Trivial baselines: task score 50.00, validation MLM loss 7.500 (unigram model)." in markdown
    assert (out / "eff.png").read_bytes()[:4] == b"\x89PNG"


def test_table4_compares_fe_with_random_k_of_the_same_k(tmp_path):
    """K = 2 (fe-k2, random_k-k2) and the default K = 7 (plain fe, random_k), two seeds."""
    scores = {"random": (0.70, 0.72), "random_k-k2": (0.70, 0.74), "fe-k2": (0.75, 0.76), "random_k": (0.71, 0.71),
              "fe": (0.72, 0.75)}  # fmt: skip
    runs, pretrain = [], []
    for strategy, values in scores.items():
        k = 2 if strategy.endswith("-k2") else 7
        for seed, value in enumerate(values, start=1):
            runs.append(write_run(tmp_path, "sst2", strategy, seed, 1, value))
            pretrain.append(write_pretrain(tmp_path, strategy, seed, 7.0 - value, 0.1, segments=k,
                                           predictions=70.0 if strategy == "random" else 14 * 32 / k))  # fmt: skip
    out = tmp_path / "results"
    main(["table4", "--csv", str(out / "t4.csv"), "--md", str(out / "t4.md"), "--tasks", "sst2", "--segments", "2",
          "7", "--default-segments", "7", "--caption", "C.", "--pretrain-metrics", *map(str, pretrain), "--",
          *map(str, runs)])  # fmt: skip
    table = pd.read_csv(out / "t4.csv")
    assert table[["K", "task"]].values.tolist() == [[k, t] for k in (2, 7) for t in
                                                   ("sst2", "glue average", "mlm validation", "mlm validation")]  # fmt: skip
    k2, k7 = table.iloc[0], table.iloc[4]
    assert (k2.fe_masking_ratio_per_row, k2.random_k_masking_ratio_per_row, k2.random_masking_ratio_per_row) == (
        0.5, 0.5, 0.15)  # fmt: skip
    assert k2.fe_predictions_per_step == 224.0 and k7.fe_masking_ratio_per_row == pytest.approx(0.1429)
    assert k2.fe == pytest.approx(75.5) and k2.random_k == pytest.approx(72.0) and k7.fe == pytest.approx(73.5)
    assert k2.fe_minus_random_k == pytest.approx(3.5) and k2.fe_minus_random_k_sd == pytest.approx(
        3 / math.sqrt(2), abs=1e-4
    )  # (5, 2)
    assert k7.fe_minus_random_k == pytest.approx(2.5) and k7.fe_minus_random == pytest.approx(2.5)
    assert "sst2-fe-k2-1-1.json" in k2.runs and "sst2-fe-1-1.json" in k7.runs and "fe-k2" not in k7.runs
    markdown = (out / "t4.md").read_text()
    assert "| K | task | metric | trivial | random | random_k | fe |" in markdown
    assert "| 2 | sst2 | accuracy | fe − random_k | +3.50 [" in markdown and "| fe-k2 | rows | 14 | 7 |" in markdown


def test_report_joins_the_tables_with_their_figures_and_rebuild_commands(tmp_path):
    for n in (3, 5):
        (tmp_path / f"table{n}.md").write_text(f"## Table {n}\n\n| a |\n|---|\n| {n} |\n")
    figures = tmp_path / "figures"
    figures.mkdir()
    for name in ("efficiency.png", "variance_vs_hamming.png", "estimator_variance.png"):
        (figures / name).write_bytes(b"\x89PNG")
    out = tmp_path / "report.md"
    done = fem("report", "--out", str(out), "--tables", str(tmp_path / "table3.md"), str(tmp_path / "table5.md"),
               "--figures", *map(str, sorted(figures.iterdir())))  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert text.index("## Table 3") < text.index("![efficiency.png](figures/efficiency.png)") < text.index("## Table 5")
    assert "![variance_vs_hamming.png](figures/variance_vs_hamming.png)" in text
    assert "Rebuild: `snakemake results/table3.csv` or `dvc repro table3`." in text
    assert (tmp_path / "report.provenance.json").is_file()


def test_a_run_is_who_its_metrics_json_says_never_its_folder(tmp_path):
    """Pre-training runs in folders whose names say nothing: strategy, seed and K come from
    metrics.json; a train_log.json is the run of the metrics.json beside it."""
    from fem.tables.efficiency import validation_losses

    folders = {"a": ("fe-k2", 3), "b": ("fe", 4), "c": ("random", 5)}
    files = []
    for name, (strategy, seed) in folders.items():
        metrics = write_pretrain(tmp_path, strategy, seed, 7.0, 0.1)
        (tmp_path / name).mkdir()
        files.append(metrics.rename(tmp_path / name / "metrics.json"))
        (tmp_path / name / "train_log.json").write_text(json.dumps({"validation": {"step": [0, 6], "loss": [9, seed]}}))
    runs = load_pretrain_runs(files, default_segments=7)
    assert runs[["strategy", "pretrain_seed"]].values.tolist() == [["fe-k2", 3], ["fe", 4], ["random", 5]]
    assert load_pretrain_runs(files, default_segments=2).strategy.tolist() == ["fe", "fe-k7", "random"]
    with pytest.raises(DataError, match="pre-training runs of fe with different K"):
        load_pretrain_runs(files)  # fe at K 2 and 7: which is "fe" depends on the default K
    logs = [tmp_path / name / "train_log.json" for name in ("c", "a")]
    losses = validation_losses(logs, runs)
    assert losses[losses.step == 6][["strategy", "pretrain_seed", "validation_mlm_loss"]].values.tolist() == [
        ["random", 5, 5],
        ["fe-k2", 3, 3],
    ]
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "train_log.json").write_text((tmp_path / "a" / "train_log.json").read_text())
    with pytest.raises(DataError, match="d/train_log.json: no pre-training metrics.json in its folder"):
        validation_losses([tmp_path / "d" / "train_log.json"], runs)
