"""Writes for members: enrolment, profile and consent changes."""

import datetime as dt
import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable, Sequence

import phonenumbers
from allauth.account.models import EmailAddress
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, connection, transaction
from django.utils import timezone, translation
from django.utils.crypto import salted_hmac
from django.utils.translation import gettext as _

from members import hooks, notifications
from members.models import ApiKey, Category, ConsentRecord, IdempotentRequest, Member, Store, User, new_card_code

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
    referral_code: str = "",
    ip: str | None = None,
    device: str = "",
) -> Member:
    """Enrol a new member with at least a phone number or an e-mail address; `user` is their login, if any.

    `referral_code`, `ip` and `device` are passed on to the enrolment hooks (referrals).
    """
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
    hooks.member_enrolled(hooks.MemberEnrolled(member=member, referral_code=referral_code.strip(), ip=ip, device=device, by=by))
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


@transaction.atomic
def members_update_bulk(*, members: Sequence[Member], fields: Sequence[str]) -> int:
    """Save `fields` of many members in one statement (an import's updates); return how many were saved.

    Django's bulk_update builds a CASE of every row for every field: for 100,000 members it spent a
    minute in Python alone. Here the values are copied into a staging table and applied with one
    UPDATE … FROM.
    """
    if not members:
        return 0
    model_fields = [Member._meta.get_field(name) for name in fields]
    # Read before COPY begins: a deferred field read during it would wait on the copying connection.
    rows = [[m.pk, *(f.get_db_prep_save(getattr(m, f.attname), connection) for f in model_fields)] for m in members]
    quote = connection.ops.quote_name
    columns = ", ".join(f"{quote(f.column)} {f.db_type(connection)}" for f in model_fields)
    names = ", ".join(quote(f.column) for f in model_fields)
    assignments = ", ".join(f"{quote(f.column)} = u.{quote(f.column)}" for f in model_fields)
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS pg_temp.member_update")
        cursor.execute(f"CREATE TEMP TABLE member_update (id bigint PRIMARY KEY, {columns}) ON COMMIT DROP")
        with cursor.copy(f"COPY member_update (id, {names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        cursor.execute(f"UPDATE members_member m SET {assignments} FROM member_update u WHERE m.id = u.id")
        return cursor.rowcount


# --- the member's own profile, phone and account (the portal) ------------------------------

PHONE_CODE_VALID = dt.timedelta(minutes=10)
PHONE_CODE_ATTEMPTS = 5
PHONE_CODES_PER_HOUR = 3
CLOSED_EMAIL_DOMAIN = "closed.invalid"  # reserved by RFC 2606: no mail can ever reach it


@transaction.atomic
def member_profile_update(
    *,
    member: Member,
    name: str,
    language: str,
    preferred_store: Store | None,
    email_consent: bool,
    sms_consent: bool,
    birthday: dt.date | None = None,
    favourite_categories: Iterable[Category] | None = None,
    source: str = "portal",
    by: User | None = None,
) -> Member:
    """Save what members may change about themselves: a birthday only while none is set, consent with a record.

    Favourite categories are left as they are when None is given.
    """
    member = Member.objects.select_for_update().get(pk=member.pk)
    errors: dict[str, str] = {}
    name = name.strip()
    if len(name) > Member._meta.get_field("name").max_length:  # type: ignore[operator]
        errors["name"] = _("Use at most %(max)s characters.") % {"max": Member._meta.get_field("name").max_length}
    if language not in Member.Language.values:
        errors["language"] = _("Choose a valid language.")
    if preferred_store is not None and not preferred_store.is_active:
        errors["preferred_store"] = _("Choose a store that is open.")
    if birthday is not None and birthday != member.birthday:
        # A birthday earns a bonus every year: once set, only staff may correct it.
        if member.birthday is not None:
            errors["birthday"] = _("Your birthday is already set: ask staff to correct it.")
        elif birthday > timezone.localdate():
            errors["birthday"] = _("The birthday cannot be in the future.")
    if favourite_categories is not None:
        favourite_categories = list(favourite_categories)
        if any(not category.is_active for category in favourite_categories):
            errors["favourite_categories"] = _("Choose among the categories shown.")
    if errors:
        raise ValidationError(errors)
    for channel, granted in (("email", email_consent), ("sms", sms_consent)):
        if getattr(member, f"{channel}_consent") != granted:
            member_consent_set(member=member, channel=channel, granted=granted, source=source, by=by)
    member.name, member.language, member.preferred_store = name, language, preferred_store
    member.birthday = birthday or member.birthday
    member.save(update_fields=["name", "language", "preferred_store", "birthday", "updated_at"])
    if favourite_categories is not None:
        member.favourite_categories.set(favourite_categories)
    return member


def fingerprint_digest(kind: str, raw: str) -> str:
    """Return a keyed hash of a device or payment fingerprint ("" for none): comparable, never reversible."""
    raw = raw.strip()
    return salted_hmac(f"members.fingerprint.{kind}", raw).hexdigest() if raw else ""


def _phone_code_digest(member: Member, phone: str, code: str) -> str:
    # Keyed with the secret key: the session holds no code that could be worked out offline.
    return salted_hmac("members.phone_code", f"{member.pk}:{phone}:{code}").hexdigest()


def phone_code_send(*, member: Member, phone: str, now: dt.datetime | None = None) -> dict[str, object]:
    """Text a one-time code to the member's new phone number; return the challenge to keep in their session.

    At most PHONE_CODES_PER_HOUR codes an hour per member, counted in the cache every web process shares.
    """
    phone_e164 = phone_normalise(phone)
    if member.phone and str(member.phone) == phone_e164:
        raise ValidationError({"phone": _("This is already your phone number.")}, code="unchanged")
    key = f"members:phone_codes:{member.pk}"
    cache.add(key, 0, timeout=3600)
    try:
        sent = cache.incr(key)
    except ValueError:  # the hour ran out between the two calls
        sent = 1
        cache.set(key, sent, timeout=3600)
    if sent > PHONE_CODES_PER_HOUR:
        raise ValidationError({"phone": _("Too many codes were sent. Please try again in an hour.")}, code="throttled")
    code = f"{secrets.randbelow(10**6):06d}"
    with translation.override(member.language):
        text = _("Your code to confirm this phone number is %(code)s. It is valid for 10 minutes.") % {"code": code}
    try:
        notifications.sms_backend().send(phone=phone_e164, text=text)
    except OSError:
        raise ValidationError({"phone": _("The code could not be sent. Please try again later.")}, code="unsent") from None
    return {
        "phone": phone_e164,
        "digest": _phone_code_digest(member, phone_e164, code),
        "expires_at": ((now or timezone.now()) + PHONE_CODE_VALID).isoformat(),
        "attempts": 0,
    }


@transaction.atomic
def member_phone_confirm(*, member: Member, challenge: dict[str, object], code: str, now: dt.datetime | None = None) -> Member:
    """Set the member's new phone number once they type back the code texted to it.

    Each try counts in `challenge["attempts"]` (changed in place, for the caller to keep); an
    expired challenge, or one tried PHONE_CODE_ATTEMPTS times, needs a new code.
    """
    attempts = int(challenge["attempts"])  # type: ignore[call-overload]
    if attempts >= PHONE_CODE_ATTEMPTS:
        raise ValidationError({"code": _("Too many wrong codes. Please ask for a new one.")}, code="exhausted")
    if (now or timezone.now()) >= dt.datetime.fromisoformat(str(challenge["expires_at"])):
        raise ValidationError({"code": _("This code has expired. Please ask for a new one.")}, code="expired")
    challenge["attempts"] = attempts + 1
    phone = str(challenge["phone"])
    if not hmac.compare_digest(str(challenge["digest"]), _phone_code_digest(member, phone, code.strip())):
        raise ValidationError({"code": _("This is not the code we sent.")}, code="wrong")
    member = Member.objects.select_for_update().get(pk=member.pk)
    taken = ValidationError(
        {"phone": _("This phone number belongs to another membership: please ask staff to help.")}, code="duplicate"
    )
    if Member.objects.exclude(pk=member.pk).filter(phone=phone).exists():
        raise taken
    member.phone = phone
    try:
        with transaction.atomic():
            member.save(update_fields=["phone", "updated_at"])
    except IntegrityError:  # another membership took the number meanwhile
        raise taken from None
    return member


def _api_answers_redact(member: Member) -> None:
    """Blank the personal fields of API answers kept for retries (an enrolment's answer names the member)."""
    answers = list(IdempotentRequest.objects.filter(response__member_number=member.member_number))
    for answer in answers:
        answer.response = {**answer.response, "name": "", "email": "", "phone": None, "birthday": None, "external_ref": ""}
    IdempotentRequest.objects.bulk_update(answers, ["response"])


@transaction.atomic
def member_close(*, member: Member, by: User | None = None) -> Member:
    """Close a membership for good: withdraw consent, erase the personal data and the messages, end the login.

    The member row stays, anonymised, so purchases and the points ledger still add up for accounting.
    """
    member = Member.objects.select_for_update().get(pk=member.pk)
    if member.status == Member.Status.CLOSED:
        return member
    for channel in ConsentRecord.Channel.values:
        member_consent_set(member=member, channel=channel, granted=False, source="account closed", by=by)
    member.notifications.all().delete()
    _api_answers_redact(member)
    member.name, member.phone, member.birthday, member.gender = "", None, None, ""
    member.notes, member.external_ref, member.preferred_store, member.email = "", "", None, ""
    member.favourite_categories.clear()
    member.card_code = new_card_code()
    member.status = Member.Status.CLOSED
    member.save()
    if member.user is not None:
        user = member.user
        EmailAddress.objects.filter(user=user).delete()
        user.email, user.name, user.is_active = f"closed-user-{user.pk}@{CLOSED_EMAIL_DOMAIN}", "", False
        user.set_unusable_password()  # also ends every session of this login
        user.save(update_fields=["email", "name", "is_active", "password"])
    return member


@transaction.atomic
def member_claim(*, member: Member, user: User) -> Member:
    """Link a membership enrolled without a login (at the counter) to the login that proved it is theirs."""
    member = Member.objects.select_for_update().get(pk=member.pk)
    if member.status == Member.Status.CLOSED:
        raise ValidationError(_("This membership was closed and cannot be claimed."), code="closed")
    if member.status != Member.Status.ACTIVE:
        raise ValidationError(_("This membership is blocked: please ask staff at a store."), code="blocked")
    if member.user_id == user.pk:
        return member
    if member.user_id is not None:
        raise ValidationError(_("This membership is linked to another login already."), code="claimed")
    taken = ValidationError(_("This login has a membership already."), code="has_member")
    if Member.objects.filter(user=user).exists():
        raise taken
    member.user = user
    try:
        with transaction.atomic():
            member.save(update_fields=["user", "updated_at"])
    except IntegrityError:  # the same login claimed another membership meanwhile
        raise taken from None
    return member
