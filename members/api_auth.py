"""How tills and web shops authenticate: `Authorization: Api-Key <key>`, rate-limited per key."""

from django.utils.translation import gettext_lazy as _
from rest_framework import authentication, exceptions, permissions, throttling
from rest_framework.request import Request

from members import services
from members.models import ApiKey


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Api-Key"

    def authenticate(self, request: Request) -> tuple[None, ApiKey] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        keyword, _sep, raw_key = header.partition(" ")
        if keyword != self.keyword:
            return None
        key = services.api_key_authenticate(raw_key.strip())
        if key is None:
            raise exceptions.AuthenticationFailed(_("This API key is not valid or has been revoked."))
        return None, key

    def authenticate_header(self, request: Request) -> str:
        return self.keyword


class HasApiKey(permissions.BasePermission):
    message = _("Send an API key: Authorization: Api-Key <key>.")

    def has_permission(self, request: Request, view: object) -> bool:
        return isinstance(request.auth, ApiKey)


class ApiKeyThrottle(throttling.SimpleRateThrottle):
    """Each key has its own budget of requests per minute, set in the admin."""

    scope = "api_key"

    def get_rate(self) -> str:
        return "1/min"  # replaced per request by the key's own rate

    def allow_request(self, request: Request, view: object) -> bool:
        if isinstance(request.auth, ApiKey):
            self.num_requests, self.duration = request.auth.requests_per_minute, 60
        return super().allow_request(request, view)

    def get_cache_key(self, request: Request, view: object) -> str | None:
        if not isinstance(request.auth, ApiKey):
            return None
        return f"throttle:api-key:{request.auth.pk}"
