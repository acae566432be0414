"""Corpus readers on small hand-written files: layouts, options and one test per malformed input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.data import Sentence
from engine.readers import (
    FORMATS,
    ClassificationCorpus,
    ColumnCorpus,
    ConlluCorpus,
    CorpusFormatError,
    ReaderOptionError,
    read_column_file,
    read_conllu_file,
    read_corpus_files,
    read_fasttext_file,
    read_table_file,
)
from engine.readers.errors import MAX_SENTENCE_TOKENS, MAX_TEXT_TOKENS, MAX_TOKEN_CHARS


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def spans(sentence: Sentence, label_type: str = "ner") -> list[tuple[str, str]]:
    return [(s.text, s.value) for s in sentence.get_spans(label_type)]


# column files ---------------------------------------------------------------------------------

CONLL03_ORIGINAL = """-DOCSTART- -X- -X- O

EU NNP I-NP I-ORG
rejects VBZ I-VP O
German JJ I-NP I-MISC
call NN I-NP O
. . O O

Peter NNP I-NP I-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- -X- O

Hans NNP I-NP I-PER
Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
"""


def test_column_file_iob1_with_documents(tmp_path: Path) -> None:
    path = write(tmp_path / "train.txt", CONLL03_ORIGINAL)
    schemes: dict[str, str] = {}
    sentences, skipped = read_column_file(path, {0: "text", 1: "pos", 2: "chunk", 3: "ner"}, schemes=schemes)
    assert skipped == 0
    assert [len(s) for s in sentences] == [5, 2, 3]
    assert schemes == {"chunk": "IOB1", "ner": "IOB1"}
    first, second, third = sentences
    assert spans(first) == [("EU", "ORG"), ("German", "MISC")]
    assert spans(third) == [("Hans", "PER"), ("Peter Blackburn", "PER")]
    assert first[0].get_tag("pos") == "NNP" and "ner" not in first[0].labels
    assert spans(first, "chunk") == [("EU", "NP"), ("rejects", "VP"), ("German call", "NP")]
    # -DOCSTART- starts a document: neighbours are linked inside it, not across
    assert first.document_id == second.document_id != third.document_id
    assert first.next_sentence is second and second.previous_sentence is first
    assert second.next_sentence is None and third.previous_sentence is None
    assert first.to_tagged_string("ner") == 'EU rejects German call . → ["EU"/ORG, "German"/MISC]'


def test_column_file_without_docstart_has_no_documents(tmp_path: Path) -> None:
    path = write(tmp_path / "a.txt", "EU B-ORG\nrejects O\n\nPeter B-PER\nBlackburn I-PER\n")
    sentences, _ = read_column_file(path)
    assert [s.document_id for s in sentences] == [None, None]
    assert sentences[0].next_sentence is None and sentences[1].previous_sentence is None
    assert spans(sentences[1]) == [("Peter Blackburn", "PER")]
    assert sentences[0].spans["ner"] and sentences[0].label_types() == {"ner": "span"}


def test_whole_file_document_links_sentences_outside_docstart_documents(tmp_path: Path) -> None:
    # The shared CoNLL-03 copy has no -DOCSTART- lines; Flair reads such a file as one document.
    path = write(tmp_path / "a.txt", "EU B-ORG\nrejects O\n\nPeter B-PER\n\nBerlin B-LOC\n")
    first, second, third = read_column_file(path, whole_file_document=True)[0]
    assert first.document_id == second.document_id == third.document_id == "a.txt#0"
    assert first.next_sentence is second and third.previous_sentence is second
    # with separators, they still end documents; what comes before the first one is a document too
    path = write(tmp_path / "b.txt", "EU B-ORG\n\n-DOCSTART- O\n\nPeter B-PER\n\nBerlin B-LOC\n")
    first, second, third = read_column_file(path, whole_file_document=True)[0]
    assert first.document_id != second.document_id == third.document_id
    assert first.next_sentence is None and second.next_sentence is third
    corpus = read_corpus_files("column", {"train": path}, {"whole_file_document": True})
    assert corpus.has_documents()


def test_tab_separated_file_with_hashtags_and_comments(tmp_path: Path) -> None:
    text = (
        "# sent_id = s1\n# text = #happy Paris\n#happy\tO\n#\tO\nParis\tB-location\n\n"
        "# a comment between sentences\nNew\tB-location\nYork\tI-location\n"
    )
    sentences, _ = read_column_file(write(tmp_path / "t.conll", text), {0: "text", 1: "ner"})
    assert [t.text for t in sentences[0]] == ["#happy", "#", "Paris"]
    assert sentences[0].id == "s1" and sentences[0].text == "#happy Paris"
    assert sentences[1].metadata["comments"] == ["# a comment between sentences"]
    assert spans(sentences[1]) == [("New York", "location")]


def test_space_separated_hash_token_is_not_a_comment(tmp_path: Path) -> None:
    text = "# a comment with several words\nwe O\n# O\nwin O\n"
    sentences, _ = read_column_file(write(tmp_path / "s.txt", text))
    assert [t.text for t in sentences[0]] == ["we", "#", "win"]
    assert sentences[0].metadata["comments"] == ["# a comment with several words"]


def test_a_key_value_comment_is_a_comment_whatever_its_width(tmp_path: Path) -> None:
    # "# sent_id = 2" has four fields: in a four-column file it was read as the token "#", and
    # the 422 blamed its tag "2"
    text = "# sent_id = 1\nEU NNP B-NP B-ORG\n. . O O\n\n# sent_id = 2\nPeter NNP B-NP B-PER\n"
    sentences, _ = read_column_file(write(tmp_path / "s.txt", text), {0: "text", 3: "ner"})
    assert [s.id for s in sentences] == ["1", "2"]
    assert [[t.text for t in s] for s in sentences] == [["EU", "."], ["Peter"]]


def test_error_tab_inside_a_space_separated_token(tmp_path: Path) -> None:
    # "rejects\t O" split at spaces has the file's two fields: the token was "rejects\t"
    path = write(tmp_path / "train.txt", "EU B-ORG\nrejects\t O\n")
    with pytest.raises(CorpusFormatError) as excinfo:
        read_column_file(path)
    assert_error(
        excinfo, path, 2, "columns are separated by spaces (detected from its first token line, line 1)"
    )


def test_span_columns_option(tmp_path: Path) -> None:
    text = "Peter\tNNP\tB-PER\nruns\tVBZ\tO\n"
    path = write(tmp_path / "x.tsv", text)
    cmap = {"0": "text", "1": "pos", "-1": "ner"}
    as_tokens, _ = read_column_file(path, cmap, span_columns=[])
    assert as_tokens[0][0].get_tag("ner") == "B-PER" and not as_tokens[0].spans
    plain, _ = read_column_file(path, cmap, span_columns={"pos": "plain", "ner": "BIO"})
    assert spans(plain[0], "pos") == [("Peter", "NNP"), ("runs", "VBZ")]
    assert spans(plain[0]) == [("Peter", "PER")]
    with pytest.raises(ReaderOptionError, match="not in the column map"):
        read_column_file(path, cmap, span_columns=["chunk"])


def test_column_corpus_from_folder_uses_train_schemes_for_dev(tmp_path: Path) -> None:
    write(tmp_path / "train.txt", "Peter B-PER\nruns O\n\nParis B-LOC\n")
    write(tmp_path / "dev.txt", "Anna B-PER\n")
    write(tmp_path / "test.txt", "Rome B-LOC\nis O\n")
    corpus = ColumnCorpus(tmp_path, {0: "text", 1: "ner"})
    assert (len(corpus.train), len(corpus.dev), len(corpus.test)) == (2, 1, 1)
    assert corpus.tag_schemes == {"ner": "BIO"}
    assert spans(corpus.test[0]) == [("Rome", "LOC")]
    assert corpus.make_label_dictionary("ner").get_items() == ["LOC", "PER"]
    stats = corpus.statistics()
    assert stats["train"]["labels"]["ner"] == {"LOC": 1, "PER": 1}
    assert stats["skipped_sentences"] == 0


def test_a_dev_tag_outside_trains_scheme_is_an_error_naming_the_dev_file(tmp_path: Path) -> None:
    # Dev and test were read with schemes detected afresh: a bare "PER" in dev made its own
    # scheme, and dev was scored against spans train never had.
    write(tmp_path / "train.txt", "Peter B-PER\nruns O\n\nParis B-LOC\n")
    dev = write(tmp_path / "dev.txt", "Anna O\n\nAnna PER\nruns O\n")
    with pytest.raises(CorpusFormatError) as excinfo:
        ColumnCorpus(tmp_path, {0: "text", 1: "ner"})
    assert excinfo.value.file == str(dev) and excinfo.value.line == 3
    assert "PER" in excinfo.value.reason


# CoNLL-U --------------------------------------------------------------------------------------

CONLLU = """# newdoc id = doc1
# sent_id = s1
# text = Vámonos al mar.
1-2\tVámonos\t_\t_\t_\t_\t_\t_\t_\t_
1\tVamos\tir\tVERB\tVMIP1P0\tMood=Ind\t0\troot\t_\t_
2\tnos\tnosotros\tPRON\tPP1CP000\tCase=Acc\t1\tobj\t_\t_
3-4\tal\t_\t_\t_\t_\t_\t_\t_\tSpaceAfter=No
3\ta\ta\tADP\tSPS00\t_\t5\tcase\t_\t_
4\tel\tel\tDET\tDA0MS0\t_\t5\tdet\t_\t_
5\tmar\tmar\tNOUN\tNCMS000\t_\t1\tobl\t_\tSpaceAfter=No
5.1\tir\tir\tVERB\t_\t_\t_\t_\t1:conj\t_
6\t.\t.\tPUNCT\tFp\t_\t1\tpunct\t_\t_

# sent_id = s2
# text = _ ok
1\t_\t_\tPUNCT\t_\t_\t0\troot\t_\t_
2\tok\tok\tINTJ\tUH\t_\t1\tdiscourse\t_\t_

# sent_id = only-comments

# newdoc
1\tHi\thi\tINTJ\tUH\t_\t0\troot\t_\t_
"""


def test_conllu_multiword_tokens_empty_nodes_and_documents(tmp_path: Path) -> None:
    sentences, skipped = read_conllu_file(write(tmp_path / "x.conllu", CONLLU))
    assert skipped == 1  # the sentence with only a comment
    first, second, third = sentences
    assert [t.text for t in first] == ["Vamos", "nos", "a", "el", "mar", "."]
    assert first.metadata["multiword_tokens"] == [(0, 2, "Vámonos"), (2, 4, "al")]
    assert [t.whitespace_after for t in first] == [False, True, False, False, False, True]
    assert first.id == "s1" and first.text == "Vámonos al mar."
    assert [t.get_tag("upos") for t in first] == ["VERB", "PRON", "ADP", "DET", "NOUN", "PUNCT"]
    assert first[0].get_tag("lemma") == "ir" and first[0].get_tag("feats") == "Mood=Ind"
    assert first[0].get_tag("xpos") == "VMIP1P0"
    assert "feats" not in first[2].labels  # "_" is unspecified
    assert second[0].get_tag("lemma") == "_" and "xpos" not in second[0].labels
    assert first.document_id == second.document_id == "doc1"
    assert first.next_sentence is second and second.next_sentence is None
    assert third.document_id is not None and third.document_id != "doc1"


def test_conllu_fields_option_and_corpus(tmp_path: Path) -> None:
    write(tmp_path / "x-train.conllu", CONLLU)
    write(tmp_path / "x-dev.conllu", CONLLU)
    corpus = ConlluCorpus(tmp_path, fields=["upos", "deprel"])
    assert corpus.skipped == 2
    assert set(corpus.train[0][0].labels) == {"upos", "deprel"}
    assert corpus.statistics()["skipped_sentences"] == 2
    with pytest.raises(ReaderOptionError, match="unknown CoNLL-U field"):
        read_conllu_file(tmp_path / "x-dev.conllu", fields=["pos"])


# classification -------------------------------------------------------------------------------


def test_fasttext_multi_label_and_label_separator(tmp_path: Path) -> None:
    text = "__label__A __label__B  Great movie, really!\n\n__label__B\tOK.\n__label__A __label__A x\n"
    path = write(tmp_path / "train.txt", text)
    sentences, skipped = read_fasttext_file(path)
    assert skipped == 0
    assert [[lb.value for lb in s.get_labels("class")] for s in sentences] == [["A", "B"], ["B"], ["A"]]
    assert sentences[0].text == "Great movie, really!"
    assert [t.text for t in sentences[0]] == ["Great", "movie", ",", "really", "!"]
    assert sentences[0][1].start_pos == 6
    trec = write(tmp_path / "trec.txt", "DESC:manner How did serfdom develop ?\nHUM:ind Who is he ?\n")
    coarse, _ = read_fasttext_file(trec, label_prefix=None, label_separator=":", label_type="q")
    assert [s.get_labels("q")[0].value for s in coarse] == ["DESC", "HUM"]
    fine, _ = read_fasttext_file(trec, label_prefix=None, tokenizer="whitespace")
    assert fine[0].get_labels("class")[0].value == "DESC:manner" and len(fine[0]) == 5


def test_csv_tsv_and_jsonl_tables(tmp_path: Path) -> None:
    csv_path = write(
        tmp_path / "train.csv",
        'id,text,label\n1,"Hello, world",pos\n2,"two\nlines",neg|pos\n3,,\n',
    )
    sentences, skipped = read_table_file(csv_path, multi_label_separator="|")
    assert skipped == 1
    assert [s.text for s in sentences] == ["Hello, world", "two\nlines"]
    assert [lb.value for lb in sentences[1].get_labels("class")] == ["neg", "pos"]
    tsv_path = write(tmp_path / "data.tsv", "pos\tfine text\nneg\tbad text\n")
    rows, _ = read_table_file(tsv_path, text_column=1, label_column=0, has_header=False)
    assert [s.get_labels("class")[0].value for s in rows] == ["pos", "neg"]
    jsonl = write(
        tmp_path / "d.jsonl",
        json.dumps({"sentence": "Nice.", "tags": ["a", "b"]})
        + "\n\n"
        + json.dumps({"sentence": "Meh", "tags": 3}),
    )
    records, _ = read_table_file(jsonl, text_column="sentence", label_column="tags")
    assert [[lb.value for lb in s.get_labels("class")] for s in records] == [["a", "b"], ["3"]]


def test_tsv_quotes_are_text_unless_the_file_is_quoted(tmp_path: Path) -> None:
    # TSV has no quoting (GLUE's SST-2 has such lines): the quotes were dropped without a word,
    # and a line opening with one swallowed the rows after it as an "unterminated quote"
    plain = write(
        tmp_path / "plain.tsv",
        'sentence\tlabel\n"Kissinger" is a great film\t1\n" a tedious film\t0\nok\t1\n',
    )
    rows, _ = read_table_file(plain, text_column="sentence")
    assert [s.to_original_text() for s in rows] == ['"Kissinger" is a great film', '" a tedious film', "ok"]
    quoted = write(tmp_path / "quoted.tsv", 'sentence\tlabel\n"""Kissinger"" is\ta great film"\t1\n')
    rows, _ = read_table_file(quoted, text_column="sentence", quoted=True)
    assert [s.to_original_text() for s in rows] == ['"Kissinger" is\ta great film']


def test_classification_corpus_counts_skipped_rows(tmp_path: Path) -> None:
    write(tmp_path / "train.csv", "text,label\ngood,pos\n,\nbad,neg\n")
    write(tmp_path / "test.csv", "text,label\nfine,pos\n")
    corpus = ClassificationCorpus(tmp_path, format="csv", sample_missing_splits=False)
    assert (len(corpus.train), len(corpus.dev), len(corpus.test), corpus.skipped) == (2, 0, 1, 1)
    assert corpus.statistics()["skipped_sentences"] == 1


def test_trec_refuses_a_line_whose_label_has_no_coarse_class(tmp_path: Path) -> None:
    # A column file read as TREC ("EU B-ORG") made every first word a class: 207 of them.
    mixed = write(tmp_path / "train.txt", "DESC:manner How ?\nEU B-ORG\n")
    with pytest.raises(CorpusFormatError) as caught:
        read_corpus_files("trec", {"train": mixed})
    assert caught.value.line == 2 and "label 'EU' has no ':'" in str(caught.value)
    assert "format fasttext with label_prefix null" in str(caught.value)
    # the option that made it TREC is the user's to turn off, and then plain labels read
    corpus = read_corpus_files(
        "trec", {"train": mixed}, {"label_separator": None}, sample_missing_splits=False
    )
    assert corpus.make_label_dictionary("class").get_items() == ["DESC:manner", "EU"]


# the dispatch function ------------------------------------------------------------------------


def test_read_corpus_files_dispatches_and_validates_options(tmp_path: Path) -> None:
    train = write(tmp_path / "train.txt", "DESC:manner How ?\nHUM:ind Who ?\nHUM:gr Which group ?\n")
    corpus = read_corpus_files("trec", {"train": train}, sample_missing_splits=False)
    assert corpus.make_label_dictionary("class").get_items() == ["HUM", "DESC"]
    column = write(tmp_path / "c.txt", "EU NNP B-ORG\n")
    corpus = read_corpus_files("column", {"train": column}, {"column_map": {"0": "text", "2": "ner"}})
    assert spans(corpus.train[0]) == [("EU", "ORG")]
    with pytest.raises(ReaderOptionError, match="unknown corpus format"):
        read_corpus_files("xml", {"train": column})
    with pytest.raises(ReaderOptionError, match="unknown option"):
        read_corpus_files("column", {"train": column}, {"columns": {}})
    with pytest.raises(ReaderOptionError, match="must be"):
        read_corpus_files("csv", {"train": column}, {"has_header": "yes"})
    with pytest.raises(ReaderOptionError, match="unknown split"):
        read_corpus_files("column", {"training": column})
    json.dumps({name: spec.to_dict() for name, spec in FORMATS.items()})
    assert set(FORMATS) >= {"column", "conllu", "fasttext", "csv", "tsv", "jsonl"}


# malformed input: one test per case, each naming the file and the line -------------------------


def assert_error(
    excinfo: pytest.ExceptionInfo[CorpusFormatError], path: Path, line: int, reason: str
) -> None:
    error = excinfo.value
    assert error.file == str(path) and error.filename == path.name
    assert error.line == line
    assert reason in error.reason
    assert str(error).startswith(f"{path.name}, line {line}: ")


def test_error_wrong_column_count(tmp_path: Path) -> None:
    path = write(tmp_path / "train.txt", "EU NNP I-NP B-ORG\nrejects VBZ I-VP O\n\nPeter NNP B-PER\n")
    with pytest.raises(CorpusFormatError) as excinfo:
        read_column_file(path)
    assert_error(excinfo, path, 4, "wrong number of columns (expected 4, got 3)")


@pytest.mark.parametrize("fmt", ["column", "conllu", "fasttext", "csv"])
def test_error_a_token_longer_than_the_limit(tmp_path: Path, fmt: str) -> None:
    # A million characters in one token held a training batch for minutes and took 16 GB.
    blob = "x" * (MAX_TOKEN_CHARS + 1)
    fine = "y" * MAX_TOKEN_CHARS  # at the limit: read
    if fmt == "column":
        path, read = write(tmp_path / "train.txt", f"{fine} O\n\nParis B-LOC\n{blob} O\n"), read_column_file
    elif fmt == "conllu":
        row = "\t".join(["1", "{}", "_", "X", "_", "_", "0", "root", "_", "_"])
        content = "\n".join([row.format(fine), "", row.format(blob), ""]) + "\n"
        path, read = write(tmp_path / "train.conllu", content), read_conllu_file
    elif fmt == "fasttext":
        path, read = (
            write(tmp_path / "train.txt", f"__label__a {fine}\n__label__b {blob} text\n"),
            read_fasttext_file,
        )
    else:
        path, read = write(tmp_path / "train.csv", f"text,label\n{fine},a\nsome {blob},b\n"), read_table_file
    line = 3 if fmt in ("conllu", "csv") else (4 if fmt == "column" else 2)
    with pytest.raises(CorpusFormatError) as excinfo:
        read(path)
    assert_error(
        excinfo, path, line, f"a token of {MAX_TOKEN_CHARS + 1} characters ('xxxxxxxxxxxxxxxxxxxx'...)"
    )
    assert f"the limit is {MAX_TOKEN_CHARS}" in excinfo.value.reason


@pytest.mark.parametrize("fmt", ["column", "conllu", "fasttext", "csv"])
def test_error_a_sentence_longer_than_the_limit(tmp_path: Path, fmt: str) -> None:
    # A column file without blank lines between its sentences was one sentence of every token,
    # which a training batch pads every sentence to.
    fine = MAX_SENTENCE_TOKENS  # at the limit: read
    if fmt == "column":
        rows = ["w O"] * fine + ["", "Paris B-LOC"] + ["w O"] * fine
        path, read, line = write(tmp_path / "train.txt", "\n".join(rows) + "\n"), read_column_file, fine + 2
        expected = f"the sentence starting here runs past {fine:,} tokens (to line {2 * fine + 2} without"
    elif fmt == "conllu":
        row = "\t".join(["{}", "w", "_", "X", "_", "_", "0", "root", "_", "_"])
        first = [row.format(i) for i in range(1, fine + 1)]
        second = ["# sent_id = 2"] + [row.format(i) for i in range(1, fine + 2)]
        content = "\n".join([*first, "", *second, ""]) + "\n"
        path, read, line = write(tmp_path / "train.conllu", content), read_conllu_file, fine + 2
        expected = f"the sentence starting here has more than {fine:,} words (word {fine + 1} is on line {2 * fine + 3})"
    elif fmt == "fasttext":  # a text is a document: a limit of its own
        most = MAX_TEXT_TOKENS
        content = f"__label__a {'w ' * most}\n__label__b {'w ' * (most + 1)}\n"
        path, read, line = write(tmp_path / "train.txt", content), read_fasttext_file, 2
        expected = f"a text of {most + 1:,} tokens; the limit is {most:,}"
    else:
        most = MAX_TEXT_TOKENS
        content = f"text,label\n{'w ' * most},a\n{'w ' * (most + 1)},b\n"
        path, read, line = write(tmp_path / "train.csv", content), read_table_file, 3
        expected = f"a text of {most + 1:,} tokens; the limit is {most:,}"
    with pytest.raises(CorpusFormatError) as excinfo:
        read(path)
    assert_error(excinfo, path, line, expected)


def test_error_a_conllu_file_read_as_columns(tmp_path: Path) -> None:
    # Accepted before, with the word numbers as words and "_" as a label.
    rows = [
        "# sent_id = 1",
        "# text = Paris is nice",
        *(
            "\t".join([str(i), word, "_", "X", "_", "_", "0" if i == 1 else "1", "dep", "_", "_"])
            for i, word in enumerate(["Paris", "is", "nice"], 1)
        ),
    ]
    path = write(tmp_path / "train.txt", "\n".join(rows) + "\n")
    with pytest.raises(CorpusFormatError) as excinfo:
        read_column_file(path)
    assert_error(excinfo, path, 3, "this looks like CoNLL-U (10 tab-separated columns")
    assert "format conllu" in excinfo.value.reason
    # with a column map that names the words, the columns are the user's to choose
    sentences, _ = read_column_file(path, column_map={1: "text", 3: "pos"})
    assert [t.text for t in sentences[0].tokens] == ["Paris", "is", "nice"]


def test_error_token_without_tag(tmp_path: Path) -> None:
    path = write(tmp_path / "train.txt", "EU B-ORG\nrejects\n")
    with pytest.raises(CorpusFormatError) as excinfo:
        read_column_file(path)
    assert_error(excinfo, path, 2, "token 'rejects' without a tag")


def test_error_token_with_empty_tag_in_tab_file(tmp_path: Path) -> None:
    path = write(tmp_path / "dev.conll", "EU\tB-ORG\n\n\nrejects\t\n")
    with pytest.raises(CorpusFormatError) as excinfo:
        read_column_file(path)
    assert_error(excinfo, path, 4, "token 'rejects' without a tag")


def test_error_first_token_without_tag(tmp_path: Path) -> None:
    path = write(tmp_path / "train.txt", "\nEU\nrejects O\n")
    with pytest.raises(CorpusFormatError) as excinfo:
        read_column_file(path)
    assert_error(excinfo, path, 2, "token 'EU' without a tag")


def test_error_invalid_tag_in_named_span_column(tmp_path: Path) -> None:
    path = write(tmp_path / "train.txt", "EU B-ORG\nrejects O\nit PRP\n")
    with pytest.raises(CorpusFormatError) as excinfo:
        read_column_file(path, span_columns=["ner"])
    assert_error(excinfo, path, 3, "invalid tag 'PRP'")


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"])
def test_error_empty_file(tmp_path: Path, content: bytes) -> None:
    path = write(tmp_path / "train.txt", content)
    with pytest.raises(CorpusFormatError) as excinfo:
        read_column_file(path)
    assert_error(excinfo, path, 1, "empty file")


def test_error_file_with_only_comments(tmp_path: Path) -> None:
    path = write(tmp_path / "train.txt", "# just a comment\n\n-DOCSTART- -X- O\n")
    with pytest.raises(CorpusFormatError) as excinfo:
        read_column_file(path)
    assert_error(excinfo, path, 1, "empty file")


@pytest.mark.parametrize("reader", ["column", "conllu", "fasttext", "csv"])
def test_error_text_not_utf8(tmp_path: Path, reader: str) -> None:
    path = write(tmp_path / "train.txt", b"ok O\nfine O\n" + "caf\u00e9 O\n".encode("latin-1"))
    with pytest.raises(CorpusFormatError) as excinfo:
        if reader == "column":
            read_column_file(path)
        elif reader == "conllu":
            read_conllu_file(path)
        elif reader == "fasttext":
            read_fasttext_file(path)
        else:
            read_table_file(path, "csv")
    assert_error(excinfo, path, 3, "not UTF-8 (invalid byte 0xe9, byte 4 of the line)")


def test_error_fasttext_labels_without_text(tmp_path: Path) -> None:
    path = write(tmp_path / "train.txt", "__label__pos good\n__label__neg __label__x   \n")
    with pytest.raises(CorpusFormatError) as excinfo:
        read_fasttext_file(path)
    assert_error(excinfo, path, 2, "label(s) neg, x but no text")


def test_error_labels_with_a_text_of_invisible_characters_only(tmp_path: Path) -> None:
    # Tokenized, such a text has no token: it was dropped silently, where a blank text is an error.
    path = write(tmp_path / "train.txt", "__label__pos good\n__label__neg \u200b\u200e\u2060\n")
    with pytest.raises(CorpusFormatError) as excinfo:
        read_fasttext_file(path)
    assert_error(excinfo, path, 2, "label(s) neg but no text")
    path = write(tmp_path / "train.csv", "text,label\nhi,pos\n\ufeff\u200f,neg\n")
    with pytest.raises(CorpusFormatError) as excinfo:
        read_table_file(path)
    assert_error(excinfo, path, 3, "label(s) neg but no text")


def test_error_first_field_label_without_text(tmp_path: Path) -> None:
    path = write(tmp_path / "train.txt", "DESC:def What is it ?\nNUM:date\n")
    with pytest.raises(CorpusFormatError) as excinfo:
        read_fasttext_file(path, label_prefix=None, label_separator=":")
    assert_error(excinfo, path, 2, "label(s) NUM but no text")


def test_error_fasttext_text_without_label(tmp_path: Path) -> None:
    path = write(tmp_path / "train.txt", "__label__pos good\n\njust text\n")
    with pytest.raises(CorpusFormatError) as excinfo:
        read_fasttext_file(path)
    assert_error(excinfo, path, 3, "text without a label")


def test_error_csv_label_without_text(tmp_path: Path) -> None:
    path = write(tmp_path / "train.csv", 'text,label\n"multi\nline",pos\n  ,neg\n')
    with pytest.raises(CorpusFormatError) as excinfo:
        read_table_file(path)
    assert_error(excinfo, path, 4, "label(s) neg but no text")


def test_error_csv_missing_column(tmp_path: Path) -> None:
    path = write(tmp_path / "train.csv", "sentence,label\nhi,pos\n")
    with pytest.raises(CorpusFormatError) as excinfo:
        read_table_file(path)
    assert_error(excinfo, path, 1, "no text column 'text'")


def test_error_csv_wrong_column_count(tmp_path: Path) -> None:
    path = write(tmp_path / "train.csv", "text,label\nhi,pos\nhi,pos,extra\n")
    with pytest.raises(CorpusFormatError) as excinfo:
        read_table_file(path)
    assert_error(excinfo, path, 3, "wrong number of columns (expected 2, got 3)")


def test_error_jsonl_label_without_text(tmp_path: Path) -> None:
    path = write(tmp_path / "train.jsonl", '{"text": "a", "label": "x"}\n{"text": "", "label": ["y"]}\n')
    with pytest.raises(CorpusFormatError) as excinfo:
        read_table_file(path)
    assert_error(excinfo, path, 2, "label(s) y but no text")


@pytest.mark.parametrize("label", ["NaN", "Infinity", "[1, NaN]"])
def test_error_jsonl_non_finite_label(tmp_path: Path, label: str) -> None:
    # Python's JSON parser takes NaN; it was stored as a class "nan"
    path = write(
        tmp_path / "train.jsonl", f'{{"text": "a", "label": 1}}\n{{"text": "b", "label": {label}}}\n'
    )
    with pytest.raises(CorpusFormatError) as excinfo:
        read_table_file(path)
    assert_error(excinfo, path, 2, "is not a string, number or boolean")


def test_error_jsonl_invalid_json(tmp_path: Path) -> None:
    path = write(tmp_path / "train.jsonl", '{"text": "a", "label": "x"}\n\n{"text": "b", label: 1}\n')
    with pytest.raises(CorpusFormatError) as excinfo:
        read_table_file(path)
    assert_error(excinfo, path, 3, "invalid JSON")


def test_error_conllu_wrong_column_count(tmp_path: Path) -> None:
    path = write(
        tmp_path / "train.conllu", "# text = a b\n1\ta\ta\tX\t_\t_\t0\troot\t_\t_\n2 b b X _ _ 1 dep _ _\n"
    )
    with pytest.raises(CorpusFormatError) as excinfo:
        read_conllu_file(path)
    assert_error(excinfo, path, 3, "wrong number of columns (expected 10, got 1)")


def test_error_conllu_word_id_out_of_sequence(tmp_path: Path) -> None:
    row = "\t".join(["{}", "w", "w", "X", "_", "_", "0", "root", "_", "_"])
    path = write(tmp_path / "train.conllu", "\n".join([row.format(1), row.format(3)]) + "\n")
    with pytest.raises(CorpusFormatError) as excinfo:
        read_conllu_file(path)
    assert_error(excinfo, path, 2, "word id 3 out of sequence (expected 2)")


def test_error_conllu_bad_multiword_range(tmp_path: Path) -> None:
    row = "\t".join(["{}", "w", "w", "X", "_", "_", "0", "root", "_", "_"])
    path = write(tmp_path / "train.conllu", "\n".join([row.format(1), row.format("3-4")]) + "\n")
    with pytest.raises(CorpusFormatError) as excinfo:
        read_conllu_file(path)
    assert_error(excinfo, path, 2, "invalid multi-word token range '3-4'")
    # a range of one word is no multi-word token (UD's validator refuses it too)
    path = write(tmp_path / "train.conllu", "\n".join([row.format("1-1"), row.format(1)]) + "\n")
    with pytest.raises(CorpusFormatError) as excinfo:
        read_conllu_file(path)
    assert_error(excinfo, path, 1, "invalid multi-word token range '1-1'")


def test_jsonl_labels_are_read_as_written(tmp_path: Path) -> None:
    # Python's str() made 1e2 the class "100.0", 1 and 1.0 one class or two by accident, and
    # true the class "True"; a number past Python's digit limit was refused.
    lines = ["1", "1.0", "1e2", "true", "[false, 2]", "9" * 5000]
    path = write(
        tmp_path / "train.jsonl", "".join(f'{{"text": "t{i}", "label": {v}}}\n' for i, v in enumerate(lines))
    )
    records, _ = read_table_file(path)
    assert [[label.value for label in r.labels["class"]] for r in records] == [
        ["1"],
        ["1.0"],
        ["1e2"],
        ["true"],
        ["false", "2"],
        ["9" * 5000],
    ]
    path = write(tmp_path / "train.jsonl", '{"text": "a", "label": "x"}\n{"text": 5, "label": "y"}\n')
    with pytest.raises(CorpusFormatError) as excinfo:
        read_table_file(path)
    assert_error(excinfo, path, 2, "text 'text' is a number, not a string")


def test_error_jsonl_lone_surrogate_escape(tmp_path: Path) -> None:
    # Python's JSON parser lets \ud800 through; the corpus was stored, then every listing of the
    # owner's corpora failed with a 500 (the string cannot be written as UTF-8)
    for record in ('{"text": "b", "label": "a\\ud800"}', '{"text": "b\\udfff c", "label": "a"}'):
        path = write(tmp_path / "train.jsonl", '{"text": "a", "label": "x"}\n' + record + "\n")
        with pytest.raises(CorpusFormatError) as excinfo:
            read_table_file(path)
        assert_error(excinfo, path, 2, "lone surrogate escape")


def test_error_jsonl_json_that_python_refuses(tmp_path: Path) -> None:
    # Valid JSON that json.loads still refuses: deep nesting.
    good = '{"text": "a", "label": "x"}\n'
    path = write(
        tmp_path / "train.jsonl", good + '{"text": "b", "x": ' + "[" * 100_000 + "]" * 100_000 + "}\n"
    )
    with pytest.raises(CorpusFormatError) as excinfo:
        read_table_file(path)
    assert_error(excinfo, path, 2, "invalid JSON (nested too deeply)")


def test_csv_field_longer_than_the_csv_module_default(tmp_path: Path) -> None:
    import csv

    text = "longerwordsxyz " * 9_000  # 135,000 characters, past the module's 131,072
    path = write(tmp_path / "train.csv", f'text,label\n"{text}",pos\nshort,neg\n')
    sentences, _ = read_table_file(path)
    assert len(sentences[0]) == 9_000
    # Any csv.Error left names the line: here a limit lowered on purpose.
    previous = csv.field_size_limit(1000)
    try:
        with pytest.raises(CorpusFormatError) as excinfo:
            read_table_file(path)
    finally:
        csv.field_size_limit(previous)
    assert_error(excinfo, path, 2, "unreadable row (field larger than field limit (1000))")


def test_error_csv_column_index_outside_the_row(tmp_path: Path) -> None:
    path = write(tmp_path / "train.csv", "hi,pos\n")
    with pytest.raises(CorpusFormatError) as excinfo:
        read_table_file(path, has_header=False, text_column="-5", label_column=1)
    assert_error(excinfo, path, 1, "text column -5 not in a row of 2 columns")
    # A non-ASCII digit is a column name, not an index, so without a header it is an option error.
    with pytest.raises(ReaderOptionError, match="must be an index"):
        read_table_file(path, has_header=False, text_column="\u00b2", label_column=1)


@pytest.mark.parametrize(
    ("word_id", "reason"),
    [
        ("\u00b2", "invalid word id '\u00b2'"),
        ("\u0661", "invalid word id '\u0661'"),
        ("1-\u00b2", "invalid multi-word token range '1-\u00b2'"),
    ],
)
def test_error_conllu_non_ascii_digits_in_ids(tmp_path: Path, word_id: str, reason: str) -> None:
    row = "\t".join(["{}", "w", "w", "X", "_", "_", "0", "root", "_", "_"])
    path = write(tmp_path / "train.conllu", "\n".join([row.format(word_id), row.format(1)]) + "\n")
    with pytest.raises(CorpusFormatError) as excinfo:
        read_conllu_file(path)
    assert_error(excinfo, path, 1, reason)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"span_columns": {"ner": "NOPE"}}, "span column 'ner': unknown tag scheme 'NOPE'"),
        ({"span_columns": {"ner": 5}}, "tag scheme of span column 'ner' must be a string, got 5"),
        ({"span_columns": [5]}, "span column names must be strings, got 5"),
        ({"span_columns": [["ner"]]}, "span column names must be strings, got ['ner']"),
    ],
)
def test_ill_typed_span_columns_are_option_errors(
    tmp_path: Path, options: dict[str, object], message: str
) -> None:
    path = write(tmp_path / "train.txt", "EU B-ORG\n")
    with pytest.raises(ReaderOptionError) as excinfo:
        read_corpus_files("column", {"train": path}, {"column_map": {"0": "text", "1": "ner"}, **options})
    assert message in str(excinfo.value)


def test_ill_typed_conllu_fields_are_option_errors(tmp_path: Path) -> None:
    path = write(tmp_path / "train.conllu", "1\tw\tw\tX\t_\t_\t0\troot\t_\t_\n")
    with pytest.raises(ReaderOptionError, match=r"unknown CoNLL-U field \['upos'\]"):
        read_corpus_files("conllu", {"train": path}, {"fields": [["upos"]]})


@pytest.mark.parametrize(
    ("format", "content", "options", "message"),
    [
        ("fasttext", "__label__a hi\n", {"label_type": ""}, "label_type must be a name, got ''"),
        ("csv", "text,label\nhi,a\n", {"label_type": " "}, "label_type must be a name, got ' '"),
        ("fasttext", "__label__a hi\n", {"label_prefix": ""}, "label_prefix must not be empty"),
        ("column", "EU B-ORG\n", {"document_separator": ""}, "document_separator must not be empty"),
        ("csv", "text,label\nhi,a\n", {"text_column": "label"}, "are both 'label'"),
        ("jsonl", '{"t": "hi"}\n', {"text_column": "t", "label_column": "t"}, "are both 't'"),
        ("jsonl", '{"0": "hi"}\n', {"text_column": 0, "label_column": "0"}, "are both 0"),
        ("csv", "text,label\nhi,a\n", {"text_column": "label", "label_column": 1}, "are both column 1"),
        ("tsv", "hi\ta\n", {"has_header": False, "text_column": -1, "label_column": 1}, "both column 1"),
    ],
)
def test_empty_names_and_one_column_for_text_and_label_are_option_errors(
    tmp_path: Path, format: str, content: str, options: dict[str, object], message: str
) -> None:
    # Each was read without a word: a nameless label type, every field a label (or the text its
    # own label), documents started by any line beginning with a blank.
    path = write(tmp_path / f"train.{format}", content)
    with pytest.raises(ReaderOptionError) as excinfo:
        read_corpus_files(format, {"train": path}, options)
    assert message in str(excinfo.value)


def test_null_label_prefix_still_means_the_first_field_is_the_label(tmp_path: Path) -> None:
    path = write(tmp_path / "train.txt", "DESC:manner How ?\n")
    sentences, _ = read_fasttext_file(path, label_prefix=None, label_separator=":")
    assert [label.value for label in sentences[0].labels["class"]] == ["DESC"]


def test_error_column_map_entries_that_meet_in_one_column(tmp_path: Path) -> None:
    # 3 and -2 are distinct on 4 columns (the fewest the map needs) but the same column on 5:
    # one label column used to vanish without a word.
    path = write(tmp_path / "train.txt", "\nEU a b B-ORG x\n")
    with pytest.raises(CorpusFormatError) as excinfo:
        read_column_file(path, {0: "text", 3: "ner", -2: "pos"})
    assert_error(
        excinfo, path, 2, "column map entries 3 (ner) and -2 (pos) are the same column in a line of 5"
    )


def test_error_in_dev_file_names_the_dev_file(tmp_path: Path) -> None:
    train = write(tmp_path / "train.txt", "EU B-ORG\n")
    dev = write(tmp_path / "dev.txt", "EU B-ORG\n\nit O\nis\n")
    with pytest.raises(CorpusFormatError) as excinfo:
        read_corpus_files("column", {"train": train, "dev": dev})
    assert_error(excinfo, dev, 4, "token 'is' without a tag")
    assert excinfo.value.to_dict() == {"file": "dev.txt", "line": 4, "reason": excinfo.value.reason}


def test_split_files_found_by_name(tmp_path: Path) -> None:
    from engine.readers.files import find_split_files

    for name in ("eng.train", "eng.testa", "eng.testb", "README.md"):
        write(tmp_path / name, "EU B-ORG\n")
    assert {k: v.name for k, v in find_split_files(tmp_path).items()} == {
        "train": "eng.train",
        "dev": "eng.testa",
        "test": "eng.testb",
    }
    write(tmp_path / "train2.txt", "EU B-ORG\n")
    with pytest.raises(ReaderOptionError, match="two train files"):
        find_split_files(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_split_files(tmp_path / "missing")
    (tmp_path / "only").mkdir()
    write(tmp_path / "only" / "dev.txt", "EU B-ORG\n")
    with pytest.raises(FileNotFoundError, match="no training file"):
        find_split_files(tmp_path / "only")


# tag columns with stray values, stray whitespace, and separators that changed mid-file ----------


@pytest.mark.parametrize("stray", ["o", "0", "B-", "BPER", "I_PER"])
def test_error_stray_value_in_a_detected_span_column(tmp_path: Path, stray: str) -> None:
    # One stray value used to turn the whole column into token labels without a word.
    path = write(
        tmp_path / "train.txt",
        f"EU B-ORG\nrejects O\nGerman B-MISC\ncall {stray}\n\nPeter B-PER\nBlackburn I-PER\n",
    )
    with pytest.raises(CorpusFormatError) as excinfo:
        read_corpus_files("column", {"train": path})
    assert_error(excinfo, path, 4, f"column 'ner' looks like BIO/BIOES tags, but {stray!r} is not one")
    assert "span_columns" in excinfo.value.reason
    # The way out the message names: read the column as token labels.
    corpus = read_corpus_files("column", {"train": path}, {"span_columns": []}, sample_missing_splits=False)
    assert corpus.statistics()["label_types"] == {"ner": "token"}
    assert corpus.train[0][3].get_tag("ner") == stray


def test_error_stray_value_in_a_bioes_column_names_its_first_line(tmp_path: Path) -> None:
    lines = ["w\tS-PER" if i % 3 else "w\tO" for i in range(200)]
    lines[150] = "w\tPER"
    lines[170] = "w\tS-"
    path = write(tmp_path / "train.tsv", "\n".join(lines) + "\n")
    with pytest.raises(CorpusFormatError) as excinfo:
        read_column_file(path, {0: "text", 1: "ner"})
    assert_error(excinfo, path, 151, "looks like BIO/BIOES tags, but 'PER' is not one")


def test_token_label_columns_with_a_few_prefixed_values_stay_token_labels(tmp_path: Path) -> None:
    # A POS column where one tag happens to look like B-X; the NER column is still spans.
    rows = [
        ("Peter", "NNP", "B-PER"),
        ("bought", "VBD", "O"),
        ("a", "DT", "O"),
        ("B-52", "B-52", "B-MISC"),
        ("model", "NN", "O"),
        ("in", "IN", "O"),
        ("Paris", "NNP", "B-LOC"),
    ]
    path = write(tmp_path / "train.txt", "".join(" ".join(r) + "\n" for r in rows))
    corpus = read_corpus_files(
        "column", {"train": path}, {"column_map": {"0": "text", "1": "pos", "2": "ner"}}
    )
    assert corpus.statistics()["label_types"] == {"pos": "token", "ner": "span"}
    sentence = (corpus.train + corpus.dev)[0]
    assert sentence[3].get_tag("pos") == "B-52"
    assert spans(sentence) == [("Peter", "PER"), ("B-52", "MISC"), ("Paris", "LOC")]


def test_conllu_upos_with_a_prefixed_looking_tag_stays_token_labels(tmp_path: Path) -> None:
    row = "{}\t{}\t_\t{}\t_\t_\t0\troot\t_\t_"
    text = "\n".join(row.format(i + 1, w, t) for i, (w, t) in enumerate([("a", "DET"), ("b", "B-X")]))
    corpus = read_corpus_files(
        "conllu", {"train": write(tmp_path / "t.conllu", text + "\n")}, {"fields": ["upos"]}
    )
    assert corpus.statistics()["label_types"] == {"upos": "token"}


def test_unicode_whitespace_around_tags_is_not_part_of_the_tag(tmp_path: Path) -> None:
    # A trailing no-break space made 'ORG\xa0' a second type next to 'ORG'.
    path = write(tmp_path / "train.txt", "EU B-ORG\u00a0\nrejects O\u2009\n\nUN B-ORG\nNew\u00a0York B-LOC\n")
    corpus = read_corpus_files("column", {"train": path}, sample_missing_splits=False)
    assert corpus.make_label_dictionary("ner").get_items() == ["ORG", "LOC"]
    assert spans(corpus.train[0]) == [("EU", "ORG")]
    # Tokens keep theirs: a token made of words joined by a no-break space is legitimate.
    assert corpus.train[1][1].text == "New\u00a0York"
    # Token-label columns, in a tab-separated file where spaces can surround a value too.
    tsv = write(tmp_path / "train.tsv", "EU\tNNP\u00a0\tB-ORG\nrejects\t VBZ \tO\u3000\n")
    sentences, _ = read_column_file(tsv, {0: "text", 1: "pos", 2: "ner"})
    assert [t.get_tag("pos") for t in sentences[0]] == ["NNP", "VBZ"]
    assert spans(sentences[0]) == [("EU", "ORG")]
    # A tag of nothing but whitespace is a missing tag.
    empty = write(tmp_path / "dev.tsv", "EU\tB-ORG\nrejects\t\u00a0\n")
    with pytest.raises(CorpusFormatError) as excinfo:
        read_column_file(empty)
    assert_error(excinfo, empty, 2, "token 'rejects' without a tag in column 1")


def test_conllu_label_values_lose_surrounding_whitespace_but_forms_keep_it(tmp_path: Path) -> None:
    row = "1\tNew\u00a0York\tNew\u00a0York\tPROPN\u00a0\tNNP \t_\t0\troot\t_\t_\n"
    sentences, _ = read_conllu_file(write(tmp_path / "t.conllu", row), fields=["upos", "xpos", "lemma"])
    token = sentences[0][0]
    assert token.text == "New\u00a0York" and token.get_tag("lemma") == "New\u00a0York"
    assert (token.get_tag("upos"), token.get_tag("xpos")) == ("PROPN", "NNP")


def test_error_tab_separated_file_with_a_space_separated_line(tmp_path: Path) -> None:
    path = write(tmp_path / "train.tsv", "EU\tB-ORG\nrejects O\n")
    with pytest.raises(CorpusFormatError) as excinfo:
        read_column_file(path)
    assert_error(
        excinfo, path, 2, "columns are separated by tabs (detected from its first token line, line 1)"
    )
    assert "this line has none" in excinfo.value.reason


def test_error_space_separated_file_with_a_tab_separated_line(tmp_path: Path) -> None:
    path = write(tmp_path / "train.txt", "# a comment\nEU NNP B-ORG\nrejects\tVBZ\tO\n")
    with pytest.raises(CorpusFormatError) as excinfo:
        read_column_file(path)
    assert_error(
        excinfo, path, 3, "columns are separated by spaces (detected from its first token line, line 2)"
    )
    assert "this line has tabs" in excinfo.value.reason


@pytest.mark.parametrize(
    ("name", "text", "line"),
    [
        # The quote swallows the rest of the file into one field.
        ("train.csv", 'text,label\nhi,pos\n"oops,neg\nmore,pos\nlast,neg\n', 3),
        # ... or into the last column, so the row even has the right number of columns.
        ("train.csv", 'text,label\nhi,"pos\nmore,neg\nlast,neg', 2),
        # a TSV file read with quoting (quoted=True)
        ("train.tsv", 'text\tlabel\nhi\tpos\nthe "best\tpos\n"oops\tneg\nmore\tpos\n', 4),
    ],
)
def test_error_table_with_an_unterminated_quote(tmp_path: Path, name: str, text: str, line: int) -> None:
    path = write(tmp_path / name, text)
    with pytest.raises(CorpusFormatError) as excinfo:
        read_table_file(path, quoted=True)
    assert_error(excinfo, path, line, f"unterminated quote starting at line {line}")


def test_error_conllu_separated_by_spaces(tmp_path: Path) -> None:
    path = write(tmp_path / "train.conllu", "# text = a b\n1 a a X _ _ 0 root _ _\n")
    with pytest.raises(CorpusFormatError) as excinfo:
        read_conllu_file(path)
    assert_error(excinfo, path, 2, "wrong number of columns (expected 10, got 1)")
    assert "CoNLL-U columns are separated by tabs" in excinfo.value.reason
    # A line that is short whichever way it is split gets no such hint.
    short = write(tmp_path / "dev.conllu", "1\ta\ta\tX\n")
    with pytest.raises(CorpusFormatError) as excinfo:
        read_conllu_file(short)
    assert "separated by tabs" not in excinfo.value.reason


def test_quoted_line_breaks_in_the_last_row_are_no_unterminated_quote(tmp_path: Path) -> None:
    path = write(tmp_path / "train.csv", 'text,label\nhi,pos\n"two\nlines, ""quoted""",neg\n')
    sentences, _ = read_table_file(path)
    assert sentences[1].text == 'two\nlines, "quoted"'


def test_error_wrong_column_count_after_quoted_line_breaks_names_the_quote(tmp_path: Path) -> None:
    # A stray quote closes the unterminated one further down: the row has too few columns.
    path = write(tmp_path / "train.csv", 'text,label\nhi,pos\n"oops\nmore,pos\nla"st\nok,pos\n')
    with pytest.raises(CorpusFormatError) as excinfo:
        read_table_file(path)
    assert_error(
        excinfo, path, 3, "wrong number of columns (expected 2, got 1) in a row from line 3 to line 5"
    )
    assert "unterminated quote starting at line 3?" in excinfo.value.reason


def test_byte_order_marks_inside_joined_files_are_dropped(tmp_path: Path) -> None:
    # `cat a.txt b.txt` keeps b's mark: "\ufeff-DOCSTART-" was read as a token, and a CoNLL-U
    # comment or a fastText label after it as malformed lines.
    column = write(
        tmp_path / "c.txt", "\ufeff-DOCSTART- O\n\nEU B-ORG\n\n\ufeff-DOCSTART- O\n\nParis B-LOC\n"
    )
    sentences, _ = read_column_file(column)
    assert [[t.text for t in s.tokens] for s in sentences] == [["EU"], ["Paris"]]
    assert sentences[0].document_id != sentences[1].document_id
    row = "\t".join(["1", "{}", "_", "X", "_", "_", "0", "root", "_", "_"])
    conllu = write(
        tmp_path / "c.conllu",
        "\ufeff# sent_id = 1\n" + row.format("a") + "\n\n\ufeff# sent_id = 2\n" + row.format("b") + "\n",
    )
    assert [s.id for s in read_conllu_file(conllu)[0]] == ["1", "2"]
    fasttext = write(tmp_path / "f.txt", "\ufeff__label__pos good\n\ufeff__label__neg bad\n")
    assert [s.labels["class"][0].value for s in read_fasttext_file(fasttext)[0]] == ["pos", "neg"]


def test_invisible_characters_around_a_label_are_not_part_of_it(tmp_path: Path) -> None:
    # "ORG\u200b" (a zero-width space pasted along) was a class of its own beside "ORG".
    column = write(tmp_path / "c.txt", "EU B-ORG\u200b\nrejects O\n\nBonn B-ORG\u200e\n")
    sentences, _ = read_column_file(column, {0: "text", 1: "ner"})
    assert [span.label.value for s in sentences for span in s.spans["ner"]] == ["ORG", "ORG"]
    fasttext = write(tmp_path / "f.txt", "__label__pos\u200b good\n__label__pos fine\n")
    assert {s.labels["class"][0].value for s in read_fasttext_file(fasttext)[0]} == {"pos"}
    row = "\t".join(["1", "Bonn", "_", "PROPN\u200b", "_", "_", "0", "root", "_", "_"])
    assert (
        read_conllu_file(write(tmp_path / "c.conllu", row + "\n"))[0][0].tokens[0].labels["upos"].value
        == "PROPN"
    )
    # alternating runs of spaces and invisible characters come off too
    row = "\t".join(["1", "Bonn", "_", "PROPN\u200b\u3000\u200e", "_", "_", "0", "root", "_", "_"])
    sentence = read_conllu_file(write(tmp_path / "d.conllu", row + "\n"))[0][0]
    assert sentence.tokens[0].labels["upos"].value == "PROPN"


def test_a_look_alike_tag_is_named_with_its_code_point(tmp_path: Path) -> None:
    # A Cyrillic 'О' quoted alone reads as the valid tag O.
    path = write(tmp_path / "train.txt", "EU B-ORG\nrejects \u041e\n\nBonn B-LOC\n")
    with pytest.raises(CorpusFormatError) as excinfo:
        read_column_file(path)
    assert_error(excinfo, path, 2, "looks like BIO/BIOES tags, but '\u041e' (\u041e is U+041E) is not one")


def test_a_label_typed_composed_and_decomposed_is_one_class(tmp_path: Path) -> None:
    # "ÖRT" as one character or as O + combining diaeresis: two classes that looked the same.
    column = write(tmp_path / "c.txt", "Bonn B-\u00d6RT\n\nKöln B-O\u0308RT\n")
    sentences, _ = read_column_file(column, {0: "text", 1: "ner"})
    assert {span.label.value for s in sentences for span in s.spans["ner"]} == {"\u00d6RT"}
    fasttext = write(tmp_path / "f.txt", "__label__\u00e9t\u00e9 sun\n__label__e\u0301te\u0301 beach\n")
    assert {s.labels["class"][0].value for s in read_fasttext_file(fasttext)[0]} == {"\u00e9t\u00e9"}
