"""Term life's component order is written once (`TERM_LIFE_OUTPUTS`): the shipped declaration
declares the same order, and the old store formats' orders are derived from it."""

from __future__ import annotations

import copy

from services.valuation.interface.declaration import TERM_LIFE_CASH_FLOWS, TERM_LIFE_OUTPUTS
from services.valuation.interface.parser import interface_of, outputs_of, parse_interface
from services.valuation.reference_model import savings_declaration, term_life_declaration


def test_the_shipped_declaration_declares_term_lifes_outputs_in_that_order() -> None:
    outputs = interface_of({"interface": term_life_declaration()}).output_list
    assert outputs.names == TERM_LIFE_OUTPUTS
    assert outputs.primary_name == "net_cf" == TERM_LIFE_OUTPUTS[-1]
    assert TERM_LIFE_CASH_FLOWS == ("premiums", "claims", "expenses", "commissions")


def test_a_config_without_a_declaration_has_term_lifes_outputs() -> None:
    assert outputs_of({}) == interface_of({"interface": term_life_declaration()}).output_list


def test_outputs_say_which_are_monthly_in_declared_order() -> None:
    """Every shipped output is a cash flow by month; `Outputs.monthly` indexes them in order."""
    term_life = interface_of({"interface": term_life_declaration()}).output_list
    assert term_life.monthly == (0, 1, 2, 3, 4) and term_life.monthly_names == TERM_LIFE_OUTPUTS
    savings = interface_of({"interface": savings_declaration()}).output_list
    assert savings.monthly_names == savings.names and len(savings.names) == 9
    raw = copy.deepcopy(term_life_declaration())
    for output in raw["outputs"]:
        output.pop("monthly")
    raw["outputs"][1]["monthly"] = True
    assert interface_of({"interface": raw}).output_list.monthly_names == ("claims",)
    raw["outputs"][1]["monthly"] = "yes"
    _, issues = parse_interface(raw)
    assert any(i.where == "$.interface.outputs[1].monthly" and "true or false" in i.message for i in issues)
