"""Benchmark: where one fine-tuning step of the TREC MiniLM classifier spends its time: torch's
default (``foreach``) AdamW against the ``fused`` one the trainer uses, and mixed precision
(``use_amp``: bfloat16 on a CPU that computes it natively, float16 with loss scaling on CUDA).

    .venv/bin/python bench/fine_tune_step.py                  # AdamW, 8 questions a batch
    .venv/bin/python bench/fine_tune_step.py --device cuda    # on a GPU (phases synchronised)
    .venv/bin/python bench/fine_tune_step.py --quick          # 3 timed steps

Every variant trains a copy of the same model on the same batches, one after the other, in one
process, with the trainer's order of operations, timed on a second pass over the batches: one
JSON line each (``forward_ms``, ``backward_ms``, ``clip_ms``, ``step_ms``, ``total_ms`` per step,
``sentences_per_s``), then ``{"speedup": foreach / fused}``.
"""

from __future__ import annotations

import copy
import time
from contextlib import nullcontext
from typing import TYPE_CHECKING

from _common import emit, set_threads, training_parser, trec_corpus

if TYPE_CHECKING:
    import torch

    from engine.data import Sentence
    from engine.models.text_classifier import TextClassifier


def time_steps(
    model: TextClassifier,
    batches: list[list[Sentence]],
    fused: bool,
    amp: torch.dtype | None,
    device: torch.device,
    warmup: int,
) -> dict[str, float]:
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=5e-5, **({"fused": True} if fused else {"foreach": True}))
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
    model.train()

    def mark() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    totals = {"forward_ms": 0.0, "backward_ms": 0.0, "clip_ms": 0.0, "step_ms": 0.0}
    sentences = 0
    for index, batch in enumerate(batches):
        marks = [mark()]
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp) if amp is not None else nullcontext():
            loss, _ = model.forward_loss(batch)
        marks.append(mark())
        (scaler.scale(loss) if scaler is not None else loss).backward()
        marks.append(mark())
        if scaler is not None:
            scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        marks.append(mark())
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        marks.append(mark())
        if index >= warmup:
            sentences += len(batch)
            for key, start, end in zip(totals, marks, marks[1:], strict=False):
                totals[key] += (end - start) * 1000
    steps = len(batches) - warmup
    result = {key: round(value / steps, 1) for key, value in totals.items()}
    result["total_ms"] = round(sum(totals.values()) / steps, 1)
    result["sentences_per_s"] = round(sentences / (sum(totals.values()) / 1000), 2)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = training_parser(__doc__, epochs=1, quick_help="3 timed steps")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    parser.add_argument("--mini-batch-size", type=int, default=8)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    import torch

    from engine.embeddings.transformer import TransformerDocumentEmbeddings
    from engine.models.text_classifier import TextClassifier
    from engine.precision import amp_dtype
    from engine.training.trainer import resolve_device

    device = resolve_device(args.device)
    corpus = trec_corpus()
    torch.manual_seed(args.seed)
    model = TextClassifier(
        TransformerDocumentEmbeddings("minilm", fine_tune=True),
        corpus.make_label_dictionary("question_class"),
        "question_class",
    ).to(device)
    steps, size = (3 if args.quick else args.steps), args.mini_batch_size
    # Every timed batch is seen once before the timed pass, as in an epoch, which meets each padded
    # length many times: the first float16 step of a new length costs kernel set-up that later ones
    # do not (H200, batch 8: 98 ms a step on first sight against 28 ms warm; fp32 23 and 24 ms).
    distinct = [corpus.train[i * size : (i + 1) * size] for i in range(steps)]
    batches, warmup = distinct + distinct, steps
    variants = [("foreach", False, None), ("fused", True, None)]
    amp = amp_dtype(device)
    if amp is not None:
        variants.append((f"fused, {str(amp).removeprefix('torch.')} autocast", True, amp))
    results = {}
    for name, fused, dtype in variants:
        results[name] = time_steps(copy.deepcopy(model), batches, fused, dtype, device, warmup)
        emit(
            {
                "benchmark": "fine_tune_step",
                "optimizer": f"AdamW ({name})",
                "device": device.type,
                "mini_batch_size": size,
                **results[name],
            }
        )
    emit({"speedup": round(results["foreach"]["total_ms"] / results["fused"]["total_ms"], 2)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
