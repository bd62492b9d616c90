from dataclasses import dataclass, field

import pytest

from tracemill.errors import ParamsError
from tracemill.params import choices, parse_section


@dataclass(frozen=True)
class Inner:
    k: int = 1
    temperature: float = 0.0


@dataclass(frozen=True)
class Outer:
    name: str = choices("a", "b", default="a")
    sampled: Inner = field(default_factory=lambda: Inner(k=16, temperature=0.6))
    items: list[Inner] = field(default_factory=list)


def test_partial_nested_override_keeps_the_sections_own_defaults():
    p = parse_section(Outer, {"sampled": {"k": 4}}, "outer")
    assert p.sampled == Inner(k=4, temperature=0.6)


def test_lists_of_sections_and_int_to_float():
    p = parse_section(Outer, {"items": [{"k": 2, "temperature": 1}]}, "outer")
    assert p.items == [Inner(k=2, temperature=1.0)] and isinstance(p.items[0].temperature, float)


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"nme": "a"}, r"'outer.nme' is not a known key; allowed: items, name, sampled"),
        ({"name": "c"}, r"'outer.name' = 'c' is not allowed; choose one of: a, b"),
        ({"sampled": {"k": "many"}}, r"'outer.sampled.k' = 'many' must be of type int"),
        ({"items": [{"k": True}]}, r"'outer.items\[0\].k' = True must be of type int"),
    ],
)
def test_bad_values_name_the_full_key(raw, message):
    with pytest.raises(ParamsError, match=message):
        parse_section(Outer, raw, "outer")
