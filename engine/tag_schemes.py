"""Tag schemes for spans over tokens: IOB1, BIO (IOB2), BIOES and plain tags.

A span is ``(start, end, type)`` over token positions, ``end`` exclusive.

Schemes (``O`` marks a token outside every span in all of them):

- ``BIO`` (alias ``IOB2``): every span starts with ``B-TYPE``, continues with ``I-TYPE``.
- ``IOB1`` (the original CoNLL-2003 files): spans are ``I-TYPE`` runs; ``B-TYPE`` is used only
  for the first token of a span that directly follows another span of the same type.
- ``BIOES`` (alias ``IOBES``): ``S-TYPE`` is a one-token span; longer spans are
  ``B-TYPE I-TYPE* E-TYPE``.
- ``plain`` (alias ``IO``): tags carry no prefix; a maximal run of equal non-``O`` tags is one span.
  Two adjacent spans of the same type cannot be told apart, so encoding them merges them.

Decoding rule. All prefixed schemes are decoded by one rule, the chunk rule of the CoNLL
``conlleval`` script, so that decoding is total (every tag sequence has one reading) and the same
whatever scheme a file claims. A span *ends* before a token when the previous tag is ``E-``/``S-``,
when the token's tag is ``B-``/``S-``/``O``, or when the type changes. A span *starts* at a token
when its tag is ``B-``/``S-``, or it is ``I-``/``E-`` and the previous token is ``O``, ends a span
(``E-``/``S-``) or has another type. Consequently, for ill-formed input:

- ``I-X`` after ``O`` (or at the sentence start) starts a new span, as in IOB1;
- a type change inside a span (``B-X I-Y``) closes the ``X`` span and starts a ``Y`` span;
- ``E-X`` without a preceding ``B-X``/``I-X`` is a one-token span; ``I-X`` after ``E-X`` starts
  a new span.

A tag that is neither ``O`` nor prefixed (``B-``, ``I-``, ``E-``, ``S-``) is read as ``I-TAG``
by the prefixed schemes, which is exactly how the ``plain`` scheme reads every tag.

Stray values. A column of prefixed tags with a few other values (``o``, ``0``, ``B-`` without a
type, a typo) is a tag column with errors, not a column of token labels:
:func:`looks_like_span_tags` tells the two apart by how many such values there are.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

IOB1 = "IOB1"
BIO = "BIO"
BIOES = "BIOES"
PLAIN = "plain"
SCHEMES: tuple[str, ...] = (IOB1, BIO, BIOES, PLAIN)

_ALIASES = {
    "iob1": IOB1,
    "bio": BIO,
    "iob2": BIO,
    "iob": BIO,
    "bioes": BIOES,
    "iobes": BIOES,
    "plain": PLAIN,
    "io": PLAIN,
}

_PREFIXES = frozenset("BIES")

Spans = list[tuple[int, int, str]]


def normalize_scheme(scheme: str) -> str:
    """The canonical name of ``scheme`` (case-insensitive; ``IOB2`` -> ``BIO`` ...)."""
    canonical = _ALIASES.get(scheme.lower())
    if canonical is None:
        raise ValueError(f"unknown tag scheme {scheme!r} (known: {', '.join(SCHEMES)}, IOB2, IOBES, IO)")
    return canonical


def split_tag(tag: str) -> tuple[str, str]:
    """``"B-PER"`` -> ``("B", "PER")``; ``"O"`` -> ``("O", "")``; an unprefixed tag -> ``("I", tag)``."""
    if tag == "O":
        return "O", ""
    if len(tag) > 2 and tag[1] == "-" and tag[0] in _PREFIXES:
        return tag[0], tag[2:]
    return "I", tag


def is_prefixed_tag(tag: str) -> bool:
    """True for ``O`` and ``B-``/``I-``/``E-``/``S-`` tags with a non-empty type."""
    return tag == "O" or (len(tag) > 2 and tag[1] == "-" and tag[0] in _PREFIXES)


def tags_to_spans(tags: Sequence[str], scheme: str = BIO) -> Spans:
    """Decode a tag sequence into ``(start, end_exclusive, type)`` spans (see the module rule)."""
    if normalize_scheme(scheme) == PLAIN:
        return _plain_to_spans(tags)
    spans: Spans = []
    start = -1
    current = ""
    prev_prefix = "O"
    for i, tag in enumerate(tags):
        prefix, kind = split_tag(tag)
        if start >= 0 and (prefix in "BSO" or prev_prefix in "ES" or kind != current):
            spans.append((start, i, current))
            start = -1
        if prefix != "O" and start < 0:
            start = i
            current = kind
        prev_prefix = prefix
    if start >= 0:
        spans.append((start, len(tags), current))
    return spans


def _plain_to_spans(tags: Sequence[str]) -> Spans:
    spans: Spans = []
    start = -1
    current = ""
    for i, tag in enumerate(tags):
        if start >= 0 and tag != current:
            spans.append((start, i, current))
            start = -1
        if tag != "O" and start < 0:
            start = i
            current = tag
    if start >= 0:
        spans.append((start, len(tags), current))
    return spans


def spans_to_tags(spans: Iterable[tuple[int, int, str]], length: int, scheme: str = BIOES) -> list[str]:
    """Encode non-overlapping spans over ``length`` tokens as tags of ``scheme``.

    Raises ValueError for a span outside ``[0, length)``, an empty span or overlapping spans.
    """
    scheme = normalize_scheme(scheme)
    tags = ["O"] * length
    prev_end = -1
    prev_type = ""
    for start, end, kind in sorted(spans):
        if not 0 <= start < end <= length:
            raise ValueError(f"span ({start}, {end}, {kind!r}) outside a sequence of {length} tokens")
        if start < prev_end:
            raise ValueError(f"span ({start}, {end}, {kind!r}) overlaps the span ending at {prev_end}")
        if scheme == PLAIN:
            tags[start:end] = [kind] * (end - start)
        elif scheme == BIO:
            tags[start] = f"B-{kind}"
            tags[start + 1 : end] = [f"I-{kind}"] * (end - start - 1)
        elif scheme == IOB1:
            # B- only where a span touches the previous span of the same type.
            first = "B" if start == prev_end and kind == prev_type else "I"
            tags[start] = f"{first}-{kind}"
            tags[start + 1 : end] = [f"I-{kind}"] * (end - start - 1)
        elif end - start == 1:
            tags[start] = f"S-{kind}"
        else:
            tags[start] = f"B-{kind}"
            tags[start + 1 : end - 1] = [f"I-{kind}"] * (end - start - 2)
            tags[end - 1] = f"E-{kind}"
        prev_end, prev_type = end, kind
    return tags


def convert(tags: Sequence[str], from_scheme: str, to_scheme: str) -> list[str]:
    """Re-encode ``tags`` from one scheme into another (ill-formed input comes out well-formed)."""
    return spans_to_tags(tags_to_spans(tags, from_scheme), len(tags), to_scheme)


def detect_scheme(tags: Iterable[str]) -> str | None:
    """The scheme of a set of tags, or None when the tags mix prefixed and unprefixed values.

    ``E-``/``S-`` -> BIOES; ``B-`` -> BIO; only ``I-`` (and ``O``) -> IOB1; no prefixes at all ->
    plain (any token labels, e.g. POS tags, are plain tags). A set holding only ``O`` is BIO.
    A tag set cannot tell IOB1 files that use ``B-`` from BIO files:
    :func:`detect_scheme_from_sequences` can.
    """
    prefixes: set[str] = set()
    unprefixed = False
    for tag in set(tags):
        if tag == "O":
            continue
        if is_prefixed_tag(tag):
            prefixes.add(tag[0])
        else:
            unprefixed = True
    if unprefixed:
        return None if prefixes else PLAIN
    if prefixes & {"E", "S"}:
        return BIOES
    if "B" in prefixes:
        return BIO
    if "I" in prefixes:
        return IOB1
    return BIO


# How many values of a tag column may be neither O nor prefixed before it reads as token labels:
# a handful of typos in a small file, or a sliver of a large one.
STRAY_TAGS_MAX = 3
STRAY_TAGS_SHARE = 0.05


def looks_like_span_tags(counts: Mapping[str, int]) -> bool:
    """Whether values with these counts are span tags with a few strays, rather than token labels.

    ``counts``: value -> occurrences in the column. A column holding only prefixed tags (or only
    unprefixed values) is decided by :func:`detect_scheme`; this answers for the mixed ones. They
    look like span tags when the unprefixed values other than ``O`` are fewer than the
    ``B-``/``I-``/``E-``/``S-`` tags and are at most :data:`STRAY_TAGS_MAX` occurrences or at
    most :data:`STRAY_TAGS_SHARE` of all values. POS tags of which a few happen to look prefixed
    (``B-52``) are mostly unprefixed, and so are token labels.
    """
    typed = stray = total = 0
    for tag, n in counts.items():
        total += n
        if tag == "O":
            continue
        if is_prefixed_tag(tag):
            typed += n
        else:
            stray += n
    return 0 < stray < typed and (stray <= STRAY_TAGS_MAX or stray <= STRAY_TAGS_SHARE * total)


def detect_scheme_from_sequences(sequences: Iterable[Sequence[str]]) -> str | None:
    """Like :func:`detect_scheme`, and tells IOB1 from BIO by where spans start.

    In BIO every span starts with ``B-``; in IOB1 spans start with ``I-`` and ``B-`` appears only
    right after a span of the same type. The scheme whose starts are the majority wins, so a
    few ill-formed sequences do not flip the decision.
    """
    sequences = [list(s) for s in sequences]
    scheme = detect_scheme(tag for s in sequences for tag in s)
    if scheme not in (BIO, IOB1):
        return scheme
    i_starts = 0
    b_fresh_starts = 0
    for tags in sequences:
        prev_kind = ""
        for tag in tags:
            prefix, kind = split_tag(tag)
            if prefix == "I" and kind != prev_kind:
                i_starts += 1
            elif prefix == "B" and kind != prev_kind:
                b_fresh_starts += 1
            prev_kind = kind
    return IOB1 if i_starts > b_fresh_starts else BIO
