from django.urls import path

from members import converters  # noqa: F401 - registers member_number and voucher_code
from rewards.api import catalog, members, purchases

urlpatterns = [
    path("members", members.MemberCreateApi.as_view(), name="api-members"),
    path("members/lookup", members.MemberLookupApi.as_view(), name="api-members-lookup"),
    path("members/<member_number:member_number>", members.MemberDetailApi.as_view(), name="api-member"),
    path("members/<member_number:member_number>/ledger", members.MemberLedgerApi.as_view(), name="api-member-ledger"),
    path("purchases", purchases.PurchaseCreateApi.as_view(), name="api-purchases"),
    path("purchases/batch", purchases.PurchaseBatchApi.as_view(), name="api-purchases-batch"),
    path("purchases/<int:purchase_id>/returns", purchases.ReturnCreateApi.as_view(), name="api-purchase-returns"),
    path("purchases/<int:purchase_id>/claim", purchases.PurchaseClaimApi.as_view(), name="api-purchase-claim"),
    path("rewards", catalog.RewardListApi.as_view(), name="api-rewards"),
    path("redemptions", catalog.RedemptionCreateApi.as_view(), name="api-redemptions"),
    path("redemptions/<int:redemption_id>/cancel", catalog.RedemptionCancelApi.as_view(), name="api-redemption-cancel"),
    path("vouchers/<voucher_code:code>", catalog.VoucherDetailApi.as_view(), name="api-voucher"),
    path("vouchers/<voucher_code:code>/use", catalog.VoucherUseApi.as_view(), name="api-voucher-use"),
]
