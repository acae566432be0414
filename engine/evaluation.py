"""Scores of predictions against gold labels: micro/macro precision, recall, F1 and accuracy.

Gold and predicted labels are compared as *items*: ``(key, label)`` pairs where the key says what
is labelled (a sentence and a token position; a sentence and an exact span; a sentence, plus the
label itself for multi-label classification). An item is a true positive when the same pair is in
both sets, so a span counts only with exact boundaries and type.

Main score per kind of label:
- ``span``: micro-F1 over exact spans; ``accuracy`` is tp / (tp + fp + fn).
- ``token`` and single-label ``sentence``: accuracy, correct / gold items (a gold item without a
  prediction counts as wrong).
- multi-label ``sentence``: micro-F1 over (sentence, label) pairs; ``accuracy`` is the share of
  sentences whose predicted label set equals the gold set.
Per class: precision, recall, F1 and support (number of gold items). Macro-F1 is the mean F1 over
the classes that occur in gold or predictions.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

Item = tuple[Hashable, str]


@dataclass(frozen=True, slots=True)
class ClassScores:
    precision: float
    recall: float
    f1: float
    support: int

    def to_dict(self) -> dict[str, float | int]:
        return {"precision": self.precision, "recall": self.recall, "f1": self.f1, "support": self.support}


@dataclass(slots=True)
class EvaluationResult:
    main_score: float
    main_score_name: str
    micro_precision: float
    micro_recall: float
    micro_f1: float
    macro_f1: float
    accuracy: float
    per_class: dict[str, ClassScores] = field(default_factory=dict)
    loss: float = 0.0

    def to_dict(self) -> dict[str, float]:
        """The numeric scores (the keys the trainer's callbacks and metrics rows use)."""
        return {
            "main_score": self.main_score,
            "micro_precision": self.micro_precision,
            "micro_recall": self.micro_recall,
            "micro_f1": self.micro_f1,
            "macro_f1": self.macro_f1,
            "accuracy": self.accuracy,
            "loss": self.loss,
        }

    def to_full_dict(self) -> dict[str, Any]:
        """Everything, JSON-able: the scores, the main score's name and the per-class table."""
        return {
            **self.to_dict(),
            "main_score_name": self.main_score_name,
            "per_class": {name: scores.to_dict() for name, scores in self.per_class.items()},
        }

    def report(self) -> str:
        """A plain-text table, one line per class (like the tutorial's training log)."""
        lines = [
            f"{self.main_score_name}: {self.main_score:.4f}  (micro P {self.micro_precision:.4f} "
            f"R {self.micro_recall:.4f} F1 {self.micro_f1:.4f}; macro F1 {self.macro_f1:.4f}; "
            f"accuracy {self.accuracy:.4f}; loss {self.loss:.4f})",
            f"{'class':>20} {'precision':>10} {'recall':>10} {'f1':>10} {'support':>8}",
        ]
        for name, s in sorted(self.per_class.items(), key=lambda kv: (-kv[1].support, kv[0])):
            lines.append(f"{name:>20} {s.precision:>10.4f} {s.recall:>10.4f} {s.f1:>10.4f} {s.support:>8}")
        return "\n".join(lines)


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def main_score_name(kind: str, multi_label: bool) -> str:
    """The score that picks the best epoch and ``main_score`` is: ``micro_f1`` for spans and
    multi-label classes, ``accuracy`` for token labels and single-label classes."""
    return "micro_f1" if kind == "span" or (kind == "sentence" and multi_label) else "accuracy"


def compute_scores(
    gold: Sequence[Sequence[Item]],
    predicted: Sequence[Sequence[Item]],
    kind: str,
    multi_label: bool = False,
    loss: float = 0.0,
) -> EvaluationResult:
    """Score per-sentence item lists (``gold[i]`` and ``predicted[i]`` belong to sentence i).

    ``kind`` is ``"span"``, ``"token"`` or ``"sentence"``; see the module docstring."""
    if kind not in ("span", "token", "sentence"):
        raise ValueError(f"kind must be 'span', 'token' or 'sentence', got {kind!r}")
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted")
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    support: Counter[str] = Counter()
    exact_sets = 0
    gold_items = 0
    for gold_sentence, predicted_sentence in zip(gold, predicted, strict=True):
        gold_set = set(gold_sentence)
        predicted_set = set(predicted_sentence)
        gold_items += len(gold_set)
        exact_sets += gold_set == predicted_set
        for _, label in gold_set & predicted_set:
            tp[label] += 1
        for _, label in predicted_set - gold_set:
            fp[label] += 1
        for _, label in gold_set - predicted_set:
            fn[label] += 1
        for _, label in gold_set:
            support[label] += 1

    total_tp, total_fp, total_fn = sum(tp.values()), sum(fp.values()), sum(fn.values())
    micro_p, micro_r, micro_f1 = _prf(total_tp, total_fp, total_fn)
    per_class: dict[str, ClassScores] = {}
    for label in sorted(set(tp) | set(fp) | set(fn)):
        p, r, f = _prf(tp[label], fp[label], fn[label])
        per_class[label] = ClassScores(p, r, f, support[label])
    macro_f1 = sum(s.f1 for s in per_class.values()) / len(per_class) if per_class else 0.0

    if kind == "span":
        accuracy = total_tp / (total_tp + total_fp + total_fn) if total_tp + total_fp + total_fn else 0.0
    elif kind == "sentence" and multi_label:
        accuracy = exact_sets / len(gold) if gold else 0.0
    else:
        accuracy = total_tp / gold_items if gold_items else 0.0
    name = main_score_name(kind, multi_label)
    main = micro_f1 if name == "micro_f1" else accuracy
    return EvaluationResult(
        main_score=main,
        main_score_name=name,
        micro_precision=micro_p,
        micro_recall=micro_r,
        micro_f1=micro_f1,
        macro_f1=macro_f1,
        accuracy=accuracy,
        per_class=per_class,
        loss=loss,
    )
