from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.translation import gettext_lazy as _

from referrals import services
from referrals.models import Referral, ReferralCode, ReferralEvent, ReferralSettings
from rewards.admin import ReadOnlyMixin
from rewards.services import programme_get


@admin.register(ReferralSettings)
class ReferralSettingsAdmin(admin.ModelAdmin):
    """The programme's one set of referral settings: changed, never added twice nor deleted."""

    exclude = ["programme"]
    readonly_fields = ["updated_at"]
    fieldsets = [
        (None, {"fields": ["active"]}),
        (_("What qualifies"), {"fields": ["qualifying_amount", "qualifying_days"]}),
        (_("Rewards"), {"fields": ["referrer_points", "referrer_reward", "friend_points", "friend_reward", "hold_days"]}),
        (_("Limits and review"), {"fields": ["monthly_cap", "manual_approval"]}),
        (
            _("Fraud guards"),
            {
                "fields": [
                    "guard_same_contact",
                    "guard_same_device",
                    "guard_staff_self",
                    "burst_hours",
                    "signups_per_ip",
                    "joins_per_referrer",
                ]
            },
        ),
        (None, {"fields": ["updated_at"]}),
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return super().has_add_permission(request) and not ReferralSettings.objects.exists()

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, object] | None = None) -> HttpResponse:
        # One row: the list would only ever hold it, so open it.
        found = ReferralSettings.objects.first()
        if found is not None and self.has_view_or_change_permission(request, found):
            return HttpResponseRedirect(reverse("admin:referrals_referralsettings_change", args=[found.pk]))
        return super().changelist_view(request, extra_context)

    def save_model(self, request: HttpRequest, obj: ReferralSettings, form: forms.ModelForm, change: bool) -> None:
        if not change:
            obj.programme = programme_get()
        super().save_model(request, obj, form, change)


class ReferralEventInline(admin.TabularInline):
    model = ReferralEvent
    fields = readonly_fields = ["at", "status", "reason", "by"]
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class FlagFilter(admin.SimpleListFilter):
    title = _("flag")
    parameter_name = "flag"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return list(Referral.Flag.choices)

    def queryset(self, request: HttpRequest, queryset: QuerySet[Referral]) -> QuerySet[Referral]:
        if self.value() in Referral.Flag.values:
            return queryset.filter(flags__contains=[self.value()])
        return queryset


class RejectForm(forms.Form):
    note = forms.CharField(
        label=_("Why"),
        max_length=300,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=_("Kept with each referral's history. Rewards still held are taken back."),
    )


@admin.register(Referral)
class ReferralAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """Referrals are written by the services only: read here, and approved or rejected by an action."""

    list_display = ["joined_at", "status", "flag_labels", "referrer", "friend", "code", "qualified_at", "hold_until", "closed_at"]
    list_filter = ["status", FlagFilter, "capped", "joined_at"]
    search_fields = ["referrer__member_number", "friend__member_number", "code"]
    date_hierarchy = "joined_at"
    list_select_related = ["referrer", "friend"]
    inlines = [ReferralEventInline]
    actions = ["approve", "reject"]
    readonly_fields = ["flag_labels"]

    @admin.display(description=_("flags"))
    def flag_labels(self, obj: Referral) -> str:
        return obj.flags_text()

    def has_review_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("referrals.change_referral")

    def _decided(self, request: HttpRequest, done: int, text: str) -> None:
        if done:
            self.message_user(request, text % {"count": done}, messages.SUCCESS)

    def _refused(self, request: HttpRequest, referral: Referral, error: ValidationError) -> None:
        self.message_user(request, f"{referral}: {'; '.join(error.messages)}", messages.ERROR)

    @admin.action(description=_("Approve, paying out both rewards"), permissions=["review"])
    def approve(self, request: HttpRequest, queryset: QuerySet[Referral]) -> None:
        done = 0
        for referral in queryset.select_related("referrer", "friend"):
            try:
                services.referral_approve(referral=referral, by=request.user)  # type: ignore[arg-type]
                done += 1
            except ValidationError as error:
                self._refused(request, referral, error)
        self._decided(request, done, _("Approved %(count)s referral(s)."))

    @admin.action(description=_("Reject, with a note"), permissions=["review"])
    def reject(self, request: HttpRequest, queryset: QuerySet[Referral]) -> HttpResponse | None:
        form = RejectForm(request.POST if "apply" in request.POST else None)
        if not form.is_valid():
            context = {
                **self.admin_site.each_context(request),
                "title": _("Reject referrals"),
                "form": form,
                "referrals": queryset.select_related("referrer", "friend"),
                "opts": self.model._meta,
            }
            return TemplateResponse(request, "admin/referrals/reject.html", context)
        done = 0
        for referral in queryset.select_related("referrer", "friend"):
            try:
                services.referral_reject(referral=referral, by=request.user, note=form.cleaned_data["note"])  # type: ignore[arg-type]
                done += 1
            except ValidationError as error:
                self._refused(request, referral, error)
        self._decided(request, done, _("Rejected %(count)s referral(s)."))
        return None


@admin.register(ReferralCode)
class ReferralCodeAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["code", "member", "created_at", "shares", "visits"]
    search_fields = ["code", "member__member_number"]
    list_select_related = ["member"]
    readonly_fields = ["code", "member", "created_at", "shares", "visits"]
    exclude = ["devices"]
