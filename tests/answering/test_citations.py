from rag.answering.citations import attribute_quotes, parse_reply


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


def test_a_line_of_keys_cut_off_by_the_token_cap_is_not_a_suggestion() -> None:
    # The 1.5B model copied the format's placeholder and then ran keys to the new-token cap.
    runaway = "SUGGESTIONS:\n1. <suggestion> " + "".join(f"[E{n}]" for n in range(1, 32)) + "[E"
    parsed = parse_reply(runaway)
    assert parsed.suggestions == () and not parsed.usable
    cut = parse_reply("SUGGESTIONS:\n1. Nitrofurantoin for 5 days [E1]\n2. Pivmecillinam for 3 days [E2][E")
    assert [(s.text, s.citations) for s in cut.suggestions] == [
        ("Nitrofurantoin for 5 days", ("E1",)),
        ("Pivmecillinam for 3 days", ("E2",)),
    ]
    assert not parse_reply("1. [E1] - [E2]\n2. 5 [E3]").usable  # keys, dashes and a number say nothing


def test_only_word_for_word_quotes_without_keys_are_attributed() -> None:
    passages = {
        "E1": "Tay-Sachs disease: Anticonvulsant medicine may initially control seizures. Children may need a tube.",
        "E2": "Tay-Sachs (genetics): Anticonvulsant medicine may initially control seizures in infants.",
        "E3": "Rest helps.",
    }
    reply = parse_reply(
        "SUGGESTIONS:\n1. Anticonvulsant medicine may initially control seizures.\n"
        "2. Tay-Sachs disease: Children may need a tube.\n"  # not contiguous in E1: a stitched quote is not one
        "3. Anticonvulsant medicines may control seizures early.\n"  # a paraphrase
        "4. Rest helps.\n"  # too short to name its source
        "5. Children may need a tube. [E3]"  # cited by the model: left as cited
    )
    attributed = attribute_quotes(reply, passages)
    assert [(s.citations, s.attributed) for s in attributed.suggestions] == [
        (("E1", "E2"), True),
        ((), False),
        ((), False),
        ((), False),
        (("E3",), False),
    ]
    uncited = parse_reply("1. Anticonvulsant medicine may initially control seizures.")
    assert not uncited.usable and attribute_quotes(uncited, passages).usable  # the engine need not fall back
    assert not attribute_quotes(parse_reply("1. Anticonvulsants may help."), passages).usable
    assert attribute_quotes(parse_reply("INSUFFICIENT EVIDENCE"), passages).abstained
