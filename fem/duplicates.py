"""Exact duplicates after normalisation, and copies of one split's items in another.

Two texts are copies when their normalised forms are equal: whitespace runs collapsed to
one space, case folded (str.casefold), ends stripped. An example of several text columns
(a GLUE pair) is keyed by its normalised columns together (`row_key`). Everything here is
a pure function of plain lists; fem/data.py (task splits), fem/tokenization.py (the corpus
split) and fem/overlap.py (corpus against dev sets) call it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

# Joins the normalised columns of one example; normalised text holds no newline, so two
# different rows never share a key.
_COLUMN_SEPARATOR = "\n"


def normalize_text(text: str) -> str:
    """`text` with case folded, whitespace runs collapsed to one space and ends stripped."""
    return " ".join(text.casefold().split())


def row_key(columns: Sequence[str]) -> str:
    """The normalised key of one example made of several text columns (all of them, in order)."""
    return _COLUMN_SEPARATOR.join(normalize_text(str(column)) for column in columns)


def first_occurrences(keys: Sequence[str]) -> list[int]:
    """Indices of the first occurrence of every distinct key, ascending: what is kept when
    exact duplicates are removed. `keys`: normalised texts (normalize_text / row_key)."""
    seen: set[str] = set()
    kept = []
    for index, key in enumerate(keys):
        if key not in seen:
            seen.add(key)
            kept.append(index)
    return kept


def with_copy_in(keys: Sequence[str], reference: Iterable[str]) -> list[int]:
    """Indices of the `keys` that also occur in `reference` (both normalised), ascending."""
    known = set(reference)
    return [index for index, key in enumerate(keys) if key in known]


def clean_splits(split_keys: dict[str, Sequence[str]]) -> tuple[dict[str, list[int]], dict[str, dict[str, int]]]:
    """Remove copies from splits that fem builds itself, taken in the order given (train
    first): an item is kept only when its key occurs neither earlier in its own split nor in
    an earlier split. So train keeps the first of its duplicates, and a dev or test item that
    has a copy in train (or, for test, in dev) is dropped.

    Returns (kept indices per split, ascending; counts per split: "assigned", "kept",
    "duplicates_removed" (a copy earlier in the same split) and "copy_in_<earlier split>"
    for each earlier split, every dropped item counted once, under the first split it
    has a copy in)."""
    seen: dict[str, str] = {}  # key -> the first split holding it
    kept: dict[str, list[int]] = {}
    counts: dict[str, dict[str, int]] = {}
    for split, keys in split_keys.items():
        earlier = list(kept)
        tally = {"assigned": len(keys), "kept": 0, "duplicates_removed": 0} | {f"copy_in_{s}": 0 for s in earlier}
        kept[split] = []
        for index, key in enumerate(keys):
            holder = seen.get(key)
            if holder is None:
                seen[key] = split
                kept[split].append(index)
            elif holder == split:
                tally["duplicates_removed"] += 1
            else:
                tally[f"copy_in_{holder}"] += 1
        tally["kept"] = len(kept[split])
        counts[split] = tally
    return kept, counts


def occurs_in_documents(queries: Sequence[str], documents: Iterable[str], key_words: int = 8) -> list[bool]:
    """For each query, whether its normalised text occurs verbatim, word for word, inside
    the normalised text of one of `documents` (a query of the words "a b" occurs in "x a b
    y" but not in "x ab y" nor in "x a bc"). An empty query occurs nowhere.

    One pass over the documents: the queries are indexed by their first `key_words` words
    (all of them when shorter), and every word position of a document extends a key word by
    word while it is the prefix of some query's key, so the cost is about the corpus's
    words (times a few lookups), whatever the number of queries; memory holds the queries
    and one document."""
    words = [tuple(normalize_text(query).split()) for query in queries]
    index: dict[tuple[str, ...], list[int]] = {}
    for number, query in enumerate(words):
        if query:
            index.setdefault(query[:key_words], []).append(number)
    prefixes = {key[:length] for key in index for length in range(1, len(key) + 1)}
    found = [False] * len(queries)
    for document in documents:
        text = normalize_text(document).split()
        for start in range(len(text)):
            for length in range(1, key_words + 1):
                key = tuple(text[start : start + length])
                if len(key) < length or key not in prefixes:
                    break
                for number in index.get(key, ()):
                    query = words[number]
                    if not found[number] and tuple(text[start : start + len(query)]) == query:
                        found[number] = True
    return found
