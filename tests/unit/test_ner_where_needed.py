"""NER only where it can find something: which sentences go to the model, and offsets mapped back."""

from __future__ import annotations

from services.entities.ner import NerMention, mentions_where_needed, needs_ner


class CapitalisedWords:
    """A stand-in recogniser: every capitalised word not opening a line is a PER; records what it read."""

    def __init__(self) -> None:
        self.read: list[str] = []

    def mentions(self, text: str) -> list[NerMention]:
        import re

        self.read.append(text)
        return [NerMention(m.start(), m.end(), "PER", m.group()) for m in re.finditer(r"(?<![\n])\b[A-Z]\w+", text)
                if m.start() > 0 and text[m.start() - 1] != "\n"]


def test_a_sentence_without_a_name_is_not_read() -> None:
    text = "Le vent souffle fort ce matin. Il pleut aussi sur la côte. Selon Karim Benali, rien ne change."
    assert not needs_ner(text, 0, 30, [])
    assert needs_ner(text, 59, len(text), [])  # "Selon Karim Benali": a name after the first word


def test_an_elided_name_and_an_initial_count() -> None:
    text = "Il a parlé de l'Arménie. Donald J. Trump est venu."
    assert needs_ner(text, 0, 24, [])
    model = CapitalisedWords()
    found = mentions_where_needed(model, text, [])
    assert [text[m.start:m.end] for m in found] == [m.text for m in found]  # offsets point into the text
    assert "Trump" in [m.text for m in found]


def test_names_the_table_matched_do_not_send_a_sentence_to_the_model() -> None:
    text = "La pluie tombe. Le président Poutine reçoit Pachinian."
    start = text.index("Poutine")
    taken = [(start, start + 7), (text.index("Pachinian"), text.index("Pachinian") + 9)]
    model = CapitalisedWords()
    assert mentions_where_needed(model, text, taken) == []
    assert model.read == []  # "Le" opens the sentence and is a common word: nothing left to find


def test_offsets_are_mapped_back_from_the_kept_sentences() -> None:
    text = "Il pleut ici. Il vente aussi.\nLa ministre Anne Claire Dubois arrive. Il fait nuit. Puis Marc Lévy parle."
    model = CapitalisedWords()
    found = mentions_where_needed(model, text, [])
    assert len(model.read) == 1 and "pleut" not in model.read[0] and "nuit" not in model.read[0]
    assert {m.text for m in found} >= {"Anne", "Claire", "Dubois", "Marc"}
    for mention in found:
        assert text[mention.start:mention.end] == mention.text
