"""Composition root: settings, URLs, the Celery app, roles, demo data and hook wiring.

May import every app. Nothing imports it except the entry points (manage.py, wsgi, asgi, celery).
"""

from loyalty_site.celery import app as celery_app

__all__ = ["celery_app"]
