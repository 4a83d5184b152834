"""The stopword list: English function words, one list for every analyser.

Memory's analyser leaves them out when it compares or indexes memory text
(services/memory/text.py). The search query parser leaves them out of what
remains of a query once its filters are read, together with the words
people ask with ("find", "show", "records"), and snippets do not highlight
them. Search's BM25 keeps every word: its idf already makes a word found
everywhere worth almost nothing, and a query of only such words still ranks.
(RAG's relevance model has its own word list, part of what was fitted with
its coefficients: services/rag/relevance.py.)
"""

from __future__ import annotations

_STOPWORDS = """
a an the of for with and or in on at to from by as is are was were be been being has
have had do does did this that these those it its he she they them his her their there
here which who whom whose what when where how than then so such very just also about
into onto over under after before again further only own same too can will would should
could may might must shall i me my we our you your
"""
STOPWORDS = frozenset(_STOPWORDS.split())

# What a search request says besides what it asks about.
_REQUEST_WORDS = """
without any all some show find list get give us please search look looking records
record want need
"""
REQUEST_WORDS = frozenset(_REQUEST_WORDS.split())
QUERY_FILLER = STOPWORDS | REQUEST_WORDS
