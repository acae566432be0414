"""Benchmark: UPOS on a MultiCorpus of UD English-EWT and UD German-GSD.

German-GSD has only its dev split here, so it is split 80/20 (seeded) into train and evaluation.

    .venv/bin/python bench/train_multi.py                # up to 20 epochs
    .venv/bin/python bench/train_multi.py --quick        # 150 + 150 sentences, 1 epoch

Model: GloVe 6B 50d + character BiLSTM, BiLSTM hidden 256, CRF; SGD lr 0.1, batch 32, annealing on
the joint dev accuracy. One JSON line per epoch, then ``best_dev_accuracy`` (joint) and the final
model's ``dev_accuracy_en`` / ``dev_accuracy_de`` per language, ``wall_s``, ``peak_rss_mb``.
"""

from __future__ import annotations

import random
import time

from _common import EpochPrinter, data_file, emit, output_dir, peak_rss_mb, set_threads, training_parser


def main(argv: list[str] | None = None) -> int:
    parser = training_parser(__doc__, epochs=20, quick_help="150 sentences per language, 1 epoch")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    set_threads(args.threads)
    import torch

    from engine.data import Corpus, MultiCorpus
    from engine.embeddings.character import CharacterEmbeddings
    from engine.embeddings.stacked import StackedEmbeddings
    from engine.embeddings.word import WordEmbeddings
    from engine.models.sequence_tagger import SequenceTagger
    from engine.readers.conllu import ConlluCorpus, read_conllu_file
    from engine.training.trainer import ModelTrainer

    english = ConlluCorpus(
        train_file=data_file("ud_english_ewt", "train.conllu"),
        dev_file=data_file("ud_english_ewt", "dev.conllu"),
        sample_missing_splits=False,
        name="ud_english_ewt",
    )
    german_sentences, _ = read_conllu_file(data_file("ud_german_gsd", "dev.conllu"))
    order = list(range(len(german_sentences)))
    random.Random(42).shuffle(order)
    cut = int(0.8 * len(order))
    german = Corpus(
        [german_sentences[i] for i in order[:cut]],
        [german_sentences[i] for i in order[cut:]],
        name="ud_german_gsd",
        sample_missing_splits=False,
    )
    epochs = args.epochs
    if args.quick:
        for corpus in (english, german):
            corpus.train, corpus.dev = corpus.train[:150], corpus.dev[:50]
        epochs = 1
    multi = MultiCorpus([english, german], name="ewt+gsd")
    torch.manual_seed(args.seed)
    embeddings = StackedEmbeddings([WordEmbeddings("glove"), CharacterEmbeddings()])
    tagger = SequenceTagger(embeddings, multi.make_label_dictionary("upos"), "upos", hidden_size=256)
    printer = EpochPrinter("accuracy", "accuracy")
    trainer = ModelTrainer(tagger, multi)
    result = trainer.train(
        output_dir(args.out, "multi"),
        learning_rate=0.1,
        mini_batch_size=32,
        max_epochs=epochs,
        embeddings_storage_mode="cpu",
        seed=args.seed,
        device=args.device,
        callbacks=[printer],
    )
    per_language = {
        f"dev_accuracy_{lang}": round(trainer.model.evaluate(corpus.dev, mini_batch_size=64).accuracy, 5)
        for lang, corpus in (("en", english), ("de", german))
    }
    emit(
        {
            "benchmark": "train_multi",
            "epochs": result["epochs_done"],
            "train_sentences": len(multi.train),
            "best_dev_accuracy": None if printer.best is None else round(printer.best, 5),
            **per_language,
            "wall_s": round(time.perf_counter() - started, 1),
            "peak_rss_mb": peak_rss_mb(),
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
