"""The member portal under /me/: pages from `members` (identity, inbox, privacy) and `rewards` (points)."""

from django.urls import path

from members import converters  # noqa: F401 - registers voucher_code
from members import portal_views as member_views
from referrals import portal_views as referral_views
from rewards import portal_views as reward_views

app_name = "portal"

urlpatterns = [
    path("", reward_views.home, name="home"),
    path("join/", reward_views.join, name="join"),
    path("claim/", reward_views.claim, name="claim"),
    path("terms/", reward_views.terms, name="terms"),
    path("card/", reward_views.card, name="card"),
    path("history/", reward_views.history, name="history"),
    path("rewards/", reward_views.reward_catalog, name="rewards"),
    path("vouchers/<voucher_code:code>/", reward_views.voucher_detail, name="voucher"),
    path("how/", reward_views.how, name="how"),
    path("profile/", member_views.profile, name="profile"),
    path("profile/phone/", member_views.phone_change, name="phone_change"),
    path("profile/phone/confirm/", member_views.phone_confirm, name="phone_confirm"),
    path("inbox/", member_views.inbox, name="inbox"),
    path("inbox/<int:notification_id>/", member_views.inbox_open, name="inbox_open"),
    path("inbox/<int:notification_id>/read/", member_views.inbox_mark_read, name="inbox_read"),
    path("privacy/", reward_views.privacy, name="privacy"),
    path("privacy/export/", reward_views.privacy_export, name="privacy_export"),
    path("privacy/close/", reward_views.privacy_close, name="privacy_close"),
    path("invite/", referral_views.invite, name="invite"),
    path("invite/shared/", referral_views.invite_shared, name="invite_shared"),
]
