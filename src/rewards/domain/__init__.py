"""Plain values and arithmetic: money, purchase and award arithmetic, payment media, what
events store (``details``), the engine's decisions. Imports no framework, storage or engine
(values are plain Python or msgspec structs)."""
