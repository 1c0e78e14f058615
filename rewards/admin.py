import uuid

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from members.models import Store
from rewards import imports, services
from rewards.models import (
    LedgerEntry,
    PointsAccount,
    PointsLot,
    Programme,
    ProgrammeRules,
    Purchase,
    PurchaseLine,
    Return,
    TermsAcceptance,
    TermsText,
    TermsVersion,
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
    kind = forms.ChoiceField(label=_("What the file holds"), choices=[("purchases", _("Purchases")), ("members", _("Members"))])
    file = forms.FileField(label=_("CSV or XLSX file"))
    store = forms.ModelChoiceField(
        label=_("Store"), queryset=Store.objects.all(), required=False, help_text=_("For purchase rows without a store column.")
    )
    create_members = forms.BooleanField(label=_("Enrol unknown phone numbers and e-mails"), required=False)
    skip_invalid = forms.BooleanField(label=_("Import the good rows even if some are bad"), required=False)
    dry_run = forms.BooleanField(label=_("Only check the file"), required=False, initial=True)


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
        """Import history with the same checks as the command, and show the report."""
        if not request.user.has_perm("rewards.import_history"):
            raise PermissionDenied
        form = ImportForm(request.POST or None, request.FILES or None)
        report = None
        if form.is_valid():
            upload = form.cleaned_data["file"]
            try:
                if form.cleaned_data["kind"] == "members":
                    header, rows = imports.read_rows(upload.name, upload)
                    report = imports.import_members(
                        rows, header, dry_run=form.cleaned_data["dry_run"], skip_invalid=form.cleaned_data["skip_invalid"]
                    )
                else:
                    report = imports.import_purchases(
                        upload.name,
                        upload,
                        store=form.cleaned_data["store"],
                        create_members=form.cleaned_data["create_members"],
                        dry_run=form.cleaned_data["dry_run"],
                        skip_invalid=form.cleaned_data["skip_invalid"],
                    )
            except imports.ImportFileError as error:
                form.add_error("file", str(error))
        context = {**self.admin_site.each_context(request), "title": _("Import history"), "form": form, "report": report}
        context["opts"] = self.model._meta
        return TemplateResponse(request, "admin/rewards/import.html", context)


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
