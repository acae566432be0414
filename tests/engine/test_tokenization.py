"""Raw-text sentence splitting and tokenization keep exact character offsets."""

from __future__ import annotations

import pytest

from engine.data import Sentence
from engine.tokenization import (
    _INVISIBLE,
    JOINERS,
    is_blank,
    sentences_from_text,
    split_sentences,
    tokenize,
    tokenize_sentence,
    tokenize_whitespace,
)

TEXTS = [
    "George Washington went to Washington.",
    "  Mr. Smith didn't like it!  He left at 12:30 p.m. on Jan. 3rd...\n\nNew paragraph here.",
    "E-mail me: jane.doe@example.com, or see https://example.com/a?b=1 (soon).",
    "Das ist\u00a0gut. Ja!",
    "Hel- \u2028 lo world.",
    "",
    " \n\t ",
    "\ufeffzero\u200bwidth\x00\x01 in Berlin\x85.",
    "\u200f\u0623\u062d\u0628 \u0628\u0631\u0644\u064a\u0646\u2029Hello\rworld\x0bnow\x1cend",
    "\u2060a\u2060b \u200d \u00ad\u202ex\u2069 \U0001f469\u200d\U0001f4bb\u200d",
]


def _separates(text: str, i: int) -> bool:
    """Whitespace, a character the tokenizer reads as a space (a control or bidi format character,
    ZWSP, BOM), or a joiner that joins nothing (next to such a separator or at the text's end)."""
    char = text[i]
    if char.isspace() or ord(char) in _INVISIBLE:
        return True
    if char not in JOINERS:
        return False
    run_end = i
    while run_end < len(text) and text[run_end] in JOINERS:
        run_end += 1
    return run_end == len(text) or _separates(text, run_end) or i == 0 or _separates(text, i - 1)


@pytest.mark.parametrize("text", TEXTS)
def test_offsets_are_exact(text: str) -> None:
    tokens = tokenize(text)
    for word, start, end, space_after in tokens:
        assert text[start:end] == word
        assert word.strip() == word and word
        assert space_after == (end < len(text) and _separates(text, end))
    starts = [start for _, start, _, _ in tokens]
    assert starts == sorted(starts)
    for sentence, start in split_sentences(text):
        assert text[start : start + len(sentence)] == sentence


def test_invisible_characters_separate_words_and_are_no_tokens() -> None:
    # A zero-width space was a token of its own (tagged S-PER), a BOM part of the next word.
    text = "\ufeffzero\u200bwidth space\x00\x01in Berlin"
    assert [w for w, *_ in tokenize(text)] == ["zero", "width", "space", "in", "Berlin"]
    ((sentence, start),) = split_sentences(text)
    assert (sentence, start) == (text[1:], 1)
    # the joiners that belong inside words stay there
    for word in (
        "\U0001f469\u200d\U0001f4bb",
        "co\u00adoperate",
        "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",
    ):
        assert [w for w, *_ in tokenize(f"{word} now")] == [word, "now"]


def test_a_contraction_standing_alone_is_one_token_not_two() -> None:
    # segtok leaves "" before a detached "n't" (TREC-6 has 6 such questions): a token of no text
    assert tokenize("Why do n't you go ?") == [
        ("Why", 0, 3, True),
        ("do", 4, 6, True),
        ("n't", 7, 10, True),
        ("you", 11, 14, True),
        ("go", 15, 17, True),
        ("?", 18, 19, False),
    ]


def test_segtok_splits_sentences_contractions_and_final_period() -> None:
    text = "Mr. Smith didn't go. He stayed home!"
    assert split_sentences(text) == [("Mr. Smith didn't go.", 0), ("He stayed home!", 21)]
    words = [w for w, _, _, _ in tokenize(text)]
    assert words == ["Mr.", "Smith", "did", "n't", "go", ".", "He", "stayed", "home", "!"]


def test_word_joined_across_a_line_break_is_kept_as_its_pieces() -> None:
    # Raw text is split into sentences at every line break first, so this reaches segtok's join
    # only through a sentence given whole.
    text = "Hel- \u2028 lo world."
    assert [(w, s, e) for w, s, e, _ in tokenize_sentence(text)] == [
        ("Hel-", 0, 4),
        ("lo", 7, 9),
        ("world", 10, 15),
        (".", 15, 16),
    ]
    # U+2028 ends a sentence as "\n" does
    assert [(w, s, e) for w, s, e, _ in tokenize(text)] == [
        (w, s, e) for w, s, e, _ in tokenize(text.replace("\u2028", "\n"))
    ]


def test_sentence_from_raw_text_uses_the_tokenizer() -> None:
    sentence = Sentence("I love Berlin. It's great.")
    assert [t.text for t in sentence] == ["I", "love", "Berlin", ".", "It", "'s", "great", "."]
    berlin = sentence[2]
    assert (berlin.start_pos, berlin.end_pos, berlin.whitespace_after) == (7, 13, False)
    assert sentence.to_plain_string() == "I love Berlin. It's great."


def test_sentences_from_text_keep_offsets_into_the_whole_text() -> None:
    text = "Ada met Charles. They built an engine in London!"
    first, second = sentences_from_text(text)
    assert first.text == "Ada met Charles." and second.text == "They built an engine in London!"
    assert first.next_sentence is second and second.previous_sentence is first
    offset = second.metadata["offset"]
    london = second[5]
    assert text[offset + london.start_pos : offset + london.end_pos] == "London"


def _segtok_words(sentence: str) -> list[str]:
    """Flair's SegtokTokenizer: segtok's words without the empty strings it leaves."""
    from segtok.tokenizer import split_contractions, word_tokenizer

    return [word for word in split_contractions(word_tokenizer(sentence)) if word]


# Characters that exercise every rule of segtok's word tokenizer: terminals, abbreviation dots,
# ellipses, commas and colons between digits or letters, hyphens (ASCII and Unicode) across line
# breaks, apostrophes and contractions, superscript powers, subscript digits, Unicode spaces.
ALPHABET = list("aAbsntdlmrevZ019 ...,,;::!?''-\u2010\u2019\u00b2\u207b\u2082()\n\r\u2028\t\u00a0") + [
    "n't",
    "'s",
    "i.e.",
    "12:30",
    "H\u2082O",
    "km\u00b2",
    "Mr.",
    " ",
    "  ",
    "Hel-\n lo",
]


def test_cached_word_tokenizer_gives_exactly_segtoks_tokens() -> None:
    import random

    from engine.tokenization import _word_tokens

    rng = random.Random(7)
    texts = [
        *TEXTS,
        "didn't.",
        "Why do n't you",
        "It 's",
        "It's, like, 5'-ACGT-3'...",
        "a,,;:",
        "x:",
        "Fred's",
        "rock'n'roll's!",
    ]
    texts += ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 40))) for _ in range(5000)]
    for text in texts:
        # Twice: the second call answers from the caches.
        assert _word_tokens(text) == _segtok_words(text), text
        assert _word_tokens(text) == _segtok_words(text), text


def test_a_sentence_from_split_text_is_tokenized_as_the_whole_text_is() -> None:
    from engine.tokenization import tokenize_sentence

    text = "  Mr. Smith didn't like it!  He left at 12:30 p.m. on Jan. 3rd...\n\nNew paragraph here."
    whole = tokenize(text)
    pieces = []
    for sentence, start in split_sentences(text):
        pieces += [(w, s + start, e + start) for w, s, e, _ in tokenize_sentence(sentence)]
    assert pieces == [(w, s, e) for w, s, e, _ in whole]


def test_long_words_are_not_remembered() -> None:
    # Each distinct 9,000-character word (a URL, base64) stayed in the tokenizer's memo: a
    # long-running API fed such text grew by ~1 MB per 100 requests, up to ~1 GB.
    import gc
    import random
    import tracemalloc

    rng = random.Random(3)
    tracemalloc.start()
    try:
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(200):
            word = "".join(rng.choice("abcdefghij") for _ in range(5000))  # a request's text
            assert [t for t, *_ in tokenize(word)] == [word]
        del word
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < 200_000, kept  # remembered, they held 200 x 2 x 5,000 characters


LINE_BOUNDARIES = ["\n", "\r\n", "\r", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


@pytest.mark.parametrize("boundary", LINE_BOUNDARIES)
def test_sentences_end_at_every_line_boundary_splitlines_knows(boundary: str) -> None:
    text = f"Hello world{boundary}Second line"
    assert text.splitlines() == ["Hello world", "Second line"]
    second = len("Hello world") + len(boundary)
    assert split_sentences(text) == [("Hello world", 0), ("Second line", second)]
    first, other = sentences_from_text(text)
    assert [t.text for t in first] == ["Hello", "world"] and other.metadata["offset"] == second
    # a line of invisible characters only is no sentence
    assert split_sentences(f"a{boundary}\u200b\u200e{boundary}b") == [
        ("a", 0),
        ("b", 2 * len(boundary) + 3),
    ]


BIDI_MARKS = [
    "\u200e",
    "\u200f",
    "\u061c",
    *map(chr, range(0x202A, 0x202F)),
    *map(chr, range(0x2066, 0x206A)),
]


@pytest.mark.parametrize("mark", BIDI_MARKS)
def test_direction_marks_are_no_part_of_tokens(mark: str) -> None:
    text = f"{mark}\u0623\u062d\u0628 \u0628\u0631\u0644\u064a\u0646{mark}"
    assert [(w, s, e) for w, s, e, _ in tokenize(text)] == [
        ("\u0623\u062d\u0628", 1, 4),
        ("\u0628\u0631\u0644\u064a\u0646", 5, 10),
    ]
    assert tokenize(mark) == [] and tokenize_whitespace(mark) == [] and is_blank(mark)
    assert [w for w, *_ in tokenize(f"Berlin{mark}Paris")] == ["Berlin", "Paris"]


def test_a_word_joiner_keeps_its_word_whole_and_is_never_a_token() -> None:
    # "no break here": one token, the joiner inside it (segtok alone splits "a", "\u2060", "b")
    assert tokenize("a\u2060b") == [("a\u2060b", 0, 3, False)]
    assert tokenize_whitespace("a\u2060b") == [("a\u2060b", 0, 3, False)]
    assert [w for w, *_ in tokenize("I love Ber\u2060lin.")] == ["I", "love", "Ber\u2060lin", "."]
    # joining nothing, it is a space
    for text in ("\u2060", "\u2060\u2060", " \u2060 ", "\u200d", "\u200c", "\u00ad"):
        assert tokenize(text) == [] and tokenize_whitespace(text) == [] and is_blank(text), text
    assert tokenize("\u2060Berlin\u2060 now") == [("Berlin", 1, 7, True), ("now", 9, 12, False)]
    # ZWJ and ZWNJ between Latin letters stay inside the word too, no longer a token of their own
    assert [w for w, *_ in tokenize("Auf\u200clage a\u200db")] == ["Auf\u200clage", "a\u200db"]


def test_blank_means_nothing_to_tokenize() -> None:
    for text in ("", " \n\t", "\u200b", "\x00\x01", "\ufeff", "\u200e\u202a\u2066", "\x1f\x85\u2029"):
        assert is_blank(text), text
        assert tokenize(text) == [] and sentences_from_text(text) == [], text
    for text in ("a\u200b", "\U0001f469\u200d\U0001f4bb", "\u00ad-", "co\u00adoperate"):
        assert not is_blank(text), text


# Every character the invisible/joiner/line-break rules single out, among ordinary text.
FUZZ_ALPHABET = [
    *"ab Z9.,'-!?\t",
    "\n",
    "\r\n",
    "\r",
    "\v",
    "\f",
    "\x1c",
    "\x1d",
    "\x1e",
    "\x1f",
    "\x85",
    "\u2028",
    "\u2029",
    "\x00",
    "\x07",
    "\x9f",
    "\u200b",
    "\ufeff",
    *BIDI_MARKS,
    *JOINERS,
    "\u00a0",
    "\u0623\u062d\u0628",
    "\U0001f469",
    "Mr.",
    "n't",
]


def test_offsets_stay_exact_over_random_texts_of_invisible_characters() -> None:
    import random

    rng = random.Random(2029)
    for _ in range(3000):
        text = "".join(rng.choice(FUZZ_ALPHABET) for _ in range(rng.randint(1, 24)))
        visible_chars = [c for c in text if not (c.isspace() or ord(c) in _INVISIBLE or c in JOINERS)]
        assert is_blank(text) == (not visible_chars), repr(text)
        for tokens in (tokenize(text), tokenize_whitespace(text)):
            covered = 0
            for word, start, end, space_after in tokens:
                assert text[start:end] == word, repr(text)
                assert not any(c.isspace() or ord(c) in _INVISIBLE for c in word), repr(text)
                assert word[0] not in JOINERS and word[-1] not in JOINERS, repr(text)
                assert space_after == (end < len(text) and _separates(text, end)), repr(text)
                covered += sum(c not in JOINERS for c in word)
            # every visible character is in exactly one token: nothing is lost or doubled
            assert covered == sum(c not in JOINERS for c in visible_chars), repr(text)
        pieces = []
        for sentence in sentences_from_text(text):
            offset = sentence.metadata["offset"]
            assert text[offset : offset + len(sentence.text)] == sentence.text, repr(text)
            # no sentence crosses a line boundary
            assert len(sentence.text.splitlines()) == 1, repr(text)
            for token in sentence:
                assert text[offset + token.start_pos : offset + token.end_pos] == token.text, repr(text)
                pieces.append((token.text, offset + token.start_pos))
        assert pieces == [(w, s) for w, s, *_ in tokenize(text)], repr(text)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("Ko\u0308ln ist scho\u0308n.", ["Ko\u0308ln", "ist", "scho\u0308n", "."]),
        ("Tie\u0302\u0301ng Vie\u0323\u0302t", ["Tie\u0302\u0301ng", "Vie\u0323\u0302t"]),
        ("cafe\u0301.", ["cafe\u0301", "."]),
        ("Mu\u0308nchen, Ko\u0308ln!", ["Mu\u0308nchen", ",", "Ko\u0308ln", "!"]),
    ],
    ids=["german", "vietnamese", "mark-then-period", "mark-then-comma"],
)
def test_decomposed_letters_stay_in_their_word(text: str, words: list[str]) -> None:
    # Text from macOS or a PDF is often decomposed (NFD); segtok split "Ko\u0308ln" into three.
    tokens = tokenize(text)
    assert [w for w, *_ in tokens] == words
    assert all(text[start:end] == word for word, start, end, _ in tokens)
    assert [t.text for s in sentences_from_text(text) for t in s.tokens] == words


# -- Chinese, Japanese (and Korean) ---------------------------------------------------------------
# segtok made a whole clause of unspaced CJK text one token ("写代码。你好吗"); each ideograph and
# each CJK punctuation mark is now a token of its own, as BERT's basic tokenizer makes them.


def _words(text: str) -> list[str]:
    return [word for word, *_ in tokenize(text)]


def test_each_chinese_ideograph_is_a_token() -> None:
    text = "我们在北京工作。"
    assert tokenize(text) == [
        ("我", 0, 1, False),
        ("们", 1, 2, False),
        ("在", 2, 3, False),
        ("北", 3, 4, False),
        ("京", 4, 5, False),
        ("工", 5, 6, False),
        ("作", 6, 7, False),
        ("。", 7, 8, False),
    ]
    # supplementary-plane ideographs (offsets count code points), 〇, a compatibility ideograph,
    # and a kanji with its ideographic variation selector
    assert _words("𠮷野家〇丨豈") == ["𠮷", "野", "家", "〇", "丨", "豈"]
    assert _words("葛\U000e0100城") == ["葛\U000e0100", "城"]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("我用Python写代码", ["我", "用", "Python", "写", "代", "码"]),
        ("价格是100元，共3,000人", ["价", "格", "是", "100", "元", "，", "共", "3,000", "人"]),
        ("我在2024年用GPT-4和Rust", ["我", "在", "2024", "年", "用", "GPT-4", "和", "Rust"]),
        ("她叫Anna Smith，住在New York", ["她", "叫", "Anna", "Smith", "，", "住", "在", "New", "York"]),
        ("約3.5kgのiPhone", ["約", "3.5kg", "の", "iPhone"]),
    ],
    ids=["latin", "digits", "names", "spaced-names", "japanese"],
)
def test_latin_words_and_numbers_in_chinese_stay_whole(text: str, words: list[str]) -> None:
    assert _words(text) == words


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("東京タワーに行きました。", ["東", "京", "タワーに", "行", "きました", "。"]),
        ("コーヒーを飲む", ["コーヒーを", "飲", "む"]),
        ("ひらがなカタカナ", ["ひらがなカタカナ"]),
        ("ﾀﾜｰへ", ["ﾀﾜｰへ"]),
        ("Pythonで書く", ["Python", "で", "書", "く"]),
        ("ドナルド・トランプ", ["ドナルド", "・", "トランプ"]),
    ],
    ids=["sentence", "prolonged-sound-mark", "hiragana-katakana", "halfwidth", "latin", "middle-dot"],
)
def test_japanese_kana_runs_stay_one_token(text: str, words: list[str]) -> None:
    # segtok cut kana at the prolonged sound mark: "コーヒー" was "コ", "ー", "ヒ", "ー"
    assert _words(text) == words


def test_korean_is_tokenized_as_before() -> None:
    # Hangul is written with spaces between words, which segtok already reads
    assert _words("한국어 텍스트입니다. 서울에서 Python을 배워요") == [
        "한국어",
        "텍스트입니다",
        ".",
        "서울에서",
        "Python",
        "을",
        "배워요",
    ]


CJK_PUNCTUATION = "、。〃「」『』【】〈〉《》〔〕〖〗〜〝〞・！？，：；（）％＃＆＊［］｛｝～｡｢｣､･"


@pytest.mark.parametrize("mark", CJK_PUNCTUATION)
def test_cjk_punctuation_is_a_token_of_its_own(mark: str) -> None:
    assert tokenize(f"中{mark}文") == [("中", 0, 1, False), (mark, 1, 2, False), ("文", 2, 3, False)]
    assert _words(f"ab{mark}{mark}cd") == ["ab", mark, mark, "cd"]


def test_chinese_quotation_and_brackets() -> None:
    assert _words("他说：「《三体》很好看，你读过吗？」") == [
        *"他说：「《三体》很好看，你读过吗？」",
    ]
    # fullwidth digits and letters are words, as ASCII ones are
    assert _words("第２０２４号（ＡＢＣ）") == ["第", "２０２４", "号", "（", "ＡＢＣ", "）"]


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("你好。我很好！你呢？", ["你好。", "我很好！", "你呢？"]),
        ("「こんにちは。」と言った。次へ", ["「こんにちは。」と言った。", "次へ"]),
        ("他说：“好的。”然后走了。", ["他说：“好的。”然后走了。"]),
        ("『「あ。」と。』と言った。次", ["『「あ。」と。』と言った。", "次"]),
        ("「はい。いいえ。", ["「はい。", "いいえ。"]),
        ("「はい。\nいいえ。」", ["「はい。", "いいえ。」"]),
        ("「はい。」\n「いいえ。」", ["「はい。」", "「いいえ。」"]),
        ("〝あ。〟と。（a）「b。」c。d（e。）f", ["〝あ。〟と。", "（a）「b。」c。", "d（e。）f"]),
        ("真的吗？！（笑）对。", ["真的吗？！", "（笑）对。"]),
        ("结束了。』」又开始", ["结束了。』」", "又开始"]),
        ("真的吗？!好", ["真的吗？!", "好"]),
        ("Hello world. 你好。 Mr. Smith went home.", ["Hello world.", "你好。", "Mr. Smith went home."]),
        ("价格是3.5元，你好", ["价格是3.5元，你好"]),
    ],
    ids=[
        "terminals",
        "japanese-quote",
        "curly-quote",
        "nested-quotes",
        "unclosed-quote",
        "quote-across-lines",
        "quotes-on-lines",
        "pairs",
        "brackets",
        "closers",
        "ascii-after",
        "mixed",
        "none",
    ],
)
def test_sentences_end_after_cjk_terminals_with_their_closing_quotes(text: str, sentences: list[str]) -> None:
    split = split_sentences(text)
    assert [sentence for sentence, _ in split] == sentences
    for sentence, start in split:
        assert text[start : start + len(sentence)] == sentence
    assert [t.text for s in sentences_from_text(text) for t in s] == _words(text)


def test_chinese_sentences_from_text_keep_offsets_into_the_whole_text() -> None:
    text = "  我住在北京。\n他在東京工作！"
    first, second = sentences_from_text(text)
    assert (first.text, first.metadata["offset"]) == ("我住在北京。", 2)
    assert (second.text, second.metadata["offset"]) == ("他在東京工作！", 9)
    tokyo = second[2]
    assert tokyo.text == "東"
    assert text[9 + tokyo.start_pos : 9 + tokyo.end_pos] == "東"
    assert Sentence("我用Python写代码。").to_plain_string() == "我用Python写代码。"


IDEOGRAPH_CHARS = ["我", "们", "北", "京", "𠮷", "〇", "々", "葛\U000e0100"]
KANA_CHARS = ["こ", "ん", "タ", "ー", "ｰ", "ﾀ", "が"]
CJK_FUZZ_ALPHABET = [
    *IDEOGRAPH_CHARS,
    *KANA_CHARS,
    *"한국。、「」『』！？，：（）・．",
    *"ab Z9.,'!?\t\n“”",
    "\u3000",
    "\u00a0",
    "\u200b",
    "Python",
    "3,000",
    "２０",
    "Mr.",
    "n't",
]


def _enclosed(text: str, at: int) -> bool:
    """Whether some opening quote or bracket before ``at`` is closed after it."""
    pairs = ["「」", "『』", "（）", "“”"]
    return any(o in text[:at] and c in text[at:] and text.index(o) < at < text.rindex(c) for o, c in pairs)


def test_offsets_stay_exact_over_random_cjk_texts() -> None:
    import random
    import re

    ideograph = re.compile("[\u3005\u3007\u4e00-\u9fff\U00020000-\U0003ffff]\U000e0100?")
    kana = set("".join(KANA_CHARS))
    rng = random.Random(4711)
    for _ in range(3000):
        text = "".join(rng.choice(CJK_FUZZ_ALPHABET) for _ in range(rng.randint(1, 30)))
        tokens = tokenize(text)
        token_at: dict[int, int] = {}
        for index, (word, start, end, space_after) in enumerate(tokens):
            assert text[start:end] == word, repr(text)
            assert space_after == (end < len(text) and _separates(text, end)), repr(text)
            token_at.update(dict.fromkeys(range(start, end), index))
            if ideograph.search(word) or set(word) & set(CJK_PUNCTUATION):
                assert ideograph.fullmatch(word) or len(word) == 1, (repr(text), word)
        # every visible character is in exactly one token, and a kana run in one
        visible = [i for i, c in enumerate(text) if not _separates(text, i)]
        assert sorted(token_at) == visible, repr(text)
        for i in range(len(text) - 1):
            if text[i] in kana and text[i + 1] in kana:
                assert token_at[i] == token_at[i + 1], repr(text)
        pieces = []
        for sentence in sentences_from_text(text):
            offset = sentence.metadata["offset"]
            assert text[offset : offset + len(sentence.text)] == sentence.text, repr(text)
            # a CJK terminal outside quotes is followed only by terminals and closing quotes in
            # its sentence
            ends = [
                i for i, c in enumerate(sentence.text) if c in "。！？" and not _enclosed(text, offset + i)
            ]
            assert all(set(sentence.text[i:]) <= set("。！？!?」』）”") for i in ends), repr(text)
            pieces += [(t.text, offset + t.start_pos) for t in sentence]
        assert pieces == [(w, s) for w, s, *_ in tokens], repr(text)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("おめでとう〽\ufe0fね", ["おめでとう", "〽\ufe0f", "ね"]),
        ("〰\ufe0f〰\ufe0f", ["〰\ufe0f", "〰\ufe0f"]),
        ("か\ufe0fな", ["か\ufe0fな"]),
    ],
    ids=["part-alternation-emoji", "wavy-dash-emoji", "kana"],
)
def test_a_variation_selector_stays_with_the_cjk_mark_or_kana_before_it(text: str, words: list[str]) -> None:
    # "〽️" (U+303D U+FE0F) is an emoji: it was one token, then "〽" and an invisible "\ufe0f"
    assert _words(text) == words
