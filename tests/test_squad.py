import json
from dataclasses import replace

import datasets
import numpy as np
import pytest
from helpers import DEV_QA, TRAIN_QA, UNANSWERABLE_QA, rows

from fem.finetuning.squad import answer_positions, decode, prepare_features
from fem.finetuning.sweep import finetune
from fem.metrics import normalize_answer, squad_exact_match, squad_f1, squad_metrics
from fem.registry import get_task
from fem.settings import SquadSettings

# --- metrics: the official SQuAD v2.0 rules, by hand -------------------------------------


def test_normalize_answer_follows_the_official_order():
    assert normalize_answer("  The  Eiffel-Tower!  ") == "eiffeltower"  # punctuation goes before articles
    assert normalize_answer("An apple, a day") == "apple day"
    assert normalize_answer("theatre anthem") == "theatre anthem"  # articles only as whole words
    assert normalize_answer("") == ""


def test_exact_match_by_hand():
    assert squad_exact_match("the Eiffel Tower", ["Eiffel Tower"]) == 1.0
    assert squad_exact_match("Paris!", ["paris"]) == 1.0
    assert squad_exact_match("Paris, France", ["Paris"]) == 0.0
    assert squad_exact_match("Lyon", ["Paris", "lyon."]) == 1.0  # max over gold answers


def test_f1_by_hand():
    # "in the city of Paris" -> "in city of paris" (4 tokens); gold "paris" (1 token); 1 shared:
    # precision 1/4, recall 1/1, F1 = 2 * 1/4 * 1 / (1/4 + 1) = 0.5 / 1.25 = 0.4
    assert squad_f1("in the city of Paris", ["Paris"]) == pytest.approx(0.4)
    # "big red dog" vs "red dog barks": 2 shared, precision 2/3, recall 2/3, F1 2/3
    assert squad_f1("big red dog", ["the red dog barks"]) == pytest.approx(2 / 3)
    # repeated tokens count once per occurrence: "a a b" -> "b"; gold "b b" -> 1 shared of 1 and 2:
    # precision 1, recall 1/2, F1 2/3
    assert squad_f1("a a b", ["b b"]) == pytest.approx(2 / 3)
    # max over gold answers: 0.4 against "Paris", 1.0 against "city of Paris"
    assert squad_f1("in the city of Paris", ["Paris", "in city of paris"]) == 1.0
    assert squad_f1("London", ["Paris"]) == 0.0


def test_unanswerable_questions():
    assert squad_exact_match("", [""]) == 1.0 and squad_f1("", [""]) == 1.0
    assert squad_exact_match("", []) == 1.0 and squad_f1("", []) == 1.0  # no gold answer = [""]
    assert squad_exact_match("x", [""]) == 0.0 and squad_f1("x", [""]) == 0.0
    assert squad_exact_match("", ["Paris"]) == 0.0 and squad_f1("", ["Paris"]) == 0.0
    assert squad_f1("the", [""]) == 1.0  # normalises to nothing, as the official script


def test_squad_metrics_averages_and_breaks_down():
    gold = {"a": ["Paris"], "b": ["red dog barks"], "c": [], "d": [""]}
    predictions = {"a": "the Paris", "b": "big red dog", "c": "", "d": "something"}
    result = squad_metrics(predictions, gold)
    # EM: 1, 0, 1, 0 -> 0.5; F1: 1, 2/3, 1, 0 -> (8/3) / 4 = 2/3
    assert result["exact_match"] == pytest.approx(0.5)
    assert result["f1"] == pytest.approx(2 / 3)
    assert result["has_answer_exact_match"] == pytest.approx(0.5)
    assert result["has_answer_f1"] == pytest.approx((1 + 2 / 3) / 2)
    assert result["no_answer_exact_match"] == pytest.approx(0.5)
    assert result["no_answer_f1"] == pytest.approx(0.5)
    only_answerable = squad_metrics({"a": "Paris"}, {"a": ["Paris"], "b": ["dog"]})  # missing prediction = ""
    assert only_answerable == {"exact_match": 0.5, "f1": 0.5, "has_answer_exact_match": 0.5, "has_answer_f1": 0.5}


# --- features ----------------------------------------------------------------------------

LONG_CONTEXT = " ".join(f"Sentence number {i} says nothing of interest." for i in range(20)) + (
    " The secret word is xylophone."
)
LONG_ANSWER = "xylophone"


def long_features(tokenizer):
    questions = ["What is the secret word?", "Who wrote the sentences?"]
    features = prepare_features(tokenizer, questions, [LONG_CONTEXT, LONG_CONTEXT], max_length=64, doc_stride=16)
    answer_start = LONG_CONTEXT.rindex(LONG_ANSWER)
    starts, ends = answer_positions(features, [[answer_start], []], [[LONG_ANSWER], []])
    return features, starts, ends


def test_long_context_is_split_into_windows(tokenizer):
    features, starts, ends = long_features(tokenizer)
    n = len(features["input_ids"])
    assert n == len(features["offset_mapping"]) == len(features["example_index"]) == len(starts) == len(ends)
    windows = [f for f in range(n) if features["example_index"][f] == 0]
    assert len(windows) >= 3
    assert features["example_index"] == sorted(features["example_index"])
    answer_start = LONG_CONTEXT.rindex(LONG_ANSWER)
    holding = []
    for f in windows:
        ids, offsets = features["input_ids"][f], features["offset_mapping"][f]
        assert len(ids) <= 64 and len(offsets) == len(ids) == len(features["token_type_ids"][f])
        assert offsets[0] is None and offsets[-1] is None  # [CLS] ... [SEP]
        context = [offset for offset in offsets if offset is not None]
        if context[0][0] <= answer_start and context[-1][1] >= answer_start + len(LONG_ANSWER):
            holding.append(f)
            assert starts[f] > 0 and ends[f] >= starts[f]
            assert LONG_CONTEXT[offsets[starts[f]][0] : offsets[ends[f]][1]] == LONG_ANSWER
        else:
            assert (starts[f], ends[f]) == (0, 0)
    assert holding and holding[-1] == windows[-1] and windows[0] not in holding  # only in the last window(s)
    # consecutive windows share doc_stride context tokens
    first, second = ([o for o in features["offset_mapping"][windows[i]] if o is not None] for i in (0, 1))
    assert first[-16:] == second[:16]


def test_unanswerable_question_points_at_cls(tokenizer):
    features, starts, ends = long_features(tokenizer)
    unanswerable = [f for f, example in enumerate(features["example_index"]) if example == 1]
    assert len(unanswerable) >= 3
    assert all((starts[f], ends[f]) == (0, 0) for f in unanswerable)


# --- decoding with synthetic logits --------------------------------------------------------


def synthetic_logits(features, spans: dict[int, tuple[int, int]], value: float = 10.0):
    """Zero logits, with `value` at the start and end token of each feature in `spans`."""
    starts = [np.zeros(len(ids)) for ids in features["input_ids"]]
    ends = [np.zeros(len(ids)) for ids in features["input_ids"]]
    for f, (s, e) in spans.items():
        starts[f][s], ends[f][e] = value, value
    return starts, ends


def test_decode_finds_the_answer_in_the_right_window(tokenizer):
    features, gold_starts, gold_ends = long_features(tokenizer)
    f = max(f for f in range(len(gold_starts)) if gold_starts[f] > 0)
    starts, ends = synthetic_logits(features, {f: (gold_starts[f], gold_ends[f])})
    predictions, odds = decode(starts, ends, features, [LONG_CONTEXT] * 2, 20, 30, False, 0.0)
    assert predictions[0] == LONG_ANSWER
    assert set(predictions) == set(odds) == {0, 1}
    # logits on a question token or [CLS] are never a span
    starts, ends = synthetic_logits(features, {f: (1, 2)})
    predictions, _ = decode(starts, ends, features, [LONG_CONTEXT] * 2, 20, 30, False, 0.0)
    assert predictions[0] != LONG_ANSWER and "What" not in predictions[0]


def short_example(tokenizer):
    context = "Ada Lovelace wrote the first published computer program in 1843."
    features = prepare_features(tokenizer, ["Who wrote it?"], [context], max_length=64, doc_stride=16)
    offsets = features["offset_mapping"][0]
    first = next(t for t, o in enumerate(offsets) if o is not None)  # "ada"
    return context, features, first


def test_decode_respects_max_answer_length(tokenizer):
    context, features, first = short_example(tokenizer)
    # tokens: ada love ##lace wrote ...; the best span is "Ada Lovelace wrote" (4 tokens)
    starts, ends = synthetic_logits(features, {0: (first, first + 3)})
    ends[0][first + 2] = 5.0  # second best end: "Ada Lovelace" (3 tokens)
    ends[0][first + 1] = 4.0  # third best end: "Ada Love" (2 tokens, the answer ends inside a word)
    assert decode(starts, ends, features, [context], 20, 4, False, 0.0)[0][0] == "Ada Lovelace wrote"
    assert decode(starts, ends, features, [context], 20, 3, False, 0.0)[0][0] == "Ada Lovelace"
    assert decode(starts, ends, features, [context], 20, 2, False, 0.0)[0][0] == "Ada Love"
    ends[0][first - 1] = 50.0  # an end before every start (the [SEP]) is never chosen
    assert decode(starts, ends, features, [context], 20, 3, False, 0.0)[0][0] == "Ada Lovelace"
    # only n_best candidates are searched: with n_best 1 the single end candidate is the [SEP]
    assert decode(starts, ends, features, [context], 1, 3, False, 0.0) == ({0: ""}, {0: float("inf")})


def test_decode_v2_null_answer_and_threshold(tokenizer):
    context, features, first = short_example(tokenizer)
    starts, ends = synthetic_logits(features, {0: (first, first + 2)})  # "Ada Lovelace", span score 20
    starts[0][0] = ends[0][0] = 11.0  # null score 22: null odds 2
    predictions, odds = decode(starts, ends, features, [context], 20, 30, True, 0.0)
    assert predictions[0] == "" and odds[0] == pytest.approx(2.0)
    assert decode(starts, ends, features, [context], 20, 30, True, 5.0)[0][0] == "Ada Lovelace"
    assert decode(starts, ends, features, [context], 20, 30, False, 0.0)[0][0] == "Ada Lovelace"  # v1: no null
    starts[0][0] = ends[0][0] = 9.0  # null odds -2
    assert decode(starts, ends, features, [context], 20, 30, True, 0.0)[0][0] == "Ada Lovelace"
    assert decode(starts, ends, features, [context], 20, 30, True, -3.0)[0][0] == ""


def test_decode_v2_null_score_is_the_minimum_over_windows(tokenizer):
    features, gold_starts, gold_ends = long_features(tokenizer)
    windows = [f for f, example in enumerate(features["example_index"]) if example == 0]
    f = windows[-1]
    starts, ends = synthetic_logits(features, {f: (gold_starts[f], gold_ends[f])})  # span score 20
    for w in windows:
        starts[w][0] = ends[w][0] = 15.0  # null score 30 in every window ...
    starts[f][0] = ends[f][0] = 8.0  # ... but 16 in the window that holds the answer: odds -4
    predictions, odds = decode(starts, ends, features, [LONG_CONTEXT] * 2, 20, 30, True, 0.0)
    assert predictions[0] == LONG_ANSWER and odds[0] == pytest.approx(-4.0)


# --- fine-tuning on fixtures ---------------------------------------------------------------


def save_task(path, train_qa, dev_qa):
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(rows(train_qa, "t")),
            "validation": datasets.Dataset.from_dict(rows(dev_qa, "d")),
        }
    ).save_to_disk(str(path))
    return path


SETTINGS = SquadSettings(seed=1, max_train_examples=20, max_eval_examples=None, max_length=64, doc_stride=16,
                         max_answer_length=10, n_best=5, no_answer_threshold=0.0, epochs=2, batch_size=8,
                         learning_rate=1e-4, warmup_ratio=0.1, weight_decay=0.01)  # fmt: skip


@pytest.mark.parametrize("name", ["squad", "squad_v2"])
def test_finetune_squad_produces_valid_metrics(tmp_path, checkpoint, name):
    task = get_task(name)
    train_qa = TRAIN_QA + (UNANSWERABLE_QA if task.unanswerable else [])
    dev_qa = DEV_QA + ([(*qa, []) for qa in UNANSWERABLE_QA] if task.unanswerable else [])
    task_dir = save_task(tmp_path / name, train_qa, dev_qa)
    result = finetune(task, task_dir, checkpoint, tmp_path / "out", SETTINGS, run_labels={"strategy": "fe"})
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved == result
    assert result["task"] == name and result["run"] == {"strategy": "fe"}
    assert result["metric_names"] == ["exact_match", "f1"]
    expected = ["exact_match", "f1"]
    if task.unanswerable:
        expected += ["has_answer_exact_match", "has_answer_f1", "no_answer_exact_match", "no_answer_f1"]
    assert list(result["metrics"]) == expected
    assert all(np.isfinite(v) and 0.0 <= v <= 1.0 for v in result["metrics"].values())
    assert result["score"] == pytest.approx(np.mean([result["metrics"]["exact_match"], result["metrics"]["f1"]]))
    assert result["train_examples"] == 20 and result["train_examples_available"] == len(train_qa)
    assert result["eval_examples"] == len(dev_qa) and result["eval_split"] == "validation"
    assert result["train_features"] >= 20 and result["eval_features"] >= len(dev_qa)
    assert result["steps"] == 2 * -(-result["train_features"] // 8)
    assert np.isfinite(result["final_train_loss"])
    predictions = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert sorted(predictions) == sorted(f"d{i}" for i in range(len(dev_qa)))
    assert all(isinstance(text, str) for text in predictions.values())
    gold = {f"d{i}": (qa[2] if len(qa) > 2 else []) for i, qa in enumerate(dev_qa)}
    assert squad_metrics(predictions, gold)["f1"] == pytest.approx(result["metrics"]["f1"])
    assert (tmp_path / "out" / "null_odds.json").exists()  # v1.1 too: how sure each answer is
    if task.unanswerable:
        odds = json.loads((tmp_path / "out" / "null_odds.json").read_text())
        assert sorted(odds) == sorted(predictions)
        assert all((odds[q] > 0.0) == (predictions[q] == "") for q in odds if odds[q] is not None)


def test_finetune_squad_is_deterministic(tmp_path, checkpoint):
    task_dir = save_task(tmp_path / "squad", TRAIN_QA, DEV_QA)
    first = finetune(get_task("squad"), task_dir, checkpoint, tmp_path / "a", SETTINGS)
    second = finetune(get_task("squad"), task_dir, checkpoint, tmp_path / "b", SETTINGS)
    assert first["final_train_loss"] == second["final_train_loss"]
    assert first["metrics"] == second["metrics"]
    assert (tmp_path / "a" / "predictions.json").read_text() == (tmp_path / "b" / "predictions.json").read_text()


def test_finetune_squad_learns_a_training_set_by_heart(tmp_path, checkpoint):
    """The loop really optimises: scored on its own 8 training questions (two per context, so
    the question matters), it finds their answers; one step of training does not."""
    qa = [(c, q, [a]) for c, q, a in TRAIN_QA[::3]]
    task_dir = save_task(tmp_path / "squad", qa, qa)
    settings = SquadSettings(seed=1, max_train_examples=None, max_eval_examples=None, max_length=64, doc_stride=16,
                             max_answer_length=10, n_best=20, no_answer_threshold=0.0, epochs=50, batch_size=4,
                             learning_rate=1e-3, warmup_ratio=0.1, weight_decay=0.0)  # fmt: skip
    one_step = replace(settings, epochs=1, batch_size=8)
    untrained = finetune(get_task("squad"), task_dir, checkpoint, tmp_path / "untrained", one_step)
    trained = finetune(get_task("squad"), task_dir, checkpoint, tmp_path / "trained", settings)
    assert untrained["steps"] == 1 and untrained["metrics"]["f1"] < 0.5  # 0.0 here; at most 0.39 over seeds 1-5
    assert trained["metrics"]["f1"] >= 0.75  # 0.875 over seeds 1-5 (a 1-layer, 32-wide model mixes up one question)
    assert trained["final_train_loss"] < untrained["final_train_loss"] / 2


@pytest.mark.parametrize("name", ["squad", "squad_v2"])
def test_trivial_baseline_answers_nothing(tmp_path, checkpoint, name):
    """v1.1: every dev question has an answer, so the trivial baseline scores 0. v2: the empty
    answer everywhere is right on exactly the 4 unanswerable of the 16 dev questions."""
    task = get_task(name)
    train_qa = TRAIN_QA + (UNANSWERABLE_QA if task.unanswerable else [])
    dev_qa = DEV_QA + ([(*qa, []) for qa in UNANSWERABLE_QA] if task.unanswerable else [])
    task_dir = save_task(tmp_path / name, train_qa, dev_qa)
    result = finetune(task, task_dir, checkpoint, tmp_path / "out", replace(SETTINGS, epochs=1))
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["trivial_metrics"] == result["trivial_metrics"]
    assert list(result["trivial_metrics"]) == list(result["metrics"])
    if not task.unanswerable:
        assert result["trivial_metrics"] == {"exact_match": 0.0, "f1": 0.0} and result["trivial_score"] == 0.0
        return
    assert result["trivial_metrics"] == {"exact_match": 4 / 16, "f1": 4 / 16, "has_answer_exact_match": 0.0,
                                         "has_answer_f1": 0.0, "no_answer_exact_match": 1.0, "no_answer_f1": 1.0}  # fmt: skip
    assert result["trivial_score"] == 4 / 16 and "empty answer" in result["trivial_predictor"]
