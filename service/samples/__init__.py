"""Bundled sample data for `tagsmith demo` and the README's curl session.

``ner-{train,dev,test}.conll``: a small English NER corpus in CoNLL column format (``token TAG``,
BIO tags PER/LOC/ORG/MISC, a blank line between sentences): 150/30/30 synthetic sentences
written for Tagsmith (no licensed corpus text).
"""
