"""URL converters for the identifiers people type: what does not match is a 404, never a query."""

from django.urls import register_converter


class MemberNumberConverter:
    """Only digits reach a view (a NUL or a letter never becomes a database error)."""

    regex = "[0-9]{1,12}"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


class VoucherCodeConverter:
    """Letters, digits and dashes only, as a code is printed or typed."""

    regex = "[0-9A-Za-z-]{1,20}"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


# Registered once, on import, for every URL module that uses them.
register_converter(MemberNumberConverter, "member_number")
register_converter(VoucherCodeConverter, "voucher_code")
