"""Table 6 (objectives): the settings of its pre-training runs and of its table, built from the
config's `objectives` section as fem/rule_settings.py builds every other rule's, and recorded
the same way for dvc.yaml's params (rule_settings.keys_read runs these builders on a
RecordedConfig: `pretrain_flags` hands setting "objectives" to `objective_pretrain_flags`, and
OBJECTIVE_RULE_SETTINGS names the table's builder).

A run is named by fem.registry.run_label ("pmlm.block", "mpnet.fe", "random.decay"); its
objective, strategy and K come from parse_run_label. Each run is compared with the control
`random` (BERT's masked LM), and each fully-explored variant `<objective>.fe` also with its
own non-fe counterpart (COUNTERPART_STRATEGY): fe with random_k, pmlm.fe with pmlm.block,
plm.fe with plm.random, mpnet.fe with mpnet.random, fe_salient_span with salient_span.

Light on purpose (no pandas, no torch): the Snakefile imports it to plan the runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fem.comparisons import OBJECTIVES_CONTROL
from fem.registry import parse_run_label, run_label
from fem.rule_settings import cli_flags, comparison_flags, segments
from fem.tables import captions

OBJECTIVES_SETTING = "objectives"  # the `setting` wildcard of Table 6's runs: results/objectives/...
# objectives.<key> on top of pretrain.<key> for these runs
ON_TOP = ("rows_per_step", "steps", "warmup_steps")
# Keys of the pretrain section these runs do not read: the run name gives objective and strategy,
# the ".decay" suffix the schedule, and they save no intermediate checkpoint.
NOT_READ = ("strategies", "save_steps", "objective", "mask_ratio_schedule", *ON_TOP)
# The strategy of the non-fe run each objective's fe variant is compared with: the same objective
# and step size, only the masked sets differ (mlm: random_k, fe's control in Table 2).
COUNTERPART_STRATEGY = {"mlm": "random_k", "pmlm": "block", "plm": "random", "mpnet": "random"}


def objective_pretrain_flags(config: Mapping, strategy: str) -> str:
    """rule pretrain, setting "objectives": the science flags of run `strategy` (a run name):
    the pretrain and model keys, objectives.rows_per_step / steps / warmup_steps on top, no
    intermediate checkpoints, objective, strategy and K from the name, and the masking-rate
    schedule objectives.decay_schedule for a ".decay" run (else pretrain.mask_ratio_schedule)."""
    run = parse_run_label(strategy)
    pretrain, objectives, model = config["pretrain"], config["objectives"], config["model"]
    settings = {key: pretrain[key] for key in pretrain if key not in NOT_READ}
    settings |= {key: objectives[key] for key in ON_TOP}
    settings |= {"save_steps": [], "objective": run.objective, "strategy": run.strategy}
    settings["mask_ratio_schedule"] = objectives["decay_schedule"] if run.decay else pretrain["mask_ratio_schedule"]
    if run.segments is not None:
        settings["segments"] = run.segments
    return cli_flags(settings | {key: model[key] for key in model})


def counterpart(name: str, default_segments: int) -> str | None:
    """The non-fe run the fully-explored run `name` is compared with ("pmlm.fe" -> "pmlm.block",
    "fe-k4" -> "random_k-k4", "fe_salient_span" -> "salient_span"); None for a run that is not
    an fe variant."""
    run = parse_run_label(name)
    if run.decay or run.strategy not in ("fe", "fe_salient_span"):
        return None
    k = run.segments or default_segments
    other = "salient_span" if run.strategy == "fe_salient_span" else COUNTERPART_STRATEGY[run.objective]
    return run_label(run.objective, other, k, default_segments)


def objective_comparisons(runs: list[str], default_segments: int) -> list[tuple[str, str]]:
    """Table 6's differences A:B (A minus B): every run against the control, then every fe
    variant against its counterpart when that run is configured too."""
    pairs = [(name, OBJECTIVES_CONTROL) for name in runs if name != OBJECTIVES_CONTROL]
    pairs += [(name, other) for name in runs if (other := counterpart(name, default_segments)) in runs]
    return pairs


def coarse_vocab_settings(config: Mapping) -> dict[str, Any]:
    """rule coarse_vocab (LICHEE's coarse vocabulary, fem/coarse_vocab.py): its size, longest word and file."""
    lichee = config["pretrain"]["lichee"]
    size, pieces = lichee["coarse_vocab_size"], lichee["max_pieces"]
    corpus = config["corpus"]["name"]
    return {"size": size, "max_pieces": pieces, "file": f"data/coarse/{corpus}-n{size}-p{pieces}/coarse_vocab.json"}


def entities_settings(config: Mapping) -> dict[str, Any]:
    """rule entities (fem/entities.py): the spaCy pipeline and the output folder."""
    return {"spacy_model": config["entities"]["spacy_model"], "folder": f"data/entities/{config['corpus']['name']}"}


def run_strategy(strategy: str) -> str:
    """The masking strategy of a pre-training run named `strategy` (a run name: "pmlm.block" ->
    "block", "fe-k4" -> "fe")."""
    return parse_run_label(strategy).strategy


def run_objective(config: Mapping, strategy: str, setting: str) -> str:
    """The objective of pre-training run `strategy` (a run name) of `setting`: the name's for
    Table 6's runs (setting "objectives"), else pretrain.objective."""
    if setting == OBJECTIVES_SETTING:
        return parse_run_label(strategy).objective
    return config["pretrain"]["objective"]


def objective_notes(config: Mapping, runs: list[str]) -> str:
    """What Table 6's MASS, LICHEE, entity-span and KgPLM runs add to the encoder and how they
    differ from their papers, in words (its caption): MASS's decoder (per layer 8d^2 + 2d ff + 15d
    + ff: self- and cross-attention, feed-forward, LayerNorms; and its embedding LayerNorm),
    LICHEE's coarse table ((N + 1) d) and concat projection, KgPLM's discriminator head (d^2 + 4d
    + 1: dense, LayerNorm, one logit)."""
    labels = [parse_run_label(name) for name in runs]
    objectives = {run.objective for run in labels}
    parts = []
    if {"salient_span", "fe_salient_span"} & {run.strategy for run in labels}:
        parts.append(
            f"salient_span masks whole named-entity spans of spaCy's {config['entities']['spacy_model']} (the "
            "entities stage) up to p, topped up with random tokens; fe_salient_span deals a row's units (entity "
            "spans whole, other tokens alone) into K disjoint groups, copy k predicting group k."
        )
    if "mass" in objectives:  # (the keys are read only when such a run is configured: dvc.yaml's params)
        d, ff = config["model"]["hidden_size"], config["model"]["intermediate_size"]
        layers = config["pretrain"]["mass"]["decoder_layers"]
        count = layers * (8 * d * d + 2 * d * ff + 15 * d + ff) + 2 * d
        parts.append(
            f"mass.* trains a decoder of {layers} layer(s) with cross-attention sharing the encoder's embeddings "
            f"({count:,} more parameters, dropped after pre-training; its FLOPs count in the step); one fragment "
            "per row, and a decoder shallower than MASS's (as deep as its encoder); its validation MLM loss scores "
            "each masked position as a one-token fragment through the decoder, not through the encoder's head."
        )
    if "lichee" in objectives:
        d, lichee = config["model"]["hidden_size"], config["pretrain"]["lichee"]
        count = (lichee["coarse_vocab_size"] + 1) * d + (2 * d * d + d if lichee["fusion"] == "concat" else 0)
        parts.append(
            f"lichee.* adds a coarse embedding table of at most {lichee['coarse_vocab_size']} words fused by "
            f"{lichee['fusion']} (up to {count:,} more parameters, kept for fine-tuning); its coarse units are "
            "whole words of the WordPiece vocabulary (LICHEE's: segmenter words and phrases), and a token outside "
            "them gets one shared coarse row (LICHEE: its own fine id)."
        )
    if "kgplm" in objectives:
        d, kgplm = config["model"]["hidden_size"], config["pretrain"]["kgplm"]
        parts.append(
            f"kgplm.* (pipeline scheme) writes the generator's samples into the masked entity spans and trains "
            f"ELECTRA's discriminator head to detect them ({d * d + 4 * d + 1:,} more parameters, dropped after "
            f"pre-training; the second encoder pass counts in the step); loss generator + {kgplm['disc_weight']:g} x "
            "discriminator, ELECTRA's weights (KgPLM's are not public)."
        )
    return " ".join(parts)


def table6_settings(config: Mapping) -> dict[str, Any]:
    """rule table6 (objectives): the runs, tasks, seeds, comparisons, default K, the tasks left
    out of the GLUE average, caption."""
    objectives, pretrain, model, seeds = config["objectives"], config["pretrain"], config["model"], config["seeds"]
    runs, default_k = objectives["runs"], segments(config)
    comparisons = objective_comparisons(runs, default_k)
    caption = captions.table6_caption(
        scale=config["scale"], corpus=config["corpus"]["name"], layers=model["num_hidden_layers"],
        hidden_size=model["hidden_size"], steps=objectives["steps"], rows_per_step=objectives["rows_per_step"],
        mask_ratio=pretrain["mask_ratio"], segments=default_k, decay_schedule=dict(objectives["decay_schedule"]),
        runs=runs, comparisons=comparisons, pretrain_seeds=len(seeds["pretrain"]),
        finetune_seeds=len(seeds["finetune"]), objective_notes=objective_notes(config, runs),
    )  # fmt: skip
    return {"runs": runs, "tasks": objectives["tasks"], "pretrain_seeds": seeds["pretrain"],
            "finetune_seeds": seeds["finetune"], "control": OBJECTIVES_CONTROL,
            "comparisons": comparison_flags(comparisons), "default_segments": default_k,
            "average_exclude": " ".join(config["finetune"]["average_exclude"]), "caption": caption}  # fmt: skip


def pretrain_curves_settings(config: Mapping, setting: str) -> dict[str, Any]:
    """rule pretrain_curves: the runs drawn in results/figures/pretrain_curves_<setting>.png, a
    label per run (its strategy or Table 6 run name; seeds of one label make one line), and the
    title. scratch: the runs of Tables 2 and 3 (they share them); objectives: Table 6's."""
    seeds = config["seeds"]["pretrain"]
    if setting == "scratch":  # read only this setting's keys: they are the job's DVC params
        names, tables = config["pretrain"]["strategies"], "Tables 2 and 3"
    else:
        names, tables = config["objectives"]["runs"], "Table 6"
    runs = [(name, seed) for name in names for seed in seeds]
    return {"train_logs": [f"results/{setting}/pretrain/{name}-s{seed}/train_log.json" for name, seed in runs],
            "labels": " ".join(name for name, _ in runs),
            "title": f"Pre-training curves of the runs of {tables}"}  # fmt: skip


# Table 6's builders by rule, merged into fem.rule_settings.RULE_SETTINGS by keys_read (this module
# imports that one, so it cannot list them itself).
OBJECTIVE_RULE_SETTINGS: dict[str, Callable[..., Any]] = {
    "table6": table6_settings,
    "pretrain_curves": pretrain_curves_settings,
    "coarse_vocab": coarse_vocab_settings,
    "entities": entities_settings,
}
