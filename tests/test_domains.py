"""The 16 domain specs against the table of CONTRACTS.md section 2, and the typed accessors built on them."""

from __future__ import annotations

import inspect
import typing

import pytest

from persist_core import errors
from persist_core.domains import CANDLE_STEPS_MS, DOMAINS, CandleInterval, Kind, Missing, ValueKind, domain
from persist_core.persist import ModeStores

# CONTRACTS.md section 2, copied by hand: the specs must agree with the document, not with themselves.
TABLE = {
    "signal": (("symbol", "strategy_name", "exchange_name"), None, None),
    "schedule": (("symbol", "strategy_name", "exchange_name"), None, None),
    "strategy": (("symbol", "strategy_name", "exchange_name"), None, None),
    "risk": (("risk_name", "exchange_name"), None, {}),
    "partial": (("symbol", "strategy_name", "exchange_name"), "signal_id", {}),
    "breakeven": (("symbol", "strategy_name", "exchange_name"), "signal_id", {}),
    "candle": (("symbol", "interval", "exchange_name"), "timestamp", None),
    "storage": (("backtest",), "signal_id", []),
    "notification": (("backtest",), "notification_id", []),
    "log": ((), "entry_id", []),
    "measure": (("bucket",), "entry_key", None),
    "interval": (("bucket",), "entry_key", None),
    "memory": (("signal_id", "bucket_name"), "memory_id", None),
    "recent": (("symbol", "strategy_name", "exchange_name", "frame_name", "backtest"), None, None),
    "state": (("signal_id", "bucket_name"), None, None),
    "session": (("strategy_name", "exchange_name", "frame_name", "symbol", "backtest"), None, None),
}


def test_sixteen_domains_in_contract_order() -> None:
    assert list(DOMAINS) == list(TABLE)


@pytest.mark.parametrize("name", TABLE)
def test_spec_matches_contract_table(name: str) -> None:
    context, item, missing = TABLE[name]
    spec = DOMAINS[name]
    assert tuple(f.name for f in spec.context) == context
    assert (spec.item.name if spec.item else None) == item
    assert spec.missing.make() == missing
    assert spec.table_name == f"{name}_items"
    assert spec.collection_name == f"{name}-items"
    assert spec.cache_prefix == f"{name}_cache"


def test_rules_live_in_the_specs() -> None:
    assert {n for n, s in DOMAINS.items() if s.first_write_wins} == {"candle", "log"}
    assert {n for n, s in DOMAINS.items() if s.soft_delete} == {"measure", "interval", "memory"}
    assert {n for n, s in DOMAINS.items() if s.kind is Kind.SLOT} == {
        "signal",
        "schedule",
        "strategy",
        "risk",
        "recent",
        "state",
        "session",
    }


@pytest.mark.parametrize("name", TABLE)
def test_typed_accessor_takes_exactly_the_context_fields(name: str) -> None:
    accessor = getattr(ModeStores, name)
    params = [p for p in inspect.signature(accessor).parameters.values() if p.name != "self"]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params)
    assert tuple(p.name for p in params) == tuple(f.name for f in DOMAINS[name].context)
    assert accessor.__doc__


# The static store type of each accessor (a type variable of persist._Stores) and the spec shape it stands for;
# tests/typing/user_bot_clean.py pins what each type reads.
SHAPES = {
    "_ObjectSlot": (Kind.SLOT, ValueKind.OBJECT, Missing.NONE),
    "_MappingSlot": (Kind.SLOT, ValueKind.OBJECT, Missing.MAPPING),
    "_ValueSlot": (Kind.SLOT, ValueKind.ANY, Missing.NONE),
    "_Keyed": (Kind.KEYED, ValueKind.OBJECT, Missing.MAPPING),
    "_Candle": (Kind.CANDLE, ValueKind.OBJECT, Missing.NONE),
    "_Collection": (Kind.COLLECTION, ValueKind.OBJECT, Missing.LIST),
    "_Bucket": (Kind.BUCKET, ValueKind.ANY, Missing.NONE),
}


def _store_type(function: object) -> str:
    returned = typing.get_type_hints(function)["return"]
    assert isinstance(returned, typing.TypeVar)
    return returned.__name__


@pytest.mark.parametrize("name", TABLE)
def test_accessor_static_type_matches_the_spec(name: str) -> None:
    spec = DOMAINS[name]
    assert SHAPES[_store_type(getattr(ModeStores, name))] == (spec.kind, spec.value_kind, spec.missing)


def test_store_overloads_agree_with_the_accessors() -> None:
    named: list[str] = []
    for overload in typing.get_overloads(ModeStores.store):
        literal = typing.get_type_hints(overload)["domain_name"]
        if literal is str:  # the fallback for a name known only at run time
            continue
        for name in typing.get_args(literal):
            named.append(name)
            assert _store_type(overload) == _store_type(getattr(ModeStores, name)), name
    assert sorted(named) == sorted(DOMAINS)


def test_candle_interval_literal_names_the_step_table() -> None:
    assert set(typing.get_args(CandleInterval)) == set(CANDLE_STEPS_MS)
    interval = next(f for f in DOMAINS["candle"].context if f.name == "interval")
    assert interval.choices == set(CANDLE_STEPS_MS)


def test_unknown_domain_is_a_configuration_error() -> None:
    with pytest.raises(errors.ConfigurationError, match="unknown domain 'signals'"):
        domain("signals")


def test_camel_names_follow_upstream() -> None:
    fields = {f.name: f.camel for spec in DOMAINS.values() for f in spec.key_fields}
    assert fields["strategy_name"] == "strategyName"
    assert fields["signal_id"] == "signalId"
    assert fields["symbol"] == "symbol"


def test_error_hierarchy_subclasses_builtins() -> None:
    assert issubclass(errors.InvalidKeyError, ValueError)
    assert issubclass(errors.InvalidValueError, ValueError)
    assert issubclass(errors.BackendUnavailableError, ConnectionError)
    assert issubclass(errors.SchemaBehindError, errors.SchemaError)
    assert issubclass(errors.SchemaAheadError, errors.SchemaError)
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.PersistError)
