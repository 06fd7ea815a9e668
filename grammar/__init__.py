"""peltc.grammar — the .pelt language: grammar (pelt.lark), syntax tree, parser, formatter.

Torch-free: importing this package never imports torch or transformers.
"""

from peltc.grammar.parser import parse

__all__ = ["parse"]
