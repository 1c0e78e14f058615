"""The staff counter under /staff/: member pages from `members`, points pages from `rewards`, referrals from `referrals`."""

from django.urls import path

from members import converters  # noqa: F401 - registers member_number
from members import staff_views as member_views
from referrals import staff_views as referral_views
from rewards import staff_views as reward_views

app_name = "staff"

urlpatterns = [
    path("", member_views.member_find, name="find"),
    path("shift/", member_views.shift, name="shift"),
    path("summary/", reward_views.shift_summary, name="summary"),
    path("members/<member_number:member_number>/", reward_views.member_panel, name="member"),
    # Enrolment accepts the terms, which `rewards` owns, so its view lives there.
    path("enrol/", reward_views.member_enrol, name="enrol"),
    path("members/<member_number:member_number>/purchase/", reward_views.purchase_record, name="purchase"),
    path("members/<member_number:member_number>/purchases/", reward_views.member_purchases, name="purchases"),
    path(
        "members/<member_number:member_number>/purchases/<int:purchase_id>/return/", reward_views.purchase_return, name="return"
    ),
    path("members/<member_number:member_number>/claim/", reward_views.purchase_claim, name="claim"),
    path("members/<member_number:member_number>/rewards/", reward_views.member_rewards, name="member_rewards"),
    path("members/<member_number:member_number>/adjust/", reward_views.member_adjust, name="member_adjust"),
    path("vouchers/", reward_views.voucher_check, name="vouchers"),
    path("adjustments/", reward_views.adjustments, name="adjustments"),
    path("referrals/", referral_views.referrals_overview, name="referrals"),
    path("referrals/<int:referral_id>/", referral_views.referral_detail, name="referral"),
]
