"""Benchmark: UPOS tagging on UD English-EWT (train -> dev) with GloVe + character embeddings.

    .venv/bin/python bench/train_upos.py                 # up to 30 epochs, annealing
    .venv/bin/python bench/train_upos.py --quick         # 150 sentences, 1 epoch

Model: GloVe 6B 50d + character BiLSTM, reprojection, BiLSTM hidden 256, CRF. Trainer: SGD lr 0.1,
mini-batch 32, annealing on dev accuracy, storage mode ``cpu``. One JSON line per epoch
(``epoch``, ``tokens_per_s``, ``train_loss``, ``dev_accuracy`` ...), then ``best_dev_accuracy``,
``wall_s``, ``peak_rss_mb``. Target: dev accuracy >= 0.95.
"""

from __future__ import annotations

import time

from _common import EpochPrinter, data_file, emit, output_dir, peak_rss_mb, set_threads, training_parser


def main(argv: list[str] | None = None) -> int:
    parser = training_parser(__doc__, epochs=30, quick_help="150 train / 50 dev sentences, 1 epoch")
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--no-crf", action="store_true", help="softmax output layer instead of a CRF")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    set_threads(args.threads)
    import torch

    from engine.embeddings.character import CharacterEmbeddings
    from engine.embeddings.stacked import StackedEmbeddings
    from engine.embeddings.word import WordEmbeddings
    from engine.models.sequence_tagger import SequenceTagger
    from engine.readers.conllu import ConlluCorpus
    from engine.training.trainer import ModelTrainer

    corpus = ConlluCorpus(
        train_file=data_file("ud_english_ewt", "train.conllu"),
        dev_file=data_file("ud_english_ewt", "dev.conllu"),
        sample_missing_splits=False,
    )
    epochs = args.epochs
    if args.quick:
        corpus.train, corpus.dev, epochs = corpus.train[:150], corpus.dev[:50], 1
    torch.manual_seed(args.seed)
    embeddings = StackedEmbeddings([WordEmbeddings("glove"), CharacterEmbeddings()])
    tagger = SequenceTagger(
        embeddings,
        corpus.make_label_dictionary("upos"),
        "upos",
        hidden_size=args.hidden_size,
        use_crf=not args.no_crf,
    )
    printer = EpochPrinter("accuracy", "accuracy")
    result = ModelTrainer(tagger, corpus).train(
        output_dir(args.out, "upos"),
        learning_rate=0.1,
        mini_batch_size=32,
        max_epochs=epochs,
        embeddings_storage_mode="cpu",
        seed=args.seed,
        device=args.device,
        callbacks=[printer],
    )
    emit(
        {
            "benchmark": "train_upos",
            "epochs": result["epochs_done"],
            "train_sentences": len(corpus.train),
            "best_dev_accuracy": None if printer.best is None else round(printer.best, 5),
            "wall_s": round(time.perf_counter() - started, 1),
            "peak_rss_mb": peak_rss_mb(),
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
