"""The staff counter's pages about a member's points: the member panel and what staff do there."""

import datetime as dt
import re
import zoneinfo
from decimal import Decimal

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet, Sum
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.utils.safestring import mark_safe
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_http_methods
from django_htmx.http import HttpResponseClientRedirect

from members import access, notifications
from members import services as member_services
from members.models import Member, Store
from members.pages import page_or_partial
from rewards import catalog, selectors, services, staff_forms
from rewards.explanations import points_text
from rewards.models import LedgerEntry, Purchase, Reward
from rewards.services import RewardsError


@access.staff_view
def member_panel(request: HttpRequest, member_number: str) -> HttpResponse:
    """Show the member at the counter: points, tier and progress, vouchers, stamp cards, recent history."""
    member = get_object_or_404(Member, member_number=member_number)
    context = {
        "member": member,
        "full_details": access.access_member_details(request.user, member, request.store),  # type: ignore[arg-type,attr-defined]
        **selectors.member_panel(member),
    }
    if not request.htmx and request.user.has_perm("rewards.add_purchase"):  # type: ignore[attr-defined]
        context["purchase_form"] = staff_forms.PurchaseForm(categories=staff_forms.category_choices(request.store))  # type: ignore[attr-defined]
    # An htmx refresh after a change asks for one region: the balance, or the recent history.
    part = "history" if request.GET.get("part") == "history" else "balance"
    template = f"staff/member.html#{part}" if request.htmx else "staff/member.html"  # type: ignore[attr-defined]
    response = TemplateResponse(request, template, context)
    response["Vary"] = "HX-Request"
    return response


class ShiftDayForm(forms.Form):
    """The day a shift summary is for: today or an earlier day of the store's calendar."""

    day = forms.DateField(
        label=_("Day"),
        input_formats=["%Y-%m-%d"],
        widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
        help_text=_("Today or an earlier day, in the store's time zone."),
    )

    def __init__(self, *args: object, today: dt.date, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.today = today
        self.fields["day"].widget.attrs["max"] = today.isoformat()

    def clean_day(self) -> dt.date:
        day: dt.date = self.cleaned_data["day"]
        if day > self.today:
            raise forms.ValidationError(_("Choose today or an earlier day."), code="future")
        return day


@access.staff_view
def shift_summary(request: HttpRequest) -> HttpResponse:
    """Show what each staff member did at the shift's store on a day; the store is the shift's, never one asked for."""
    access.access_permission(request.user, "rewards.view_purchase")  # type: ignore[arg-type]
    store = request.store  # type: ignore[attr-defined]
    today = timezone.localdate(timezone=zoneinfo.ZoneInfo(store.timezone))
    form = ShiftDayForm({"day": request.GET.get("day") or today.isoformat()}, today=today)
    context: dict[str, object] = {"form": form, "summary": None}
    if form.is_valid():
        day = form.cleaned_data["day"]
        context["summary"] = selectors.shift_summary(store=store, day=day)
        context["previous_day"] = day - dt.timedelta(days=1) if day > dt.date.min else None
        context["next_day"] = day + dt.timedelta(days=1) if day < today else None
    return page_or_partial(request, "staff/summary.html", "summary", context)


# --- enrolment, sales, returns and claims at the counter -----------------------------------


def _done(request: HttpRequest, member: Member, template: str, partial: str, context: dict[str, object]) -> HttpResponse:
    """Answer a recorded change: for htmx the result fragment, which refreshes the balance; otherwise back to the panel."""
    if not request.htmx:  # type: ignore[attr-defined]
        return redirect("staff:member", member_number=member.member_number)
    context = {"member": member, "account": selectors.account_for(member), **context}
    response = page_or_partial(request, template, partial, context)
    response["HX-Trigger"] = "pointsChanged"
    return response


def _welcome_send(member: Member, *, claim_url: str) -> None:
    """Text the new member a link to claim their account online, once the enrolment is committed.

    A service message the customer asked for at the counter, not marketing: it needs no
    marketing consent. There is no notification kind for it, so it is sent directly.
    """
    subject, body = notifications.render(
        member=member, kind="welcome", context={"programme": services.programme_get().name, "link": claim_url}
    )
    phone, text = str(member.phone), f"{subject}\n{body}"

    def send() -> None:
        notifications.sms_backend().send(phone=phone, text=text)

    # Robust: the member is enrolled by now; a gateway failure must not turn it into an error.
    transaction.on_commit(send, robust=True)


@transaction.atomic
def _enrol(request: HttpRequest, form: staff_forms.EnrolForm) -> Member:
    member = member_services.member_enrol(
        channel=Member.Channel.COUNTER,
        store=request.store,  # type: ignore[attr-defined]
        by=request.user,  # type: ignore[arg-type]
        **form.enrolment(),  # type: ignore[arg-type]
    )
    services.terms_accept(member=member, channel=Member.Channel.COUNTER)
    # Sign-up is where someone enrolled at the counter sets up their login (the member portal
    # links it to this membership by the phone number, checked with a one-time code).
    _welcome_send(member, claim_url=request.build_absolute_uri(reverse("account_signup")))
    return member


@require_http_methods(["GET", "POST"])
@access.staff_view
def member_enrol(request: HttpRequest) -> HttpResponse:
    """Enrol a customer at the counter by phone; a phone or e-mail already known links to that member."""
    access.access_permission(request.user, "members.add_member")  # type: ignore[arg-type]
    form = staff_forms.EnrolForm(request.POST if request.method == "POST" else None)
    duplicate = None
    if request.method == "POST" and form.is_valid():
        try:
            member = _enrol(request, form)
        except member_services.DuplicateMember as error:
            duplicate = error.existing
            form.add_service_error(error)
        except ValidationError as error:
            form.add_service_error(error)
        except RewardsError as error:
            form.add_service_error(staff_forms.refusal(error))
        else:
            messages.success(
                request,
                _("%(name)s joined as member %(number)s. A text with a link to claim the account online is on its way.")
                % {"name": member.name or member.phone, "number": member.member_number},
            )
            panel = reverse("staff:member", args=[member.member_number])
            return HttpResponseClientRedirect(panel) if request.htmx else redirect(panel)  # type: ignore[attr-defined]
    return page_or_partial(request, "staff/enrol.html", "enrol", {"form": form, "duplicate": duplicate})


@require_http_methods(["GET", "POST"])
@access.staff_view
def purchase_record(request: HttpRequest, member_number: str) -> HttpResponse:
    """Record a sale for the member; the receipt number makes a resubmitted form show the original, never count twice."""
    access.access_permission(request.user, "rewards.add_purchase")  # type: ignore[arg-type]
    member = get_object_or_404(Member, member_number=member_number)
    categories = staff_forms.category_choices(request.store)  # type: ignore[attr-defined]
    form = staff_forms.PurchaseForm(request.POST if request.method == "POST" else None, categories=categories)
    if request.method == "POST" and form.is_valid():
        try:
            result = services.purchase_record(store=request.store, by=request.user, member=member, **form.sale())  # type: ignore[attr-defined]
        except ValidationError as error:
            form.add_service_error(error)
        except RewardsError as error:
            form.add_service_error(staff_forms.refusal(error))
        else:
            purchase = result.purchase
            if result.created:
                text = _("Receipt %(receipt)s recorded: %(points)s earned.")
            else:
                text = _("Receipt %(receipt)s was already recorded: nothing was added.")
            messages.success(request, text % {"receipt": purchase.receipt_number, "points": points_text(purchase.points_earned)})
            blank = staff_forms.PurchaseForm(categories=categories)
            return _done(request, member, "staff/purchase.html", "purchase", {"result": result, "form": blank})
    return page_or_partial(request, "staff/purchase.html", "purchase", {"member": member, "form": form})


@access.staff_view
def member_purchases(request: HttpRequest, member_number: str) -> HttpResponse:
    """List the member's recent purchases at any store, with what was already returned, to pick one to return."""
    access.access_permission(request.user, "rewards.view_purchase")  # type: ignore[arg-type]
    member = get_object_or_404(Member, member_number=member_number)
    purchases = member.purchases.select_related("store").annotate(returned=Coalesce(Sum("returns__amount"), Decimal(0)))[:30]
    return page_or_partial(request, "staff/purchases.html", "purchases", {"member": member, "purchases": purchases})


@require_http_methods(["GET", "POST"])
@access.staff_view
def purchase_return(request: HttpRequest, member_number: str, purchase_id: int) -> HttpResponse:
    """Record a return of one of the member's purchases, by amount or by lines, and take back its points."""
    access.access_permission(request.user, "rewards.add_return")  # type: ignore[arg-type]
    member = get_object_or_404(Member, member_number=member_number)
    # From the member: another member's purchase is not found, whatever id is typed.
    purchase = get_object_or_404(
        member.purchases.select_related("store").annotate(returned=Coalesce(Sum("returns__amount"), Decimal(0))), pk=purchase_id
    )
    lines = purchase.lines.annotate(returned_quantity=Coalesce(Sum("returned__quantity"), 0)).order_by("line_number")
    form = staff_forms.ReturnForm(request.POST if request.method == "POST" else None, lines=lines)
    context: dict[str, object] = {"member": member, "purchase": purchase, "lines": lines, "form": form}
    if request.method == "POST" and form.is_valid():
        try:
            result = services.purchase_return(
                purchase=purchase,
                by=request.user,
                store=request.store,
                **form.refund(),  # type: ignore[arg-type,attr-defined]
            )
        except ValidationError as error:
            form.add_service_error(error)
        except RewardsError as error:
            form.add_service_error(staff_forms.refusal(error))
        else:
            record = result.return_record
            if result.created:
                text = _("Return %(number)s of receipt %(receipt)s recorded: %(points)s taken back.")
            else:
                text = _("Return %(number)s of receipt %(receipt)s was already recorded: nothing changed.")
            values = {"number": record.return_number, "receipt": purchase.receipt_number}
            messages.success(request, text % {**values, "points": points_text(record.points_clawed_back)})
            return _done(request, member, "staff/return.html", "return", {**context, "result": result})
    return page_or_partial(request, "staff/return.html", "return", context)


@require_http_methods(["GET", "POST"])
@access.staff_view
def purchase_claim(request: HttpRequest, member_number: str) -> HttpResponse:
    """Give the member the points of a sale recorded at this store without their card, found by its receipt number."""
    access.access_permission(request.user, "rewards.add_purchase")  # type: ignore[arg-type]
    member = get_object_or_404(Member, member_number=member_number)
    form = staff_forms.ClaimForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        receipt = form.cleaned_data["receipt_number"]
        # Only the shift's store: a receipt number is unique per store, and staff claim their own store's sales.
        purchase = Purchase.objects.filter(store=request.store, receipt_number=receipt).first()  # type: ignore[attr-defined]
        if purchase is None:
            missing = _("No sale with receipt %(receipt)s at %(store)s.")
            form.add_error("receipt_number", missing % {"receipt": receipt, "store": request.store.name})  # type: ignore[attr-defined]
        else:
            try:
                result = services.purchase_claim(purchase=purchase, member=member, by=request.user)  # type: ignore[arg-type]
            except ValidationError as error:
                form.add_service_error(error)
            except RewardsError as error:
                form.add_service_error(staff_forms.refusal(error))
            else:
                if result.created:
                    text = _("Receipt %(receipt)s claimed: %(points)s earned.")
                else:
                    text = _("Receipt %(receipt)s was already claimed for this member: nothing was added.")
                messages.success(request, text % {"receipt": receipt, "points": points_text(result.purchase.points_earned)})
                return _done(request, member, "staff/claim.html", "claim", {"result": result, "form": staff_forms.ClaimForm()})
    return page_or_partial(request, "staff/claim.html", "claim", {"member": member, "form": form})


# --- rewards, vouchers and adjustments ----------------------------------------------------


def _refuse(form: forms.Form, error: ValidationError | RewardsError) -> None:
    """Show a service's refusal on the form, next to the field it names."""
    form.add_service_error(staff_forms.refusal(error) if isinstance(error, RewardsError) else error)  # type: ignore[attr-defined]


def _catalog_items(member: Member) -> list[catalog.CatalogItem]:
    # What the member can have now first, then what is nearest in points; each group in the catalog's order.
    return sorted(catalog.catalog_for(member), key=lambda item: (not item.can_redeem, item.points_needed or 0))


@require_http_methods(["GET", "POST"])
@access.staff_view
def member_rewards(request: HttpRequest, member_number: str) -> HttpResponse:
    """Redeem a reward for the member: the catalog as they can have it, a confirmation, then the voucher."""
    access.access_permission(request.user, "rewards.add_redemption")  # type: ignore[arg-type]
    member = get_object_or_404(Member, member_number=member_number)
    url = reverse("staff:member_rewards", args=[member.member_number])
    form: staff_forms.RedeemForm | None = None
    reward = redemption = None
    if request.method == "POST":
        form = staff_forms.RedeemForm(request.POST)
        if form.is_valid():
            reward = form.cleaned_data["reward"]
            try:
                redemption = catalog.redemption_create(
                    member=member,
                    reward=reward,
                    by=request.user,  # type: ignore[arg-type]
                    store=request.store,  # type: ignore[attr-defined]
                    via="counter",
                    idempotency_key=f"counter:{form.cleaned_data['token']}",
                )
            except (ValidationError, RewardsError) as error:
                _refuse(form, error)
            else:
                messages.success(
                    request,
                    _("Redeemed %(reward)s: voucher %(code)s.") % {"reward": reward.title, "code": redemption.voucher.code},
                )
                if not request.htmx:  # type: ignore[attr-defined]
                    return redirect(f"{url}?{urlencode({'redeemed': redemption.pk})}")
                form = None
    elif re.fullmatch(r"[0-9]{1,18}", redeemed := request.GET.get("redeemed", "")):
        # Looked up among this member's redemptions only: another member's would show nothing.
        redemption = member.redemptions.select_related("reward", "voucher").filter(pk=redeemed).first()
    elif re.fullmatch(r"[0-9]{1,18}", chosen := request.GET.get("reward", "")):
        reward = Reward.objects.visible(timezone.now()).filter(pk=chosen).first()
        form = staff_forms.RedeemForm(initial={"reward": reward}) if reward else None
    account = selectors.account_for(member)
    context: dict[str, object] = {
        "member": member,
        "url": url,
        "form": form,
        "reward": reward,
        "redemption": redemption,
        "account": account,
        "after": account.available - reward.points_cost if reward and account.available >= reward.points_cost else None,
        "tz": services.programme_get().tz,
    }
    if redemption is not None:
        # segno writes the SVG itself from a code of our own alphabet: there is nothing of the user's to escape.
        context["qr"] = mark_safe(catalog.voucher_qr_svg(redemption.voucher.code))  # noqa: S308
    catalog_only = request.htmx and request.htmx.target == "catalog"  # type: ignore[attr-defined]
    if catalog_only or not request.htmx:  # type: ignore[attr-defined]
        context["items"] = _catalog_items(member)
    response = page_or_partial(request, "staff/rewards.html", "catalog" if catalog_only else "redeem", context)
    if request.method == "POST" and redemption is not None:
        response["HX-Trigger"] = "pointsChanged"
    return response


@require_http_methods(["GET", "POST"])
@access.staff_view
def voucher_check(request: HttpRequest) -> HttpResponse:
    """Use a voucher by its scanned or typed code: first what it is for and whether it is valid, then mark it used once."""
    access.access_permission(request.user, "rewards.change_voucher")  # type: ignore[arg-type]
    voucher = None
    used = False
    if request.method == "POST":
        form = staff_forms.VoucherCodeForm(request.POST)
        if form.is_valid():
            code = form.cleaned_data["code"]
            try:
                voucher = catalog.voucher_use(code=code, by=request.user, store=request.store, via="counter")  # type: ignore[arg-type,attr-defined]
            except (ValidationError, RewardsError) as error:
                _refuse(form, error)
                voucher = catalog.voucher_find(code)
            else:
                used = True
                messages.success(
                    request,
                    _("Voucher %(code)s used: %(reward)s for %(member)s.")
                    % {"code": voucher.code, "reward": voucher.reward.title, "member": voucher.member},
                )
                if not request.htmx:  # type: ignore[attr-defined]
                    return redirect(f"{reverse('staff:vouchers')}?{urlencode({'code': voucher.code})}")
                # The box is emptied for the next scan; the voucher just used stays in view.
                form = staff_forms.VoucherCodeForm()
    else:
        form = staff_forms.VoucherCodeForm(request.GET if "code" in request.GET else None)
        if form.is_bound and form.is_valid():
            voucher = catalog.voucher_find(form.cleaned_data["code"])
            if voucher is None:
                form.add_error("code", _("No voucher has this code."))
            else:
                form = staff_forms.VoucherCodeForm()  # empty again, so the next scan is not typed after this code
    context = {
        "form": form,
        "voucher": voucher,
        "status": catalog.voucher_status(voucher) if voucher else None,
        "tz": services.programme_get().tz,
    }
    response = page_or_partial(request, "staff/vouchers.html", "check", context)
    if used:
        response["HX-Trigger"] = "voucherUsed"
    return response


@require_http_methods(["GET", "POST"])
@access.staff_view
def member_adjust(request: HttpRequest, member_number: str) -> HttpResponse:
    """Correct the member's points with a reason they will read, within the staff member's daily limit."""
    # Checked here and again in the service: a cashier never sees the form, nor gets through by posting it.
    access.access_permission(request.user, "rewards.adjust_points")  # type: ignore[arg-type]
    member = get_object_or_404(Member, member_number=member_number)
    entry = None
    if request.method == "POST":
        form = staff_forms.AdjustPointsForm(request.POST)
        if form.is_valid():
            try:
                entry = services.points_adjust(
                    member=member,
                    points=form.cleaned_data["points"],
                    reason=form.cleaned_data["reason"],
                    by=request.user,  # type: ignore[arg-type]
                    idempotency_key=f"counter-adjust:{form.cleaned_data['token']}",
                )
            except (ValidationError, RewardsError) as error:
                _refuse(form, error)
            else:
                change = ("+" if entry.points > 0 else "") + points_text(entry.points)
                messages.success(
                    request,
                    _("Adjusted %(member)s by %(change)s: %(reason)s")
                    % {"member": member, "change": change, "reason": entry.reason},
                )
                form = staff_forms.AdjustPointsForm()  # a new token for the next adjustment
    else:
        form = staff_forms.AdjustPointsForm()
    context = {"form": form, "entry": entry, "allowance_left": services.adjust_allowance_left(by=request.user)}  # type: ignore[arg-type]
    if entry is not None:
        return _done(request, member, "staff/adjust.html", "adjust", context)
    context.update(member=member, account=selectors.account_for(member))
    return page_or_partial(request, "staff/adjust.html", "adjust", context)


def _adjustments_on(day: dt.date, *, tz: zoneinfo.ZoneInfo, store: Store | None) -> "QuerySet[LedgerEntry]":
    """Return the adjustments made on a day of the programme, by staff of a store (None: by anyone), newest first."""
    start = dt.datetime.combine(day, dt.time(), tzinfo=tz)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=tz)
    entries = LedgerEntry.objects.filter(kind=LedgerEntry.Kind.ADJUSTMENT, created_at__gte=start, created_at__lt=end)
    if store is not None:
        entries = entries.filter(actor__stores=store)
    return entries.select_related("actor", "account__member").order_by("-created_at", "-pk")


@require_http_methods(["GET"])
@access.staff_view
def adjustments(request: HttpRequest) -> HttpResponse:
    """List the points adjustments of a day: a manager sees those of their store's staff, a programme admin all."""
    access.access_permission(request.user, "rewards.adjust_points")  # type: ignore[arg-type]
    tz = services.programme_get().tz
    today = timezone.localdate(timezone=tz)
    form = staff_forms.AdjustmentDayForm(request.GET if request.GET.get("day") else None, today=today)
    day = form.cleaned_data["day"] if form.is_bound and form.is_valid() else today
    # Programme admins see every store's; anyone else only what staff of the shift's store did, wherever.
    everyone = request.user.has_perm("rewards.change_programmerules")
    entries = list(_adjustments_on(day, tz=tz, store=None if everyone else request.store))  # type: ignore[attr-defined]
    context = {"form": form, "day": day, "today": today, "entries": entries, "everyone": everyone, "tz": tz}
    return page_or_partial(request, "staff/adjustments.html", "adjustments", context)
