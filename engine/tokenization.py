"""Sentence splitting and tokenization of raw text, with exact character offsets.

Both are built on ``segtok`` (``segtok.segmenter.split_single`` and
``segtok.tokenizer.word_tokenizer`` + ``split_contractions``), as Flair's default tokenizer is.
segtok returns strings, not offsets; this module aligns them back onto the input so that for
every token ``text[start:end] == word`` holds. segtok joins a word hyphenated across a line break
(``"Hel-\\n lo"`` -> ``"Hel-lo"``); such a token is returned as its pieces between the
whitespace, so offsets stay exact. (Raw text is split into sentences at every line break first,
so only a sentence passed whole to ``tokenize_sentence`` can hold one.)

Invisible characters (controls, zero-width spaces, BOMs, bidi format characters) are read as
spaces and never belong to a token; joiners (ZWJ, ZWNJ, the word joiner, the soft hyphen) stay
inside the word they join. See ``_INVISIBLE`` and ``JOINERS``.

Tokenizing is the largest cost of a one-sentence predict request on the event loop, and nearly
all of it is segtok's word regex applied to each whitespace-separated span. ``_word_tokens``
therefore runs segtok's ``word_tokenizer`` + ``split_contractions`` steps itself with the
per-span and per-token work memoised (words repeat: Zipf), and a test checks it gives exactly
segtok's tokens.

Chinese and Japanese are written without spaces, and segtok made a whole clause one "word". As
BERT's basic tokenizer does, each CJK ideograph is a token of its own, and so is each CJK
punctuation mark; kana runs stay one token, and what lies between (Latin words, digits, Hangul)
is segtok's. Sentences also end after 。！？, with the closing quotes and brackets that follow,
unless quotes or brackets enclose the terminal.
See ``_CJK_PIECES`` and ``_CJK_SENTENCE_END``.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_right
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import TYPE_CHECKING

from segtok.segmenter import SENTENCE_TERMINALS, split_single
from segtok.tokenizer import (
    APO_MATCHER,
    HYPHENATED_LINEBREAK,
    space_tokenizer,
    split_contractions,
    word_tokenizer,
)

if TYPE_CHECKING:
    from engine.data import Sentence

TokenTuple = tuple[str, int, int, bool]

# Characters that neither Python nor segtok count as whitespace but that separate words or mean
# nothing in text: control characters, the zero-width space, the byte-order mark, and the bidi
# format characters (LRM, RLM, ALM, the embedding/override/isolate controls), which only steer how
# a text is displayed. A zero-width space became a token of its own (tagged as a person), a BOM or
# an RLM part of the next word. They are read as spaces, one for one, so offsets into the input
# stay exact. The unit separator U+001F is a space to Python (``isspace``) but not to segtok's
# regex ``\s``; it is listed so that both see a space. (U+001C-U+001E are line boundaries:
# ``split_sentences`` breaks sentences there before this applies.)
_INVISIBLE = {
    code: " "
    for code in [
        *range(0x00, 0x20),
        0x7F,
        *range(0x80, 0xA0),
        0x061C,
        0x200B,
        0x200E,
        0x200F,
        *range(0x202A, 0x202F),
        *range(0x2066, 0x206A),
        0xFEFF,
    ]
    if not chr(code).isspace() or code in range(0x1C, 0x20)
}
INVISIBLE = "".join(map(chr, _INVISIBLE))

# Joiners belong to the word they sit in: ZWJ (emoji sequences, Indic scripts), ZWNJ (Persian,
# Indic scripts, German ligature control), the soft hyphen (a hyphenation point) and the word
# joiner U+2060. The word joiner says "no break here", so "a\u2060b" is one token with the joiner
# inside it: dropping it as a separator would split a word its writer marked as unbreakable, and
# removing it from the token text would break ``text[start:end] == word``. A joiner between two
# characters that are not spaces stays in that word's token, also where segtok would split there
# (it splits "a\u2060b" and "a\u200cb" into three tokens; ``_glue`` joins them again). A joiner
# next to a space or at either end of the text joins nothing; it is read as a space, so no token
# is ever made of joiners alone.
JOINERS = "\u00ad\u200c\u200d\u2060"
_EDGE_JOINERS = re.compile(f"(?:\\A|(?<=\\s))[{JOINERS}]+|[{JOINERS}]+(?=\\s|\\Z)")
_HAS_JOINER = re.compile(f"[{JOINERS}]")

# Combining diacritics of decomposed (NFD) text, as macOS and PDFs give it: segtok splits
# "Ko\u0308ln" into "Ko", "\u0308", "ln"; ``_glue`` joins the mark to its letter and the word
# around it again. (Indic and Arabic marks, in other blocks, segtok keeps in their word.)
_COMBINING = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")

_HAS_INVISIBLE = re.compile("[" + "".join(re.escape(chr(code)) for code in _INVISIBLE) + "]")

# Where ``str.splitlines`` ends a line, less "\n" (segtok's own) and the "\r" of a CRLF (a space
# before the "\n" to segtok): each becomes a "\n", one for one, so sentences end at every line
# break while offsets stay exact.
_LINE_BREAK = re.compile("\r(?!\n)|[\v\f\x1c-\x1e\x85\u2028\u2029]")


# Ideographs, as BERT's basic tokenizer reads them (the CJK Unified Ideographs, Extension A, the
# supplementary ideographic planes 2 and 3, the compatibility ideographs), and the marks of the
# CJK Symbols block that stand for an ideograph: the iteration marks 々 and 〻, 〆, 〇 and the
# Hangzhou numerals.
_IDEOGRAPHS = (
    "\u3005-\u3007\u3021-\u3029\u3038-\u303b\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003ffff"
)
# Variation selectors (also the ideographic ones that pick a kanji's glyph, U+E0100-U+E01EF) and
# the ideographic tone marks modify the ideograph before them and must not become tokens.
_IDEOGRAPH_MARKS = "\u302a-\u302f\ufe00-\ufe0f\U000e0100-\U000e01ef"
# Kana runs stay one token, as segtok kept them, except that segtok cut them at the prolonged
# sound mark ー (U+30FC; halfwidth U+FF70): "コーヒー" came out as four tokens.
_KANA = "\u3031-\u3035\u3041-\u3096\u3099-\u309f\u30a1-\u30fa\u30fc-\u30ff\u31f0-\u31ff\uff66-\uff9f"
# The punctuation and symbols of the CJK Symbols block (、。「」『』【】〈〉《》 ...), the katakana
# middle dot and double hyphen (between the parts of a foreign name), and the fullwidth and
# halfwidth forms of ASCII punctuation (！？，：；（）) and of 。「」、・: each is a token of its own,
# as the ideographs around it are.
_CJK_PUNCTUATION = "".join(
    chr(code)
    for code in [*range(0x3000, 0x3040), 0x30A0, 0x30FB, *range(0xFF01, 0xFF66)]
    if unicodedata.category(chr(code))[0] in "PS"
)
_CJK = re.compile(f"[{_IDEOGRAPHS}{_KANA}{_CJK_PUNCTUATION}]")
# What lies between (Latin words, digits, Hangul) goes to segtok as a span of its own, so that
# "我用Python写" keeps "Python" whole and "3,000人" its "3,000".
# The marks stay with a punctuation mark or a kana run too: "〽\ufe0f" and "〰\ufe0f" are emoji,
# and a variation selector cut off was a token of its own that shows nothing.
_CJK_PIECES = re.compile(
    f"[{_IDEOGRAPHS}][{_IDEOGRAPH_MARKS}]*|[{_CJK_PUNCTUATION}][{_IDEOGRAPH_MARKS}]*"
    f"|(?:[{_KANA}][{_IDEOGRAPH_MARKS}]*)+"
    f"|(?P<other>[^{_IDEOGRAPHS}{_KANA}{_CJK_PUNCTUATION}]+)"
)
# A sentence ends after 。！？ (segtok ends one there only before a space, which Chinese and
# Japanese do not write), with the closing quotes and brackets after it: 「はい。」 is one sentence,
# not 「はい。 and a sentence 」. ASCII !? right after 。！？ stay too, so "吗？!" keeps its "!".
_CJK_SENTENCE_END = re.compile("[。｡！？][。｡！？!?]*[」』）】〉》〕〗〙〛〞〟｣］｝”’)\\]}]*")
# A terminal inside quotes or brackets ends the quoted sentence, not the one around it:
# 「はい。」と言った。 and 他说：“好的。”然后走了。 are one sentence each (as pySBD's rule
# for Chinese and Japanese). ASCII quotes and ’ are left to segtok: ’ is also an apostrophe.
_QUOTE_CLOSERS = dict(
    zip(
        "「『（【〈《〔〖〘〚〝｢［｛“",
        ["」", "』", "）", "】", "〉", "》", "〕", "〗", "〙", "〛", "〞〟", "｣", "］", "｝", "”"],
        strict=True,
    )
)
_QUOTE_OPENERS = {
    c: [o for o, cs in _QUOTE_CLOSERS.items() if c in cs] for cs in _QUOTE_CLOSERS.values() for c in cs
}
_QUOTE_MARK = re.compile("[\n" + re.escape("".join(_QUOTE_CLOSERS) + "".join(_QUOTE_CLOSERS.values())) + "]")


def _visible(text: str) -> str:
    # predict tokenizes on the event loop: a search costs a fifth of a translation, which is rare
    if _HAS_INVISIBLE.search(text):
        text = text.translate(_INVISIBLE)
    if _HAS_JOINER.search(text):
        text = _EDGE_JOINERS.sub(lambda m: " " * len(m.group()), text)
    return text


def is_blank(text: str) -> bool:
    """Whether ``text`` holds nothing to tokenize: only whitespace and invisible characters
    (control and bidi format characters, zero-width spaces, BOMs, joiners that join nothing)."""
    return not _visible(text).strip()


def split_sentences(text: str) -> list[tuple[str, int]]:
    """Split ``text`` into sentences: ``[(sentence_text, start_offset), ...]``.

    Sentences end at sentence terminals (segtok's rules, which avoid splitting at common
    abbreviations), after the CJK terminals 。！？ and the closing quotes and brackets that follow
    them (``_CJK_SENTENCE_END``), and at every line break (wherever ``str.splitlines`` breaks:
    ``\\n``, CRLF, a lone ``\\r``, ``\\v``, ``\\f``, U+001C-U+001E, NEL, U+2028, U+2029). Sentence
    texts are stripped of surrounding whitespace (and invisible characters), and
    ``text[start:start + len(sentence_text)] == sentence_text``.
    """
    visible = _visible(_LINE_BREAK.sub("\n", text))
    result: list[tuple[str, int]] = []
    pos = 0
    for piece in _split_single(visible):
        stripped = piece.strip()
        if not stripped:
            continue
        start = visible.find(stripped, pos)
        if start < 0:
            # segtok never rewrites characters here; if it did, keep the rest of the text whole.
            rest = visible[pos:].strip()
            if rest:
                begin = visible.index(rest, pos)
                result.append((text[begin : begin + len(rest)], begin))
            return result
        result.append((text[start : start + len(stripped)], start))
        pos = start + len(stripped)
    return result


def _quoted(text: str) -> list[tuple[int, int]]:
    """The ``(open, close)`` positions of the outermost CJK quotes and brackets in ``text`` that
    close again on the same line, in order; one left open or closed without an opener holds
    nothing."""
    pairs: list[tuple[int, int]] = []
    opened: list[tuple[str, int]] = []
    # how many of each opener are open: a closer nothing waits for is not searched for (searched
    # for, "「" * n + "』" * n took quadratic time)
    waiting = dict.fromkeys(_QUOTE_CLOSERS, 0)
    for match in _QUOTE_MARK.finditer(text):
        mark, at = match.group(), match.start()
        if mark == "\n":
            opened.clear()
            waiting = dict.fromkeys(_QUOTE_CLOSERS, 0)
        elif mark in _QUOTE_CLOSERS:
            opened.append((mark, at))
            waiting[mark] += 1
        elif any(waiting[opener] for opener in _QUOTE_OPENERS[mark]):
            depth = len(opened) - 1
            while opened[depth][0] not in _QUOTE_OPENERS[mark]:
                depth -= 1
            begin = opened[depth][1]
            # the pairs closed since it opened lie inside this one
            while pairs and pairs[-1][0] > begin:
                pairs.pop()
            pairs.append((begin, at))
            for opener, _ in opened[depth:]:
                waiting[opener] -= 1
            del opened[depth:]
    return pairs


def _split_single(text: str) -> Iterable[str]:
    """segtok's ``split_single``, also ending sentences at ``_CJK_SENTENCE_END`` outside quotes."""
    if text.isascii() or not _CJK_SENTENCE_END.search(text):
        return split_single(text)
    quoted = _quoted(text)
    opens = [begin for begin, _ in quoted]
    pieces: list[str] = []
    start = 0
    for match in _CJK_SENTENCE_END.finditer(text):
        inside = bisect_right(opens, match.start()) - 1
        if inside >= 0 and match.start() < quoted[inside][1]:
            continue
        pieces += split_single(text[start : match.end()])
        start = match.end()
    pieces += split_single(text[start:])
    return pieces


CACHED_WORDS = 1 << 16
LINE_BREAKS = ("\n", "\r", "\u2028")
# Longer strings (URLs, base64, hashes) are rarely seen twice, and 65,536 of 9,000 characters
# each held ~1 GB in a long-running API: those are computed, not remembered.
CACHED_MAX_CHARS = 64


def _remember_short(compute: Callable[[str], tuple[str, ...]]) -> Callable[[str], tuple[str, ...]]:
    cached = lru_cache(maxsize=CACHED_WORDS)(compute)

    def call(text: str) -> tuple[str, ...]:
        return cached(text) if len(text) <= CACHED_MAX_CHARS else compute(text)

    return call


@_remember_short
def _split_span(span: str) -> tuple[str, ...]:
    # isascii is nearly free and spares English text the search
    if span.isascii() or not _CJK.search(span):
        return tuple(t for t in word_tokenizer.split(span) if t)
    return tuple(
        token
        for match in _CJK_PIECES.finditer(span)
        for token in (_split_span(match[0]) if match.lastgroup == "other" else (match[0],))
    )


@_remember_short
def _finish_token(token: str) -> tuple[str, ...]:
    """segtok's last two steps for one token: dangling commas, semicolons and colons become
    tokens of their own, then contractions are split. Both act on each token alone. segtok
    leaves an empty string where a contraction stands alone (``do n't`` -> ``'', "n't"``); Flair
    drops those, and so do we: a zero-length token has no text to embed or to tag."""
    dangling: list[str] = []
    while len(token) > 1 and token[-1] in ",;:":
        dangling.append(token[-1])
        token = token[:-1]
    return (*(piece for piece in split_contractions([token]) if piece), *reversed(dangling))


def _word_tokens(sentence: str) -> list[str]:
    """``split_contractions(word_tokenizer(sentence))``, with the same result."""
    if any(b in sentence for b in LINE_BREAKS):
        sentence = HYPHENATED_LINEBREAK.sub(r"\1\2", sentence)
    tokens = [t for span in space_tokenizer(sentence) for t in _split_span(span)]
    # The sentence terminal comes off the last word that carries one (segtok looks at the last
    # three tokens only).
    for idx, word in enumerate(reversed(tokens[-3:]), 1):
        if (word_tokenizer.match(word) and not APO_MATCHER.match(word)) or any(
            t in word for t in SENTENCE_TERMINALS
        ):
            last = len(word) - 1
            if last == 0 or word == "...":
                pass
            elif any(word.rfind(t) == last for t in SENTENCE_TERMINALS):
                tokens[-idx] = word[:-1]
                tokens.insert(len(tokens) - idx + 1, word[-1])
            elif any(word.find(t) == 0 for t in SENTENCE_TERMINALS):
                tokens[-idx] = word[0]
                tokens.insert(len(tokens) - idx + 1, word[1:])
            break
    return [piece for token in tokens for piece in _finish_token(token)]


def _align(text: str, words: list[str], offset: int, pos: int, out: list[TokenTuple]) -> int:
    """Append ``words`` (found in order in ``text`` from ``pos``) to ``out`` with offsets."""
    n = len(text)
    for word in words:
        while pos < n and text[pos].isspace():
            pos += 1
        if text.startswith(word, pos):
            out.append((word, offset + pos, offset + pos + len(word), False))
            pos += len(word)
            continue
        # The word was glued across whitespace by segtok: emit its pieces.
        i = 0
        piece_start = pos
        while i < len(word) and pos < n:
            if text[pos].isspace():
                if pos > piece_start:
                    out.append((text[piece_start:pos], offset + piece_start, offset + pos, False))
                while pos < n and text[pos].isspace():
                    pos += 1
                piece_start = pos
                continue
            if text[pos] != word[i]:
                # Unalignable (segtok rewrote characters): fall back to whitespace tokens.
                for piece in text[piece_start:].split():
                    start = text.index(piece, piece_start)
                    out.append((piece, offset + start, offset + start + len(piece), False))
                    piece_start = start + len(piece)
                return n
            i += 1
            pos += 1
        if pos > piece_start:
            out.append((text[piece_start:pos], offset + piece_start, offset + pos, False))
    return pos


def tokenize(text: str) -> list[TokenTuple]:
    """Tokenize raw text: ``[(word, start, end, whitespace_after), ...]``.

    Offsets index into ``text`` (``text[start:end] == word``); ``whitespace_after`` is True when
    whitespace follows the token in ``text``. The text is split into sentences first because
    segtok detaches a sentence's final period only at the end of a sentence.
    """
    out: list[TokenTuple] = []
    for sentence, start in split_sentences(text):
        visible = _visible(sentence)
        _align(visible, _word_tokens(visible), start, 0, out)
    return _with_whitespace(_visible(text), _glue(out) if _needs_glue(text) else out)


def tokenize_sentence(text: str) -> list[TokenTuple]:
    """``tokenize`` for a text known to be one sentence (a piece from ``split_sentences``):
    the same tokens, without splitting it again."""
    visible = _visible(text)
    out: list[TokenTuple] = []
    _align(visible, _word_tokens(visible), 0, 0, out)
    return _with_whitespace(visible, _glue(out) if _needs_glue(visible) else out)


def _needs_glue(text: str) -> bool:
    return bool(_HAS_JOINER.search(text) or _COMBINING.search(text))


def _glue(tokens: list[TokenTuple]) -> list[TokenTuple]:
    """Join tokens that touch across a joiner (see ``JOINERS``): segtok splits "a\\u2060b" into
    "a", "\\u2060", "b", the word joiner forbids that; and a combining mark to the letter before
    it and the letters after it ("Ko", "\\u0308", "ln": "Köln"; "cafe", "\\u0301", ".": "café",
    "."). Touching tokens have no gap, so the joined token is still ``text[start:end]``."""
    glued: list[TokenTuple] = []
    for token in tokens:
        if glued:
            word, start, end, _ = glued[-1]
            if end == token[1] and (
                word[-1] in JOINERS
                or token[0][0] in JOINERS
                or _COMBINING.match(token[0])
                or (_COMBINING.match(word[-1]) and token[0][0].isalnum())
            ):
                glued[-1] = (word + token[0], start, token[2], False)
                continue
        glued.append(token)
    return glued


# How raw text may be tokenized: segtok's rules (Flair's default), or at whitespace only, as
# pre-tokenized corpora often are (social media: ``@user``, URLs and ``&amp;`` stay whole).
TOKENIZERS = ("segtok", "whitespace")
_NON_SPACE = re.compile(r"\S+")


def tokenize_whitespace(text: str) -> list[TokenTuple]:
    """``tokenize``'s tuples for the tokens between whitespace (invisible characters included)."""
    visible = _visible(text)
    return _with_whitespace(
        visible, [(m.group(), m.start(), m.end(), False) for m in _NON_SPACE.finditer(visible)]
    )


def _with_whitespace(text: str, tokens: list[TokenTuple]) -> list[TokenTuple]:
    n = len(text)
    return [(word, s, e, e < n and text[e].isspace()) for word, s, e, _ in tokens]


def sentences_from_text(text: str, tokenizer: str = "segtok") -> list[Sentence]:
    """Split raw text into tokenized sentences (for predicting on a document); ``tokenizer`` is
    one of ``TOKENIZERS``.

    Each sentence's ``text`` is its own text and its tokens' offsets index into it;
    ``sentence.metadata["offset"]`` is where the sentence starts in ``text``, so a token spans
    ``text[offset + token.start_pos : offset + token.end_pos]``. Neighbouring sentences are
    linked (``previous_sentence``/``next_sentence``) for models that use document context.
    """
    from engine.data import Sentence

    tokens_of = tokenize_sentence if tokenizer == "segtok" else tokenize_whitespace
    sentences: list[Sentence] = []
    for sentence_text, start in split_sentences(text):
        sentence = Sentence.from_token_tuples(sentence_text, tokens_of(sentence_text))
        sentence.metadata["offset"] = start
        if sentences:
            sentences[-1].next_sentence = sentence
            sentence.previous_sentence = sentences[-1]
        sentences.append(sentence)
    return sentences
