"""Forms of the staff counter's points pages: they parse what staff type; the services judge it."""

import datetime as dt
import uuid
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from members.models import Store
from members.staff_forms import CounterForm, MemberEnrolForm
from rewards.models import ProgrammeRules, PurchaseLine, Reward, StampProgramme
from rewards.services import MAX_QUANTITY, LineInput, RewardsError

LINE_ROWS = 5
# Enough recent lines to see every category a store sells, few enough to read at once.
RECENT_LINES = 500
AMOUNT = {"max_digits": 14, "decimal_places": 2}


def category_choices(store: Store) -> list[str]:
    """Return the categories the programme's rules name and those sold lately at this store."""
    rules = ProgrammeRules.objects.in_force(timezone.now())
    named = set(rules.excluded_categories if rules else [])
    named.update(StampProgramme.objects.filter(active=True).exclude(category="").values_list("category", flat=True))
    recent = (
        PurchaseLine.objects.filter(purchase__store=store)
        .exclude(category="")
        .order_by("-purchase_id")
        .values_list("category", flat=True)[:RECENT_LINES]
    )
    named.update(recent)
    return sorted({category.strip() for category in named if category.strip()}, key=str.lower)


def refusal(error: RewardsError) -> ValidationError:
    """Turn a rule's refusal into a form error on the field it names."""
    return ValidationError({error.field: error.message})


class EnrolForm(MemberEnrolForm):
    """Enrolment at the counter, with the code of the member who invited the customer (checked by the enrolment hook)."""

    referral_code = forms.CharField(
        label=_("Referral code"),
        max_length=32,
        required=False,
        help_text=_("If a member invited the customer: their code, in any case, with or without dashes."),
        widget=forms.TextInput(attrs={"autocomplete": "off", "autocapitalize": "characters", "spellcheck": "false"}),
    )

    def enrolment(self) -> dict[str, object]:
        return {**super().enrolment(), "referral_code": self.cleaned_data["referral_code"]}


def _amount_field(label: str, *, required: bool = True, minimum: str = "0.01", help_text: str = "") -> forms.DecimalField:
    return forms.DecimalField(
        label=label,
        required=required,
        min_value=Decimal(minimum),
        help_text=help_text,
        widget=forms.NumberInput(attrs={"inputmode": "decimal", "step": "0.01", "min": minimum}),
        **AMOUNT,
    )


class PurchaseForm(CounterForm):
    id_prefix = "purchase"

    amount = _amount_field(_("Amount"), help_text=_("The receipt's total before any discount."))
    receipt_number = forms.CharField(
        label=_("Receipt number"),
        max_length=64,
        help_text=_("As printed on the receipt. Sending the same receipt again never counts it twice."),
        widget=forms.TextInput(attrs={"autocomplete": "off", "enterkeyhint": "send"}),
    )
    discount = _amount_field(_("Discount"), required=False, minimum="0", help_text=_("Leave empty if there was none."))

    def __init__(self, *args: object, categories: Iterable[str] = (), **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        choices = [("", _("No category")), *((category, category) for category in categories)]
        for row in range(1, LINE_ROWS + 1):
            self.fields[f"line_{row}_category"] = forms.ChoiceField(label=_("Category"), choices=choices, required=False)
            self.fields[f"line_{row}_amount"] = _amount_field(_("Line amount"), required=False, minimum="0")
            self.fields[f"line_{row}_quantity"] = forms.IntegerField(
                label=_("Quantity"), required=False, min_value=1, max_value=MAX_QUANTITY, initial=1
            )
        self._line_rows: list[int] = []

    @property
    def rows(self) -> list[tuple[int, list[forms.BoundField]]]:
        return [
            (row, [self[f"line_{row}_{name}"] for name in ("category", "amount", "quantity")]) for row in range(1, LINE_ROWS + 1)
        ]

    @property
    def lines_have_errors(self) -> bool:
        return any(name.startswith("line_") for name in self.errors)

    def clean(self) -> dict[str, object]:
        cleaned = super().clean() or {}
        for row in range(1, LINE_ROWS + 1):
            if cleaned.get(f"line_{row}_amount") is None and cleaned.get(f"line_{row}_category"):
                self.add_error(f"line_{row}_amount", _("Enter the amount of this line, or clear its category."))
        return cleaned

    def sale(self) -> dict[str, object]:
        """Return the arguments of `rewards.services.purchase_record` that were typed in."""
        data = self.cleaned_data
        self._line_rows = [row for row in range(1, LINE_ROWS + 1) if data.get(f"line_{row}_amount") is not None]
        lines = [
            LineInput(
                amount=data[f"line_{row}_amount"],
                quantity=data.get(f"line_{row}_quantity") or 1,
                category=data.get(f"line_{row}_category") or "",
            )
            for row in self._line_rows
        ]
        return {
            "receipt_number": data["receipt_number"],
            "amount": data["amount"],
            "discount": data.get("discount") or Decimal(0),
            "lines": lines,
        }

    def add_service_error(self, error: ValidationError) -> None:
        """Show a service's errors, the n-th line's on the row it was typed in."""
        if hasattr(error, "error_dict"):
            renamed: dict[str, list[ValidationError]] = {}
            for field, errors in error.error_dict.items():
                if field.startswith("lines[") and "]." in field:
                    index, _sep, name = field.removeprefix("lines[").partition("].")
                    if index.isdecimal() and len(index) < 4 and int(index) < len(self._line_rows):
                        field = f"line_{self._line_rows[int(index)]}_{name}"
                renamed.setdefault(field, []).extend(errors)
            error = ValidationError(renamed)  # type: ignore[arg-type]
        super().add_service_error(error)


class ReturnForm(CounterForm):
    id_prefix = "return"

    return_number = forms.CharField(
        label=_("Return number"),
        max_length=64,
        help_text=_("The refund slip's number, or keep this one. Sending the form twice records the return once."),
        initial=lambda: uuid.uuid4().hex,
        widget=forms.TextInput(attrs={"autocomplete": "off"}),
    )
    amount = _amount_field(
        _("Amount refunded"), required=False, help_text=_("Either an amount, or the quantities returned below.")
    )

    def __init__(self, *args: object, lines: Iterable[PurchaseLine] = (), **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        # Every line, even one returned in full: a resubmitted form must reach the service to be
        # recognised as the return already recorded, and the service says what is left.
        self.lines = list(lines)
        for line in self.lines:
            left = line.quantity - line.returned_quantity  # type: ignore[attr-defined]
            self.fields[f"line_{line.line_number}"] = forms.IntegerField(
                label=_("Line %(number)s: %(product)s")
                % {"number": line.line_number, "product": line.name or line.category or line.sku},
                required=False,
                min_value=0,
                max_value=line.quantity,
                help_text=_("%(left)s of %(quantity)s can still be returned.") % {"left": left, "quantity": line.quantity},
                widget=forms.NumberInput(attrs={"inputmode": "numeric"}),
            )

    @property
    def line_fields(self) -> list[forms.BoundField]:
        return [self[f"line_{line.line_number}"] for line in self.lines]

    def refund(self) -> dict[str, object]:
        """Return the arguments of `rewards.services.purchase_return` that were typed in."""
        data = self.cleaned_data
        lines = [
            (line.line_number, data[f"line_{line.line_number}"]) for line in self.lines if data.get(f"line_{line.line_number}")
        ]
        return {"return_number": data["return_number"], "amount": data.get("amount"), "lines": lines}

    def add_service_error(self, error: ValidationError) -> None:
        """Show a service's errors, a line's on that line's quantity."""
        if hasattr(error, "error_dict"):
            asked = self.refund()["lines"]
            renamed: dict[str, list[ValidationError]] = {}
            for field, errors in error.error_dict.items():
                if field.startswith("lines[") and "]." in field:
                    index = field.removeprefix("lines[").partition("]")[0]
                    if index.isdecimal() and len(index) < 4 and int(index) < len(asked):  # type: ignore[arg-type]
                        field = f"line_{asked[int(index)][0]}"  # type: ignore[index]
                renamed.setdefault(field, []).extend(errors)
            error = ValidationError(renamed)  # type: ignore[arg-type]
        super().add_service_error(error)


class ClaimForm(CounterForm):
    id_prefix = "claim"

    receipt_number = forms.CharField(
        label=_("Receipt number"),
        max_length=64,
        help_text=_("Of a sale recorded at this store without the member's card."),
        widget=forms.TextInput(attrs={"autocomplete": "off", "autofocus": True, "enterkeyhint": "send"}),
    )

    def add_service_error(self, error: ValidationError) -> None:
        """Show the sale's problems (too old, another member's, returned) on its receipt number."""
        if hasattr(error, "error_dict") and "purchase" in error.error_dict:
            error = ValidationError({"receipt_number" if f == "purchase" else f: e for f, e in error.error_dict.items()})
        super().add_service_error(error)


# --- rewards, vouchers and adjustments ---------------------------------------------------

# Far above any real correction and within what the ledger's columns hold: a typo is refused, never a 500.
MAX_ADJUSTMENT = 10_000_000


class RedeemForm(CounterForm):
    """Confirm one reward for the member; the token makes a double click or a resent form redeem once."""

    reward = forms.ModelChoiceField(queryset=Reward.objects.all(), widget=forms.HiddenInput)
    token = forms.UUIDField(widget=forms.HiddenInput, initial=uuid.uuid4)


class VoucherCodeForm(CounterForm):
    """The voucher's code as a scanner types it (then Enter), or as staff read it from the member's phone."""

    code = forms.CharField(
        label=_("Voucher code"),
        max_length=40,
        help_text=_("Scan the QR code, or type the code: dashes, spaces and case do not matter."),
        widget=forms.TextInput(
            attrs={
                "autofocus": True,
                "autocomplete": "off",
                "autocapitalize": "characters",
                "spellcheck": "false",
                "enterkeyhint": "go",
            }
        ),
    )


class AdjustPointsForm(CounterForm):
    """A correction of the member's balance with the reason they will read; the token makes it count once."""

    points = forms.IntegerField(
        label=_("Points"),
        min_value=-MAX_ADJUSTMENT,
        max_value=MAX_ADJUSTMENT,
        help_text=_("A positive number adds points; a negative one, like -50, takes them away."),
        widget=forms.NumberInput(attrs={"autofocus": True, "step": 1}),
    )
    reason = forms.CharField(
        label=_("Reason"),
        max_length=300,
        help_text=_("The member reads this next to the change in their history."),
        widget=forms.TextInput(attrs={"autocomplete": "off", "enterkeyhint": "send"}),
    )
    token = forms.UUIDField(widget=forms.HiddenInput, initial=uuid.uuid4)


class AdjustmentDayForm(forms.Form):
    """The day whose adjustments the audit list shows, in the programme's time zone."""

    day = forms.DateField(
        label=_("Day"),
        input_formats=["%Y-%m-%d"],
        widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
    )

    def __init__(self, *args: Any, today: dt.date, **kwargs: Any) -> None:
        super().__init__(*args, initial={"day": today}, **kwargs)
        self.today = today
        self.fields["day"].widget.attrs["max"] = today.isoformat()

    def clean_day(self) -> dt.date:
        day: dt.date = self.cleaned_data["day"]
        if day > self.today:  # nothing to show yet, and the last days of the calendar have no next day
            raise ValidationError(_("Choose today or an earlier day."), code="future")
        return day
