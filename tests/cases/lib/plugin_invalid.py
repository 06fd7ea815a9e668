from peltc.methods import Method, ParamSpec

BAD = Method("bad", "a method without a count", {"k": ParamSpec("int", 1, "k")}, frozenset({"attention.query"}),
             build=lambda ctx: None)
