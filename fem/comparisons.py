"""Which differences the tables show, and what each one isolates (captions and Markdown say it).

A comparison "A:B" is strategy A minus strategy B, paired by pre-training seed. The defaults:

- fe:random_k: random_k takes the same sequences, rows, per-copy masking ratio and
  predictions per step as fe; only the overlap of the K masks of a sequence differs, so the
  difference is mask overlap alone;
- fe:random: fully-explored masking against random's batch of K x more distinct sequences
  per step at equal compute (pretrain.match: rows), or against random at 1/K of fe's
  compute with the same distinct sequences (pretrain.match: sequences).

Light on purpose (no pandas): the Snakefile reads it to plan the tables and their captions.
"""

from __future__ import annotations

from fem.errors import ConfigError

DEFAULTS = (("fe", "random_k"), ("fe", "random"))
OBJECTIVES_CONTROL = "random"  # Table 6's control, BERT's masked LM: every objectives run is compared with it


def comparison_name(a: str, b: str) -> str:
    """The column of A minus B: "fe_minus_random_k"."""
    return f"{a}_minus_{b}"


def isolates(a: str, b: str, match: str = "rows") -> str:
    """What A minus B isolates, in words, under the pre-training setting `match`."""
    if (a, b) == ("fe", "random_k"):
        return "mask overlap alone (the same sequences, rows, masking ratio and predictions per step)"
    if (a, b) == ("fe", "random") and match == "sequences":
        return "fully-explored masking against random on the same distinct sequences per step, at K x its compute"
    if (a, b) == ("fe", "random"):
        return "fully-explored masking against random's larger batch (K x the distinct sequences) at equal compute"
    return f"{a} against {b}"


def default_comparisons(strategies: list[str]) -> list[tuple[str, str]]:
    """fe:random_k and fe:random, each when both strategies are configured; then every other
    strategy (not random, random_k or fe) against random."""
    pairs = [(a, b) for a, b in DEFAULTS if a in strategies and b in strategies]
    if "random" in strategies:
        pairs += [(s, "random") for s in strategies if s not in ("random", "random_k", "fe")]
    return pairs


def parse_comparisons(texts: list[str] | None, strategies: list[str]) -> list[tuple[str, str]]:
    """["fe:random_k", ...] -> [("fe", "random_k"), ...]; None -> default_comparisons.
    ConfigError for a malformed one or a strategy not in `strategies`."""
    if texts is None:
        return default_comparisons(strategies)
    pairs = []
    for text in texts:
        a, colon, b = text.partition(":")
        if not colon or not a or not b or a == b:
            raise ConfigError(f"comparison {text!r}: expected A:B with two different strategies, e.g. fe:random_k")
        unknown = [s for s in (a, b) if s not in strategies]
        if unknown:
            raise ConfigError(f"comparison {text!r}: {unknown[0]!r} is not among the strategies {strategies}")
        pairs.append((a, b))
    return pairs


def strategy_names(k: int, default_segments: int) -> dict[str, str]:
    """Table 4: {role: strategy wildcard} of the runs at K = k: fe-k<K> and its control
    random_k-k<K>, or the plain fe and random_k at the default K; random does not depend on K."""
    if k == default_segments:
        return {"random": "random", "random_k": "random_k", "fe": "fe"}
    return {"random": "random", "random_k": f"random_k-k{k}", "fe": f"fe-k{k}"}


def table4_strategies(segments: list[int], default_segments: int) -> list[str]:
    """Every strategy wildcard Table 4 reads, in order: random, then random_k and fe per K."""
    names = ["random"] + [strategy_names(k, default_segments)[r] for k in segments for r in ("random_k", "fe")]
    return list(dict.fromkeys(names))


def statistics_caption(comparisons: list[tuple[str, str]], n_pretrain: int, n_finetune: int, match: str = "rows",
                       table: str = "table2") -> str:  # fmt: skip
    """The captions' sentences on intervals, differences, MDD and p-values (fem/statistics.py)."""
    text = (
        f"Each strategy cell is the mean over {n_pretrain} pre-training seed(s), each the mean of its {n_finetune} "
        "fine-tuning seed(s), with its 95% t interval [lo, hi] = mean ± t(0.975, n-1)·sd/√n; 'interval beyond "
        "trivial' names the strategies whose whole interval lies on the better side of the row's trivial baseline."
    )
    if not comparisons:
        return text
    meaning = "; ".join(f"'{a} − {b}' isolates {isolates(a, b, match)}" for a, b in comparisons)
    return text + (
        f" Differences A − B are paired by pre-training seed: {meaning}. Each has its 95% t interval, the sd of "
        "the paired difference, the minimum detectable difference MDD = (t(0.975, n-1) + t(0.80, n-1))·sd/√n "
        "(80% power, two-sided α = 0.05, n = the row's pairs), the exact sign-flip p and the paired t p. With "
        f"{n_pretrain} seed(s) the smallest attainable sign-flip p is 2/2^n = {min(1.0, 2 / 2**n_pretrain):.4g} "
        f"(p < 0.05 needs at least 6 seeds); `fem power results/{table}.csv --difference d` gives the seeds needed "
        "to detect a difference d."
    )
