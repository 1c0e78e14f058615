"""Members: who people are.

Owns the login user (e-mail), the loyalty member (phone-first, may exist without a login),
stores and which staff work in them, marketing consent, and (later) notifications.
Imports nothing from the other apps: everything else stands on it.
"""
