"""Money is whole minor units and an ISO currency: floats, bools and fractional
Decimals are refused, currencies never mix, and what is displayed parses back
to the same paise."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dues.errors import CurrencyMismatch, InvalidAmount
from dues.money import Money, format_money, minor_digits, parse_money


@pytest.mark.parametrize("amount", [1.0, 0.1, 150.5, float("nan"), float("inf"), True, False, Decimal("1.5"),
                                    Decimal("NaN"), Decimal("Infinity"), "100", None, 3 + 0j])
def test_amounts_that_are_not_whole_minor_units_are_refused(amount):
    with pytest.raises(InvalidAmount):
        Money(amount)


def test_whole_decimals_become_ints():
    money = Money(Decimal("15000"))
    assert money == Money(15000) and type(money.amount_minor) is int


@pytest.mark.parametrize("currency", ["inr", "IN", "INRR", "XYZ", "", None, 356, "₹"])
def test_currency_must_be_an_upper_case_iso_4217_code(currency):
    with pytest.raises(CurrencyMismatch):
        Money(100, currency)


def test_default_currency_is_inr_and_money_is_immutable():
    money = Money(100)
    assert money.currency == "INR"
    with pytest.raises(dataclasses.FrozenInstanceError):
        money.amount_minor = 200  # type: ignore[misc]


def test_arithmetic_within_one_currency():
    assert Money(150) + Money(50) == Money(200)
    assert Money(150) - Money(200) == Money(-50)
    assert -Money(150) == Money(-150)
    assert Money(15000) * 3 == 3 * Money(15000) == Money(45000)
    assert Money(1) < Money(2) <= Money(2) and Money(3) > Money(2) >= Money(2)
    assert Money(100, "USD") != Money(100, "INR")  # equality may differ; only arithmetic and order refuse


@pytest.mark.parametrize("op", [lambda a, b: a + b, lambda a, b: a - b, lambda a, b: a < b, lambda a, b: a >= b])
def test_mixing_currencies_is_refused(op):
    with pytest.raises(CurrencyMismatch):
        op(Money(100, "INR"), Money(100, "USD"))


@pytest.mark.parametrize("other", [1, 1.5, Decimal(1)])
def test_adding_a_bare_number_is_refused(other):
    with pytest.raises(TypeError):
        Money(100) + other  # noqa: B018


@pytest.mark.parametrize("factor", [1.5, 2.0, True])
def test_multiplying_by_anything_but_an_int_is_refused(factor):
    with pytest.raises(InvalidAmount):
        Money(100) * factor  # noqa: B018


def test_json_form():
    assert Money(15000).as_json() == {"amount_minor": 15000, "currency": "INR"}
    assert Money.from_json({"amount_minor": 15000, "currency": "INR"}) == Money(15000)
    with pytest.raises(InvalidAmount):
        Money.from_json({"amount_minor": 150.0, "currency": "INR"})
    with pytest.raises(InvalidAmount):
        Money.from_json([15000, "INR"])


@pytest.mark.parametrize("text,minor", [("150", 15000), ("150.5", 15050), ("₹1,50,000.50", 15000050),
                                        ("Rs. 20", 2000), (" 0.01 ", 1), ("-12.00", -1200)])
def test_parse(text, minor):
    assert parse_money(text) == Money(minor)


@pytest.mark.parametrize("text", ["1.234", "abc", "", "1.2.3", "1e3", "--1", "150 rupees"])
def test_parse_refuses_what_is_not_an_amount(text):
    with pytest.raises(InvalidAmount):
        parse_money(text)


def test_currency_decimals_come_from_iso_4217():
    assert (minor_digits("INR"), minor_digits("JPY"), minor_digits("BHD")) == (2, 0, 3)
    assert parse_money("500", "JPY") == Money(500, "JPY")
    with pytest.raises(InvalidAmount):
        parse_money("500.5", "JPY")


def test_format_shows_rupees_with_indian_grouping():
    assert format_money(Money(15000050)) == "₹1,50,000.50"
    assert format_money(Money(-1500)) == "-₹15.00"
    assert str(Money(5)) == "₹0.05"


@given(st.integers(min_value=-10**15, max_value=10**15))
def test_display_parses_back_to_the_same_paise(minor):
    assert parse_money(format_money(Money(minor))) == Money(minor)
