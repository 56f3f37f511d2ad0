"""The `fem` sub-commands of the objectives' own data stages: `fem coarse-vocab` (LICHEE's coarse
vocabulary, rule coarse_vocab) and `fem entities` (named-entity spans, rule entities). fem/cli.py
adds them to its parser."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from fem.cli_args import record_provenance


def add_objective_data(sub: argparse._SubParsersAction) -> None:
    """Add `fem coarse-vocab` and `fem entities` to the sub-command parsers `sub`."""
    add_coarse_vocab(sub)
    add_entities(sub)


def add_coarse_vocab(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("coarse-vocab", help="LICHEE's coarse vocabulary: the most frequent multi-piece words")
    p.add_argument("--data", required=True, help="folder written by `fem tokenize` (train.npy is counted)")
    p.add_argument("--out", required=True, help="the vocabulary's JSON file")
    p.add_argument("--size", type=int, required=True, help="words kept (pretrain.lichee.coarse_vocab_size)")
    p.add_argument("--max-pieces", type=int, required=True, help="longest word in pieces (pretrain.lichee.max_pieces)")
    p.set_defaults(handler=cmd_coarse_vocab)


def cmd_coarse_vocab(args: argparse.Namespace) -> None:
    from fem.coarse_vocab import build_coarse_vocab

    start = time.perf_counter()
    build_coarse_vocab(args.data, args.out, args.size, args.max_pieces)
    record_provenance(Path(args.out).with_name("provenance.json"), args, [args.data], [args.out], start)


def add_entities(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("entities", help="named-entity spans of a tokenized corpus's blocks (spaCy)")
    p.add_argument("--corpus-dir", required=True, help="the corpus `fem tokenize` read")
    p.add_argument("--data", required=True, help="its `fem tokenize` folder")
    p.add_argument("--out", required=True, help="folder for <split>_entities.npy and entities.json")
    p.add_argument("--spacy-model", required=True, help="an installed spaCy pipeline (entities.spacy_model)")
    p.set_defaults(handler=cmd_entities)


def cmd_entities(args: argparse.Namespace) -> None:
    from fem.entities import annotate_entities

    start = time.perf_counter()
    annotate_entities(args.corpus_dir, args.data, args.out, args.spacy_model)
    record_provenance(Path(args.out) / "provenance.json", args, [args.corpus_dir, args.data], [args.out], start)
