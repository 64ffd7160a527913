"""Story linking: one story across languages and outlets.

link.py is the pure part, store.py the index, encoder.py the sentence encoder, stage.py the wiring.
"""
