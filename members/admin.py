from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.utils.translation import gettext_lazy as _
from modeltranslation.admin import TranslationAdmin

from members import services
from members.models import ApiKey, Category, ConsentRecord, Member, Notification, Store, User


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    ordering = ["email"]
    list_display = ["email", "name", "is_staff", "is_active", "last_login"]
    list_filter = ["is_staff", "is_active", "groups", "stores"]
    search_fields = ["email", "name"]
    filter_horizontal = ["groups", "user_permissions", "stores"]
    fieldsets = [
        (None, {"fields": ["email", "password", "name"]}),
        (_("Work"), {"fields": ["stores", "groups"]}),
        (_("Access"), {"fields": ["is_active", "is_staff", "is_superuser", "user_permissions"]}),
        (_("Dates"), {"fields": ["last_login", "date_joined"]}),
    ]
    add_fieldsets = [(None, {"classes": ["wide"], "fields": ["email", "name", "password1", "password2"]})]


@admin.register(Store)
class StoreAdmin(admin.ModelAdmin):
    list_display = ["code", "name", "timezone", "is_active"]
    list_filter = ["is_active", "timezone"]
    search_fields = ["code", "name", "address"]


@admin.register(Category)
class CategoryAdmin(TranslationAdmin):
    list_display = ["code", "name", "position", "is_active"]
    list_editable = ["position", "is_active"]
    list_filter = ["is_active"]
    search_fields = ["code", "name"]


class ConsentRecordInline(admin.TabularInline):
    model = ConsentRecord
    extra = 0
    can_delete = False
    readonly_fields = ["channel", "granted", "recorded_at", "source", "recorded_by"]

    def has_add_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False


@admin.register(Member)
class MemberAdmin(admin.ModelAdmin):
    list_display = ["member_number", "name", "phone", "email", "status", "enrolled_at", "enrolled_store"]
    list_filter = ["status", "enrolment_channel", "enrolled_store", "language", "email_consent", "sms_consent"]
    search_fields = ["member_number", "phone", "email", "name", "card_code", "external_ref"]
    date_hierarchy = "enrolled_at"
    list_select_related = ["enrolled_store"]
    readonly_fields = [
        "member_number",
        "card_code",
        "enrolled_at",
        "enrolment_channel",
        "enrolled_store",
        "enrolled_by",
        "email_consent",
        "email_consent_at",
        "sms_consent",
        "sms_consent_at",
        "updated_at",
    ]
    raw_id_fields = ["user"]
    filter_horizontal = ["favourite_categories"]
    inlines = [ConsentRecordInline]
    fieldsets = [
        (None, {"fields": ["member_number", "card_code", "status"]}),
        (
            _("Contact"),
            {"fields": ["name", "phone", "email", "language", "birthday", "gender", "preferred_store", "external_ref", "user"]},
        ),
        (
            _("Preferences"),
            {"fields": ["favourite_categories"]},
        ),
        (_("Enrolment"), {"fields": ["enrolled_at", "enrolment_channel", "enrolled_store", "enrolled_by"]}),
        (_("Marketing consent"), {"fields": ["email_consent", "email_consent_at", "sms_consent", "sms_consent_at"]}),
    ]

    def has_add_permission(self, request) -> bool:  # type: ignore[no-untyped-def]
        # Members are enrolled at the counter, online, by API or import: all through the service.
        return False


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "store", "prefix", "requests_per_minute", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["store", ("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "prefix", "store__code"]
    fields = ["store", "name", "requests_per_minute", "prefix", "created_at", "created_by", "last_used_at", "revoked_at"]
    readonly_fields = ["prefix", "created_at", "created_by", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def get_readonly_fields(self, request, obj=None):  # type: ignore[no-untyped-def]
        return [*self.readonly_fields, "store"] if obj else self.readonly_fields

    def save_model(self, request, obj, form, change):  # type: ignore[no-untyped-def]
        if change:
            super().save_model(request, obj, form, change)
            return
        key, raw_key = services.api_key_create(
            store=obj.store, name=obj.name, by=request.user, requests_per_minute=obj.requests_per_minute
        )
        obj.pk, obj.prefix, obj.key_hash = key.pk, key.prefix, key.key_hash
        self.message_user(
            request,
            _("The new key is %(key)s. Copy it now: it is not shown again.") % {"key": raw_key},
            messages.WARNING,
        )

    @admin.action(description=_("Revoke the selected keys"))
    def revoke(self, request, queryset):  # type: ignore[no-untyped-def]
        for key in queryset:
            services.api_key_revoke(key=key)
        self.message_user(request, _("Revoked %(count)s key(s).") % {"count": queryset.count()}, messages.SUCCESS)

    def has_delete_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False  # revoke instead: purchases keep the name of the key that recorded them


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    """Messages are written by the programme; the admin shows what was sent, to whom, and how it went."""

    list_display = ["created_at", "member", "kind", "subject", "email_status", "sms_status", "attempts", "read_at"]
    list_filter = ["kind", "email_status", "sms_status"]
    search_fields = ["member__member_number", "member__phone", "member__email", "member__name", "subject"]
    date_hierarchy = "created_at"
    list_select_related = ["member"]
    fields = [
        "member",
        "kind",
        "key",
        "subject",
        "body",
        "link",
        "created_at",
        "read_at",
        "email_status",
        "sms_status",
        "attempts",
        "delivered_at",
    ]
    readonly_fields = fields

    def has_add_permission(self, request) -> bool:  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False

    def has_delete_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False
