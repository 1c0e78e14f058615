"""Reads about members shaped for pages: the counter's one search box."""

import re

from django.core.exceptions import ValidationError
from django.db.models import Q

from members import services
from members.models import Member

CARD_CODE = re.compile(r"^[0-9A-HJKMNP-TV-Z]{16}$")
MEMBER_NUMBER = re.compile(r"^\d{10}$")
PHONE_TAIL = re.compile(r"^\d{4,6}$")


def members_search(query: str, *, limit: int = 20) -> list[Member]:
    """Find members by whatever the counter was given: phone (any local format, or its last
    digits), e-mail, member number, a scanned card code, or part of a name.

    An exact identifier answers alone; otherwise name and phone-tail matches, best first.
    """
    query = " ".join(query.replace("\x00", "").split())[:100]
    if not query:
        return []
    compact = query.replace(" ", "").replace("-", "")
    if MEMBER_NUMBER.match(compact) and (found := list(Member.objects.filter(member_number=compact))):
        return found
    if CARD_CODE.match(compact.upper()) and (found := list(Member.objects.filter(card_code=compact.upper()))):
        return found
    if "@" in query:
        return list(Member.objects.with_email(query)[:limit])
    try:
        phone = services.phone_normalise(query)
    except ValidationError:
        phone = None
    if phone and (found := list(Member.objects.filter(phone=phone))):
        return found
    matches = Q(name__icontains=query)
    if PHONE_TAIL.match(compact):
        matches |= Q(phone__endswith=compact)  # "the last four digits of your phone?"
    return list(Member.objects.filter(matches).order_by("name", "pk")[:limit])
