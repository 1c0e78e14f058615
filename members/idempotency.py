"""Answer a retried write with the answer it got the first time.

The answer is stored in the same transaction as the write, keyed by store and a natural key
(a receipt number) or the client's `Idempotency-Key` header.

- With a header, the key is claimed before the write: a concurrent twin waits on the unique
  index until the first commits, then reads its answer.
- With a natural key, the service already tells a replay from a new write by that key (and
  refuses a different body under it), so the answer is only stored after the write: no claim
  row to insert and update on the hot path of every sale.
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
    """The `Idempotency-Key` was used before for a different request."""

    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


@dataclass(frozen=True)
class Answer:
    status_code: int
    body: dict[str, object]
    replayed: bool = False


def request_hash(payload: object) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


@transaction.atomic
def idempotent(*, store: Store, key: str, payload: object, write: Callable[[], Answer]) -> Answer:
    """Run `write` once per (store, key); replay its answer, or refuse a different payload."""
    digest = request_hash(payload)
    record = IdempotentRequest(store=store, key=key, request_hash=digest, status_code=0, response={})
    try:
        with transaction.atomic():
            record.save()
    except IntegrityError:
        original = IdempotentRequest.objects.get(store=store, key=key)
        if original.request_hash != digest:
            raise IdempotencyConflict(key) from None
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
) -> Response:
    """Answer an API write once per `Idempotency-Key` header, or else per natural key."""
    header = request.headers.get("Idempotency-Key", "").strip()
    if len(header) > 150 or "\x00" in header:
        raise serializers.ValidationError({"Idempotency-Key": [_("Use at most 150 characters, and no NUL.")]})
    store = request.auth.store  # type: ignore[union-attr]
    payload = {"path": request.path, "body": payload}
    if header:
        answer = idempotent(store=store, key=f"key:{header}", payload=payload, write=lambda: Answer(*write()))
    elif natural_key is not None:
        answer = remembered(store=store, key=natural_key, payload=payload, write=lambda: Answer(*write()))
    else:
        answer = Answer(*write())
    return Response(answer.body, status=answer.status_code)


@transaction.atomic
def remembered(*, store: Store, key: str, payload: object, write: Callable[[], Answer]) -> Answer:
    """Run a write that deduplicates itself by `key` (201 when new, 200 when a replay); keep its first answer."""
    answer = write()
    if answer.status_code == 201:
        IdempotentRequest.objects.create(
            store=store, key=key, request_hash=request_hash(payload), status_code=201, response=answer.body
        )
        return answer
    original = IdempotentRequest.objects.filter(store=store, key=key).first()
    # A sale first recorded another way (the counter, an import) has no stored answer: describe it as it is now.
    return Answer(status_code=200, body=original.response if original else answer.body, replayed=True)
