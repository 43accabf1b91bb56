"""Term life's component order is written once (`TERM_LIFE_OUTPUTS`): the shipped declaration
declares the same order, and the old store formats' orders are derived from it."""

from __future__ import annotations

from services.valuation.interface.declaration import TERM_LIFE_CASH_FLOWS, TERM_LIFE_OUTPUTS
from services.valuation.interface.parser import interface_of, outputs_of
from services.valuation.reference_model import term_life_declaration


def test_the_shipped_declaration_declares_term_lifes_outputs_in_that_order() -> None:
    outputs = interface_of({"interface": term_life_declaration()}).output_list
    assert outputs.names == TERM_LIFE_OUTPUTS
    assert outputs.primary_name == "net_cf" == TERM_LIFE_OUTPUTS[-1]
    assert TERM_LIFE_CASH_FLOWS == ("premiums", "claims", "expenses", "commissions")


def test_a_config_without_a_declaration_has_term_lifes_outputs() -> None:
    assert outputs_of({}) == interface_of({"interface": term_life_declaration()}).output_list
