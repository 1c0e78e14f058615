"""Writes for members: enrolment, profile and consent changes."""

import datetime as dt
import hashlib
import hmac
import secrets
import time

import phonenumbers
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from members.models import ApiKey, ConsentRecord, Member, Store, User

EMAIL_LENGTH = 254


class DuplicateMember(ValidationError):
    """The phone, e-mail or external reference already belongs to another member."""

    def __init__(self, *, field: str, existing: Member):
        self.field = field
        self.existing = existing
        super().__init__(
            {field: _("This belongs to member %(number)s already.") % {"number": existing.member_number}},
            code="duplicate",
        )


def phone_normalise(raw: str, *, region: str | None = None) -> str:
    """Return the E.164 form of a phone number typed in any common local format."""
    try:
        number = phonenumbers.parse(raw, region or settings.PHONENUMBER_DEFAULT_REGION)
    except phonenumbers.NumberParseException:
        number = None
    if number is None or not phonenumbers.is_valid_number(number):
        raise ValidationError({"phone": _("Enter a valid phone number.")}, code="invalid")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def email_normalise(raw: str) -> str:
    """Return an e-mail address lower-cased, as it is stored and compared (by LOWER in the index)."""
    email = raw.strip().lower()
    try:
        validate_email(email)
    except ValidationError:
        raise ValidationError({"email": _("Enter a valid e-mail address.")}, code="invalid") from None
    if len(email) > EMAIL_LENGTH:
        raise ValidationError({"email": _("Use at most %(max)s characters.") % {"max": EMAIL_LENGTH}}, code="invalid")
    return email


def _luhn_digit(digits: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return str((10 - total % 10) % 10)


def member_number_new() -> str:
    # Ten digits, the last a Luhn check digit, so a mistyped number is caught at the counter.
    body = str(secrets.randbelow(9 * 10**8) + 10**8)
    return body + _luhn_digit(body)


def member_number_is_valid(number: str) -> bool:
    return len(number) == 10 and number.isdigit() and _luhn_digit(number[:-1]) == number[-1]


def _find_duplicate(*, phone: str | None, email: str, external_ref: str, exclude: int | None = None) -> None:
    others = Member.objects.exclude(pk=exclude) if exclude else Member.objects.all()
    for field, value in (("phone", phone), ("email", email), ("external_ref", external_ref)):
        matching = others.with_email(value) if field == "email" else others.filter(**{field: value})
        if value and (existing := matching.first()):
            raise DuplicateMember(field=field, existing=existing)


@transaction.atomic
def member_enrol(
    *,
    channel: str,
    phone: str = "",
    email: str = "",
    name: str = "",
    birthday: dt.date | None = None,
    gender: str = "",
    language: str = Member.Language.ENGLISH,
    external_ref: str = "",
    store: Store | None = None,
    by: User | None = None,
    email_consent: bool = False,
    sms_consent: bool = False,
    enrolled_at: dt.datetime | None = None,
    user: User | None = None,
) -> Member:
    """Enrol a new member with at least a phone number or an e-mail address; `user` is their login, if any."""
    phone_e164 = phone_normalise(phone) if phone.strip() else None
    email = email_normalise(email) if email.strip() else ""
    if phone_e164 is None and not email:
        raise ValidationError({"phone": _("A phone number or an e-mail address is required.")}, code="required")
    if birthday and birthday > timezone.localdate():
        raise ValidationError({"birthday": _("The birthday cannot be in the future.")}, code="invalid")
    if gender and gender not in Member.Gender.values:
        raise ValidationError({"gender": _("Choose a valid gender.")}, code="invalid")
    if channel not in Member.Channel.values:
        raise ValidationError({"channel": _("Choose a valid enrolment channel.")}, code="invalid")
    external_ref = external_ref.strip()
    _find_duplicate(phone=phone_e164, email=email, external_ref=external_ref)
    now = timezone.now()
    member = Member(
        phone=phone_e164,
        email=email,
        name=name.strip(),
        birthday=birthday,
        gender=gender,
        language=language,
        external_ref=external_ref.strip(),
        enrolment_channel=channel,
        enrolled_store=store,
        preferred_store=store,
        enrolled_by=by,
        enrolled_at=enrolled_at or now,
        user=user,
    )
    for _attempt in range(5):
        member.member_number = member_number_new()
        try:
            with transaction.atomic():
                member.save()
            break
        except IntegrityError:
            # A concurrent enrolment with the same phone or e-mail wins the unique index;
            # report it as the duplicate it is. Otherwise the random number collided: retry.
            _find_duplicate(phone=phone_e164, email=email, external_ref=external_ref)
    else:
        raise RuntimeError("could not allocate a unique member number")
    for channel_name, granted in (("email", email_consent), ("sms", sms_consent)):
        if granted:
            member_consent_set(member=member, channel=channel_name, granted=True, source=channel, by=by)
    return member


@transaction.atomic
def member_consent_set(*, member: Member, channel: str, granted: bool, source: str, by: User | None = None) -> Member:
    """Record a marketing consent given or withdrawn for one channel."""
    if channel not in ConsentRecord.Channel.values:
        raise ValidationError({"channel": _("Choose a valid channel.")}, code="invalid")
    now = timezone.now()
    setattr(member, f"{channel}_consent", granted)
    setattr(member, f"{channel}_consent_at", now)
    member.save(update_fields=[f"{channel}_consent", f"{channel}_consent_at", "updated_at"])
    ConsentRecord.objects.create(member=member, channel=channel, granted=granted, recorded_at=now, source=source, recorded_by=by)
    return member


def _key_hash(raw_key: str) -> str:
    # Keys carry 190 random bits, so a plain SHA-256 is enough: nothing to brute-force.
    return hashlib.sha256(raw_key.encode()).hexdigest()


def api_key_create(
    *, store: Store, name: str, by: User | None = None, requests_per_minute: int | None = None
) -> tuple[ApiKey, str]:
    """Create a key for a store; return it with the secret, which is shown once and never stored."""
    if not name.strip():
        raise ValidationError({"name": _("Name the till or shop that will use this key.")})
    prefix = secrets.token_hex(4)
    raw_key = f"lk_{prefix}_{secrets.token_urlsafe(24)}"
    key = ApiKey.objects.create(
        store=store,
        name=name.strip(),
        prefix=prefix,
        key_hash=_key_hash(raw_key),
        created_by=by,
        **({"requests_per_minute": requests_per_minute} if requests_per_minute else {}),
    )
    return key, raw_key


# Every till request carries its key; remembering recent keys per process saves a query on
# each. A revocation here takes effect at once; in the other web processes within this time.
API_KEY_CACHE_SECONDS = 5.0
_recent_keys: dict[str, tuple[float, ApiKey]] = {}


def api_key_authenticate(raw_key: str) -> ApiKey | None:
    """Return the active key for a secret, noting when it was last used, or None."""
    parts = raw_key.split("_", 2)
    if len(parts) != 3 or parts[0] != "lk":
        return None
    prefix, now = parts[1], timezone.now()
    fetched_at, key = _recent_keys.get(prefix, (0.0, None))
    if key is None or time.monotonic() - fetched_at > API_KEY_CACHE_SECONDS:
        key = ApiKey.objects.active().select_related("store").filter(prefix=prefix).first()
        if key is None:
            _recent_keys.pop(prefix, None)
            return None
        _recent_keys[prefix] = (time.monotonic(), key)
    if not hmac.compare_digest(key.key_hash, _key_hash(raw_key)):
        return None
    # Recording every request would make the key row the hottest in the database.
    if key.last_used_at is None or now - key.last_used_at > dt.timedelta(minutes=1):
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key


def api_key_revoke(*, key: ApiKey) -> ApiKey:
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
    _recent_keys.pop(key.prefix, None)
    return key


def _free_member_numbers(count: int) -> list[str]:
    """Draw member numbers that no member has yet (random, so a batch needs a check)."""
    numbers: set[str] = set()
    while len(numbers) < count:
        candidates = {member_number_new() for _ in range(count - len(numbers))} - numbers
        numbers |= candidates - set(Member.objects.filter(member_number__in=candidates).values_list("member_number", flat=True))
    return list(numbers)


@transaction.atomic
def members_enrol_bulk(*, people: list[dict[str, object]], channel: str, store: Store | None = None) -> list[Member]:
    """Enrol many members, already validated and free of duplicates, in one INSERT."""
    numbers = _free_member_numbers(len(people))
    now = timezone.now()
    members = [
        Member(
            member_number=number,
            enrolment_channel=channel,
            enrolled_store=store,
            preferred_store=store,
            enrolled_at=now,
            **person,
        )
        for number, person in zip(numbers, people, strict=True)
    ]
    return Member.objects.bulk_create(members, batch_size=2000)
