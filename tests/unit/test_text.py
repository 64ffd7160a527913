"""shared.text.fold (numpy tables) against its definition, fold_slow (character by character)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.text import fold, fold_slow

# characters whose fold is not one character, or is a space: ß → ss, a combining acute → nothing,
# tatweel → nothing, a Hangul syllable → three jamo, ﬃ → ffi; whitespace, dashes, apostrophes, an emoji
_AWKWARD = [*"ßẞ\u0301\u064eـ각ﬃİΣς \t\n\u00a0\u3000-–—'’`´أةىЁёÉé😀", "  ", " \u0301 "]
awkward_text = st.lists(st.one_of(st.sampled_from(_AWKWARD), st.characters(max_codepoint=0x7F),
                                  st.characters()), min_size=0, max_size=400).map("".join)


@given(st.one_of(st.text(min_size=100, max_size=600), awkward_text))
@settings(max_examples=500, deadline=None)
def test_fold_is_its_definition(text: str) -> None:
    assert fold(text) == fold_slow(text)


def test_fold_maps_back_to_the_original_characters() -> None:
    text = "  Straße\u0301 —  ПУТИН   وبوتين ــ 각 " * 8  # long enough for the table path
    folded, index = fold(text)
    assert folded.startswith("strasse путин وبوتين")
    assert len(index) == len(folded) and index == sorted(index)
    assert text[index[folded.index("путин")]] == "П"
    assert folded.count("ss") == 8 and index[folded.index("ss")] == index[folded.index("ss") + 1]
    assert "  " not in folded and not folded.startswith(" ")


def test_short_and_empty_text() -> None:
    assert fold("") == ("", [])
    assert fold(" \u0301 É ") == ("e ", [3, 4])
