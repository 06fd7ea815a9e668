"""`peltc lsp`: a Language Server Protocol server for .pelt specs (pygls 2, over stdio).

``analysis`` holds what the editor features compute (no LSP machinery beyond lsprotocol's types);
``server`` wires them to pygls. Neither imports torch: they run the front end only (parser,
lowering, passes against a model config), as `peltc check` does.
"""
