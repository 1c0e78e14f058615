"""Keep the referral code of a sign-up link (`/accounts/signup/?ref=CODE`) for the referrals app."""

import re
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.urls import reverse

REFERRAL_CODE = "referral_code"
CODE_SHAPE = re.compile(r"[0-9A-Za-z-]{4,32}")


class ReferralCodeMiddleware:
    """Remember a well-formed `ref` given to the sign-up page in the session, under REFERRAL_CODE."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        code = request.GET.get("ref", "").strip()
        # Anything else is ignored: a mangled link still signs the friend up, without the code.
        if code and request.path_info == reverse("account_signup") and CODE_SHAPE.fullmatch(code):
            request.session[REFERRAL_CODE] = code
        return self.get_response(request)
