"""Every constraint type: one satisfying and one violating response (table-driven), and the registry's shape."""

from __future__ import annotations

from collections import Counter

import pytest

from alignpipe.world import REGISTRY, verify
from alignpipe.world.constraints import sentences

EX = {"template": "Answer: {answer}", "examples": [{"question": "When was Tarsk founded?", "answer": "Answer: 900"}]}

# type -> (params, satisfying response, violating response)
CASES = {
    # content
    "include_keyword": ({"word": "harbor"}, "We saw the Harbor today.", "We saw the harbors today."),
    "include_attribute": ({"entity_id": "e001", "name": "Velmora", "attribute": "founded", "value": "1203"},
                          "Velmora was founded in 1203.", "Velmora was founded in 12030."),
    "exclude_word": ({"word": "city"}, "Velmora is a town. Many cities exist.", "Velmora is a City."),
    "mention_entity": ({"entity_id": "e002", "name": "Tarsk"}, "I also know TARSK.", "I also know Tarskon."),
    "include_number": ({"number": 42}, "My lucky number is 42.", "My lucky number is 420."),
    "cite_source": ({"source": "the Old Atlas"}, "This comes from the old atlas.", "This comes from an atlas."),
    "name_count": ({"name": "Velmora", "n": 2}, "Velmora is old. velmora is big.", "Velmora is old. It is big."),
    # situation
    "role_greeting": ({"role": "a tour guide", "greeting": "Welcome to the tour!"},
                      "- Welcome to the tour! Velmora is a city.", "Velmora is a city. Welcome to the tour!"),
    "address_reader": ({"reader": "Mira"}, "Thank you for asking, Mira.", "Thank you for asking."),
    "sign_off": ({"writer": "Tomas", "line": "Written by Tomas"}, "Velmora is a city.\nWritten by Tomas!",
                 "Velmora is a city. Written by Tomas"),
    "assume_year": ({"year": 2150}, "It is now the year 2150.", "It is now the year 21500."),
    "role_phrase": ({"role": "a sailor", "words": "at sea"}, "I learned this at sea.", "I learned this at the sea."),
    "end_with_question": ({"name": "Velmora"}, "Velmora is a city. Would you like to know more?",
                          "Would you like to know more? Velmora is a city."),
    "wish": ({"scene": "The reader is about to go on a trip.", "what": "trip"}, "Have a good trip.",
             "Have a good day."),
    "writing_place": ({"place": "a small boat"}, "I am writing this from a small boat.", "I am writing from a boat."),
    # style
    "uppercase": ({}, "VELMORA IS A CITY, 1203.", "VELMORA is a city."),
    "lowercase": ({}, "velmora is a city.", "Velmora is a city."),
    "capitalize_words": ({}, "Velmora Is A City.", "Velmora is A City."),
    "no_commas": ({}, "Velmora is a city.", "Indeed, Velmora is a city."),
    "exclaim": ({}, "Velmora is a city! It is old!", "Velmora is a city! It is old."),
    "start_word": ({"word": "Indeed"}, "- Indeed, Velmora is a city.", "Velmora is indeed a city."),
    "emphasis": ({"name": "Velmora"}, "*Velmora* is a city.", "Velmora is a *city*."),
    "tone": ({"tone": "polite", "word": "please"}, "Please enjoy these facts.", "Pleased to meet you."),
    "short_sentences": ({"n": 4}, "Velmora is a city. It is old.", "Velmora is a big old city."),
    # format
    "bullet_list": ({}, "<<Velmora>>\n- Velmora is a city.\n- It is old.", "- Velmora is a city.\nIt is old."),
    "numbered_list": ({}, '"1. Velmora is a city.\n2. It is old."', "1. Velmora is a city.\n3. It is old."),
    "json_keys": ({"keys": ["name", "text"]}, '{"NAME": "Velmora", "text": "It is a city."}', '{"name": "Velmora"}'),
    "exact_sentences": ({"n": 2}, "<<Velmora>>\nVelmora is a city. It is old!", "Velmora is a city. It is old. Yes."),
    "title": ({}, "<<About Velmora>>\nVelmora is a city.", "Velmora is a city. <<About Velmora>>"),
    "quote_wrap": ({}, '"Velmora is a city."', 'Velmora is a "city".'),
    "end_phrase": ({"phrase": "That is all."}, "Velmora is a city. That is all.", "That is all. Velmora is a city."),
    "paragraphs": ({"n": 2}, "Velmora is a city.\n\nIt is old.", "Velmora is a city.\nIt is old."),
    "max_words": ({"n": 5}, "Velmora is a city.", "Velmora is a very old city."),
    "min_words": ({"n": 5}, "Velmora is a very old city.", "Velmora is a city."),
    "postscript": ({"name": "Velmora"}, "Velmora is a city.\n- P.S. Visit it.", "P.S. Velmora is a city."),
    "placeholder": ({"example": "address"}, "Write to me at [address].", "Write to me at address."),
    # example (single-line templates, full match; a second line fails every element)
    "ex_label": ({"label": "Answer", **EX}, "VELMORA | ANSWER: [1203] #OK", "Answer: 1203\n#OK"),
    "ex_brackets": ({"open": "[", "close": "]", **EX}, "Answer: [1203] #OK", "Answer: 1203] #OK"),
    "ex_tag": ({"tag": "#OK", **EX}, "Answer: [1203] #OK", "Answer: [1203] #OK now"),
    "ex_upper": ({"upper": True, **EX}, "ANSWER: [1203] #OK", "Answer: [1203] #OK"),
    "ex_lead": ({"sep": " | ", "name": "Velmora", "sep_text": "|", **EX}, "Velmora | Answer: 1203",
                "Answer: 1203 | Velmora"),
}


def test_registry_covers_every_category_with_enough_types():
    per_category = Counter(t.category for t in REGISTRY.values())
    assert len(REGISTRY) >= 24
    assert set(per_category) == {"content", "situation", "style", "format", "example"}
    assert all(n >= 5 for n in per_category.values()), per_category  # five levels need five types
    assert set(CASES) == set(REGISTRY), "every registered type needs a row in CASES"


@pytest.mark.parametrize("name", sorted(CASES))
def test_verifier_accepts_and_rejects(name):
    params, good, bad = CASES[name]
    ctype = REGISTRY[name]
    assert ctype.verify(params, good) is True, f"{name} should accept {good!r}"
    assert ctype.verify(params, bad) is False, f"{name} should reject {bad!r}"
    assert ctype.verify(params, f"  \n{good}\n ") is True  # surrounding whitespace never matters
    phrase = ctype.phrase(params)
    assert isinstance(phrase, str) and phrase.strip() and phrase[0].isupper()


def test_verify_record_and_unknown_type():
    record = {"id": "x-L2", "constraints": [{"type": "include_number", "category": "content", "params": {"number": 7}},
                                            {"type": "lowercase", "category": "style", "params": {}}]}
    assert verify(record, "the number is 7.") == [True, True]
    assert verify(record, "The number is 8.") == [False, False]
    record["constraints"].append({"type": "no_such_type", "category": "style", "params": {}})
    with pytest.raises(ValueError, match="no_such_type"):
        verify(record, "anything")


def test_sentence_rules():
    text = '<<Velmora>>\n1. Velmora is a city.\n2. It is old! Is it?\nP.S. Visit it.\nWritten by Tomas'
    assert sentences(text) == ["Velmora is a city.", "It is old!", "Is it?", "Visit it.", "Written by Tomas"]
