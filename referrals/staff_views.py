"""The marketer's referral page at the counter: the funnel, top referrers, and the review queue with each referral's history."""

import datetime as dt

from django.contrib import messages
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods

from members import access
from members.pages import page_or_partial, wants_fragment
from referrals import selectors, services
from referrals.models import Referral
from referrals.staff_forms import PeriodForm, ReviewForm
from rewards.services import programme_get

# A used token is remembered this long: far longer than any double click or resent form.
TOKEN_SECONDS = 24 * 3600
REVIEWABLE = {Referral.Status.JOINED, Referral.Status.REVIEW, Referral.Status.QUALIFIED}


def _review_form(request: HttpRequest, item: selectors.ReferralItem) -> ReviewForm | None:
    """A blank decision form for a reviewer, when the referral can still be decided."""
    if not request.user.has_perm("referrals.change_referral") or item.referral.status not in REVIEWABLE:
        return None
    return ReviewForm(referral_id=item.referral.pk)


@require_GET
@access.office_view
def referrals_overview(request: HttpRequest) -> HttpResponse:
    """Show the referral funnel of a period (the last 30 days unless chosen), the top referrers and the review queue."""
    access.access_permission(request.user, "referrals.view_referral")  # type: ignore[arg-type]
    tz = programme_get().tz
    form = PeriodForm(request.GET, today=timezone.localdate(timezone=tz))
    first, last = form.period()
    start = dt.datetime.combine(first, dt.time(), tzinfo=tz)
    end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), tzinfo=tz)
    context: dict[str, object] = {
        "form": form,
        "first": first,
        "last": last,
        "funnel": selectors.funnel(start=start, end=end),
        "top": selectors.top_referrers(start=start, end=end),
    }
    if not wants_fragment(request):  # a new period redraws the figures only
        queue = selectors.review_queue()
        context.update(queue=queue, rows=[(item, _review_form(request, item)) for item in queue.items], tz=tz)
    return page_or_partial(request, "referrals/staff_referrals.html", "period", context)


def _decide(request: HttpRequest, referral: Referral, form: ReviewForm) -> Referral:
    """Apply the reviewer's decision through the services; their refusals come back as ValidationError."""
    note = form.cleaned_data["note"]
    if form.cleaned_data["decision"] == ReviewForm.APPROVE:
        return services.referral_approve(referral=referral, by=request.user, note=note)  # type: ignore[arg-type]
    return services.referral_reject(referral=referral, by=request.user, note=note)  # type: ignore[arg-type]


@require_http_methods(["GET", "POST"])
@access.office_view
def referral_detail(request: HttpRequest, referral_id: int) -> HttpResponse:
    """Show one referral with its history; a reviewer approves or rejects it here (with a note to reject)."""
    access.access_permission(request.user, "referrals.view_referral")  # type: ignore[arg-type]
    item = selectors.referral_detail(referral_id)
    if item is None:
        raise Http404
    form = _review_form(request, item)
    if request.method == "POST":
        access.access_permission(request.user, "referrals.change_referral")  # type: ignore[arg-type]
        form = ReviewForm(request.POST, referral_id=referral_id)
        if form.is_valid():
            key = f"referrals:review:{form.cleaned_data['token']}"
            if not cache.add(key, 1, timeout=TOKEN_SECONDS):
                messages.info(request, _("This decision was already recorded."))
                return _decided(request, referral_id)
            try:
                referral = _decide(request, item.referral, form)
            except ValidationError as error:
                cache.delete(key)  # nothing was decided: the same form may be sent again once corrected
                form.add_service_error(error)
            else:
                names = {"friend": item.friend_name, "referrer": item.referrer_name}
                if referral.status == Referral.Status.REJECTED:
                    text = _("Rejected: %(friend)s, invited by %(referrer)s. Rewards still held were taken back.")
                else:
                    text = _("Approved: %(friend)s, invited by %(referrer)s, and both are rewarded.")
                messages.success(request, text % names)
                return _decided(request, referral_id)
    context = {"item": item, "form": form, "tz": programme_get().tz}
    return page_or_partial(request, "referrals/staff_referral.html", "decision", context)


def _decided(request: HttpRequest, referral_id: int) -> HttpResponse:
    """Answer a decision: for htmx the referral's decision region as it is now; otherwise back to the review queue."""
    if not request.htmx:  # type: ignore[attr-defined]
        return redirect("staff:referrals")
    item = selectors.referral_detail(referral_id)
    return page_or_partial(request, "referrals/staff_referral.html", "decision", {"item": item, "form": None})
