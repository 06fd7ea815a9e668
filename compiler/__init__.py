"""peltc.compiler — IR, validation passes, architecture tables, rendering (torch-free), and the
torch back end in `peltc.compiler.torch` (imported only when a model is compiled)."""
