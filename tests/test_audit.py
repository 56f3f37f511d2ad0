"""`fem audit`: a small but real chain of provenance records (corpus download, tokenize,
pre-training, fine-tuning, table), written with fem.provenance, audited through the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fem.cli import main
from fem.provenance import sha256_file, write_provenance
from fem.tables import glue_table, load_runs, write_table

CLEAN_GIT = {"commit": "abc", "dirty": False}
TASKS = ["sst2", "rte"]
STRATEGIES = ["random", "fe"]


def _job(out: Path, provenance: Path, command: list[str], parameters: dict, inputs: list, outputs: list) -> None:
    """Write a provenance record, with a clean git state so tests do not depend on this checkout."""
    write_provenance(provenance, command, parameters, inputs, outputs, 0.1)
    record = json.loads(provenance.read_text())
    record["git"] = dict(CLEAN_GIT)
    provenance.write_text(json.dumps(record, indent=2) + "\n")


def build_chain(root: Path) -> None:
    """data/raw -> data/tokenized -> results/scratch/pretrain -> finetune -> results/table2.csv,
    relative to `root` (the current folder)."""
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

    for task in TASKS:
        task_dir = Path("data/raw/tasks") / task
        task_dir.mkdir(parents=True)
        (task_dir / "train.jsonl").write_text(f'{{"sentence": "{task}", "label": 1}}\n')
        _job(task_dir, task_dir / "provenance.json", ["fem", "download", "task", task],
             {"kind": "task", "name": task, "out": str(task_dir)}, [], [task_dir])  # fmt: skip

    metrics_files = []
    for index, strategy in enumerate(STRATEGIES):
        pretrain = Path(f"results/scratch/pretrain/{strategy}-s1")
        (pretrain / "model").mkdir(parents=True)
        (pretrain / "model" / "model.safetensors").write_bytes(bytes([index]) * 256)
        (pretrain / "model" / "config.json").write_text('{"hidden_size": 8}\n')
        _job(pretrain, pretrain / "provenance.json", ["fem", "pretrain", "--strategy", strategy],
             {"data": str(tokenized), "out": str(pretrain), "strategy": strategy, "seed": 1}, [tokenized], [pretrain])  # fmt: skip
        for task_index, task in enumerate(TASKS):
            finetune = Path(f"results/scratch/finetune/{task}/{strategy}-s1-f1")
            finetune.mkdir(parents=True)
            score = 0.5 + 0.1 * index + 0.05 * task_index
            metrics = {"task": task, "metric_names": ["accuracy"], "score": score, "metrics": {"accuracy": score},
                       "run": {"strategy": strategy, "pretrain_seed": 1, "finetune_seed": 1}}  # fmt: skip
            (finetune / "metrics.json").write_text(json.dumps(metrics))
            parameters = {"task": task, "task_dir": f"data/raw/tasks/{task}", "checkpoint": str(pretrain / "model"),
                          "out": str(finetune), "seed": 1}  # fmt: skip
            _job(finetune, finetune / "provenance.json", ["fem", "finetune", "--task", task], parameters,
                 [Path("data/raw/tasks") / task, pretrain / "model"], [finetune])  # fmt: skip
            metrics_files.append(str(finetune / "metrics.json"))

    table = glue_table(load_runs(metrics_files), TASKS, STRATEGIES)
    write_table(table, "results/table2.csv", "results/table2.md", "Table 2", "Caption.", STRATEGIES)
    _job(Path("results"), Path("results/table2.provenance.json"), ["fem", "table2"],
         {"tasks": TASKS, "strategies": STRATEGIES, "baseline": "random", "average_exclude": ["wnli"]},
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
def chain(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    build_chain(tmp_path)
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
