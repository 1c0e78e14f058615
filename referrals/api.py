"""The till API's view of a member's referrals: their code and link, who invited them, their friends."""

from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from members.api_problems import problems
from members.models import Member
from referrals import selectors, services
from referrals.models import Referral


class ReferredBySerializer(serializers.Serializer):
    name = serializers.CharField(help_text="The inviter's first name, or a masked phone or e-mail.")
    status = serializers.ChoiceField(choices=Referral.Status.choices)
    joined_at = serializers.DateTimeField()


class FriendSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="The friend's first name, or a masked phone or e-mail.")
    status = serializers.ChoiceField(choices=Referral.Status.choices)
    joined_at = serializers.DateTimeField()
    qualified_at = serializers.DateTimeField(allow_null=True, help_text="When their first purchase qualified; null before.")


class CountsSerializer(serializers.Serializer):
    joined = serializers.IntegerField(help_text="Friends still to make a qualifying purchase.")
    review = serializers.IntegerField()
    qualified = serializers.IntegerField(help_text="Qualified, rewards held until the hold is over.")
    rewarded = serializers.IntegerField()
    expired = serializers.IntegerField()
    rejected = serializers.IntegerField()


class MemberReferralsSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="The member's own referral code, for friends to give at sign-up.")
    link = serializers.URLField(help_text="The member's invitation link.")
    referred_by = ReferredBySerializer(allow_null=True, help_text="Who invited this member; null if nobody.")
    friends = FriendSerializer(many=True, help_text=f"The {selectors.FRIENDS_LISTED} friends who joined last, newest first.")
    counts = CountsSerializer(help_text="Every friend the member brought, by status.")
    points_earned = serializers.IntegerField(help_text="Referral points given to the member, less any taken back while held.")


class MemberReferralsApi(APIView):
    @extend_schema(operation_id="members_referrals", responses={200: MemberReferralsSerializer, **problems(404)})
    def get(self, request: Request, member_number: str) -> Response:
        member = get_object_or_404(Member, member_number=member_number)
        found = selectors.member_referrals(member, services.referral_code_for(member))
        referral = found.referred_by
        return Response(
            MemberReferralsSerializer(
                {
                    "code": found.code.code,
                    "link": request.build_absolute_uri(reverse("referral_join", args=[found.code.code])),
                    "referred_by": {"name": found.referrer_name, "status": referral.status, "joined_at": referral.joined_at}
                    if referral
                    else None,
                    "friends": found.friends,
                    "counts": found.counts,
                    "points_earned": found.points_earned,
                }
            ).data
        )
