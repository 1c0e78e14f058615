"""Who may use the staff counter, and for which store: the checks every staff view makes.

A staff member chooses the store of their shift once; every staff view then works for that
store only, and it must be one of the stores they work in (any store for programme admins).
"""

import re
import secrets
from collections.abc import Callable
from functools import wraps
from urllib.parse import urlencode

from allauth.account.adapter import get_adapter
from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils import translation

from members.models import Member, Store, User

SHIFT_STORE = "staff_shift_store"


def staff_stores(user: User) -> QuerySet[Store]:
    """Return the open stores this staff member may work a shift in."""
    stores = Store.objects.filter(is_active=True)
    return stores if user.is_superuser else stores.filter(staff=user)


def shift_store(request: HttpRequest) -> Store | None:
    store_id = request.session.get(SHIFT_STORE)
    return staff_stores(request.user).filter(pk=store_id).first() if store_id else None  # type: ignore[arg-type]


def shift_store_set(request: HttpRequest, store_id: object) -> Store:
    """Start a shift at one of the staff member's stores; another store is refused."""
    valid = re.fullmatch(r"[0-9]{1,18}", str(store_id))  # anything else is refused, never a database error
    store = staff_stores(request.user).filter(pk=store_id).first() if valid else None  # type: ignore[arg-type]
    if store is None:
        raise PermissionDenied
    request.session[SHIFT_STORE] = store.pk
    return store


def access_permission(user: User, permission: str) -> None:
    """Refuse a staff action the role does not allow, however the request was made."""
    if not user.has_perm(permission):
        raise PermissionDenied


def _not_staff(request: HttpRequest) -> HttpResponse | None:
    """Send a visitor to log in and refuse a member; None lets staff through."""
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    if not request.user.is_staff:
        raise PermissionDenied
    return None


def staff_view(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Let in logged-in staff with a shift store (set on `request.store`); send others where they must go."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        if (refused := _not_staff(request)) is not None:
            return refused
        store = shift_store(request)
        if store is None:
            return redirect(f"{reverse('staff:shift')}?{urlencode({'next': request.get_full_path()})}")
        request.store = store  # type: ignore[attr-defined]
        return view(request, *args, **kwargs)

    return wrapped


def office_view(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Let in logged-in staff for programme-wide work (head office) that needs no shift; `request.store` may be None."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        if (refused := _not_staff(request)) is not None:
            return refused
        request.store = shift_store(request)  # type: ignore[attr-defined]
        return view(request, *args, **kwargs)

    return wrapped


def access_member_details(user: User, member: Member, store: Store) -> bool:
    """Say whether this staff member sees the member's full contact details and notes.

    Staff of the member's own stores (where they enrolled or prefer to shop) and managers do;
    a cashier of another store sees enough to serve them (name, the last digits of the phone).
    """
    home = {member.enrolled_store_id, member.preferred_store_id}
    return store.pk in home or user.has_perm("members.view_consentrecord")


def member_view(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Let in a logged-in customer with an active membership (set on `request.member`).

    Every portal query starts from `request.member`, so another member's data is never reached.
    A login without a membership yet is sent to join or claim one.
    """

    @wraps(view)
    def wrapped(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        member = Member.objects.filter(user=request.user, status=Member.Status.ACTIVE).first()
        if member is None:
            return redirect(f"{reverse('portal:join')}?{urlencode({'next': request.get_full_path()})}")
        request.member = member  # type: ignore[attr-defined]
        return view(request, *args, **kwargs)

    return wrapped


def language_remember(response: HttpResponse, language: str) -> None:
    """Make the site speak the member's language from the next request on, as the header's switcher does."""
    response.set_cookie(
        settings.LANGUAGE_COOKIE_NAME,
        language,
        max_age=settings.LANGUAGE_COOKIE_AGE,
        path=settings.LANGUAGE_COOKIE_PATH,
        domain=settings.LANGUAGE_COOKIE_DOMAIN,
        secure=settings.LANGUAGE_COOKIE_SECURE,
        httponly=settings.LANGUAGE_COOKIE_HTTPONLY,
        samesite=settings.LANGUAGE_COOKIE_SAMESITE,
    )


def language_on_login(
    sender: type, request: HttpRequest, user: User, response: HttpResponse | None = None, **kwargs: object
) -> None:
    """On logging in (allauth's user_logged_in), switch to the language the member chose in their profile."""
    language = Member.objects.filter(user=user).values_list("language", flat=True).first()
    if language and response is not None:
        translation.activate(language)  # the "signed in" message is written in it too
        language_remember(response, language)


# A random id per browser, kept for two years: a friend signing up on their inviter's phone is spotted by it.
DEVICE_COOKIE = "device"
DEVICE_COOKIE_AGE = 60 * 60 * 24 * 365 * 2
DEVICE_SHAPE = re.compile(r"[A-Za-z0-9_-]{20,64}")


def device_id(request: HttpRequest) -> str:
    """Return this browser's device id, or "" (anything not of our making counts as none)."""
    device = request.COOKIES.get(DEVICE_COOKIE, "")
    return device if DEVICE_SHAPE.fullmatch(device) else ""


def device_remember(request: HttpRequest, response: HttpResponse) -> str:
    """Give this browser a device id if it has none; return its id."""
    device = device_id(request) or secrets.token_urlsafe(24)
    if request.COOKIES.get(DEVICE_COOKIE) != device:
        response.set_cookie(
            DEVICE_COOKIE,
            device,
            max_age=DEVICE_COOKIE_AGE,
            secure=settings.SESSION_COOKIE_SECURE,
            httponly=True,
            samesite="Lax",
        )
    return device


def client_ip(request: HttpRequest) -> str | None:
    """Return the visitor's address as the login throttle reads it (behind a trusted proxy, the forwarded one)."""
    try:
        return get_adapter(request).get_client_ip(request)
    except PermissionDenied:
        return None
