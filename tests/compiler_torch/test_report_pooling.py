"""The compile report says what the head reads: the pooler on encoders, the last non-pad token on
decoders, the masked mean when the spec says `head { pool mean }`."""

from __future__ import annotations

from torch_models import tiny_decoder, tiny_model

from peltc.api import compile_model


def test_report_names_what_the_head_reads():
    assert compile_model("lora q { at layers[*].attention.query }", tiny_model("bert")).pooling.startswith("pooler")
    dec = compile_model("lora q { at layers[*].attention.query }", tiny_decoder("llama"))
    assert dec.pooling == "last non-pad token" and "last non-pad token" in dec.render()
    mean = compile_model("lora q { at layers[*].attention.query }\nhead { pool mean }", tiny_model("bert"))
    assert mean.pooling.startswith("mean")
