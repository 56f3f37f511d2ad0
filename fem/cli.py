"""The `fem` command. Every Snakemake rule runs one of these sub-commands.

The CLI is the edge where configuration enters: it parses flags (values written as YAML,
so `0.15`, `auto`, `null` and `{mask: 0.8, random: 0.1, keep: 0.1}` all work), calls one
library function with plain arguments, and writes provenance.json beside the outputs.
Heavy imports (torch, transformers) happen inside the sub-commands, so `fem check-config`
stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml

from fem.cli_args import add_settings, record_provenance, settings_from, yaml_value
from fem.cli_objectives import add_objective_data
from fem.errors import AuditError, ConfigError, FemError
from fem.finetuning.cli import add_finetune_commands
from fem.provenance import table_provenance_path
from fem.settings import PretrainImplementation, PretrainSettings, VarianceSettings
from fem.tables.cli import add_table_commands


def _checked_config(paths: list[str]) -> dict:
    """The config files merged (later files override earlier ones, key by key, as Snakemake
    does) and checked; ConfigError naming the file or key otherwise."""
    from fem.config import check_config, deep_update, load_yaml

    config: dict = {}
    for path in paths:
        deep_update(config, load_yaml(path))
    check_config(config)
    return config


def add_check_config(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check-config", help="validate config files (later ones override earlier)")
    p.add_argument("configs", nargs="+")
    p.set_defaults(handler=cmd_check_config)


def cmd_check_config(args: argparse.Namespace) -> None:
    _checked_config(args.configs)
    print(f"config OK: {' + '.join(args.configs)}")


def add_estimate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("estimate", help="FLOPs and GPU-hours of Table 2 under config files, at an assumed MFU")
    p.add_argument("configs", nargs="+", help="config files, later ones overriding earlier ones (as check-config)")
    p.add_argument("--mfu", type=float, default=None, help="pre-training MFU, a share of the bf16 peak (default 0.40)")
    p.add_argument("--finetune-mfu", type=float, default=None,
                   help="fine-tuning MFU: float32, at most 0.068 of the bf16 peak (default 0.03)")  # fmt: skip
    p.add_argument("--gpu", default="H100", help="GPU whose dense bf16 peak to use (default H100, the H200's too)")
    p.add_argument("--peak-tflops", type=float, default=None, help="per-GPU bf16 peak in TFLOP/s instead of --gpu's")
    p.add_argument("--vocab-size", type=int, default=30522,
                   help="vocabulary of a tokenizer not learned by fem (default 30522: bert-base-uncased)")  # fmt: skip
    p.set_defaults(handler=cmd_estimate)


def cmd_estimate(args: argparse.Namespace) -> None:
    from fem.config import TRAINED_TOKENIZER
    from fem.estimate import DEFAULT_FINETUNE_MFU, DEFAULT_MFU, format_table, table2_stages
    from fem.throughput import PEAK_TFLOPS_BF16

    mfu = DEFAULT_MFU if args.mfu is None else args.mfu
    finetune_mfu = DEFAULT_FINETUNE_MFU if args.finetune_mfu is None else args.finetune_mfu
    for flag, value in (("--mfu", mfu), ("--finetune-mfu", finetune_mfu)):
        if not 0 < value <= 1:
            raise ConfigError(f"{flag}: {value} is not allowed; expected a share of the peak in (0, 1]")
    if args.peak_tflops is None and args.gpu not in PEAK_TFLOPS_BF16:
        raise ConfigError(f"--gpu: unknown GPU {args.gpu!r}; expected one of {', '.join(PEAK_TFLOPS_BF16)}, "
                          "or --peak-tflops")  # fmt: skip
    peak = args.peak_tflops or PEAK_TFLOPS_BF16[args.gpu]
    config = _checked_config(args.configs)
    trained = config["tokenizer"]["source"] == TRAINED_TOKENIZER
    vocab_size = config["tokenizer"]["vocab_size"] if trained else args.vocab_size
    try:
        stages = table2_stages(config, vocab_size, mfu, finetune_mfu, peak)
    except ValueError as err:
        raise ConfigError(f"{' + '.join(args.configs)}: {err}") from err
    gpu = f"{peak:g} TFLOP/s GPU" if args.peak_tflops else f"{args.gpu} ({peak:g} dense bf16 TFLOP/s)"
    print(f"Table 2 of {' + '.join(args.configs)} on one {gpu}, vocabulary {vocab_size}:")
    print(format_table(stages))
    print("Model FLOPs (3 x forward) at an assumed MFU, not measured; fine-tuning tokens at max_length (upper bound).")


def add_download(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("download", help="save a corpus or task from the hub / mirror / package")
    p.add_argument("kind", choices=["corpus", "task"])
    p.add_argument("name")
    p.add_argument("--out", required=True)
    p.add_argument("--mirror", default=None, help="folder holding <hub id> copies (default: $FEM_HUB_MIRROR)")
    p.set_defaults(handler=cmd_download)


def cmd_download(args: argparse.Namespace) -> None:
    from fem.data import SourcesRead, download_corpus, download_task

    start = time.perf_counter()
    read = SourcesRead()  # where the data came from and the files read, for the provenance
    if args.kind == "corpus":
        count = download_corpus(args.name, args.out, args.mirror, read)
        print(f"corpus {args.name}: {count} documents -> {args.out}")
    else:
        counts = download_task(args.name, args.out, args.mirror, read)
        print(f"task {args.name}: {counts} -> {args.out}")
        print(f"task {args.name}: exact copies (whitespace and case normalised): {json.dumps(read.duplicates)}")
    record_provenance(Path(args.out) / "provenance.json", args, [], [args.out], start, sources=read.record())


def add_tokenize(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tokenize", help="tokenize a corpus and pack it into fixed-length blocks")
    p.add_argument("--corpus-dir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--tokenizer", required=True, help="hub id, folder, or pip:<package>")
    p.add_argument("--block-size", type=int, required=True)
    p.add_argument("--validation-fraction", type=float, required=True)
    p.add_argument("--max-documents", type=yaml_value, default=None)
    p.set_defaults(handler=cmd_tokenize)


def cmd_tokenize(args: argparse.Namespace) -> None:
    from fem.tokenization import tokenize_corpus

    start = time.perf_counter()
    tokenize_corpus(
        args.corpus_dir,
        args.out,
        args.tokenizer,
        args.block_size,
        args.validation_fraction,
        args.max_documents,
    )
    record_provenance(Path(args.out) / "provenance.json", args, [args.corpus_dir], [args.out], start)


def add_train_tokenizer(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-tokenizer", help="learn a WordPiece vocabulary on a corpus's training documents")
    p.add_argument("--corpus-dir", required=True)
    p.add_argument("--out", required=True, help="folder for the tokenizer (loadable with AutoTokenizer)")
    p.add_argument("--vocab-size", type=int, required=True)
    p.add_argument("--validation-fraction", type=float, required=True, help="as `fem tokenize`: the same split")
    p.add_argument("--max-documents", type=yaml_value, default=None)
    p.set_defaults(handler=cmd_train_tokenizer)


def cmd_train_tokenizer(args: argparse.Namespace) -> None:
    from fem.wordpiece import train_corpus_tokenizer

    start = time.perf_counter()
    train_corpus_tokenizer(args.corpus_dir, args.out, args.vocab_size, args.validation_fraction, args.max_documents)
    record_provenance(Path(args.out) / "provenance.json", args, [args.corpus_dir], [args.out], start)


def add_pretrain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pretrain", help="pre-train a BERT from scratch with one masking strategy")
    p.add_argument("--data", required=True, help="folder written by `fem tokenize`")
    p.add_argument("--out", required=True)
    add_settings(p, PretrainSettings, exclude=("init_from", "coarse_vocab", "entities"))
    p.add_argument(
        "--init-from", type=yaml_value, default=None, help="pretrained encoder to continue (default: from scratch)"
    )
    p.add_argument("--coarse-vocab", type=yaml_value, default=None, help="objective lichee: `fem coarse-vocab`'s file")
    p.add_argument("--entities", type=yaml_value, default=None, help="entity strategies: `fem entities`'s folder")
    add_settings(p, PretrainImplementation, required=False)
    p.set_defaults(handler=cmd_pretrain)


def cmd_pretrain(args: argparse.Namespace) -> None:
    """`fem pretrain`; also under `torchrun --nproc_per_node N -m fem pretrain ...` (DDP)."""
    from fem.tokenization import load_pretraining_blocks

    start = time.perf_counter()
    settings, implementation = settings_from(PretrainSettings, args), settings_from(PretrainImplementation, args)
    # Bad data stops here, in a second: before torch and transformers are imported.
    load_pretraining_blocks(args.data, settings.validation_blocks, settings.strategy == "whole_word", settings.entities)

    from fem.distributed import close_world, init_world
    from fem.pretraining import OUTPUTS, pretrain

    world = init_world()
    out = Path(args.out)

    def write_provenance() -> None:  # before resume/ goes: a kill until then loses no training
        inputs = [args.data] + [path for path in (args.coarse_vocab, args.entities) if path]
        record_provenance(out / "provenance.json", args, inputs, [out / name for name in OUTPUTS], start)

    pretrain(args.data, out, settings, implementation, world, before_cleanup=write_provenance)
    close_world(world)


def add_variance(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("variance", help="gradient-variance analysis of one checkpoint (DESIGN §6)")
    p.add_argument("--checkpoint", required=True, help="a model folder saved by fem pretrain (checkpoint_metrics.json)")
    p.add_argument("--data", required=True, help="folder written by `fem tokenize` (validation.npy is analysed)")
    p.add_argument("--out", required=True, help="folder for variance.json and provenance.json")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--chunk-rows", type=int, default=32, help="rows per vmap call (memory; not results)")
    add_settings(p, VarianceSettings)
    p.set_defaults(handler=cmd_variance)


def cmd_variance(args: argparse.Namespace) -> None:
    from fem.checkpointing import require_checkpoint
    from fem.tokenization import load_blocks, load_meta

    start = time.perf_counter()
    require_checkpoint(args.checkpoint)  # a missing one names its run and step, before any work
    settings = settings_from(VarianceSettings, args)
    # Bad data stops here, before transformers is imported (analyse_checkpoint reads the same blocks).
    load_blocks(args.data, "validation", load_meta(args.data), settings.sequences, "variance.sequences")

    from fem.mask_gradients import write_checkpoint_analysis

    out = Path(args.out)
    result = write_checkpoint_analysis(args.checkpoint, args.data, settings, out, args.threads, args.chunk_rows)
    ratios = result["estimators"]["ratios"]
    print(f"slope of covariance per Hamming unit {result['hamming']['slope']['value']:.4g} "
          f"(closed form {result['hamming']['closed_form_slope']:.4g}); "
          + "; ".join(f"{k} {v['value']:.3g} [{v['lo']:.3g}, {v['hi']:.3g}]" for k, v in ratios.items()))  # fmt: skip
    inputs = [args.checkpoint, Path(args.data) / "validation.npy"]
    record_provenance(out / "provenance.json", args, inputs, [out / "variance.json"], start)


def add_task_text(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("task-text", help="save a task's training text as a corpus (continual pre-training)")
    p.add_argument("--task", required=True)
    p.add_argument("--task-dir", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(handler=cmd_task_text)


def cmd_task_text(args: argparse.Namespace) -> None:
    """The text of a task's training split as a corpus (continual pre-training, Table 1)."""
    from fem.data import save_task_text

    start = time.perf_counter()
    count = save_task_text(args.task, args.task_dir, args.out)
    print(f"task {args.task}: {count} training texts -> {args.out}")
    record_provenance(Path(args.out) / "provenance.json", args, [args.task_dir], [args.out], start)


def add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="build results/report.md from the tables' Markdown and the figures")
    p.add_argument("--out", required=True)
    p.add_argument("--tables", nargs="+", required=True, help="tableN.md files, in order")
    p.add_argument("--figures", nargs="*", default=[], help="figure files")
    p.set_defaults(handler=cmd_report)


def cmd_report(args: argparse.Namespace) -> None:
    from fem.tables.report import write_report as write_results_report

    start = time.perf_counter()
    write_results_report(args.out, args.tables, args.figures)
    record_provenance(table_provenance_path(args.out), args, args.tables + args.figures, [args.out], start)


def add_overlap(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("overlap", help="count dev examples with a copy in train or their text in the corpus")
    p.add_argument("--corpus-dir", required=True, help="folder written by `fem download corpus`")
    p.add_argument("--max-documents", type=yaml_value, default=None, help="documents read, as tokenize (null: all)")
    p.add_argument("--task-dirs", nargs="+", required=True, help="folders written by `fem download task`, one per task")
    p.add_argument("--json", required=True)
    p.add_argument("--md", required=True)
    p.set_defaults(handler=cmd_overlap)


def cmd_overlap(args: argparse.Namespace) -> None:
    """Dev sets against their train split and the pre-training corpus (fem/overlap.py)."""
    from fem.overlap import write_overlap

    start = time.perf_counter()
    outputs = write_overlap(args.corpus_dir, args.task_dirs, args.max_documents, args.json, args.md)
    inputs = [args.corpus_dir, *args.task_dirs]
    record_provenance(table_provenance_path(args.json), args, inputs, outputs, start)


def add_dvc(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dvc", help="DVC integration")
    dvc = p.add_subparsers(required=True, metavar="action")
    p = dvc.add_parser("generate", help="write dvc.yaml from the Snakemake DAG (one stage per job)")
    p.add_argument("targets", nargs="*", default=["results/report.md"], help="default: every table and the report")
    p.add_argument("--configfile", nargs="*", default=[], help="config files, as given to snakemake")
    p.add_argument("--out", default="dvc.yaml")
    p.add_argument("--check", action="store_true", help="compare with --out instead of writing; exit 1 on drift")
    p.set_defaults(handler=cmd_dvc_generate)
    p = dvc.add_parser("pull", help="pull a target and its dependencies from the DVC remote, check them against "
                       "dvc.lock, and mark them up to date for Snakemake")  # fmt: skip
    p.add_argument("target", help="an output of dvc.yaml, e.g. results/table2.csv")
    p.set_defaults(handler=cmd_dvc_pull)
    p = dvc.add_parser("plots-template", help="make `dvc plots show` draw offline (Vega inlined; fem/dvc_plots.py)")
    p.set_defaults(handler=cmd_dvc_plots_template)


def cmd_dvc_generate(args: argparse.Namespace) -> None:
    from fem.dvc_stages import drift, generate

    text = generate(args.targets, args.configfile, ".")
    if args.check:
        difference = drift(text, args.out)
        if difference:
            sys.exit(f"{args.out} differs from a fresh generation (run `fem dvc generate`):\n{difference}")
        print(f"{args.out} is up to date with the Snakemake DAG")
        return
    Path(args.out).write_text(text)
    print(f"wrote {args.out}: {len(yaml.safe_load(text)['stages'])} stages")


def cmd_dvc_pull(args: argparse.Namespace) -> None:
    from fem.dvc_pull import pull
    from fem.errors import PullError

    try:
        print(pull(args.target))
    except PullError as err:
        sys.exit(f"fem dvc pull: error: {err}")


def cmd_dvc_plots_template(args: argparse.Namespace) -> None:
    from fem.dvc_plots import configure_offline_plots

    try:
        path = configure_offline_plots(".")
    except FileNotFoundError as err:
        sys.exit(f"fem dvc plots-template: error: {err}")
    print(f"wrote {path}; `dvc plots show` and `dvc plots diff` now draw without network")


def add_audit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help="show (and verify) the chain of evidence behind every number of a table")
    p.add_argument("table", help="a results table CSV with a runs column, e.g. results/table2.csv")
    p.add_argument("--verify", action="store_true", help="hash every recorded file again and compare")
    p.add_argument("--allow-dirty", action="store_true", help="audit records made from a dirty or unknown git tree")
    p.add_argument("--dvc-lock", default=None, help="dvc.lock to verify against (default: dvc.lock if it exists)")
    p.add_argument("--json", default=None, help="write the full report as JSON to this file")
    p.set_defaults(handler=cmd_audit)


def cmd_audit(args: argparse.Namespace) -> None:
    from fem.audit import audit, write_report
    from fem.audit_text import format_report

    report = audit(args.table, args.dvc_lock, verify=args.verify, allow_dirty=args.allow_dirty)
    print(format_report(report))
    if args.json:
        write_report(report, args.json)
    verification = report.get("verification")
    if verification is not None and not verification["ok"]:
        raise AuditError(f"verification failed: {len(verification['problems'])} problem(s), listed above")


def build_parser() -> argparse.ArgumentParser:
    """`fem` and its sub-commands, in the order of `fem --help`. Each add_<command> sits right
    above its handler cmd_<command>."""
    parser = argparse.ArgumentParser(prog="fem", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(required=True, metavar="command")
    add_check_config(sub)
    add_estimate(sub)
    add_download(sub)
    add_tokenize(sub)
    add_train_tokenizer(sub)
    add_pretrain(sub)
    add_objective_data(sub)  # fem/cli_objectives.py: coarse-vocab (LICHEE), entities (salient_span)
    add_finetune_commands(sub)  # finetune, finetune-squad (fem/finetuning/cli.py)
    add_variance(sub)
    add_dvc(sub)
    add_table_commands(sub)  # score-table, table3, table4, table5, table6, power (fem/tables/cli.py)
    add_task_text(sub)
    add_report(sub)
    add_overlap(sub)
    add_audit(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    from fem.provenance import check_code_root

    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        check_code_root()  # a pipeline's job runs its own checkout's fem, or stops here
        args.handler(args)
    except FemError as err:  # expected failures (fem/errors.py): one clear message, no traceback
        sys.exit(f"fem {argv[0] if argv else ''}: error: {err}")


if __name__ == "__main__":
    main()
