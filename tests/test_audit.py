"""`fem audit`: a small but real chain of provenance records (corpus download, task downloads
from a small hub mirror, tokenize, pre-training, fine-tuning, table), written with
fem.provenance, audited through the CLI."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import write_hub_mirror

from fem.cli import main
from fem.data import download_task
from fem.provenance import SourcesRead, sha256_file, write_provenance
from fem.tables.scores import glue_table, load_runs, write_score_table

CLEAN_GIT = {"commit": "abc", "dirty": False}
TASKS = ["sst2", "rte"]
STRATEGIES = ["random", "fe"]
# the keys of a pre-training run's metrics.json that the tables read (fem/tables/intrinsic.py)
PRETRAIN_METRICS = {"validation_mlm_loss": 6.0, "validation_masked_accuracy": 0.1, "unigram_validation_loss": 7.5,
                    "unigram_validation_accuracy": 0.05, "match": "rows", "rows_per_step": 14, "sequences_per_step": 2,
                    "predictions_per_step": 252.0, "flops_per_step": 1e9, "masking_ratio_per_row": 0.14,
                    "clipped_share": 0.0}  # fmt: skip


def _job(out: Path, provenance: Path, command: list[str], parameters: dict, inputs: list, outputs: list,
         **extra) -> None:  # fmt: skip
    """Write a provenance record (`extra`: sources, kept), with a clean git state so tests do
    not depend on this checkout."""
    write_provenance(provenance, command, parameters, inputs, outputs, 0.1, **extra)
    clean_git(provenance)


def clean_git(provenance: Path) -> None:
    record = json.loads(provenance.read_text())
    record["git"] = dict(CLEAN_GIT)
    provenance.write_text(json.dumps(record, indent=2) + "\n")


@pytest.fixture(scope="module")
def downloads(tmp_path_factory) -> Path:
    """Real downloads of the chain's tasks (`fem.data.download_task`, as `fem download task`)
    from a small hub mirror, with the sources they read: <root>/data/raw/tasks/<task>."""
    root = tmp_path_factory.mktemp("downloads")
    readme = root / "mirror" / "nyu-mll" / "glue" / "README.md"
    configs = []
    for task in TASKS:
        columns = {"sentence": [f"{task} one", f"{task} two"], "label": [0, 1], "idx": [0, 1]}
        write_hub_mirror(root / "mirror", "nyu-mll/glue", task, {"train": columns, "validation": columns})
        configs += json.loads(readme.read_text().strip("-\n"))["configs"]
    readme.write_text("---\n" + json.dumps({"configs": configs}) + "\n---\n")  # both configs in one card
    with contextlib.chdir(root):
        for task in TASKS:
            task_dir, read = Path("data/raw/tasks") / task, SourcesRead()
            download_task(task, task_dir, str(root / "mirror"), read)
            _job(task_dir, task_dir / "provenance.json", ["fem", "download", "task", task],
                 {"kind": "task", "name": task, "out": str(task_dir)}, [], [task_dir], sources=read.record())  # fmt: skip
    return root


def build_chain(root: Path, downloads: Path) -> None:
    """data/raw -> data/tokenized -> results/scratch/pretrain -> finetune -> results/table2.csv,
    relative to `root` (the current folder); the task downloads are copied from `downloads`."""
    corpus = Path("data/raw/corpus/bbc")
    corpus.mkdir(parents=True)
    (corpus / "documents.txt").write_text("one document\nanother document\n")
    _job(corpus, corpus / "provenance.json", ["fem", "download", "corpus", "bbc"],
         {"kind": "corpus", "name": "bbc", "out": str(corpus)}, [], [corpus])  # fmt: skip

    tokenized = Path("data/tokenized/bbc")
    tokenized.mkdir(parents=True)
    (tokenized / "train.npy").write_bytes(bytes(range(64)))
    (tokenized / "meta.json").write_text('{"block_size": 8}\n')
    _job(tokenized, tokenized / "provenance.json", ["fem", "tokenize"],
         {"corpus_dir": str(corpus), "out": str(tokenized)}, [corpus], [tokenized])  # fmt: skip

    shutil.copytree(downloads / "data" / "raw" / "tasks", "data/raw/tasks")

    metrics_files = []
    for index, strategy in enumerate(STRATEGIES):
        pretrain = Path(f"results/scratch/pretrain/{strategy}-s1")
        (pretrain / "model").mkdir(parents=True)
        (pretrain / "model" / "model.safetensors").write_bytes(bytes([index]) * 256)
        (pretrain / "model" / "config.json").write_text('{"hidden_size": 8}\n')
        validation = {"step": [0, 3, 6], "loss": [9.0, 7.0 - index, 6.0 - index]}
        (pretrain / "train_log.json").write_text(json.dumps({"validation": validation}))
        identity = {"strategy": strategy, "seed": 1, "segments": 7}  # who the run is: fem pretrain writes it
        (pretrain / "metrics.json").write_text(
            json.dumps(identity | PRETRAIN_METRICS | {"validation_mlm_loss": 6.0 - index})
        )
        _job(pretrain, pretrain / "provenance.json", ["fem", "pretrain", "--strategy", strategy],
             {"data": str(tokenized), "out": str(pretrain), "strategy": strategy, "seed": 1}, [tokenized], [pretrain])  # fmt: skip
        for task_index, task in enumerate(TASKS):
            finetune = Path(f"results/scratch/finetune/{task}/{strategy}-s1-f1")
            finetune.mkdir(parents=True)
            score = 0.5 + 0.1 * index + 0.05 * task_index
            metrics = {"task": task, "metric_names": ["accuracy"], "score": score, "metrics": {"accuracy": score},
                       "run": {"strategy": strategy, "pretrain_seed": 1, "finetune_seed": 1},
                       "trivial_metrics": {"accuracy": 0.5}, "trivial_score": 0.5}  # fmt: skip
            (finetune / "metrics.json").write_text(json.dumps(metrics))
            (finetune / "sweep" / "lr-0.0001").mkdir(parents=True)  # as fem.finetuning's sweep keeps it
            (finetune / "sweep" / "lr-0.0001" / "metrics.json").write_text(json.dumps(metrics))
            parameters = {"task": task, "task_dir": f"data/raw/tasks/{task}", "checkpoint": str(pretrain / "model"),
                          "out": str(finetune), "seed": 1}  # fmt: skip
            _job(finetune, finetune / "provenance.json", ["fem", "finetune", "--task", task], parameters,
                 [Path("data/raw/tasks") / task, pretrain / "model"], [finetune / "metrics.json"],
                 kept=[finetune / "sweep"])  # fmt: skip
            metrics_files.append(str(finetune / "metrics.json"))

    table = glue_table(load_runs(metrics_files), TASKS, STRATEGIES)
    write_score_table(table, "results/table2.csv", "results/table2.md", "Table 2", "Caption.", STRATEGIES)
    # the parameters `fem score-table` records: `fem audit --verify` rebuilds the table from them
    _job(Path("results"), Path("results/table2.provenance.json"), ["fem", "table2"],
         {"tasks": TASKS, "strategies": STRATEGIES, "baseline": "random", "average_exclude": ["wnli"],
          "average_label": "glue average", "metrics": metrics_files},
         metrics_files, ["results/table2.csv", "results/table2.md"])  # fmt: skip


def run_audit(capsys, *args: str) -> tuple[int, str]:
    """(exit code, stdout + stderr) of `fem audit ...`."""
    try:
        main(["audit", *args])
        code = 0
    except SystemExit as exit_:
        code = 0 if exit_.code in (None, 0) else 1
        if isinstance(exit_.code, str):
            print(exit_.code, file=sys.stderr)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.fixture
def chain(tmp_path, monkeypatch, downloads) -> Path:
    monkeypatch.chdir(tmp_path)
    build_chain(tmp_path, downloads)
    return tmp_path


def test_audit_shows_the_chain_down_to_the_corpus(chain, capsys):
    code, output = run_audit(capsys, "results/table2.csv", "--json", "audit.json")
    assert code == 0, output
    report = json.loads(Path("audit.json").read_text())
    assert report["allow_dirty"] is False and report["dirty"] == []
    row = next(r for r in report["rows"] if r["task"] == "sst2")
    fe = next(n for n in row["numbers"] if n["column"] == "fe")
    assert fe["runs"] == ["results/scratch/finetune/sst2/fe-s1-f1/metrics.json"]
    run = report["runs"][fe["runs"][0]]
    assert (run["strategy"], run["pretrain_seed"], run["finetune_seed"]) == ("fe", 1, 1)
    assert run["chain"] == [
        "results/scratch/finetune/sst2/fe-s1-f1/provenance.json",
        "data/raw/tasks/sst2/provenance.json",
        "results/scratch/pretrain/fe-s1/provenance.json",
        "data/tokenized/bbc/provenance.json",
        "data/raw/corpus/bbc/provenance.json",
    ]
    pretrain = report["provenance"]["results/scratch/pretrain/fe-s1/provenance.json"]
    assert pretrain["git"] == CLEAN_GIT and pretrain["parameters"]["seed"] == 1
    assert pretrain["parameters"]["strategy"] == "fe" and "numpy" in pretrain["packages"]
    assert pretrain["inputs"]["data/tokenized/bbc/train.npy"] == {
        "sha256": sha256_file("data/tokenized/bbc/train.npy"),
        "producer": "data/tokenized/bbc/provenance.json",
    }
    assert pretrain["upstream"] == ["data/tokenized/bbc/provenance.json"]
    assert report["provenance"]["data/raw/corpus/bbc/provenance.json"]["upstream"] == []
    # the GLUE average has no runs of its own: it is derived from the task rows above it
    average = next(r for r in report["rows"] if r["task"] == "glue average")
    assert average["derived_from"] == ["sst2 (accuracy)", "rte (accuracy)"] and len(average["runs"]) == 4
    difference = next(n for n in average["numbers"] if n["column"] == "fe_minus_random")
    assert len(difference["runs"]) == 4
    # the text names every level, with commit, seeds and packages
    assert "data/raw/corpus/bbc/provenance.json" in output
    assert "git: abc (clean)" in output and "seed=1" in output and "packages: torch" in output
    assert "fe = " in output and "strategy fe, pretrain seed 1, finetune seed 1" in output


def test_verify_passes_on_untouched_files(chain, capsys):
    code, output = run_audit(capsys, "results/table2.csv", "--verify")
    assert code == 0, output
    assert output.strip().endswith("files: OK") and "verified " in output and "MISMATCH" not in output


def test_verify_names_a_changed_checkpoint_file_with_both_hashes(chain, capsys):
    checkpoint = Path("results/scratch/pretrain/fe-s1/model/model.safetensors")
    expected = sha256_file(checkpoint)
    data = bytearray(checkpoint.read_bytes())
    data[10] ^= 0xFF
    checkpoint.write_bytes(bytes(data))
    actual = sha256_file(checkpoint)
    code, output = run_audit(capsys, "results/table2.csv", "--verify", "--json", "audit.json")
    assert code != 0
    lines = [line for line in output.splitlines() if line.startswith("MISMATCH")]
    assert lines and all(str(checkpoint) in line and expected in line and actual in line for line in lines)
    assert any("results/scratch/pretrain/fe-s1/provenance.json (outputs)" in line for line in lines)
    assert "verification failed" in output
    problems = json.loads(Path("audit.json").read_text())["verification"]["problems"]
    assert {(p["file"], p["expected"], p["actual"]) for p in problems} == {(str(checkpoint), expected, actual)}


def test_a_dirty_record_is_refused_unless_allowed(chain, capsys):
    path = Path("data/tokenized/bbc/provenance.json")
    record = json.loads(path.read_text())
    record["git"] = {"commit": "abc", "dirty": True}
    path.write_text(json.dumps(record))
    code, output = run_audit(capsys, "results/table2.csv")
    assert code != 0 and str(path) in output and "--allow-dirty" in output
    code, output = run_audit(capsys, "results/table2.csv", "--allow-dirty", "--json", "audit.json")
    assert code == 0, output
    assert "WARNING" in output and str(path) in output
    report = json.loads(Path("audit.json").read_text())
    assert report["allow_dirty"] is True
    assert report["dirty"] == [{"provenance": str(path), "reason": "work tree of abc was dirty"}]


def test_bad_input_names_the_file(chain, capsys):
    code, output = run_audit(capsys, "results/nothing.csv")
    assert code != 0 and "results/nothing.csv not found" in output
    Path("results/bare.csv").write_text("task,metric,random\nsst2,accuracy,50\n")
    code, output = run_audit(capsys, "results/bare.csv")
    assert code != 0 and "results/bare.csv has no 'runs' column" in output
    shutil.rmtree("results/scratch/finetune/rte/fe-s1-f1")
    code, output = run_audit(capsys, "results/table2.csv")
    assert code != 0 and "results/scratch/finetune/rte/fe-s1-f1/metrics.json not found" in output
    assert "row rte (accuracy)" in output


DVC_YAML = """\
stages:
  make:
    cmd: mkdir -p outdir/sub && cp in.txt out.txt && echo a > outdir/a.txt && echo b > outdir/sub/b.txt
    deps:
      - in.txt
    outs:
      - out.txt
      - outdir
"""


def test_verify_checks_the_files_recorded_in_a_real_dvc_lock(chain, capsys):
    dvc = str(Path(sys.executable).parent / "dvc")  # a dependency of fem, installed beside python
    env = os.environ | {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t", "DVC_NO_ANALYTICS": "1",
                        "DVC_SITE_CACHE_DIR": str(chain / ".dvc-site")}  # fmt: skip
    Path("dvc.yaml").write_text(DVC_YAML)
    Path("in.txt").write_text("input\n")
    for command in (["git", "init", "-q"], [dvc, "init", "--quiet"], [dvc, "repro", "--quiet"]):
        subprocess.run(command, check=True, env=env, capture_output=True, timeout=120)
    lock = Path("dvc.lock").read_text()
    assert "outdir" in lock and ".dir" in lock

    code, output = run_audit(capsys, "results/table2.csv", "--verify")
    assert code == 0, output
    assert "dvc.lock: dvc.lock" in output and output.strip().endswith("files: OK")

    changed = Path("outdir/sub/b.txt")
    expected = hashlib.md5(changed.read_bytes()).hexdigest()
    changed.write_text("c\n")
    actual = hashlib.md5(changed.read_bytes()).hexdigest()
    code, output = run_audit(capsys, "results/table2.csv", "--verify")
    assert code != 0
    lines = [line for line in output.splitlines() if line.startswith("MISMATCH")]
    assert len(lines) == 1, output
    assert str(changed) in lines[0] and f"expected md5 {expected}" in lines[0] and f"actual {actual}" in lines[0]
    assert "dvc.lock stage make outs" in lines[0]


def rewrite_hash(provenance: Path, file: str) -> None:
    """Record the current sha256 of `file` among the outputs of `provenance` (a forger's edit)."""
    record = json.loads(provenance.read_text())
    assert file in record["outputs"]
    record["outputs"][file] = sha256_file(file)
    provenance.write_text(json.dumps(record, indent=2) + "\n")


def edit_cell(table: Path, row: int, column: str, value: str) -> str:
    """Replace one cell of a CSV (row 0 is the first data row); returns the old text."""
    import csv

    with open(table, newline="") as handle:
        rows = list(csv.reader(handle))
    index = rows[0].index(column)
    old, rows[row + 1][index] = rows[row + 1][index], value
    with open(table, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return old


def test_a_table_edited_together_with_its_hash_is_recomputed_and_caught(chain, capsys):
    code, output = run_audit(capsys, "results/table2.csv", "--verify")
    assert code == 0 and "every number recomputed from its runs" in output, output
    old = edit_cell(Path("results/table2.csv"), 1, "fe", "99.0")  # row 1: rte (accuracy)
    rewrite_hash(Path("results/table2.provenance.json"), "results/table2.csv")
    code, output = run_audit(capsys, "results/table2.csv", "--verify", "--json", "audit.json")
    assert code != 0 and "MISMATCH" not in output  # every hash agrees: only recomputing finds it
    lines = [line for line in output.splitlines() if line.startswith("RECOMPUTED")]
    assert len(lines) == 1, output
    assert "row rte (accuracy), column fe: the table has '99.0'" in lines[0] and f"runs '{old}'" in lines[0]
    problems = json.loads(Path("audit.json").read_text())["verification"]["problems"]
    assert [p["kind"] for p in problems] == ["recomputed"]


def test_table3_is_recomputed_from_its_runs_and_train_logs(chain, capsys, monkeypatch):
    """`fem table3` (the real command) on the chain's runs, then verify; a forged score and a
    forged validation loss are each named by row and column."""
    metrics = [f"results/scratch/finetune/sst2/{s}-s1-f1/metrics.json" for s in STRATEGIES]
    logs = [f"results/scratch/pretrain/{s}-s1/train_log.json" for s in STRATEGIES]
    args = ["table3", "--csv", "results/table3.csv", "--md", "results/table3.md", "--figure", "results/eff.png",
            "--task", "sst2", "--strategies", *STRATEGIES, "--steps", "6", "--total-steps", "6", "--caption", "C.",
            "--train-logs", *logs, "--pretrain-metrics", *[log.replace("train_log", "metrics") for log in logs], "--",
            *metrics]  # fmt: skip
    monkeypatch.setattr(sys, "argv", ["fem", *args])  # the command line its provenance records
    main(args)
    clean_git(Path("results/table3.provenance.json"))
    code, output = run_audit(capsys, "results/table3.csv", "--verify")
    assert code == 0 and "results/table3.csv: every number recomputed" in output, output
    edit_cell(Path("results/table3.csv"), 1, "score", "1.5")  # row 1: fe at step 6
    edit_cell(Path("results/table3.csv"), 0, "validation_mlm_loss", "0.5")
    rewrite_hash(Path("results/table3.provenance.json"), "results/table3.csv")
    code, output = run_audit(capsys, "results/table3.csv", "--verify")
    lines = [line for line in output.splitlines() if line.startswith("RECOMPUTED")]
    assert code != 0 and len(lines) == 2, output
    assert (
        "row random step 6, column validation_mlm_loss: the table has '0.5', recomputed from its runs '6.0'"
        in (lines[0])
    )
    assert "row fe step 6, column score: the table has '1.5'" in lines[1]


def test_a_file_no_record_lists_is_reported(chain, capsys):
    run_folder = Path("results/scratch/finetune/sst2/fe-s1-f1")
    assert (run_folder / "sweep").is_dir()  # kept beside the outputs and listed as such: no problem
    (run_folder / "extra.csv").write_text("task,score\nsst2,100\n")
    (run_folder / "sweep" / "lr-0.0001" / "other.json").write_text("{}")
    code, output = run_audit(capsys, "results/table2.csv", "--verify")
    lines = [line for line in output.splitlines() if line.startswith("UNRECORDED")]
    assert code != 0 and len(lines) == 2, output
    assert (
        f"UNRECORDED {run_folder / 'extra.csv'}: in the output folder of {run_folder / 'provenance.json'}" in (lines[0])
    )
    assert str(run_folder / "sweep" / "lr-0.0001" / "other.json") in lines[1]
    # a kept file is checked like an output
    (run_folder / "extra.csv").unlink()
    (run_folder / "sweep" / "lr-0.0001" / "other.json").unlink()
    (run_folder / "sweep" / "lr-0.0001" / "metrics.json").write_text("{}")
    code, output = run_audit(capsys, "results/table2.csv", "--verify")
    lines = [line for line in output.splitlines() if line.startswith(("MISMATCH", "UNRECORDED"))]
    assert code != 0 and len(lines) == 1 and "sweep/lr-0.0001/metrics.json" in lines[0], output
    assert f"{run_folder / 'provenance.json'} (kept)" in lines[0]


def test_a_changed_mirror_file_a_download_read_is_found(chain, downloads, capsys):
    code, output = run_audit(capsys, "results/table2.csv", "--verify")
    parquet = downloads / "mirror" / "nyu-mll" / "glue" / "sst2" / "train-00000-of-00001.parquet"
    mirror = f"read from mirror {downloads / 'mirror' / 'nyu-mll' / 'glue'} (set by --mirror (config hub_mirror))"
    assert code == 0 and mirror in output and str(parquet) in output, output
    original = parquet.read_bytes()
    try:
        flipped = bytearray(original)
        flipped[len(flipped) // 2] ^= 0x01
        parquet.write_bytes(bytes(flipped))
        code, output = run_audit(capsys, "results/table2.csv", "--verify")
    finally:
        parquet.write_bytes(original)
    lines = [line for line in output.splitlines() if line.startswith("MISMATCH")]
    assert code != 0 and len(lines) == 1, output
    assert str(parquet) in lines[0] and "data/raw/tasks/sst2/provenance.json (sources)" in lines[0]


def test_the_code_each_job_ran_is_compared_with_the_audited_checkout(chain, capsys):
    """The audit runs in a checkout (a fem/ folder here): its modules must be those the jobs
    imported; an edited fem/cli.py that never ran is named."""
    from fem.provenance import PACKAGE

    shutil.copytree(PACKAGE, "fem", ignore=shutil.ignore_patterns("__pycache__"))
    code, output = run_audit(capsys, "results/table2.csv", "--verify")
    assert code == 0 and f"code compared with {chain / 'fem'}" in output, output
    assert f"code: {PACKAGE} (sha256 " in output
    cli = Path("fem/cli.py")
    cli.write_text(cli.read_text() + "\n# edited after the jobs ran\n")
    code, output = run_audit(capsys, "results/table2.csv", "--verify")
    lines = [line for line in output.splitlines() if line.startswith("CODE")]
    assert code != 0 and len(lines) == 11, output  # every record of the chain (fem/cli.py imported)
    assert all(f"ran fem/cli.py of {PACKAGE}" in line and str(chain / "fem") in line for line in lines)


def test_a_module_of_the_same_checkout_edited_since_is_a_note_not_a_failure(chain, capsys):
    """The jobs ran this checkout's fem; a module changed afterwards (here: as if fem/cli.py
    had another digest when the job ran) is named, and verification still holds: whether
    the edit matters is for Snakemake's code inputs (or --forcerun) to settle."""
    record_path = chain / "results" / "table2.provenance.json"
    record = json.loads(record_path.read_text())
    record["code"]["modules"]["fem/cli.py"] = "0" * 64
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    code, output = run_audit(capsys, "results/table2.csv", "--verify")
    assert code == 0, output
    assert "code changed since results/table2.provenance.json was made: fem/cli.py" in output
    assert not [line for line in output.splitlines() if line.startswith("CODE")]
