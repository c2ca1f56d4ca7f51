"""The core: plain types and pure functions every other layer shares, importing nothing else of ours.

Addresses, resources and live state, plans and changes, the decision (``diff.decide``), errors,
progress events, content hashing, the retry policy and the redactor. ``tests/test_layers.py``
checks that nothing in this package imports outside it.
"""
