import uuid

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from modeltranslation.admin import TranslationAdmin

from members.models import Store
from rewards import catalog, imports, services, tiers
from rewards.explanations import explain_stamps
from rewards.models import (
    HistoryImport,
    JobRun,
    LedgerEntry,
    MemberTier,
    PointsAccount,
    PointsLot,
    Programme,
    ProgrammeRules,
    Purchase,
    PurchaseLine,
    Redemption,
    Return,
    Reward,
    StampCard,
    StampEvent,
    StampProgramme,
    TermsAcceptance,
    TermsText,
    TermsVersion,
    Tier,
    TierChange,
    Voucher,
)


class ReadOnlyMixin:
    """The ledger is append-only: rows are written by services, never edited by hand."""

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Programme)
class ProgrammeAdmin(admin.ModelAdmin):
    list_display = ["name", "currency", "timezone"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return not Programme.objects.exists()

    def get_readonly_fields(self, request: HttpRequest, obj: Programme | None = None) -> list[str]:
        # Amounts already recorded are in this currency; changing it would rewrite history.
        return ["currency"] if obj is not None and Purchase.objects.exists() else []

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class RulesForm(forms.ModelForm):
    class Meta:
        model = ProgrammeRules
        fields = [
            "effective_from",
            "change_note",
            "points_per_unit",
            "rounding",
            "earn_base",
            "excluded_categories",
            "minimum_purchase",
            "pending_days",
            "expiry_policy",
            "expiry_months",
            "expiry_years",
            "claim_days",
            "min_redemption_points",
        ]

    def clean_effective_from(self):  # type: ignore[no-untyped-def]
        value = self.cleaned_data["effective_from"]
        if value < timezone.now() - services.CLOCK_SKEW:
            raise ValidationError(_("New rules cannot start in the past."))
        return value


@admin.register(ProgrammeRules)
class ProgrammeRulesAdmin(admin.ModelAdmin):
    """A change of rules is a new version from a date; versions in force are kept as they were."""

    form = RulesForm
    list_display = [
        "effective_from",
        "points_per_unit",
        "pending_days",
        "expiry_policy",
        "change_note",
        "created_by",
        "created_at",
    ]
    readonly_fields = ["created_by", "created_at"]
    fieldsets = [
        (None, {"fields": ["effective_from", "change_note"]}),
        (_("Earning"), {"fields": ["points_per_unit", "rounding", "earn_base", "excluded_categories", "minimum_purchase"]}),
        (
            _("Availability and expiry"),
            {"fields": ["pending_days", "expiry_policy", "expiry_months", "expiry_years", "claim_days"]},
        ),
        (_("Spending"), {"fields": ["min_redemption_points"]}),
        (_("Record"), {"fields": ["created_by", "created_at"]}),
    ]

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, object]:
        # Start a new version from the one in force, so only the change has to be typed.
        current = ProgrammeRules.objects.in_force(timezone.now())
        if current is None:
            return {"effective_from": timezone.now()}
        initial = forms.model_to_dict(current, exclude=["id", "programme", "created_by", "change_note"])
        initial["effective_from"] = timezone.now()
        return initial

    def has_change_permission(self, request: HttpRequest, obj: ProgrammeRules | None = None) -> bool:
        if obj is not None and obj.is_in_force_or_past:
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: ProgrammeRules | None = None) -> bool:
        return self.has_change_permission(request, obj)

    def save_model(self, request: HttpRequest, obj: ProgrammeRules, form: forms.ModelForm, change: bool) -> None:
        if not change:
            obj.programme = services.programme_get()
            obj.created_by = request.user  # type: ignore[assignment]
        super().save_model(request, obj, form, change)


class TermsTextInline(admin.StackedInline):
    model = TermsText
    extra = 1


@admin.register(TermsVersion)
class TermsVersionAdmin(admin.ModelAdmin):
    list_display = ["version", "published_at", "created_at"]
    inlines = [TermsTextInline]
    exclude = ["programme"]

    def has_change_permission(self, request: HttpRequest, obj: TermsVersion | None = None) -> bool:
        # Once members could have accepted a version, its text is evidence and stays as it was.
        if obj is not None and obj.published_at <= timezone.now():
            return False
        return super().has_change_permission(request, obj)

    def save_model(self, request: HttpRequest, obj: TermsVersion, form: forms.ModelForm, change: bool) -> None:
        if not change:
            obj.programme = services.programme_get()
        super().save_model(request, obj, form, change)


@admin.register(TermsAcceptance)
class TermsAcceptanceAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["member", "terms", "accepted_at", "channel"]
    list_filter = ["terms", "channel"]
    search_fields = ["member__member_number", "member__phone", "member__email"]
    list_select_related = ["member", "terms"]


class AdjustPointsForm(forms.Form):
    points = forms.IntegerField(label=_("Points"), help_text=_("Positive to add, negative to take away."))
    reason = forms.CharField(label=_("Reason"), max_length=300, help_text=_("The member sees this next to the change."))
    # One token a form: submitting it twice (a double click, a reload) adjusts once.
    token = forms.UUIDField(widget=forms.HiddenInput, initial=uuid.uuid4)


@admin.register(PointsAccount)
class PointsAccountAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["member", "available", "pending", "owed", "lifetime_earned", "lifetime_spent", "updated_at"]
    search_fields = ["member__member_number", "member__phone", "member__email", "member__name"]
    list_select_related = ["member"]
    actions = ["adjust_points"]

    @admin.action(description=_("Adjust points"), permissions=["adjust"])
    def adjust_points(self, request: HttpRequest, queryset: QuerySet[PointsAccount]) -> HttpResponse | None:
        form = AdjustPointsForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            done = 0
            for account in queryset.select_related("member"):
                try:
                    services.points_adjust(
                        member=account.member,
                        points=form.cleaned_data["points"],
                        reason=form.cleaned_data["reason"],
                        by=request.user,  # type: ignore[arg-type]
                        idempotency_key=f"admin-adjust:{form.cleaned_data['token']}",
                    )
                    done += 1
                except (ValidationError, services.RewardsError, PermissionDenied) as error:
                    message = getattr(error, "message", None) or "; ".join(getattr(error, "messages", [str(error)]))
                    self.message_user(request, f"{account.member}: {message}", messages.ERROR)
            if done:
                self.message_user(request, _("Adjusted %(count)s account(s).") % {"count": done}, messages.SUCCESS)
            return None
        return TemplateResponse(
            request,
            "admin/rewards/adjust_points.html",
            {
                **self.admin_site.each_context(request),
                "title": _("Adjust points"),
                "form": form,
                "accounts": queryset,
                "opts": self.model._meta,
            },
        )

    def has_adjust_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("rewards.adjust_points")


class PurchaseLineInline(ReadOnlyMixin, admin.TabularInline):
    model = PurchaseLine
    extra = 0
    fields = ["line_number", "sku", "name", "category", "quantity", "amount"]
    readonly_fields = fields


class ReturnInline(ReadOnlyMixin, admin.TabularInline):
    model = Return
    extra = 0
    fields = ["return_number", "amount", "points_clawed_back", "recorded_at", "recorded_by"]
    readonly_fields = fields


class ImportForm(forms.Form):
    kind = forms.ChoiceField(label=_("What the file holds"), choices=HistoryImport.Kind.choices)
    file = forms.FileField(label=_("CSV or XLSX file"))
    store = forms.ModelChoiceField(
        label=_("Store"), queryset=Store.objects.all(), required=False, help_text=_("For purchase rows without a store column.")
    )
    create_members = forms.BooleanField(label=_("Enrol unknown phone numbers and e-mails"), required=False)
    skip_invalid = forms.BooleanField(label=_("Import the good rows even if some are bad"), required=False)
    dry_run = forms.BooleanField(label=_("Only check the file"), required=False, initial=True)

    def clean(self) -> dict[str, object]:
        cleaned = super().clean()
        upload = cleaned.get("file")
        if upload and cleaned.get("kind"):
            try:  # a file no worker could read is refused at once, not after a wait
                imports.history_file_check(cleaned["kind"], upload, store=cleaned.get("store"))
            except imports.ImportFileError as error:
                self.add_error("file", str(error))
        return cleaned


@admin.register(Purchase)
class PurchaseAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["receipt_number", "store", "member", "gross", "net", "points_earned", "occurred_at", "channel"]
    list_filter = ["store", "channel", "occurred_at"]
    search_fields = ["receipt_number", "member__member_number", "member__phone", "member__email"]
    date_hierarchy = "occurred_at"
    list_select_related = ["store", "member"]
    inlines = [PurchaseLineInline, ReturnInline]
    change_list_template = "admin/rewards/purchase/change_list.html"

    def get_urls(self) -> list[URLPattern]:
        return [path("import/", self.admin_site.admin_view(self.import_view), name="rewards_import"), *super().get_urls()]

    def import_view(self, request: HttpRequest) -> HttpResponse:
        """Take a file to check or import; a worker does it, and the import's page shows the report."""
        if not request.user.has_perm("rewards.import_history"):
            raise PermissionDenied
        form = ImportForm(request.POST or None, request.FILES or None)
        if form.is_valid():
            run = imports.history_import_request(
                kind=form.cleaned_data["kind"],
                upload=form.cleaned_data["file"],
                by=request.user,
                store=form.cleaned_data["store"],
                create_members=form.cleaned_data["create_members"],
                skip_invalid=form.cleaned_data["skip_invalid"],
                dry_run=form.cleaned_data["dry_run"],
            )
            return HttpResponseRedirect(reverse("admin:rewards_historyimport_change", args=[run.pk]))
        context = {**self.admin_site.each_context(request), "title": _("Import history"), "form": form}
        context["opts"] = self.model._meta
        return TemplateResponse(request, "admin/rewards/import.html", context)


@admin.register(HistoryImport)
class HistoryImportAdmin(admin.ModelAdmin):
    """Every file uploaded for import, who sent it, and what became of it. Read-only: a worker writes it."""

    list_display = ["requested_at", "file_name", "dry_run", "status", "summary"]
    list_filter = ["status", "kind", "dry_run"]
    fields = [
        "file_name",
        "kind",
        "store",
        "dry_run",
        "skip_invalid",
        "create_members",
        "status",
        "requested_by",
        "requested_at",
        "started_at",
        "finished_at",
        "outcome",
    ]
    readonly_fields = fields
    change_form_template = "admin/rewards/historyimport/change_form.html"
    actions = None  # one at a time, from its page: a run still pending cannot be deleted

    def _allowed(self, request: HttpRequest) -> bool:
        return request.user.has_perm("rewards.import_history")

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self._allowed(request)

    def has_view_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return self._allowed(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # through the upload form

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: HistoryImport | None = None) -> bool:
        return self._allowed(request) and not (obj and obj.pending)

    def delete_model(self, request: HttpRequest, obj: HistoryImport) -> None:
        imports.history_import_delete(obj)

    @admin.display(description=_("summary"))
    def summary(self, obj: HistoryImport) -> str:
        if obj.error:
            return obj.error
        report = obj.report
        if not report:
            return ""
        if obj.kind == HistoryImport.Kind.MEMBERS:
            return _("%(rows)s rows, %(invalid)s to fix, %(created)s new members, %(updated)s updated") % {
                "rows": report["rows"],
                "invalid": report["invalid"],
                "created": report["members_created"],
                "updated": report["members_updated"],
            }
        return _("%(rows)s rows, %(invalid)s to fix, %(created)s purchases recorded") % {
            "rows": report["rows"],
            "invalid": report["invalid"],
            "created": report["purchases_created"],
        }

    @admin.display(description=_("outcome"))
    def outcome(self, obj: HistoryImport) -> str:
        return render_to_string("admin/rewards/historyimport/outcome.html", {"run": obj})

    def get_urls(self) -> list[URLPattern]:
        follow = path("<int:pk>/import/", self.admin_site.admin_view(self.follow_view), name="rewards_historyimport_follow")
        return [follow, *super().get_urls()]

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, object] | None = None
    ) -> HttpResponse:
        run = self.get_object(request, object_id)
        extra = {**(extra_context or {}), "can_follow": bool(run) and imports.history_import_can_follow(run)}
        return super().change_view(request, object_id, form_url, extra)

    def follow_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """Import the file of a clean dry run, or again that of an import that failed."""
        if request.method != "POST" or not self._allowed(request):
            raise PermissionDenied
        run = get_object_or_404(HistoryImport, pk=pk)
        try:
            again = imports.history_import_again(run, by=request.user)
        except ValueError:
            self.message_user(request, _("This file cannot be imported from here: upload it again."), messages.ERROR)
            return HttpResponseRedirect(reverse("admin:rewards_historyimport_change", args=[run.pk]))
        return HttpResponseRedirect(reverse("admin:rewards_historyimport_change", args=[again.pk]))


@admin.register(Return)
class ReturnAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["return_number", "purchase", "amount", "points_clawed_back", "recorded_at"]
    search_fields = ["return_number", "purchase__receipt_number", "purchase__member__member_number"]
    list_select_related = ["purchase__store"]


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["occurred_at", "account", "kind", "points", "explanation", "actor"]
    list_filter = ["kind", "occurred_at"]
    search_fields = ["account__member__member_number", "account__member__phone", "purchase__receipt_number", "reason"]
    date_hierarchy = "occurred_at"
    list_select_related = ["account__member", "actor"]


@admin.register(PointsLot)
class PointsLotAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["account", "points", "remaining", "status", "available_at", "expires_at"]
    list_filter = ["status", "expires_at"]
    search_fields = ["account__member__member_number", "account__member__phone"]
    list_select_related = ["account__member"]


# --- stamp cards ------------------------------------------------------------------------


class StampProgrammeForm(forms.ModelForm):
    class Meta:
        model = StampProgramme
        fields = ["name", "active", "stamps_needed", "rule", "min_amount", "category", "sku", "reward"]

    def clean(self) -> dict[str, object]:
        cleaned = super().clean()
        # The database refuses these too; here the merchant is told which field to fill in.
        rule = cleaned.get("rule")
        if rule == StampProgramme.Rule.CATEGORY_ITEM and not (cleaned.get("category") or "").strip():
            self.add_error("category", _("Name the category whose items earn a stamp."))
        if rule == StampProgramme.Rule.SKU_ITEM and not (cleaned.get("sku") or "").strip():
            self.add_error("sku", _("Give the SKU of the product that earns a stamp."))
        return cleaned


@admin.register(StampProgramme)
class StampProgrammeAdmin(TranslationAdmin):
    form = StampProgrammeForm
    list_display = ["name", "rule", "stamps_needed", "reward", "active"]
    list_filter = ["active", "rule"]
    list_select_related = ["reward"]

    def save_model(self, request: HttpRequest, obj: StampProgramme, form: forms.ModelForm, change: bool) -> None:
        if not change:
            obj.programme = services.programme_get()
        super().save_model(request, obj, form, change)

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        # Cards and their history point at the programme: retire it by making it inactive.
        return False


class StampEventInline(ReadOnlyMixin, admin.TabularInline):
    model = StampEvent
    extra = 0
    fields = ["created_at", "stamps", "purchase", "return_record", "explanation"]
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[StampEvent]:
        return super().get_queryset(request).select_related("card__voucher__reward", "purchase__store", "return_record")

    @admin.display(description=_("explanation"))
    def explanation(self, obj: StampEvent) -> str:
        return explain_stamps(obj)


@admin.register(StampCard)
class StampCardAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["member", "programme", "stamps", "created_at", "completed_at", "voucher"]
    list_filter = ["programme", "completed_at"]
    search_fields = ["member__member_number", "member__phone", "member__email"]
    list_select_related = ["member", "programme", "voucher"]
    inlines = [StampEventInline]


# --- the programme clock ----------------------------------------------------------------


@admin.register(JobRun)
class JobRunAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["job", "started_at", "duration", "status", "counts", "short_error"]
    list_filter = ["job", "status"]
    date_hierarchy = "started_at"
    fields = ["job", "started_at", "finished_at", "duration", "status", "counts", "error"]
    readonly_fields = fields

    @admin.display(description=_("duration"))
    def duration(self, obj: JobRun) -> str:
        return f"{obj.duration.total_seconds():,.1f} s" if obj.duration is not None else "—"

    @admin.display(description=_("error"))
    def short_error(self, obj: JobRun) -> str:
        return obj.error[:120]


# --- reward catalog, redemptions and vouchers ---------------------------------------------


class RewardForm(forms.ModelForm):
    # The stock shown when the page was opened (blank for unlimited). Saving applies the merchant's change
    # from it to what is left then, so redemptions made while the page was open are not undone.
    stock_seen = forms.IntegerField(required=False, min_value=0, widget=forms.HiddenInput)

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.fields["stock_seen"].initial = self.instance.stock

    def clean(self) -> dict[str, object]:
        cleaned = super().clean()
        if self.instance.pk is None or self.has_error("stock") or self.has_error("stock_seen"):
            return cleaned
        if "stock_seen" not in self.data:
            raise ValidationError(_("This page is out of date: open the reward again and make the change there."))
        try:
            # Locks the reward's row for the rest of the admin's transaction, so the stock checked here is
            # the stock save_model changes.
            catalog.reward_stock_check(reward=self.instance, seen=cleaned.get("stock_seen"), wanted=cleaned.get("stock"))
        except ValidationError as error:
            self.add_error(None, error)
        return cleaned


@admin.register(Reward)
class RewardAdmin(TranslationAdmin):
    form = RewardForm
    list_display = [
        "thumbnail",
        "title",
        "kind",
        "points_cost",
        "stock",
        "limit_per_member",
        "min_tier",
        "available_from",
        "available_until",
        "visible_from",
        "visible_until",
        "active",
    ]
    list_display_links = ["thumbnail", "title"]
    list_filter = ["active", "kind", "min_tier"]
    search_fields = ["title", "description"]
    list_select_related = ["min_tier"]
    fieldsets = [
        (None, {"fields": ["kind", "title", "description", "image", "active"]}),
        (_("Cost and value"), {"fields": ["points_cost", "value"]}),
        (_("Who and how many"), {"fields": ["min_tier", "stock", "stock_seen", "limit_per_member"]}),
        (
            _("When"),
            {"fields": ["visible_from", "visible_until", "available_from", "available_until", "voucher_valid_days"]},
        ),
    ]

    @admin.display(description=_("image"))
    def thumbnail(self, obj: Reward) -> str:
        return format_html('<img src="{}" alt="" width="48">', obj.image.url) if obj.image else "—"

    def save_model(self, request: HttpRequest, obj: Reward, form: forms.ModelForm, change: bool) -> None:
        if not change:
            obj.programme = services.programme_get()
            super().save_model(request, obj, form, change)
            return
        # Every column but the stock, which moves only by the merchant's change (see RewardForm).
        obj.save(update_fields=[f.name for f in Reward._meta.concrete_fields if not f.primary_key and f.name != "stock"])
        catalog.reward_stock_set(reward=obj, seen=form.cleaned_data["stock_seen"], wanted=form.cleaned_data["stock"])


@admin.register(Redemption)
class RedemptionAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["created_at", "member", "reward", "points", "status", "voucher", "store", "created_via", "cancelled_at"]
    list_filter = ["status", "store", "created_at"]
    search_fields = ["member__member_number", "member__phone", "member__email", "voucher__code"]
    date_hierarchy = "created_at"
    list_select_related = ["member", "reward", "voucher", "store"]
    actions = ["cancel"]

    @admin.action(description=_("Cancel, giving the points back"), permissions=["cancel"])
    def cancel(self, request: HttpRequest, queryset: QuerySet[Redemption]) -> None:
        done = 0
        for redemption in queryset.select_related("member"):
            try:
                catalog.redemption_cancel(redemption=redemption, by=request.user)  # type: ignore[arg-type]
                done += 1
            except services.RewardsError as error:
                self.message_user(request, f"{redemption}: {error.message}", messages.ERROR)
        if done:
            self.message_user(request, _("Cancelled %(count)s redemption(s).") % {"count": done}, messages.SUCCESS)

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("rewards.change_redemption")


@admin.register(Voucher)
class VoucherAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["code", "member", "reward", "status", "issued_at", "expires_at", "used_at", "used_store", "used_via"]
    list_filter = ["status", "reward", "used_store"]
    search_fields = ["code", "member__member_number", "member__phone"]
    date_hierarchy = "issued_at"
    list_select_related = ["member", "reward", "used_store"]

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Voucher], search_term: str
    ) -> tuple[QuerySet[Voucher], bool]:
        found, duplicates = super().get_search_results(request, queryset, search_term)
        # A code read off a phone is often typed in lower case or without its dashes.
        if code := catalog.voucher_code_normalise(search_term):
            found |= queryset.filter(code=code)
        return found, duplicates


# --- tiers ----------------------------------------------------------------------------------


@admin.register(Tier)
class TierAdmin(TranslationAdmin):
    list_display = [
        "rank",
        "name",
        "metric",
        "window",
        "entry_threshold",
        "retain_threshold",
        "grace_days",
        "earn_multiplier",
        "invitation_only",
        "active",
    ]
    list_display_links = ["rank", "name"]
    list_filter = ["active", "invitation_only", "metric"]
    fieldsets = [
        (None, {"fields": ["code", "name", "rank", "active"]}),
        (
            _("How it is reached and kept"),
            {"fields": ["metric", "window", "window_months", "entry_threshold", "retain_threshold", "grace_days"]},
        ),
        (_("Benefits"), {"fields": ["earn_multiplier", "birthday_bonus_points", "perks"]}),
        (_("By invitation"), {"fields": ["invitation_only"]}),
    ]

    def save_model(self, request: HttpRequest, obj: Tier, form: forms.ModelForm, change: bool) -> None:
        if not change:
            obj.programme = services.programme_get()
        super().save_model(request, obj, form, change)


class TierInviteForm(forms.ModelForm):
    """The add form of member tiers: invite a member to a tier by invitation, until a day."""

    note = forms.CharField(label=_("Note"), max_length=300, required=False, help_text=_("Kept in the tier history."))

    class Meta:
        model = MemberTier
        fields = ["member", "tier", "invited_until"]
        labels = {"tier": _("Invite to"), "invited_until": _("Until (last day)")}

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.fields["tier"].queryset = Tier.objects.filter(invitation_only=True, active=True)  # type: ignore[attr-defined]
        self.fields["tier"].required = True
        self.fields["invited_until"].required = True

    def clean(self) -> dict[str, object]:
        data = super().clean() or {}
        if not self.errors:
            today = timezone.localdate(timezone.now(), services.programme_get().tz)
            errors = tiers.tier_invite_errors(member=data["member"], tier=data["tier"], until=data["invited_until"], today=today)
            for field, message in errors.items():
                self.add_error("invited_until" if field == "until" else field, message)
        return data

    def validate_unique(self) -> None:
        """A member already holding a tier is invited all the same: the service updates their row."""


@admin.register(MemberTier)
class MemberTierAdmin(admin.ModelAdmin):
    """Members' tiers, read-only; adding one here invites a member to a tier by invitation."""

    list_display = ["member", "tier", "since", "invited_until", "missed_since", "evaluated_on"]
    list_filter = ["tier", "evaluated_on"]
    search_fields = ["member__member_number", "member__phone", "member__email", "member__name"]
    list_select_related = ["member", "tier"]
    raw_id_fields = ["member"]

    def get_form(self, request: HttpRequest, obj: MemberTier | None = None, change: bool = False, **kwargs: object):  # type: ignore[no-untyped-def,override]
        if obj is None:
            kwargs["form"] = TierInviteForm
            kwargs["fields"] = ["member", "tier", "invited_until", "note"]
        return super().get_form(request, obj, change, **kwargs)

    def get_fields(self, request: HttpRequest, obj: MemberTier | None = None) -> list[str]:  # type: ignore[override]
        if obj is None:
            return ["member", "tier", "invited_until", "note"]
        return ["member", "tier", "since", "invited_until", "missed_since", "evaluated_on"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(tiers.INVITE_PERMISSION)

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # tiers change through purchases, the evaluation and invitations, with their history

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: MemberTier, form: forms.ModelForm, change: bool) -> None:
        tiers.tier_invite(
            member=form.cleaned_data["member"],
            tier=form.cleaned_data["tier"],
            until=form.cleaned_data["invited_until"],
            by=request.user,  # type: ignore[arg-type]
            note=form.cleaned_data["note"],
        )


@admin.register(TierChange)
class TierChangeAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["created_at", "member", "from_tier", "to_tier", "reason", "detail", "note", "actor"]
    list_filter = ["reason", "to_tier", "created_at"]
    search_fields = ["member__member_number", "member__phone", "member__email", "note"]
    date_hierarchy = "created_at"
    list_select_related = ["member", "from_tier", "to_tier", "actor"]
