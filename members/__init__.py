"""Members: who people are.

Owns the login user (e-mail), the loyalty member (phone-first, may exist without a login),
stores and which staff work in them, marketing consent, and notifications (the inbox, and
delivery by e-mail and SMS in `notifications.py`), and the staff counter's door: who may
use it for which store (`access.py`), the shift and the member search (`staff_views.py`).
Imports nothing from the other apps: everything else stands on it.
"""
