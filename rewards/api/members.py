from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from django.utils.translation import gettext as _
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import generics, serializers, status
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from members import services as member_services
from members.api_problems import DuplicateProblemSerializer, problems
from members.idempotency import idempotent_response
from members.models import Member
from rewards import selectors, services, tiers
from rewards.models import LedgerEntry, PointsAccount, Tier


class ExpirySerializer(serializers.Serializer):
    points = serializers.IntegerField()
    expires_on = serializers.DateField(help_text="The last day these points can be spent.")


class PointsSerializer(serializers.Serializer):
    available = serializers.IntegerField()
    pending = serializers.IntegerField(help_text="Earned, spendable once the return window has passed.")
    owed = serializers.IntegerField(help_text="Taken back by a return after being spent; blocks spending.")
    expiring = ExpirySerializer(many=True)


class TierSerializer(serializers.Serializer):
    code = serializers.CharField()
    name = serializers.CharField(help_text="In the language of the request.")
    rank = serializers.IntegerField(help_text="Higher ranks are better tiers.")


FIGURE = {"max_digits": 16, "decimal_places": 2, "allow_null": True}


class TierProgressSerializer(serializers.Serializer):
    current = TierSerializer(allow_null=True)
    next = TierSerializer(allow_null=True, help_text="The next tier members reach by buying; null at the top.")
    metric = serializers.ChoiceField(
        choices=Tier.Metric.choices, allow_null=True, help_text="What the next tier (at the top, the current one) counts."
    )
    value = serializers.DecimalField(**FIGURE, help_text="The member's amount, points or purchases so far in that window.")
    needed_to_reach = serializers.DecimalField(**FIGURE, help_text="Still needed in the window to reach the next tier.")
    needed_to_keep = serializers.DecimalField(
        **FIGURE, help_text="Still needed to keep the current tier, by its own measure; null for an invitation or no tier."
    )
    window_ends_on = serializers.DateField(
        allow_null=True, help_text="The last day of that window (a calendar year); null when the window rolls or never ends."
    )
    keep_by = serializers.DateField(
        allow_null=True, help_text="The last day to keep the current tier: end of an invitation, grace period or year."
    )


class MemberSerializer(serializers.Serializer):
    member_number = serializers.CharField()
    card_code = serializers.CharField()
    name = serializers.CharField()
    phone = serializers.CharField(allow_null=True)
    email = serializers.CharField()
    birthday = serializers.DateField(allow_null=True)
    external_ref = serializers.CharField()
    status = serializers.CharField()
    enrolled_at = serializers.DateTimeField()
    tier = TierSerializer(allow_null=True, help_text="Null at the programme's base level.")
    tier_progress = TierProgressSerializer()
    points = PointsSerializer()


# Made once: DRF deep-copies every declared field each time a serializer is made, which was a fifth
# of a balance read. Only `to_representation` is used, and it keeps no state between calls.
MEMBER_ANSWER = MemberSerializer()


def members_read(members: QuerySet[Member]) -> QuerySet[Member]:
    """Members with their balances and tier status in the same query, for answers that only read them."""
    return tiers.with_tier_held(members.select_related("points"))


def member_payload(member: Member, *, account: PointsAccount | None = None) -> dict[str, object]:
    account = account or selectors.account_for(member)
    progress = tiers.tier_progress(member)
    return MEMBER_ANSWER.to_representation(
        {
            **{field: getattr(member, field) for field in ("member_number", "card_code", "name", "email", "birthday")},
            "phone": str(member.phone) if member.phone else None,
            "external_ref": member.external_ref,
            "status": member.status,
            "enrolled_at": member.enrolled_at,
            "tier": progress["current"],
            "tier_progress": progress,
            "points": {
                "available": account.available,
                "pending": account.pending,
                "owed": account.owed,
                "expiring": selectors.upcoming_expiries(member, tz=services.programme_get().tz),
            },
        }
    )


class MemberCreateApi(APIView):
    class MemberInputSerializer(serializers.Serializer):
        phone = serializers.CharField(required=False, allow_blank=True, max_length=32)
        email = serializers.EmailField(required=False, allow_blank=True, max_length=254)
        name = serializers.CharField(required=False, allow_blank=True, max_length=150)
        birthday = serializers.DateField(required=False, allow_null=True)
        external_ref = serializers.CharField(required=False, allow_blank=True, max_length=64)
        email_consent = serializers.BooleanField(required=False, default=False)
        sms_consent = serializers.BooleanField(required=False, default=False)
        referral_code = serializers.CharField(
            required=False,
            allow_blank=True,
            max_length=32,
            help_text="The code of the member who invited this one. A code nobody has is refused (422) and creates no member.",
        )
        device_fingerprint = serializers.CharField(
            required=False,
            allow_blank=True,
            max_length=256,
            help_text="The till's or app's opaque fingerprint of the customer's device; only a keyed hash is kept.",
        )

    @extend_schema(
        operation_id="members_create",
        request=MemberInputSerializer,
        responses={201: MemberSerializer, 200: MemberSerializer, **problems(400, 409, 415, 422, s409=DuplicateProblemSerializer)},
        parameters=[OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER, required=False)],
    )
    def post(self, request: Request) -> Response:
        data = self.MemberInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)

        def enrol() -> tuple[int, dict[str, object]]:
            fields = dict(data.validated_data)  # type: ignore[arg-type]
            member = member_services.member_enrol(
                channel=Member.Channel.API,
                store=request.auth.store,
                device=fields.pop("device_fingerprint", ""),
                **fields,
            )
            return status.HTTP_201_CREATED, member_payload(member)

        return idempotent_response(request, payload=data.validated_data, natural_key=None, write=enrol)


LOOKUPS = {"phone": "phone", "card": "card_code", "member_number": "member_number", "external_ref": "external_ref"}


class MemberLookupSerializer(serializers.Serializer):
    phone = serializers.CharField(required=False, allow_blank=True, max_length=32)
    email = serializers.CharField(required=False, allow_blank=True, max_length=254)
    card = serializers.CharField(required=False, allow_blank=True, max_length=16)
    member_number = serializers.CharField(required=False, allow_blank=True, max_length=12)
    external_ref = serializers.CharField(required=False, allow_blank=True, max_length=64)


class MemberLookupApi(APIView):
    @extend_schema(
        operation_id="members_lookup",
        parameters=[MemberLookupSerializer],
        responses={200: MemberSerializer, **problems(400, 404)},
    )
    def get(self, request: Request) -> Response:
        query = MemberLookupSerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        given = {name: value for name, value in query.validated_data.items() if value}
        if len(given) != 1:
            raise serializers.ValidationError(
                {"query": [_("Give exactly one of: phone, email, card, member_number, external_ref.")]}
            )
        ((field, value),) = given.items()
        if field == "phone":
            try:
                value = member_services.phone_normalise(value)
            except DjangoValidationError as error:
                raise serializers.ValidationError(error.message_dict) from None
        members = Member.objects.with_email(value) if field == "email" else Member.objects.filter(**{LOOKUPS[field]: value})
        member = get_object_or_404(members_read(members))
        return Response(member_payload(member, account=selectors.account_fetched(member)))


class MemberDetailApi(APIView):
    @extend_schema(operation_id="members_retrieve", responses={200: MemberSerializer, **problems(404)})
    def get(self, request: Request, member_number: str) -> Response:
        member = get_object_or_404(members_read(Member.objects), member_number=member_number)
        return Response(member_payload(member, account=selectors.account_fetched(member)))


class LedgerEntrySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.CharField()
    points = serializers.IntegerField()
    explanation = serializers.CharField()
    occurred_at = serializers.DateTimeField(help_text="When the change took effect.")
    created_at = serializers.DateTimeField()
    available_at = serializers.DateTimeField(source="lot.available_at", allow_null=True, default=None)
    expires_at = serializers.DateTimeField(source="lot.expires_at", allow_null=True, default=None)
    receipt_number = serializers.CharField(source="purchase.receipt_number", allow_null=True, default=None)
    store = serializers.CharField(source="purchase.store.code", allow_null=True, default=None)
    return_number = serializers.CharField(source="return_record.return_number", allow_null=True, default=None)
    source_ref = serializers.CharField()


class LedgerPagination(CursorPagination):
    ordering = ("-occurred_at", "-id")
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200


@extend_schema_view(
    get=extend_schema(operation_id="members_ledger", responses={200: LedgerEntrySerializer(many=True), **problems(404)})
)
class MemberLedgerApi(generics.ListAPIView):
    serializer_class = LedgerEntrySerializer
    pagination_class = LedgerPagination

    def get_queryset(self) -> "QuerySet[LedgerEntry]":
        return selectors.ledger_entries(get_object_or_404(Member, member_number=self.kwargs["member_number"]))
