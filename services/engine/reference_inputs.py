"""term_life's declared inputs and the numpy twin's typed arguments, each made from the other.

The engine runs every model through its declaration (`Records`, `Assets`); the built-in
``python://term_life`` node (services.engine.reference) takes `Policies` and `Assumptions`.
These converters join the two, so the twin is a node like any other, and tests and benchmarks
can build a run from term-life objects.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from services.valuation.assumptions import Assumptions
from services.valuation.interface.declaration import ModelInterface
from services.valuation.interface.parser import interface_of
from services.valuation.interface.records import Records
from services.valuation.interface.tables import Assets, TableData
from services.valuation.policies import Policies
from services.valuation.reference_model import term_life_declaration
from services.valuation.scenarios import ScenarioParams

if TYPE_CHECKING:
    from services.engine.pipeline import RunInputs


@cache
def term_life_interface() -> ModelInterface:
    """The shipped term_life declaration, parsed."""
    return interface_of({"interface": term_life_declaration()})


def term_life_arguments(records: Records, assets: Assets, interface: ModelInterface) -> tuple[Policies, Assumptions]:
    """The numpy twin's arguments from a run of a term_life declaration."""
    c = records.columns
    policies = Policies(
        policy_id=c["policy_id"],
        age_at_entry=c["age_at_entry"],
        female=c["sex"].astype(np.int8),
        policy_term=c["policy_term"],
        policy_count=c["policy_count"],
        sum_assured=c["sum_assured"],
        duration_mth=c["duration_mth"],
        premium_pp=c["premium_pp"],
    )
    tables = {t.name: t for t in assets.tables}
    params = {p.name: float(v) for p, v in zip(interface.parameters, assets.parameters, strict=True)}
    assumptions = Assumptions(
        mortality=tables["mortality"].values,
        mortality_min_age=tables["mortality"].origin[0],
        lapse=tables["lapse"].values,
        curve=tables["curve"].values,
        **params,
    )
    return policies, assumptions


def term_life_records(policies: Policies, assets: Assets, interface: ModelInterface | None = None) -> Records:
    """``policies`` as records of the term_life declaration (every rule checked again, coverage
    of ``assets``' tables included)."""
    interface = interface or term_life_interface()
    table = pa.table({
        "policy_id": policies.policy_id,
        "age_at_entry": policies.age_at_entry.astype(np.int64),
        "sex": policies.female.astype(np.int64),
        "policy_term": policies.policy_term.astype(np.int64),
        "policy_count": policies.policy_count,
        "sum_assured": policies.sum_assured,
        "duration_mth": policies.duration_mth.astype(np.int64),
        "premium_pp": pa.array(policies.premium_pp, mask=np.isnan(policies.premium_pp)),  # NaN: to compute
    })  # fmt: skip
    return Records.from_table(table, interface, assets.bounds)


def term_life_assets(assumptions: Assumptions, interface: ModelInterface | None = None) -> Assets:
    """``assumptions`` as the tables and parameters of the term_life declaration."""
    interface = interface or term_life_interface()
    a = assumptions
    tables = (
        TableData("mortality", a.mortality, (a.mortality_min_age, 0)),
        TableData("lapse", a.lapse, (0,)),
        TableData("curve", a.curve, (0,)),
    )
    bounds: dict[tuple[str, str, str], float] = {}
    for table, axes in zip(tables, (("age", "select_year"), ("policy_year",), ("year",)), strict=True):
        for axis, first, size in zip(axes, table.origin, table.values.shape, strict=True):
            bounds[(table.name, axis, "first")] = float(first)
            bounds[(table.name, axis, "size")] = float(size)
            bounds[(table.name, axis, "last")] = float(first + size - 1)
    parameters = tuple(float(getattr(a, p.name)) for p in interface.parameters)
    return Assets(tables=tables, parameters=parameters, bounds=bounds)


def term_life_inputs(
    policies: Policies, assumptions: Assumptions, scenarios: ScenarioParams, *, first_row: int = 0
) -> RunInputs:
    """A pipeline run of the shipped term_life declaration from term-life objects."""
    from services.engine.pipeline import RunInputs  # noqa: PLC0415 - the pipeline imports this module

    interface = term_life_interface()
    assets = term_life_assets(assumptions, interface)
    return RunInputs(
        interface=interface,
        records=term_life_records(policies, assets, interface),
        assets=assets,
        scenarios=scenarios,
        first_row=first_row,
    )
