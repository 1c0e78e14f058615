"""Answer a retried write with the answer it got the first time.

The answer is stored in the same transaction as the write, keyed by store and a natural key
(a receipt number) or the client's `Idempotency-Key` header. A concurrent twin waits on the
unique index until the first commits, then reads its answer.
"""

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.utils.translation import gettext as _
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from members.models import IdempotentRequest, Store


class IdempotencyConflict(Exception):
    """The key was used before for a different request; `field` names where the key came from."""

    def __init__(self, key: str, field: str = "Idempotency-Key"):
        super().__init__(key)
        self.key = key
        self.field = field


@dataclass(frozen=True)
class Answer:
    status_code: int
    body: dict[str, object]
    replayed: bool = False


def request_hash(payload: object) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


@transaction.atomic
def idempotent(*, store: Store, key: str, payload: object, write: Callable[[], Answer], field: str = "Idempotency-Key") -> Answer:
    """Run `write` once per (store, key); replay its answer, or refuse a different payload."""
    digest = request_hash(payload)
    record = IdempotentRequest(store=store, key=key, request_hash=digest, status_code=0, response={})
    try:
        with transaction.atomic():
            record.save()
    except IntegrityError:
        original = IdempotentRequest.objects.get(store=store, key=key)
        if original.request_hash != digest:
            raise IdempotencyConflict(key, field) from None
        return Answer(
            status_code=200 if original.status_code == 201 else original.status_code, body=original.response, replayed=True
        )
    answer = write()
    record.status_code, record.response = answer.status_code, answer.body
    record.save(update_fields=["status_code", "response"])
    return answer


def idempotent_response(
    request: Request,
    *,
    payload: object,
    natural_key: str | None,
    write: Callable[[], tuple[int, dict[str, object]]],
    natural_key_field: str = "",
) -> Response:
    """Answer an API write once per `Idempotency-Key` header, or else per natural key."""
    header = request.headers.get("Idempotency-Key", "").strip()
    if len(header) > 150 or "\x00" in header:
        raise serializers.ValidationError({"Idempotency-Key": [_("Use at most 150 characters, and no NUL.")]})
    key = f"key:{header}" if header else natural_key
    if key is None:
        status_code, body = write()
        return Response(body, status=status_code)
    answer = idempotent(
        store=request.auth.store,  # type: ignore[union-attr]
        key=key,
        payload={"path": request.path, "body": payload},
        write=lambda: Answer(*write()),
        field="Idempotency-Key" if header else natural_key_field,
    )
    return Response(answer.body, status=answer.status_code)
