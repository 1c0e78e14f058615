"""Every API error as `application/problem+json` (RFC 9457), with the fields at fault."""

from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from django.utils.translation import gettext as _
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from members.idempotency import IdempotencyConflict
from members.services import DuplicateMember
from rewards import catalog
from rewards import services as rewards

PROBLEM_CONTENT_TYPE = "application/problem+json"


def problem(
    status_code: int, code: str, title: str, detail: str = "", errors: dict[str, list[str]] | None = None, **extra: Any
) -> Response:
    body: dict[str, Any] = {"type": f"/api/problems/{code}", "title": title, "status": status_code, "detail": detail or title}
    if errors:
        body["errors"] = errors
    body.update(extra)
    return Response(body, status=status_code, content_type=PROBLEM_CONTENT_TYPE)


def _flatten(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    """Turn DRF's nested error details into {"lines[0].amount": ["…"]}."""
    if isinstance(detail, dict):
        out: dict[str, list[str]] = {}
        for key, value in detail.items():
            name = str(key) if not prefix else (f"{prefix}[{key}]" if isinstance(key, int) else f"{prefix}.{key}")
            out.update(_flatten(value, name))
        return out
    if isinstance(detail, list) and detail and all(isinstance(item, dict | list) for item in detail):
        out = {}
        for i, item in enumerate(detail):
            out.update(_flatten(item, f"{prefix}[{i}]"))
        return out
    messages = detail if isinstance(detail, list) else [detail]
    return {prefix or "non_field_errors": [str(message) for message in messages if message]}


def _domain_errors(error: DjangoValidationError, view: Any) -> dict[str, list[str]]:
    # Services name their own inputs; an API view may call them differently (member → member_number).
    renames = getattr(view, "error_field_names", {})
    if hasattr(error, "error_dict"):
        return {renames.get(field, field): messages for field, messages in error.message_dict.items()}
    return {"non_field_errors": error.messages}


def problem_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    view = context.get("view")
    if isinstance(exc, DuplicateMember):
        return problem(
            status.HTTP_409_CONFLICT,
            "duplicate-member",
            _("This person is already a member."),
            errors=_domain_errors(exc, view),
            member_number=exc.existing.member_number,
        )
    if isinstance(exc, DjangoValidationError):
        return problem(
            status.HTTP_422_UNPROCESSABLE_ENTITY,
            "unprocessable",
            _("The request was understood but the programme's rules refuse it."),
            errors=_domain_errors(exc, view),
        )
    if isinstance(exc, IdempotencyConflict):
        return problem(
            status.HTTP_409_CONFLICT,
            "conflict",
            _("This request was already made with different details."),
            errors={"Idempotency-Key": [_("This key was used for a different request.")]},
        )
    if isinstance(exc, rewards.RewardsError):
        conflicts = rewards.ReplayConflict | rewards.InsufficientPoints | rewards.PointsOwed | catalog.VoucherAlreadyUsed
        status_code = status.HTTP_409_CONFLICT if isinstance(exc, conflicts) else status.HTTP_422_UNPROCESSABLE_ENTITY
        renames = getattr(view, "error_field_names", {})
        field = renames.get(exc.field, exc.field)
        return problem(status_code, exc.code.replace("_", "-"), exc.message, errors={field: [exc.message]}, **exc.facts)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()

    response = exception_handler(exc, context)
    if response is None or not isinstance(exc, exceptions.APIException):
        return response
    if isinstance(exc, exceptions.ValidationError):
        return problem(
            status.HTTP_400_BAD_REQUEST,
            "invalid",
            _("Some fields are missing or not valid."),
            errors=_flatten(exc.detail),
        )
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    body = problem(response.status_code, exc.default_code.replace("_", "-"), str(exc.default_detail), detail=detail)
    for header in ("Retry-After", "WWW-Authenticate", "Allow"):
        if header in response:
            body[header] = response[header]
    return body
