"""Members accept the terms again, once a newer version is published, before they use the portal."""

from collections.abc import Callable
from urllib.parse import urlencode

from django.db.models import Exists, OuterRef
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils import timezone
from django_htmx.http import HttpResponseClientRedirect

from members.models import Member
from rewards.models import TermsAcceptance, TermsVersion

TERMS_ACCEPTED = "terms_accepted"  # in the session: the version this member accepted last, once seen
# The terms page itself, the public page that explains the programme and its terms, the pages
# of logins without a membership yet (they accept the terms there), and privacy: a member who
# will not accept the new terms can still take their data and close their account.
OPEN_PAGES = {"terms", "how", "join", "claim", "privacy", "privacy_export", "privacy_close"}


def terms_remember(request: HttpRequest, terms: TermsVersion) -> None:
    """Note in the session that the member has accepted this version, to spare the check a query."""
    request.session[TERMS_ACCEPTED] = terms.pk


def terms_outdated(request: HttpRequest) -> bool:
    """Say whether the logged-in member has not accepted the current terms (an imported member never accepted any).

    One query: the current version's id when the session knows the accepted one, else that
    version with whether this login's membership accepted it or any other.
    """
    current = TermsVersion.objects.filter(published_at__lte=timezone.now()).order_by("-published_at")
    accepted = request.session.get(TERMS_ACCEPTED)
    if accepted is not None:
        current_id = current.values_list("pk", flat=True).first()
        return current_id is not None and current_id != accepted
    mine = TermsAcceptance.objects.filter(member__user=request.user.pk, member__status=Member.Status.ACTIVE)
    row = (
        current.annotate(
            accepted=Exists(mine.filter(terms=OuterRef("pk"))),
            member=Exists(Member.objects.filter(user=request.user.pk, status=Member.Status.ACTIVE)),
        )
        .values("pk", "accepted", "member")
        .first()
    )
    if row is None:
        return False
    if row["accepted"]:
        request.session[TERMS_ACCEPTED] = row["pk"]
        return False
    return bool(row["member"])  # a login without a membership joins first, accepting the terms there


class TermsMiddleware:
    """Send a member to /me/terms/ from any portal page while a newer version of the terms awaits them."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(self, request: HttpRequest, view: object, args: object, kwargs: object) -> HttpResponse | None:
        match = request.resolver_match
        if match is None or match.namespace != "portal" or match.url_name in OPEN_PAGES:
            return None
        if not request.user.is_authenticated or not terms_outdated(request):
            return None
        url = f"{reverse('portal:terms')}?{urlencode({'next': request.get_full_path()})}"
        # An htmx request would swap the whole terms page into a fragment: the browser goes there instead.
        return HttpResponseClientRedirect(url) if getattr(request, "htmx", False) else redirect(url)
