from rag.citations import parse_reply


def test_numbered_suggestions_with_keys() -> None:
    reply = "SUGGESTIONS:\n1. Nitrofurantoin for 5 days. [E1]\n2. Fosfomycin once [E2][E3].\n3. Rest [E1, E3]"
    parsed = parse_reply(reply)
    assert parsed.usable and not parsed.abstained
    assert [s.text for s in parsed.suggestions] == ["Nitrofurantoin for 5 days.", "Fosfomycin once.", "Rest"]
    assert [s.citations for s in parsed.suggestions] == [("E1",), ("E2", "E3"), ("E1", "E3")]


def test_abstention_is_recognised_with_or_without_header() -> None:
    assert parse_reply("INSUFFICIENT EVIDENCE").abstained
    assert parse_reply("SUGGESTIONS: insufficient evidence.").abstained
    assert not parse_reply("1. Give fluids [E1]").abstained


def test_bullets_and_repeated_keys() -> None:
    parsed = parse_reply("- Start an ACE inhibitor [E2] [E2]\n* Check potassium [e 3]")
    assert [s.citations for s in parsed.suggestions] == [("E2",), ("E3",)]


def test_numeric_keys_only_when_no_e_keys() -> None:
    parsed = parse_reply("1. Use metformin [1]\n2. Add insulin [2, 3]")
    assert parsed.numeric_keys and [s.citations for s in parsed.suggestions] == [("E1",), ("E2", "E3")]
    mixed = parse_reply("1. Use metformin [E1] at 500 mg [2]")
    assert not mixed.numeric_keys and mixed.suggestions[0].citations == ("E1",)


def test_prose_with_citations_becomes_suggestions() -> None:
    parsed = parse_reply("Metformin is first line [E1]. It is cheap. Add a statin [E2].")
    assert [s.citations for s in parsed.suggestions] == [("E1",), ("E2",)]


def test_unusable_replies() -> None:
    assert not parse_reply("").usable
    assert not parse_reply("I think you should rest and drink water.").usable
    assert not parse_reply("1. Rest\n2. Fluids").usable  # a list, but nothing is cited


def test_the_prompts_markup_copied_into_a_reply_is_not_a_suggestion() -> None:
    reply = (
        'SUGGESTIONS:\n1. <evidence key="E2" source="GOLD" year="2024">Refer when the diagnosis is uncertain.'
        "</evidence> [E2]\n2. <suggestion> [E1][E3]\n3. <suggestion>Target blood pressure: <suggestion> [E1]"
    )
    parsed = parse_reply(reply)
    assert [(s.text, s.citations) for s in parsed.suggestions] == [("Refer when the diagnosis is uncertain.", ("E2",))]
    assert not parse_reply("SUGGESTIONS:\n1. <suggestion> [E1]\n2. First-line options: [E2]").usable
