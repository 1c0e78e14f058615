"""How tills and web shops authenticate: `Authorization: Api-Key <key>`, rate-limited per key."""

import time

from django.core.cache import cache
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


class ApiKeyThrottle(throttling.BaseThrottle):
    """Each key has its own budget of requests per minute, set in the admin.

    Counted per clock minute with one increment in the shared cache, whatever the traffic. DRF's
    SimpleRateThrottle keeps a timestamp for every request of the last minute, reading and writing
    all of them back on each request: tens of thousands for a busy web shop's key. A fixed minute
    lets a key make up to twice its budget across the turn of a minute; tills retry on 429 anyway.
    The increment is atomic in Redis (production's `CACHE_URL`); the default database cache
    reads and writes it, so two requests at the same instant may count once.
    """

    def allow_request(self, request: Request, view: object) -> bool:
        if not isinstance(request.auth, ApiKey):
            return True
        now = time.time()
        minute = int(now // 60)
        self.retry_after = 60 - now % 60
        key = f"throttle:api-key:{request.auth.pk}:{minute}"
        try:
            count = cache.incr(key)
        except ValueError:  # the minute's first request (or the count was evicted)
            count = 1 if cache.add(key, 1, timeout=120) else cache.incr(key)
        return count <= request.auth.requests_per_minute

    def wait(self) -> float:
        return self.retry_after
