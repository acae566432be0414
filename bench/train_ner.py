"""Benchmark: BiLSTM-CRF NER on CoNLL-03 (train -> dev), the Flair tutorial's configuration.

    .venv/bin/python bench/train_ner.py                          # 5 epochs, GloVe
    .venv/bin/python bench/train_ner.py --embeddings glove+char --epochs 150   # to convergence
    .venv/bin/python bench/train_ner.py --quick                  # 150 sentences, 1 epoch
    .venv/bin/python bench/train_ner.py --device cuda --storage gpu --use-amp   # on a GPU

Model: GloVe 6B 50d (+ character BiLSTM with ``glove+char``), reprojection, BiLSTM hidden 256,
CRF. Trainer: SGD lr 0.1, mini-batch 32, annealing on the dev F1, storage mode ``cpu``.
One JSON line per epoch: ``epoch``, ``tokens_per_s`` (training throughput), ``train_loss``,
``dev_f1`` (micro F1 over spans), ``dev_loss``, ``learning_rate``, ``epoch_s``; then a last line
with ``best_dev_f1``, ``wall_s`` (everything, reading included) and ``peak_rss_mb``.
Reference (Flair 0.15.1, same machine and configuration, GloVe): about 2,700 tokens/s, dev F1
0.682, 0.757, 0.789, 0.813, 0.831 after epochs 1-5.
"""

from __future__ import annotations

import time

from _common import EpochPrinter, data_file, emit, output_dir, peak_rss_mb, set_threads, training_parser


def main(argv: list[str] | None = None) -> int:
    parser = training_parser(__doc__, epochs=5, quick_help="150 train / 50 dev sentences, 1 epoch")
    parser.add_argument("--embeddings", choices=("glove", "glove+char"), default="glove")
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--learning-rate", type=float, default=0.1)
    parser.add_argument("--mini-batch-size", type=int, default=32)
    parser.add_argument("--storage", choices=("none", "cpu", "gpu"), default="cpu")
    parser.add_argument("--no-bucketing", action="store_true", help="plain shuffled batches (as Flair)")
    parser.add_argument(
        "--use-amp",
        action="store_true",
        help="mixed precision: float16 on CUDA, bfloat16 on a CPU with native bfloat16 (else ignored)",
    )
    args = parser.parse_args(argv)

    started = time.perf_counter()
    set_threads(args.threads)
    import torch

    from engine.embeddings.character import CharacterEmbeddings
    from engine.embeddings.stacked import StackedEmbeddings
    from engine.embeddings.word import WordEmbeddings
    from engine.models.sequence_tagger import SequenceTagger
    from engine.readers.column import ColumnCorpus
    from engine.training.trainer import ModelTrainer

    corpus = ColumnCorpus(
        column_map={0: "text", 1: "ner"},
        train_file=data_file("conll03", "train.txt"),
        dev_file=data_file("conll03", "dev.txt"),
        sample_missing_splits=False,
    )
    epochs = args.epochs
    if args.quick:
        corpus.train, corpus.dev, epochs = corpus.train[:150], corpus.dev[:50], 1
    torch.manual_seed(args.seed)
    embeddings = WordEmbeddings("glove")
    if args.embeddings == "glove+char":
        embeddings = StackedEmbeddings([embeddings, CharacterEmbeddings()])
    tagger = SequenceTagger(
        embeddings, corpus.make_label_dictionary("ner"), "ner", hidden_size=args.hidden_size
    )
    printer = EpochPrinter("f1", "micro_f1")
    result = ModelTrainer(tagger, corpus).train(
        output_dir(args.out, "ner"),
        learning_rate=args.learning_rate,
        mini_batch_size=args.mini_batch_size,
        max_epochs=epochs,
        embeddings_storage_mode=args.storage,
        seed=args.seed,
        device=args.device,
        callbacks=[printer],
        length_bucketing=not args.no_bucketing,
        use_amp=args.use_amp,
    )
    emit(
        {
            "benchmark": "train_ner",
            "embeddings": args.embeddings,
            "length_bucketing": not args.no_bucketing,
            "storage": args.storage,
            "use_amp": args.use_amp,
            "threads": torch.get_num_threads(),
            "epochs": result["epochs_done"],
            "train_sentences": len(corpus.train),
            "train_tokens": sum(len(s) for s in corpus.train),
            "best_dev_f1": None if result["best_dev_score"] is None else round(result["best_dev_score"], 5),
            "wall_s": round(time.perf_counter() - started, 1),
            "peak_rss_mb": peak_rss_mb(),
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
