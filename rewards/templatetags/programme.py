"""Template filters for the programme's figures: money in its currency, points, tier measures."""

from decimal import Decimal

from django import template

from rewards.explanations import points_text
from rewards.money import format_money
from rewards.services import programme_get

register = template.Library()


@register.filter
def money(amount: Decimal | str | int | None) -> str:
    """Format an amount in the programme currency for the reader's locale: ¥42.00, NT$120, ₩5,000."""
    return "" if amount is None else format_money(amount, programme_get().currency)


@register.filter
def grouped(value: int | None) -> str:
    """Write a whole number with thousands grouped as every page does (1,200), whatever the locale's own setting."""
    return "" if value is None else f"{int(value):,}"


@register.filter
def points(value: int | None) -> str:
    """Write a number of points as the reader says it: 1 pt, 1,200 pts."""
    return "" if value is None else points_text(int(value))
