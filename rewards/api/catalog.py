"""The reward catalog for tills and web shops: what a member can redeem, redeeming, and vouchers at the counter.

Vouchers are good in every store of the programme; a redemption can be cancelled only through
the store that made it.
"""

from django.core.exceptions import ValidationError as DomainValidationError
from django.db.models import QuerySet
from django.http import Http404
from django.shortcuts import get_object_or_404
from django.utils.translation import gettext as _
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from members.api_problems import ProblemSerializer, problems
from members.idempotency import idempotent_response
from rewards import catalog
from rewards.api.members import TierSerializer
from rewards.api.purchases import AMOUNT, IDEMPOTENCY_HEADER, BalanceSerializer, member_or_error
from rewards.models import Redemption, Reward, Voucher


class CatalogItemSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="reward.pk")
    kind = serializers.CharField(source="reward.kind")
    title = serializers.CharField(source="reward.title")
    description = serializers.CharField(source="reward.description")
    image = serializers.SerializerMethodField()
    points_cost = serializers.IntegerField(source="reward.points_cost")
    value = serializers.DecimalField(source="reward.value", **AMOUNT, allow_null=True, help_text="Money off, or percent off.")
    required_tier = TierSerializer(allow_null=True, help_text="Open to this tier and above; null for everyone.")
    stock = serializers.IntegerField(source="reward.stock", allow_null=True, help_text="Null for unlimited.")
    limit_per_member = serializers.IntegerField(source="reward.limit_per_member", allow_null=True)
    available_from = serializers.DateTimeField(source="reward.available_from", allow_null=True)
    available_until = serializers.DateTimeField(source="reward.available_until", allow_null=True)
    voucher_valid_days = serializers.IntegerField(source="reward.voucher_valid_days")
    sold_out = serializers.BooleanField()
    not_yet_redeemable = serializers.BooleanField()
    no_longer_redeemable = serializers.BooleanField()
    affordable = serializers.BooleanField(allow_null=True, help_text="Null unless a member_number was given.")
    points_needed = serializers.IntegerField(allow_null=True, help_text="Points the member still needs; 0 if affordable.")
    locked_by_tier = serializers.BooleanField(allow_null=True)
    limit_reached = serializers.BooleanField(allow_null=True)
    can_redeem = serializers.BooleanField(allow_null=True, help_text="Whether the member could redeem it right now.")

    def get_image(self, item: catalog.CatalogItem) -> str | None:
        return item.reward.image.url if item.reward.image else None


class VoucherSerializer(serializers.Serializer):
    code = serializers.CharField()
    status = serializers.SerializerMethodField(help_text="issued, used, expired or cancelled, as of now.")
    reward_id = serializers.IntegerField()
    kind = serializers.CharField(source="reward.kind")
    title = serializers.CharField(source="reward.title", help_text="What the voucher is for.")
    description = serializers.CharField(source="reward.description")
    value = serializers.DecimalField(source="reward.value", **AMOUNT, allow_null=True)
    member_number = serializers.CharField(source="member.member_number")
    redemption_id = serializers.IntegerField(allow_null=True, help_text="Null for a voucher a full stamp card issued.")
    issued_at = serializers.DateTimeField()
    valid_until = serializers.DateTimeField(source="expires_at")
    used_at = serializers.DateTimeField(allow_null=True)
    used_store = serializers.CharField(source="used_store.code", allow_null=True, default=None)

    def get_status(self, voucher: Voucher) -> str:
        return catalog.voucher_status(voucher)


class RedemptionSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    member_number = serializers.CharField(source="member.member_number")
    reward_id = serializers.IntegerField()
    points = serializers.IntegerField()
    status = serializers.CharField()
    created_at = serializers.DateTimeField()
    cancelled_at = serializers.DateTimeField(allow_null=True)
    voucher = VoucherSerializer()
    balance = BalanceSerializer(source="member.points")


class InsufficientPointsProblemSerializer(ProblemSerializer):
    points_needed = serializers.IntegerField(required=False, help_text="How many more points the member needs.")
    available = serializers.IntegerField(required=False)
    owed = serializers.IntegerField(required=False, help_text="Points owed from a return, which block spending.")


class UnavailableProblemSerializer(ProblemSerializer):
    reason = serializers.CharField(
        required=False,
        help_text="member_not_active, not_offered, not_yet_redeemable, no_longer_redeemable, tier, sold_out, "
        "limit_reached, below_minimum, expired, cancelled or used.",
    )
    required_tier = serializers.CharField(required=False, help_text="With `tier`: the code of the lowest tier it is open to.")
    available_from = serializers.DateTimeField(required=False, help_text="With `not_yet_redeemable`.")
    limit = serializers.IntegerField(required=False, help_text="With `limit_reached`.")
    minimum = serializers.IntegerField(required=False, help_text="With `below_minimum`.")


class VoucherUsedProblemSerializer(ProblemSerializer):
    reason = serializers.CharField(required=False)
    used_at = serializers.DateTimeField(required=False)
    used_store = serializers.CharField(required=False, allow_null=True)


def _redemptions() -> "QuerySet[Redemption]":
    return Redemption.objects.select_related(
        "member__points", "reward", "voucher__reward", "voucher__member", "voucher__used_store"
    )


def _voucher(code: str) -> Voucher:
    normalised = catalog.voucher_code_normalise(code)
    if not normalised:
        raise Http404
    return get_object_or_404(Voucher.objects.select_related("reward", "member", "used_store"), code=normalised)


class RewardListApi(APIView):
    error_field_names = {"member": "member_number"}

    class RewardQuerySerializer(serializers.Serializer):
        member_number = serializers.CharField(required=False, allow_blank=True, max_length=12, default="")

    @extend_schema(
        operation_id="rewards_list",
        parameters=[RewardQuerySerializer],
        responses={200: CatalogItemSerializer(many=True), **problems(400, 422)},
        description="The rewards shown now. With a member_number, each says whether that member can afford it, "
        "whether their tier opens it and how many points they still need.",
    )
    def get(self, request: Request) -> Response:
        query = self.RewardQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        member = member_or_error(query.validated_data["member_number"])
        return Response(CatalogItemSerializer(catalog.catalog_for(member), many=True).data)


class RedemptionCreateApi(APIView):
    error_field_names = {"member": "member_number", "reward": "reward_id"}

    class RedemptionInputSerializer(serializers.Serializer):
        member_number = serializers.CharField(max_length=12)
        reward_id = serializers.IntegerField(min_value=1)

    @extend_schema(
        operation_id="redemptions_create",
        request=RedemptionInputSerializer,
        responses={
            201: RedemptionSerializer,
            200: RedemptionSerializer,
            **problems(400, 409, 415, 422, s409=InsufficientPointsProblemSerializer, s422=UnavailableProblemSerializer),
        },
        parameters=[IDEMPOTENCY_HEADER],
        description="Spend a member's points on a reward and issue its voucher. 409 with `points_needed` when the "
        "member is short; 422 with `reason` when the reward is not open to them. Retry with the same "
        "Idempotency-Key to get the first answer (200).",
    )
    def post(self, request: Request) -> Response:
        data = self.RedemptionInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)

        def write() -> tuple[int, dict[str, object]]:
            member = member_or_error(data.validated_data["member_number"])
            reward = Reward.objects.filter(pk=data.validated_data["reward_id"]).first()
            if reward is None:
                raise DomainValidationError({"reward": _("No reward has this id.")})
            redemption = catalog.redemption_create(
                member=member,  # type: ignore[arg-type]
                reward=reward,
                store=request.auth.store,  # type: ignore[union-attr]
                via=request.auth.name,  # type: ignore[union-attr]
            )
            return status.HTTP_201_CREATED, RedemptionSerializer(_redemptions().get(pk=redemption.pk)).data

        return idempotent_response(request, payload=data.validated_data, natural_key=None, write=write)


class RedemptionCancelApi(APIView):
    class CancelInputSerializer(serializers.Serializer):
        reason = serializers.CharField(required=False, allow_blank=True, max_length=300, default="")

    @extend_schema(
        operation_id="redemptions_cancel",
        request=CancelInputSerializer,
        responses={200: RedemptionSerializer, **problems(400, 404, 409, 415, 422, s422=UnavailableProblemSerializer)},
        parameters=[IDEMPOTENCY_HEADER],
        description="Cancel a redemption made through this store while its voucher is unused and valid: the points "
        "come back and the reward goes back in stock. Cancelling again changes nothing.",
    )
    def post(self, request: Request, redemption_id: int) -> Response:
        redemption = get_object_or_404(_redemptions(), pk=redemption_id, store=request.auth.store)  # type: ignore[union-attr]
        data = self.CancelInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)

        def write() -> tuple[int, dict[str, object]]:
            catalog.redemption_cancel(redemption=redemption, reason=data.validated_data["reason"])
            return status.HTTP_200_OK, RedemptionSerializer(_redemptions().get(pk=redemption.pk)).data

        return idempotent_response(request, payload=data.validated_data, natural_key=None, write=write)


class VoucherDetailApi(APIView):
    @extend_schema(
        operation_id="vouchers_retrieve",
        responses={200: VoucherSerializer, **problems(404)},
        description="What a voucher is for, whose it is, and whether it can still be used. Codes are read as typed: "
        "any case, with or without dashes.",
    )
    def get(self, request: Request, code: str) -> Response:
        return Response(VoucherSerializer(_voucher(code)).data)


class VoucherUseApi(APIView):
    @extend_schema(
        operation_id="vouchers_use",
        request=None,
        responses={
            200: VoucherSerializer,
            **problems(400, 404, 409, 415, 422, s409=VoucherUsedProblemSerializer, s422=UnavailableProblemSerializer),
        },
        parameters=[IDEMPOTENCY_HEADER],
        description="Mark a voucher used at this key's store. A voucher used before, by any till, is a 409 saying when "
        "and where; expired or cancelled is a 422. To retry safely, send an Idempotency-Key: the same key gets the "
        "first answer (200).",
    )
    def post(self, request: Request, code: str) -> Response:
        voucher = _voucher(code)

        def write() -> tuple[int, dict[str, object]]:
            used = catalog.voucher_use(code=voucher.code, store=request.auth.store, via=request.auth.name)  # type: ignore[union-attr]
            return status.HTTP_200_OK, VoucherSerializer(used).data

        return idempotent_response(request, payload={"code": voucher.code}, natural_key=None, write=write)
