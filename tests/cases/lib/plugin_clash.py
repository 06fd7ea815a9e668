from peltc.methods import Method

LORA = Method("lora", "a second lora", {}, frozenset({"attention.query"}), count=lambda c: 0,
              build=lambda ctx: None)
