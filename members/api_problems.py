"""The shape of API errors, for the OpenAPI schema: every view lists the problems it can return."""

from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers


class ProblemSerializer(serializers.Serializer):
    type = serializers.CharField()
    title = serializers.CharField()
    status = serializers.IntegerField()
    detail = serializers.CharField()
    errors = serializers.DictField(child=serializers.ListField(child=serializers.CharField()), required=False)


class DuplicateProblemSerializer(ProblemSerializer):
    member_number = serializers.CharField(required=False, help_text="The member the phone or e-mail belongs to.")


DESCRIPTIONS = {
    400: "The body or query is malformed; `errors` names each field.",
    401: "No API key, or a key that is not valid or was revoked.",
    403: "The key may not do this.",
    404: "Not found, or not visible to this key's store.",
    409: "Conflicts with an earlier request or with the member's state.",
    415: "Send `Content-Type: application/json`.",
    422: "Well-formed, but the programme's rules refuse it; `errors` names each field.",
    429: "Too many requests for this key; retry after `Retry-After` seconds.",
}


def problems(*codes: int, **serializers_by_code: type[serializers.Serializer]) -> dict[tuple[int, str], OpenApiResponse]:
    """Describe the problem responses a view returns, always including 401 and 429."""
    wanted = sorted({*codes, 401, 429})
    return {
        (code, "application/problem+json"): OpenApiResponse(
            response=serializers_by_code.get(f"s{code}", ProblemSerializer), description=DESCRIPTIONS[code]
        )
        for code in wanted
    }
