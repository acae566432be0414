"""The payoff of contextual string embeddings: UPOS on UD English-EWT with and without them.

    .venv/bin/python bench/upos_with_charlm.py --lm-dir bench/out/charlm --epochs 10
    .venv/bin/python bench/upos_with_charlm.py --quick     # tiny LMs and taggers, seconds

Trains two BiLSTM-CRF taggers with the same seed, hyperparameters and number of epochs:
``glove+char`` (GloVe 6B 50d + character BiLSTM) and ``glove+char+flair`` (the same plus the
forward and backward language models of ``bench/train_charlm.py``, frozen; their vectors are
computed once per sentence and kept, storage mode ``cpu``). Prints one JSON line per tagger
(``embeddings``, ``dev_accuracy`` of the final model, ``best_dev_score``, ``epochs``,
``seconds``) and a last line with both accuracies and the difference.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from engine.data import Corpus  # noqa: E402
from engine.embeddings.base import TokenEmbeddings  # noqa: E402
from engine.embeddings.character import CharacterEmbeddings  # noqa: E402
from engine.embeddings.flair import FlairEmbeddings  # noqa: E402
from engine.embeddings.stacked import StackedEmbeddings  # noqa: E402
from engine.embeddings.word import WordEmbeddings  # noqa: E402
from engine.language_model import (  # noqa: E402
    LanguageModel,
    LanguageModelTrainer,
    corpus_texts,
    write_text_corpus,
)
from engine.models.sequence_tagger import SequenceTagger  # noqa: E402
from engine.readers import read_corpus_files  # noqa: E402
from engine.training.trainer import ModelTrainer  # noqa: E402

DATA = REPO_ROOT.parent / "shared" / "data"
LABEL_TYPE = "upos"


def tiny_language_models(corpus: Corpus, folder: Path) -> tuple[Path, Path]:
    """For --quick: two small LMs trained for a moment on the tagging corpus's own text."""
    text = write_text_corpus(corpus_texts(corpus), folder / "lm-corpus", train_chunk_chars=20_000)
    paths = []
    for is_forward in (True, False):
        torch.manual_seed(0)
        model = LanguageModel(text.characters(), is_forward=is_forward, hidden_size=32, embedding_size=16)
        run = folder / ("forward" if is_forward else "backward")
        result = LanguageModelTrainer(model, text).train(
            run, sequence_length=50, mini_batch_size=16, checkpoint=False
        )
        paths.append(Path(result["model_path"]))
    return paths[0], paths[1]


def train_tagger(
    corpus: Corpus, embeddings: list[TokenEmbeddings], args: argparse.Namespace, base_path: Path
) -> dict[str, float | int | str]:
    stacked = StackedEmbeddings(embeddings)
    tagger = SequenceTagger(
        stacked, corpus.make_label_dictionary(LABEL_TYPE), LABEL_TYPE, hidden_size=args.hidden, use_crf=True
    )
    started = time.monotonic()
    result = ModelTrainer(tagger, corpus).train(
        base_path,
        learning_rate=args.lr,
        mini_batch_size=args.batch,
        max_epochs=args.epochs,
        embeddings_storage_mode="cpu",
        seed=args.seed,
        callbacks=[],
        save_final_model=False,
    )
    accuracy = tagger.evaluate(corpus.dev, gold_label_type=LABEL_TYPE).accuracy
    return {
        "embeddings": "+".join(e.name for e in embeddings),
        "dev_accuracy": round(float(accuracy), 4),
        "best_dev_score": round(float(result["best_dev_score"]), 4),
        "epochs": int(result["epochs_done"]),
        "seconds": round(time.monotonic() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="200 sentences, tiny LMs, 1 epoch")
    parser.add_argument(
        "--lm-dir",
        type=Path,
        default=REPO_ROOT / "bench" / "out" / "charlm",
        help="output folder of bench/train_charlm.py (uses forward/ and backward/best-lm)",
    )
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--downsample", type=float, default=1.0, help="fraction of EWT train (and dev) to use"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="where the taggers are trained (default: a temp dir)"
    )
    args = parser.parse_args(argv)

    ewt = DATA / "ud_english_ewt"
    if not (ewt / "train.conllu").is_file():
        print(f"error: {ewt} not found (see ../shared/data/README.md)", file=sys.stderr)
        return 2
    corpus = read_corpus_files(
        "conllu", {"train": ewt / "train.conllu", "dev": ewt / "dev.conllu"}, sample_missing_splits=False
    )
    if args.quick:
        corpus.train, corpus.dev = corpus.train[:200], corpus.dev[:100]
        args.epochs, args.hidden = 1, 32
    elif args.downsample < 1.0:
        corpus.downsample(args.downsample, downsample_test=False)

    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        if args.quick:
            forward_path, backward_path = tiny_language_models(corpus, out / "lm")
        else:
            forward_path, backward_path = (
                args.lm_dir / "forward" / "best-lm",
                args.lm_dir / "backward" / "best-lm",
            )
            for path in (forward_path, backward_path):
                if not path.is_dir():
                    print(
                        f"error: no language model at {path}; run bench/train_charlm.py first",
                        file=sys.stderr,
                    )
                    return 2
        rows = []
        for with_flair in (False, True):
            torch.manual_seed(args.seed)  # initial weights, so that runs repeat exactly
            embeddings: list[TokenEmbeddings] = [WordEmbeddings("glove"), CharacterEmbeddings()]
            if with_flair:
                embeddings += [FlairEmbeddings(forward_path), FlairEmbeddings(backward_path)]
            row = train_tagger(corpus, embeddings, args, out / ("flair" if with_flair else "baseline"))
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(
        json.dumps(
            {
                "task": "upos ud_english_ewt dev",
                "train_sentences": len(corpus.train),
                "epochs": args.epochs,
                "glove_char_dev_accuracy": rows[0]["dev_accuracy"],
                "glove_char_flair_dev_accuracy": rows[1]["dev_accuracy"],
                "difference": round(float(rows[1]["dev_accuracy"]) - float(rows[0]["dev_accuracy"]), 4),
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
