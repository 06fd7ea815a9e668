"""`peltc lsp`: a Language Server Protocol server for .pelt specs (pygls 2, over stdio).

One job a module (lsprotocol's types, no LSP machinery): ``analysis`` the shared document model (a
spec's text checked as `peltc check` does, positions, included files, what is under the cursor);
``diagnostics`` (and quick fixes), ``hover``, ``completion``, ``navigation`` (definition, dependents),
``outline`` (document symbols), ``formatting``; ``glossary`` what points, gates and parameters mean.
``server`` wires them to pygls. None imports torch: they run the front end only (parser, lowering,
passes against a model config), as `peltc check` does.
"""
