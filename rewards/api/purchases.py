from decimal import Decimal

from django.core.exceptions import ValidationError as DomainValidationError
from django.shortcuts import get_object_or_404
from django.utils.translation import gettext as _
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from members.api_problems import problems
from members.idempotency import idempotent_response
from members.models import Member
from rewards import selectors, services
from rewards.models import Purchase

IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    required=False,
    description="Retry safely: the same key gets the same answer.",
)
AMOUNT = {"max_digits": 14, "decimal_places": 2}


class EntrySerializer(serializers.Serializer):
    points = serializers.IntegerField()
    explanation = serializers.CharField()


class BalanceSerializer(serializers.Serializer):
    available = serializers.IntegerField()
    pending = serializers.IntegerField()
    owed = serializers.IntegerField()


def balance_of(member: Member | None) -> dict[str, int] | None:
    if member is None:
        return None
    account = selectors.account_for(member)
    return {"available": account.available, "pending": account.pending, "owed": account.owed}


class PurchaseResultSerializer(serializers.Serializer):
    purchase_id = serializers.IntegerField(source="purchase.pk")
    receipt_number = serializers.CharField(source="purchase.receipt_number")
    member_number = serializers.CharField(source="purchase.member.member_number", allow_null=True, default=None)
    amount = serializers.DecimalField(source="purchase.gross", **AMOUNT)
    occurred_at = serializers.DateTimeField(source="purchase.occurred_at")
    points_earned = serializers.IntegerField(source="purchase.points_earned")
    entries = EntrySerializer(many=True)
    balance = BalanceSerializer(allow_null=True)


def purchase_payload(result: services.PurchaseResult) -> dict[str, object]:
    entries = [result.entry] if result.entry else []
    return PurchaseResultSerializer(
        {"purchase": result.purchase, "entries": entries, "balance": balance_of(result.purchase.member)}
    ).data


class LineSerializer(serializers.Serializer):
    sku = serializers.CharField(required=False, allow_blank=True, max_length=64, default="")
    name = serializers.CharField(required=False, allow_blank=True, max_length=200, default="")
    category = serializers.CharField(required=False, allow_blank=True, max_length=50, default="")
    quantity = serializers.IntegerField(required=False, min_value=1, max_value=100_000, default=1)
    amount = serializers.DecimalField(**AMOUNT, min_value=Decimal(0))


class PurchaseInputSerializer(serializers.Serializer):
    member_number = serializers.CharField(required=False, allow_blank=True, max_length=12, default="")
    receipt_number = serializers.CharField(max_length=64)
    amount = serializers.DecimalField(**AMOUNT)
    discount = serializers.DecimalField(**AMOUNT, required=False, default=Decimal(0))
    tax = serializers.DecimalField(**AMOUNT, required=False, default=Decimal(0))
    occurred_at = serializers.DateTimeField(required=False, allow_null=True, default=None)
    channel = serializers.ChoiceField(choices=Purchase.Channel.choices, required=False, default=Purchase.Channel.STORE)
    lines = LineSerializer(many=True, required=False, default=list, max_length=500)


def member_or_error(member_number: str) -> Member | None:
    if not member_number:
        return None
    member = Member.objects.filter(member_number=member_number).first()
    if member is None:
        raise DomainValidationError({"member": _("No member has this number.")})
    return member


def record(data: dict, request: Request) -> services.PurchaseResult:
    return services.purchase_record(
        store=request.auth.store,  # type: ignore[union-attr]
        receipt_number=data["receipt_number"],
        amount=data["amount"],
        discount=data["discount"],
        tax=data["tax"],
        occurred_at=data["occurred_at"],
        channel=data["channel"],
        member=member_or_error(data["member_number"]),
        lines=[services.LineInput(**line) for line in data["lines"]],
        via=request.auth.name,  # type: ignore[union-attr]
    )


class PurchaseCreateApi(APIView):
    error_field_names = {"member": "member_number"}

    @extend_schema(
        operation_id="purchases_create",
        request=PurchaseInputSerializer,
        responses={201: PurchaseResultSerializer, 200: PurchaseResultSerializer, **problems(400, 409, 415, 422)},
        parameters=[IDEMPOTENCY_HEADER],
        description="Record a sale for the key's store and award its points. The same receipt number with the same "
        "body returns the original answer (200); with a different body, 409.",
    )
    def post(self, request: Request) -> Response:
        data = PurchaseInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)

        def write() -> tuple[int, dict[str, object]]:
            result = record(data.validated_data, request)
            return status.HTTP_201_CREATED if result.created else status.HTTP_200_OK, purchase_payload(result)

        return idempotent_response(
            request, payload=data.validated_data, natural_key=f"receipt:{data.validated_data['receipt_number']}", write=write
        )


def store_purchase(request: Request, purchase_id: int) -> Purchase:
    """Return a purchase of the key's own store: another store's is not found."""
    return get_object_or_404(Purchase.objects.select_related("member"), pk=purchase_id, store=request.auth.store)  # type: ignore[union-attr]


class ReturnLineSerializer(serializers.Serializer):
    line_number = serializers.IntegerField(min_value=1)
    quantity = serializers.IntegerField(min_value=1)


class ReturnResultSerializer(serializers.Serializer):
    return_id = serializers.IntegerField(source="return_record.pk")
    return_number = serializers.CharField(source="return_record.return_number")
    amount = serializers.DecimalField(source="return_record.amount", **AMOUNT)
    points_clawed_back = serializers.IntegerField(source="return_record.points_clawed_back")
    entries = EntrySerializer(many=True)
    balance = BalanceSerializer(allow_null=True)


class ReturnCreateApi(APIView):
    class ReturnInputSerializer(serializers.Serializer):
        return_number = serializers.CharField(max_length=64)
        amount = serializers.DecimalField(**AMOUNT, required=False, allow_null=True, default=None)
        lines = ReturnLineSerializer(many=True, required=False, default=list, max_length=500)

        def validate(self, attrs: dict) -> dict:
            if (attrs["amount"] is None) == (not attrs["lines"]):
                raise serializers.ValidationError({"amount": ["Give either an amount or the lines returned."]})
            return attrs

    @extend_schema(
        operation_id="purchases_returns_create",
        request=ReturnInputSerializer,
        responses={201: ReturnResultSerializer, 200: ReturnResultSerializer, **problems(400, 404, 409, 415, 422)},
        parameters=[IDEMPOTENCY_HEADER],
        description="Record a return and take back its share of the points. A retried return number is a no-op (200).",
    )
    def post(self, request: Request, purchase_id: int) -> Response:
        purchase = store_purchase(request, purchase_id)
        data = self.ReturnInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        lines = [(line["line_number"], line["quantity"]) for line in data.validated_data["lines"]]

        def write() -> tuple[int, dict[str, object]]:
            result = services.purchase_return(
                purchase=purchase,
                return_number=data.validated_data["return_number"],
                amount=data.validated_data["amount"],
                lines=lines,
                via=request.auth.name,  # type: ignore[union-attr]
            )
            body = ReturnResultSerializer(
                {
                    "return_record": result.return_record,
                    "entries": [result.entry] if result.entry else [],
                    "balance": balance_of(purchase.member),
                }
            ).data
            return status.HTTP_201_CREATED if result.created else status.HTTP_200_OK, body

        return idempotent_response(request, payload=data.validated_data, natural_key=None, write=write)


class PurchaseClaimApi(APIView):
    error_field_names = {"member": "member_number"}

    class ClaimInputSerializer(serializers.Serializer):
        member_number = serializers.CharField(max_length=12)

    @extend_schema(
        operation_id="purchases_claim",
        request=ClaimInputSerializer,
        responses={201: PurchaseResultSerializer, 200: PurchaseResultSerializer, **problems(400, 404, 415, 422)},
        description="Attach a sale recorded without a card to a member, within the claim window, and award its points once.",
    )
    def post(self, request: Request, purchase_id: int) -> Response:
        purchase = store_purchase(request, purchase_id)
        data = self.ClaimInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        member = member_or_error(data.validated_data["member_number"])
        result = services.purchase_claim(purchase=purchase, member=member)  # type: ignore[arg-type]
        return Response(purchase_payload(result), status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK)
