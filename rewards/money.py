"""Amounts of money in the programme currency: minor units and locale-aware display."""

import copy
from decimal import ROUND_HALF_UP, Decimal

from babel import Locale
from babel.core import get_global
from babel.numbers import list_currencies
from django.utils import translation

CURRENCY_CHOICES = sorted((code, code) for code in list_currencies())


def minor_units(currency: str) -> int:
    """Return the decimals a currency is counted in at a shop counter (CLDR cash digits).

    TWD and KRW have none in practice, CNY and HKD have two.
    """
    fractions = get_global("currency_fractions")
    return int(fractions.get(currency, fractions["DEFAULT"])[2])


def quantize(amount: Decimal, currency: str) -> Decimal:
    return amount.quantize(Decimal(1).scaleb(-minor_units(currency)), rounding=ROUND_HALF_UP)


def babel_locale(language: str | None = None) -> Locale:
    code = (language or translation.get_language() or "en").lower()
    return Locale.parse({"zh-hans": "zh_Hans_CN", "zh-hant": "zh_Hant_TW", "ko": "ko_KR"}.get(code, "en"))


def format_money(amount: Decimal | str | int, currency: str, language: str | None = None, *, whole: bool = False) -> str:
    """Format an amount as a customer of this locale reads it: ¥42.00, NT$120, ₩5,000.

    `whole` drops the minor units, for a unit price such as "1 pt per ¥1".
    """
    locale = babel_locale(language)
    digits = 0 if whole else minor_units(currency)
    pattern = copy.copy(locale.currency_formats["standard"])
    pattern.frac_prec = (digits, digits)
    return pattern.apply(
        Decimal(amount).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP),
        locale,
        currency=currency,
        currency_digits=False,
    )
