"""The tutorial's question classifier: a fine-tuned transformer document embedding on TREC-6.

    .venv/bin/python examples/train_trec_classifier.py            # MiniLM-L6, 10 epochs
    .venv/bin/python examples/train_trec_classifier.py --quick    # 0.5% of the data, 1 epoch

TREC lines look like ``DESC:manner How did serfdom develop ... ?``; the coarse class (before the
``:``) is the label ``question_class``. Only a training file is available, so a seeded 10% of it
becomes dev; the tutorial's ``distilbert-base-uncased`` is replaced by the offline MiniLM-L6.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from engine import (  # noqa: E402
    ClassificationCorpus,
    ModelTrainer,
    Sentence,
    TextClassifier,
    TransformerDocumentEmbeddings,
    load_model,
)

DATA = REPO_ROOT.parent / "shared" / "data"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a tiny run: 0.5%% of the corpus, one epoch")
    parser.add_argument(
        "--output", type=Path, default=Path("resources/taggers/question-classification-with-transformer")
    )
    parser.add_argument("--model", default="minilm", help="a Hugging Face model folder (default: MiniLM-L6)")
    args = parser.parse_args(argv)

    label_type = "question_class"
    corpus = ClassificationCorpus(
        DATA / "trec6",
        format="fasttext",
        label_type=label_type,
        label_prefix=None,
        label_separator=":",
    )
    if args.quick:
        corpus.downsample(0.005)
    label_dict = corpus.make_label_dictionary(label_type=label_type)
    print(corpus)
    print(label_dict)

    document_embeddings = TransformerDocumentEmbeddings(args.model, fine_tune=True)
    classifier = TextClassifier(document_embeddings, label_dictionary=label_dict, label_type=label_type)

    trainer = ModelTrainer(classifier, corpus)
    result = trainer.fine_tune(
        args.output,
        learning_rate=5.0e-5,
        mini_batch_size=4,
        mini_batch_chunk_size=1,
        max_epochs=1 if args.quick else 10,
    )

    model = load_model(result["model_path"])
    sentence = Sentence("Who built the Eiffel Tower ?")
    model.predict(sentence, return_probabilities_for_all_classes=True)
    print(sentence.to_tagged_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
