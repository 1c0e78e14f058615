from django.urls import path, register_converter

from rewards.api import catalog, members, purchases


class VoucherCodeConverter:
    """Letters, digits and dashes only, as a code is printed or typed; anything else is a 404."""

    regex = "[0-9A-Za-z-]{1,20}"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


class MemberNumberConverter:
    """Only digits reach a view: anything else is a 404, never a query."""

    regex = "[0-9]{1,12}"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(MemberNumberConverter, "member_number")
register_converter(VoucherCodeConverter, "voucher_code")

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
