"""Forms of the marketer's referral page: they parse what staff type; the services judge it."""

import datetime as dt
import uuid

from django import forms
from django.utils.translation import gettext_lazy as _

from members.staff_forms import CounterForm

DEFAULT_DAYS = 30
DATE = {"input_formats": ["%Y-%m-%d"], "widget": forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d")}


class PeriodForm(forms.Form):
    """The days whose new referrals the funnel counts, both included; the last 30 days unless chosen."""

    start = forms.DateField(label=_("From"), **DATE)  # type: ignore[arg-type]
    end = forms.DateField(label=_("To"), help_text=_("Both days included, in the programme's time zone."), **DATE)  # type: ignore[arg-type]

    def __init__(self, data: object = None, *, today: dt.date) -> None:
        default = {"start": today - dt.timedelta(days=DEFAULT_DAYS - 1), "end": today}
        chosen = data if data is not None and any(data.get(name) for name in default) else None  # type: ignore[attr-defined]
        super().__init__(chosen, initial=default, auto_id="period-%s", label_suffix="")  # type: ignore[arg-type]
        self.default = default

    def clean(self) -> dict[str, object]:
        cleaned = super().clean() or {}
        start, end = cleaned.get("start"), cleaned.get("end")
        if start and end and start > end:
            self.add_error("end", _("Choose a day on or after the first day."))
        return cleaned

    def period(self) -> tuple[dt.date, dt.date]:
        """Return the first and last day chosen, or the default ones when nothing valid was."""
        if self.is_bound and self.is_valid():
            return self.cleaned_data["start"], self.cleaned_data["end"]
        return self.default["start"], self.default["end"]


class ReviewForm(CounterForm):
    """A reviewer's decision on one referral; the token makes a double click or a resent form decide once."""

    APPROVE, REJECT = "approve", "reject"

    decision = forms.ChoiceField(choices=[(APPROVE, _("Approve")), (REJECT, _("Reject"))], widget=forms.HiddenInput)
    note = forms.CharField(
        label=_("Note"),
        max_length=300,
        required=False,
        help_text=_("Kept with the referral's history. Required to reject: say why."),
        widget=forms.Textarea(attrs={"rows": 2}),
    )
    token = forms.UUIDField(widget=forms.HiddenInput, initial=uuid.uuid4)

    def __init__(self, *args: object, referral_id: int, **kwargs: object) -> None:
        # Several of these share the review queue: each names its inputs after its referral.
        kwargs.setdefault("auto_id", f"review-{referral_id}-%s")
        super().__init__(*args, **kwargs)
