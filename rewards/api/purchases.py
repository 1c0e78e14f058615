from decimal import Decimal

from django.core.exceptions import ValidationError as DomainValidationError
from django.shortcuts import get_object_or_404
from django.utils.translation import gettext as _
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from members.api_problems import problems
from members.idempotency import idempotent_response
from members.models import Member
from rewards import bulk, selectors, services, tiers
from rewards.models import PointsAccount, Purchase

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


def _balance(account: PointsAccount) -> dict[str, int]:
    return {"available": account.available, "pending": account.pending, "owed": account.owed}


def balance_of(member: Member | None) -> dict[str, int] | None:
    return None if member is None else _balance(selectors.account_for(member))


class PurchaseResultSerializer(serializers.Serializer):
    purchase_id = serializers.IntegerField(source="purchase.pk")
    receipt_number = serializers.CharField(source="purchase.receipt_number")
    member_number = serializers.CharField(source="purchase.member.member_number", allow_null=True, default=None)
    amount = serializers.DecimalField(source="purchase.gross", **AMOUNT)
    occurred_at = serializers.DateTimeField(source="purchase.occurred_at")
    points_earned = serializers.IntegerField(source="purchase.points_earned")
    entries = EntrySerializer(many=True)
    balance = BalanceSerializer(allow_null=True)


# Made once, as `rewards.api.members.MEMBER_ANSWER`: only `to_representation` is used.
PURCHASE_ANSWER = PurchaseResultSerializer()


def purchase_payload(result: services.PurchaseResult) -> dict[str, object]:
    entries = [result.entry] if result.entry else []
    # The earn entry holds the account as the service left it, under its lock: no second read.
    balance = balance_of(result.purchase.member) if result.entry is None or not result.created else _balance(result.entry.account)
    return PURCHASE_ANSWER.to_representation({"purchase": result.purchase, "entries": entries, "balance": balance})


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
    payment_fingerprint = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=200,
        default="",
        help_text="The payment terminal's token for the card used, if it gives one. Only a keyed hash is kept; "
        "it guards referrals against one person with two accounts.",
    )


def member_or_error(member_number: str) -> Member | None:
    if not member_number:
        return None
    try:
        return tiers.with_tier_held(Member.objects).get(member_number=member_number)
    except Member.DoesNotExist:
        raise DomainValidationError({"member": _("No member has this number.")}) from None


def sale_arguments(data: dict, member: Member | None, request: Request) -> dict[str, object]:
    """Map a validated purchase body onto the arguments of `services.purchase_input`."""
    return {
        "store": request.auth.store,  # type: ignore[union-attr]
        "receipt_number": data["receipt_number"],
        "amount": data["amount"],
        "discount": data["discount"],
        "tax": data["tax"],
        "occurred_at": data["occurred_at"],
        "channel": data["channel"],
        "member": member,
        "lines": [services.LineInput(**line) for line in data["lines"]],
        "payment_fingerprint": data.get("payment_fingerprint", ""),
    }


def record(data: dict, request: Request) -> services.PurchaseResult:
    member = member_or_error(data["member_number"])
    return services.purchase_record(via=request.auth.name, **sale_arguments(data, member, request))  # type: ignore[union-attr]


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
            request,
            payload=data.validated_data,
            natural_key=f"receipt:{data.validated_data['receipt_number']}",
            write=write,
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


BATCH_LIMIT = 1000


class BatchItemResultSerializer(serializers.Serializer):
    index = serializers.IntegerField(help_text="Position in the request.")
    status = serializers.IntegerField(help_text="201 recorded, 200 replay, 409 receipt used with other details, 400/422 refused.")
    receipt_number = serializers.CharField(allow_null=True)
    purchase_id = serializers.IntegerField(allow_null=True)
    points_earned = serializers.IntegerField(allow_null=True)
    errors = serializers.DictField(child=serializers.ListField(child=serializers.CharField()), required=False)


class BatchResultSerializer(serializers.Serializer):
    results = BatchItemResultSerializer(many=True)
    created = serializers.IntegerField()
    replayed = serializers.IntegerField()
    refused = serializers.IntegerField()


def _batch_sale(data: dict, members: dict[str, Member], request: Request) -> services.PurchaseInput:
    member = members.get(data["member_number"]) if data["member_number"] else None
    if data["member_number"] and member is None:
        raise DomainValidationError({"member_number": _("No member has this number.")})
    return services.purchase_input(**sale_arguments(data, member, request))  # type: ignore[arg-type]


def _refused(index: int, status_code: int, receipt_number: object, errors: dict) -> dict[str, object]:
    return {
        "index": index,
        "status": status_code,
        "receipt_number": receipt_number,
        "purchase_id": None,
        "points_earned": None,
        "errors": errors,
    }


class PurchaseBatchApi(APIView):
    class BatchInputSerializer(serializers.Serializer):
        purchases = serializers.ListField(child=serializers.DictField(), min_length=1, max_length=BATCH_LIMIT)

    @extend_schema(
        operation_id="purchases_batch",
        request=inline_serializer("PurchaseBatchRequest", {"purchases": PurchaseInputSerializer(many=True)}),
        responses={200: BatchResultSerializer, **problems(400, 415)},
        description="Record up to 1,000 sales at once (a till catching up). Each item is idempotent on its receipt "
        "number and gets its own result; valid items are recorded even when others are refused.",
    )
    def post(self, request: Request) -> Response:
        batch = self.BatchInputSerializer(data=request.data)
        batch.is_valid(raise_exception=True)
        results: dict[int, dict[str, object]] = {}
        parsed: list[tuple[int, dict]] = []
        for index, raw in enumerate(batch.validated_data["purchases"]):
            item = PurchaseInputSerializer(data=raw)
            if item.is_valid():
                parsed.append((index, item.validated_data))
            else:
                results[index] = _refused(index, 400, raw.get("receipt_number"), item.errors)
        members = Member.objects.in_bulk(
            [d["member_number"] for _i, d in parsed if d["member_number"]], field_name="member_number"
        )
        sales: list[tuple[int, services.PurchaseInput]] = []
        for index, data in parsed:
            try:
                sales.append((index, _batch_sale(data, members, request)))
            except DomainValidationError as error:
                errors = {("member_number" if k == "member" else k): v for k, v in error.message_dict.items()}
                results[index] = _refused(index, 422, data["receipt_number"], errors)
        outcomes = bulk.purchases_record_bulk([sale for _i, sale in sales], via=request.auth.name)  # type: ignore[union-attr]
        earned = dict(Purchase.objects.filter(pk__in=[o.purchase_id for o in outcomes]).values_list("pk", "points_earned"))
        for (index, sale), outcome in zip(sales, outcomes, strict=True):
            if outcome.conflict:
                errors = {"receipt_number": [_("This receipt was already recorded with different details.")]}
                results[index] = {**_refused(index, 409, sale.receipt_number, errors), "purchase_id": outcome.purchase_id}
                continue
            results[index] = {
                "index": index,
                "status": 201 if outcome.created else 200,
                "receipt_number": sale.receipt_number,
                "purchase_id": outcome.purchase_id,
                "points_earned": earned[outcome.purchase_id],
            }
        statuses = [result["status"] for result in results.values()]
        body = {
            "results": [results[i] for i in sorted(results)],
            "created": statuses.count(201),
            "replayed": statuses.count(200),
            "refused": len(statuses) - statuses.count(201) - statuses.count(200),
        }
        return Response(BatchResultSerializer(body).data)
