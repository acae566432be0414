"""The tutorial's NER tagger with stacked embeddings on CoNLL-03 (English).

    .venv/bin/python examples/train_ner_tagger.py            # 10 epochs
    .venv/bin/python examples/train_ner_tagger.py --quick    # 2% of the data, 1 epoch
    .venv/bin/python examples/train_ner_tagger.py --flair-lm LM_FORWARD --flair-lm LM_BACKWARD

The tutorial stacks GloVe with pretrained Flair news language models. No pretrained character
language model is available offline here, so the stack is GloVe + a character BiLSTM
(``CharacterEmbeddings``); pass ``--flair-lm`` folders of language models trained with
``engine.LanguageModelTrainer`` to add ``FlairEmbeddings`` exactly as the tutorial does.
The corpus has train and dev files only, so the trainer selects on dev and no test is scored.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from engine import (  # noqa: E402
    CharacterEmbeddings,
    ColumnCorpus,
    FlairEmbeddings,
    ModelTrainer,
    Sentence,
    SequenceTagger,
    StackedEmbeddings,
    WordEmbeddings,
    load_model,
)

DATA = REPO_ROOT.parent / "shared" / "data"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a tiny run: 2%% of the corpus, one epoch")
    parser.add_argument("--output", type=Path, default=Path("resources/taggers/sota-ner-flair"))
    parser.add_argument(
        "--flair-lm", type=Path, action="append", default=[], help="a saved language model folder"
    )
    args = parser.parse_args(argv)

    # 1. the corpus: token and BIO tag columns, decoded into "ner" spans
    corpus = ColumnCorpus(DATA / "conll03", {0: "text", 1: "ner"})
    if args.quick:
        corpus.downsample(0.02)
    label_type = "ner"
    label_dict = corpus.make_label_dictionary(label_type=label_type)
    print(corpus)
    print(label_dict)

    # 2. stacked embeddings
    embedding_types = [WordEmbeddings("glove"), CharacterEmbeddings()]
    embedding_types += [FlairEmbeddings(path) for path in args.flair_lm]
    embeddings = StackedEmbeddings(embeddings=embedding_types)

    # 3. the BiLSTM-CRF tagger (spans are trained as BIOES tags)
    tagger = SequenceTagger(
        hidden_size=256,
        embeddings=embeddings,
        tag_dictionary=label_dict,
        tag_type=label_type,
        label_kind="span",
    )

    # 4. train
    trainer = ModelTrainer(tagger, corpus)
    result = trainer.train(
        args.output,
        learning_rate=0.1,
        mini_batch_size=32,
        max_epochs=1 if args.quick else 10,
    )

    # 5. load and predict
    model = load_model(result["model_path"])
    sentence = Sentence("George Washington went to Washington .")
    model.predict(sentence)
    print(sentence.to_tagged_string())
    for span in sentence.get_spans(label_type):
        print(span)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
