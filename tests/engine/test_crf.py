"""The batched CRF equals brute-force enumeration of all tag paths on small random cases."""

from __future__ import annotations

import itertools

import torch

from engine.models.crf import CRF


def _brute_force(crf: CRF, emissions: torch.Tensor, length: int) -> tuple[list[float], list[tuple[int, ...]]]:
    num_tags = emissions.shape[-1]
    scores: list[float] = []
    paths = list(itertools.product(range(num_tags), repeat=length))
    with torch.no_grad():
        for path in paths:
            scores.append(_score(crf, emissions, path))
    return scores, paths


def _score(crf: CRF, emissions: torch.Tensor, path: tuple[int, ...]) -> float:
    score = crf.start_transitions[path[0]] + crf.end_transitions[path[-1]]
    for t, tag in enumerate(path):
        score = score + emissions[t, tag]
        if t:
            score = score + crf.transitions[path[t - 1], tag]
    return float(score)


def _random_batch(seed: int, num_tags: int, lengths: list[int]) -> tuple[CRF, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    crf = CRF(num_tags)
    with torch.no_grad():
        crf.transitions.normal_()
        crf.start_transitions.normal_()
        crf.end_transitions.normal_()
    emissions = torch.randn(len(lengths), max(lengths), num_tags, dtype=torch.float32)
    mask = torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]
    return crf, emissions, mask


def test_viterbi_and_log_partition_equal_brute_force() -> None:
    for seed in range(6):
        lengths = [4, 1, 3, 2]
        crf, emissions, mask = _random_batch(seed, num_tags=3 + seed % 2, lengths=lengths)
        with torch.no_grad():
            paths, best = crf.viterbi_decode(emissions, mask)
            log_z = crf.log_partition(emissions, mask)
        for b, length in enumerate(lengths):
            scores, all_paths = _brute_force(crf, emissions[b], length)
            top = max(range(len(scores)), key=scores.__getitem__)
            assert tuple(paths[b, :length].tolist()) == all_paths[top]
            assert abs(float(best[b]) - scores[top]) < 1e-4
            expected_log_z = float(torch.logsumexp(torch.tensor(scores, dtype=torch.float64), dim=0))
            assert abs(float(log_z[b]) - expected_log_z) < 1e-4


def _expected_marginals(scores: list[float], all_paths: list[tuple[int, ...]], num_tags: int) -> torch.Tensor:
    """Each position's tag probabilities summed over every path, weighted by its probability."""
    weights = torch.softmax(torch.tensor(scores, dtype=torch.float64), dim=0)
    expected = torch.zeros(len(all_paths[0]), num_tags, dtype=torch.float64)
    for w, path in zip(weights, all_paths, strict=True):
        for t, tag in enumerate(path):
            expected[t, tag] += w
    return expected


def test_path_score_and_marginals_equal_brute_force() -> None:
    lengths = [3, 2, 1]
    crf, emissions, mask = _random_batch(11, num_tags=3, lengths=lengths)
    with torch.no_grad():
        marginals = crf.marginals(emissions, mask)
    for b, length in enumerate(lengths):
        scores, all_paths = _brute_force(crf, emissions[b], length)
        assert torch.allclose(
            marginals[b, :length].double(), _expected_marginals(scores, all_paths, 3), atol=1e-5
        )
        # the score of one concrete path
        path = all_paths[len(all_paths) // 2]
        tags = torch.zeros(1, emissions.shape[1], dtype=torch.long)
        tags[0, :length] = torch.tensor(path)
        got = crf.path_score(emissions[b : b + 1], tags, mask[b : b + 1]).detach()
        assert abs(float(got) - scores[len(all_paths) // 2]) < 1e-4


def test_log_space_marginals_equal_brute_force_on_a_padded_batch() -> None:
    # The log-space fallback (for score spreads beyond SCALED_SPREAD_LIMIT) ran padding steps into
    # the forward scores, lost the end transitions at a short sentence's last token, or left them
    # out of log Z: only a batch of mixed lengths with end transitions shows it.
    lengths = [3, 2, 1]
    crf, emissions, mask = _random_batch(5, num_tags=3, lengths=lengths)
    assert crf.end_transitions.abs().min() > 0
    with torch.no_grad():
        marginals = crf._log_marginals(emissions, mask)
    for b, length in enumerate(lengths):
        scores, all_paths = _brute_force(crf, emissions[b], length)
        expected = _expected_marginals(scores, all_paths, 3)
        assert torch.allclose(marginals[b, :length].double(), expected, atol=1e-5), b


def test_negative_log_likelihood_is_positive_and_differentiable() -> None:
    crf, emissions, mask = _random_batch(3, num_tags=4, lengths=[5, 2])
    emissions.requires_grad_(True)
    tags = torch.randint(0, 4, (2, 5))
    nll = crf.neg_log_likelihood(emissions, tags, mask)
    assert (nll > 0).all()
    nll.sum().backward()
    assert emissions.grad is not None
    # padding positions receive no gradient
    assert torch.all(emissions.grad[1, 2:] == 0)
    assert crf.transitions.grad is not None and crf.transitions.grad.abs().sum() > 0


def test_marginals_fall_back_to_log_space_when_probabilities_underflow() -> None:
    # Extreme scores underflow the probability-space recursion; the result must stay finite
    # and equal the log-space computation.
    crf = CRF(2)
    with torch.no_grad():
        crf.transitions.copy_(torch.tensor([[-200.0, 0.0], [0.0, 0.0]]))
        crf.start_transitions.copy_(torch.tensor([0.0, -200.0]))
        crf.end_transitions.zero_()
    emissions = torch.tensor([[[0.0, -200.0], [0.0, -200.0], [0.0, 0.0]]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    fast = crf.marginals(emissions, mask)
    reference = crf._log_marginals(emissions, mask)
    assert torch.isfinite(fast).all()
    assert torch.allclose(fast, reference, atol=1e-5)
    assert torch.allclose(fast.sum(dim=-1), torch.ones(1, 3), atol=1e-5)


def test_marginals_stay_exact_when_a_move_of_the_best_path_would_underflow() -> None:
    # exp(648 - 748) is fine, but the best path's moves sat 748 nats below the largest one and
    # rounded to 0 without a NaN: the probability-space recursion put 1.0 on a path 1,215 nats worse.
    crf = CRF(2).double()
    with torch.no_grad():
        crf.transitions.copy_(torch.tensor([[-100.0, 648.0], [-85.0, -90.0]]))
        crf.start_transitions.copy_(torch.tensor([121.0, -159.0]))
        crf.end_transitions.zero_()
    emissions = torch.tensor([[[-59.0, 102.0], [263.0, -179.0], [18.0, -51.0]]], dtype=torch.float64)
    mask = torch.ones(1, 3, dtype=torch.bool)
    scores, paths = _brute_force(crf, emissions[0], 3)
    best = paths[max(range(len(paths)), key=scores.__getitem__)]
    assert best == (0, 0, 1) and crf.viterbi_decode(emissions, mask)[0][0].tolist() == [0, 0, 1]
    expected = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert torch.allclose(crf.marginals(emissions, mask)[0].float(), expected, atol=1e-6)
