"""The tutorial's part-of-speech tagger: GloVe + BiLSTM-CRF on UD English-EWT (UPOS).

    .venv/bin/python examples/train_pos_tagger.py            # 10 epochs on all of EWT
    .venv/bin/python examples/train_pos_tagger.py --quick    # 2% of the data, 1 epoch

Writes the model and logs to ``--output`` (default ``resources/taggers/example-upos``), then loads
the saved model and tags an example sentence.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from engine import ConlluCorpus, ModelTrainer, Sentence, SequenceTagger, WordEmbeddings, load_model  # noqa: E402

DATA = REPO_ROOT.parent / "shared" / "data"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a tiny run: 2%% of the corpus, one epoch")
    parser.add_argument("--output", type=Path, default=Path("resources/taggers/example-upos"))
    args = parser.parse_args(argv)

    # 1. the corpus and what to predict
    corpus = ConlluCorpus(DATA / "ud_english_ewt")
    if args.quick:
        corpus.downsample(0.02)
    label_type = "upos"
    label_dict = corpus.make_label_dictionary(label_type=label_type)
    print(corpus)
    print(label_dict)

    # 2. embeddings and 3. the sequence tagger
    embeddings = WordEmbeddings("glove")
    tagger = SequenceTagger(
        hidden_size=256,
        embeddings=embeddings,
        tag_dictionary=label_dict,
        tag_type=label_type,
        label_kind="token",
    )

    # 4. train
    trainer = ModelTrainer(tagger, corpus)
    result = trainer.train(
        args.output,
        learning_rate=0.1,
        mini_batch_size=32,
        max_epochs=1 if args.quick else 10,
    )

    # 5. load the saved model and predict
    model = load_model(result["model_path"])
    sentence = Sentence("I love Berlin .")
    model.predict(sentence)
    print(sentence.to_tagged_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
