"""Proving that a membership enrolled at the counter is yours, before a login is linked to it.

Two proofs, never a guess: a one-time code texted to the membership's phone, or the member
number together with the membership's e-mail address when the login has verified that
address. Codes are kept hashed in the cache every web process shares, for ten minutes, with
five tries; each login and each phone number gets three codes an hour. Every limit counts
in slots taken with `cache.add`, which is atomic in every cache backend, so concurrent
requests cannot squeeze in extra tries.
"""

import logging
import re
import secrets

from allauth.account.models import EmailAddress
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.utils import translation
from django.utils.crypto import constant_time_compare, salted_hmac
from django.utils.translation import gettext as _

from members import notifications, services
from members.models import Member, User

logger = logging.getLogger(__name__)

CODE_SECONDS = 10 * 60
CODE_TRIES = 5
CODES_PER_HOUR = 3
NUMBER_TRIES_PER_HOUR = 5
HOUR = 60 * 60


def _slot_take(prefix: str, limit: int, seconds: int) -> bool:
    """Take one of `limit` uses, each freed `seconds` after it was taken; False when all are in use."""
    return any(cache.add(f"{prefix}:{slot}", 1, seconds) for slot in range(limit))


def _code_key(user: User) -> str:
    return f"members:claim_code:{user.pk}"


def _code_digest(user: User, nonce: str, code: str) -> str:
    # Keyed with the secret key, so the cache never holds anything a code can be worked back from.
    return salted_hmac("members.claim_code", f"{user.pk}:{nonce}:{code}").hexdigest()


def claim_code_send(*, user: User, phone: str) -> None:
    """Text a one-time code to this phone if a membership has it, answering alike whether one does or not."""
    phone_e164 = services.phone_normalise(phone)
    too_many = ValidationError({"phone": _("Too many codes were asked for. Please try again in an hour.")}, code="throttled")
    if not _slot_take(f"members:claim_sent:user:{user.pk}", CODES_PER_HOUR, HOUR):
        raise too_many
    if not _slot_take(f"members:claim_sent:phone:{phone_e164}", CODES_PER_HOUR, HOUR):
        raise too_many
    member = Member.objects.filter(phone=phone_e164).only("pk", "language").first()
    code, nonce = f"{secrets.randbelow(10**6):06d}", secrets.token_hex(8)
    challenge = {"phone": phone_e164, "member": member.pk if member else None, "nonce": nonce}
    cache.set(_code_key(user), {**challenge, "digest": _code_digest(user, nonce, code)}, CODE_SECONDS)
    if member is None:
        return
    with translation.override(member.language):
        text = _("Your code to claim your membership is %(code)s. It is valid for 10 minutes; never share it.") % {"code": code}
    try:
        notifications.sms_backend().send(phone=phone_e164, text=text)
    except OSError:
        # Answering differently would say that this number is a member's.
        logger.exception("claim code not sent")


def claim_code_pending(*, user: User) -> str | None:
    """Return the phone number a code was last asked for, while that code is valid."""
    challenge = cache.get(_code_key(user))
    return challenge["phone"] if challenge else None


def claim_code_check(*, user: User, code: str) -> Member:
    """Return the membership whose phone was texted this code; a code works once, and for five tries at most."""
    challenge = cache.get(_code_key(user))
    expired = ValidationError({"code": _("This code has expired. Please ask for a new one.")}, code="expired")
    if challenge is None:
        raise expired
    if not _slot_take(f"members:claim_try:{user.pk}:{challenge['nonce']}", CODE_TRIES, CODE_SECONDS):
        cache.delete(_code_key(user))
        raise ValidationError({"code": _("Too many wrong codes. Please ask for a new one.")}, code="exhausted")
    digest = _code_digest(user, challenge["nonce"], code.strip())
    if challenge["member"] is None or not constant_time_compare(challenge["digest"], digest):
        raise ValidationError({"code": _("This is not the code we sent.")}, code="wrong")
    # Deleting is what uses the code up: of two requests with it, one finds it gone.
    if not cache.delete(_code_key(user)):
        raise expired
    member = Member.objects.filter(pk=challenge["member"], phone=challenge["phone"]).first()
    if member is None:  # the number moved to another membership in the meantime
        raise expired
    return member


def claim_by_number(*, user: User, member_number: str, email: str) -> Member:
    """Return the membership with this number and e-mail address, when the login has verified that address."""
    email = services.email_normalise(email)
    number = re.sub(r"[\s-]", "", member_number)
    if not _slot_take(f"members:claim_number:{user.pk}", NUMBER_TRIES_PER_HOUR, HOUR):
        raise ValidationError(_("Too many tries. Please try again in an hour."), code="throttled")
    member = Member.objects.filter(member_number=number).first() if services.member_number_is_valid(number) else None
    verified = EmailAddress.objects.filter(user=user, verified=True, email__iexact=email).exists()
    # One answer for every mismatch: it must not tell whether a member number exists.
    if member is None or member.email.lower() != email or not verified:
        raise ValidationError(
            _("This member number and e-mail address do not match a membership you can claim."), code="no_match"
        )
    return member
