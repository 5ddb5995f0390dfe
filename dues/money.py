"""Money: a whole number of minor units (paise) and an ISO 4217 currency code.

Floats never touch money: 0.1 + 0.2 is not 0.3, and a rupee that rounds away is
a rupee the union cannot account for. `Money` refuses floats, bools and
fractional Decimals, and refuses to add, subtract or compare amounts in
different currencies. Parsing and display (₹1,50,000.50, with Indian digit
grouping by default) go through Babel, which knows each currency's decimals.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from babel.numbers import format_currency, get_currency_precision, is_currency

from dues.errors import CurrencyMismatch, InvalidAmount

DEFAULT_CURRENCY = "INR"
_CODE = re.compile(r"[A-Z]{3}")
_NUMBER = re.compile(r"-?\d+(\.\d+)?")
# What people type around a number: currency symbols, digit grouping (1,50,000), spaces.
_DECORATION = re.compile(r"[₹$€£,\s\u00a0\u202f]|^(Rs\.?|INR)", re.IGNORECASE)


def check_currency(code: object) -> str:
    """Return `code` if it is an upper-case ISO 4217 currency code Babel knows, else raise."""
    if not isinstance(code, str) or not _CODE.fullmatch(code) or not is_currency(code):
        raise CurrencyMismatch(f"not an ISO 4217 currency code: {code!r}", field="currency")
    return code


def minor_digits(currency: str) -> int:
    """How many decimal places the currency has (INR 2, JPY 0, BHD 3)."""
    return get_currency_precision(check_currency(currency))


def _whole(value: object) -> int:
    # bool is an int subclass; True paise is a bug, not an amount.
    if isinstance(value, bool):
        raise InvalidAmount("an amount must be a whole number of minor units, not a bool", field="amount_minor")
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        return int(value)
    raise InvalidAmount(f"an amount must be a whole number of minor units, not {value!r}", field="amount_minor")


@dataclass(frozen=True, slots=True)
class Money:
    amount_minor: int
    currency: str = DEFAULT_CURRENCY

    def __post_init__(self) -> None:
        object.__setattr__(self, "amount_minor", _whole(self.amount_minor))
        check_currency(self.currency)

    @classmethod
    def zero(cls, currency: str = DEFAULT_CURRENCY) -> Money:
        return cls(0, currency)

    @classmethod
    def from_json(cls, data: object) -> Money:
        """Read DESIGN §5's `{"amount_minor": int, "currency": "INR"}` (JSON 100.0 is a float: refused)."""
        if not isinstance(data, dict) or "amount_minor" not in data:
            raise InvalidAmount("money must be an object with amount_minor and currency", field="amount_minor")
        return cls(data["amount_minor"], data.get("currency", DEFAULT_CURRENCY))

    def as_json(self) -> dict:
        return {"amount_minor": self.amount_minor, "currency": self.currency}

    def _same_currency(self, other: object) -> Money:
        if not isinstance(other, Money):
            raise TypeError(f"cannot combine Money with {type(other).__name__}")
        if other.currency != self.currency:
            raise CurrencyMismatch(f"cannot combine {self.currency} with {other.currency}", field="currency")
        return other

    def __add__(self, other: Money) -> Money:
        return Money(self.amount_minor + self._same_currency(other).amount_minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        return Money(self.amount_minor - self._same_currency(other).amount_minor, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount_minor, self.currency)

    def __mul__(self, times: int) -> Money:
        # Months times a monthly rate; a float factor would bring rounding back in.
        return Money(self.amount_minor * _whole(times), self.currency)

    __rmul__ = __mul__

    def __lt__(self, other: Money) -> bool:
        return self.amount_minor < self._same_currency(other).amount_minor

    def __le__(self, other: Money) -> bool:
        return self.amount_minor <= self._same_currency(other).amount_minor

    def __gt__(self, other: Money) -> bool:
        return self.amount_minor > self._same_currency(other).amount_minor

    def __ge__(self, other: Money) -> bool:
        return self.amount_minor >= self._same_currency(other).amount_minor

    def major(self) -> Decimal:
        """The amount in major units, exactly (15050 paise → Decimal('150.50'))."""
        return Decimal(self.amount_minor).scaleb(-minor_digits(self.currency))

    def __str__(self) -> str:
        return format_money(self)


def parse_money(text: str, currency: str = DEFAULT_CURRENCY) -> Money:
    """Read an amount in major units as people write it ("150", "₹1,50,000.50", "Rs 20")."""
    if not isinstance(text, str):
        raise InvalidAmount(f"not an amount: {text!r}", field="amount")
    digits = minor_digits(currency)
    cleaned = _DECORATION.sub("", text.strip())
    if not _NUMBER.fullmatch(cleaned):
        raise InvalidAmount(f"not an amount: {text!r}", field="amount")
    try:
        minor = Decimal(cleaned).scaleb(digits)
    except InvalidOperation as exc:  # pragma: no cover - the pattern above admits only numbers
        raise InvalidAmount(f"not an amount: {text!r}", field="amount") from exc
    if minor != minor.to_integral_value():
        raise InvalidAmount(f"{currency} has {digits} decimal places: {text!r}", field="amount")
    return Money(int(minor), currency)


def format_money(money: Money, locale: str = "en_IN") -> str:
    """For display: paise as rupees in the reader's locale (₹1,50,000.50 in en_IN)."""
    return format_currency(money.major(), money.currency, locale=locale)
