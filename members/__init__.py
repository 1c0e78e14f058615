"""Members: who people are.

Owns the login user (e-mail), the loyalty member (phone-first, may exist without a login),
stores and which staff work in them, marketing consent, and notifications (the inbox, and
delivery by e-mail and SMS in `notifications.py`).
Imports nothing from the other apps: everything else stands on it.
"""
