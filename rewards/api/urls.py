from django.urls import path

from rewards.api import members, purchases

urlpatterns = [
    path("members", members.MemberCreateApi.as_view(), name="api-members"),
    path("members/lookup", members.MemberLookupApi.as_view(), name="api-members-lookup"),
    path("members/<str:member_number>", members.MemberDetailApi.as_view(), name="api-member"),
    path("members/<str:member_number>/ledger", members.MemberLedgerApi.as_view(), name="api-member-ledger"),
    path("purchases", purchases.PurchaseCreateApi.as_view(), name="api-purchases"),
    path("purchases/batch", purchases.PurchaseBatchApi.as_view(), name="api-purchases-batch"),
    path("purchases/<int:purchase_id>/returns", purchases.ReturnCreateApi.as_view(), name="api-purchase-returns"),
    path("purchases/<int:purchase_id>/claim", purchases.PurchaseClaimApi.as_view(), name="api-purchase-claim"),
]
