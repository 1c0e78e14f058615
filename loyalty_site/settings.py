"""One settings module, driven by environment variables.

Defaults are safe for production: DEBUG is off and a secret key is required unless
`LOYALTY_ENV=development` (set by `make run`) or `test` (set by pytest).
"""

import os
from pathlib import Path

import environ
from celery.schedules import crontab
from csp.constants import NONE, SELF
from django.utils.translation import gettext_lazy as _

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("LOYALTY_DATA_DIR", BASE_DIR / ".data"))

env = environ.Env()
# A developer's checkout has a .env (written by make) saying LOYALTY_ENV=development; real
# environment variables always win, and production machines have no .env.
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)
LOYALTY_ENV = env.str("LOYALTY_ENV", default="production")
if LOYALTY_ENV not in {"production", "development", "test"}:
    raise environ.ImproperlyConfigured("LOYALTY_ENV must be production, development or test")
LOCAL = LOYALTY_ENV != "production"

DEBUG = env.bool("DEBUG", default=LOYALTY_ENV == "development")
SECRET_KEY = env.str("SECRET_KEY", default="insecure-local-only-key" if LOCAL else environ.Env.NOTSET)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"] if LOCAL else [])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "modeltranslation",  # before the admin, so translated fields get their tabs
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django.contrib.postgres",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "allauth",
    "allauth.account",
    "django_celery_beat",
    "django_htmx",
    "template_partials.apps.SimpleAppConfig",
    "phonenumber_field",
    "members",
    "rewards",
    "referrals",
    "campaigns",
    "analytics",
    "loyalty_site",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "members.middleware.ReferralCodeMiddleware",
    "rewards.middleware.TermsMiddleware",
]

ROOT_URLCONF = "loyalty_site.urls"
WSGI_APPLICATION = "loyalty_site.wsgi.application"
ASGI_APPLICATION = "loyalty_site.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "OPTIONS": {
            # "page.html#fragment" names one partial of a page: what an htmx request gets back.
            "loaders": [
                (
                    "template_partials.loader.Loader",
                    [
                        (
                            "django.template.loaders.cached.Loader",
                            ["django.template.loaders.filesystem.Loader", "django.template.loaders.app_directories.Loader"],
                        )
                    ],
                )
            ],
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django.template.context_processors.i18n",
                "csp.context_processors.nonce",
                "members.context_processors.inbox",
            ],
            # Partials read as they will on Django 6, where they are built in.
            "builtins": ["template_partials.templatetags.partials"],
        },
    }
]

# --- Database: PostgreSQL only ---------------------------------------------------------
if env.str("DATABASE_URL", default=""):
    DATABASES = {"default": env.db_url("DATABASE_URL")}
else:
    from loyalty_site.embedded_postgres import database_settings

    DATABASES = {"default": database_settings(DATA_DIR / "postgres")}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=0 if LOCAL else 60)
# Off by default, as Django has it: checking a kept connection costs every request a round trip
# (13% of a till sale's time under load). A connection broken while idle fails one request, which
# tills retry with the same receipt, and is then replaced.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = env.bool("CONN_HEALTH_CHECKS", default=False)
# The hottest complex statements are prepared once per connection (rewards.tiers); off for a
# connection pooler that cannot keep prepared statements (PgBouncer before 1.21 in transaction mode).
DATABASE_PREPARE = env.bool("DATABASE_PREPARE", default=True)
DATABASES["default"].setdefault("TEST", {})["NAME"] = env.str("TEST_DATABASE_NAME", default="test_loyalty")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache: shared by every process (API rate limits count across web workers) ---------
# A PostgreSQL table by default (nothing more to run); CACHE_URL (e.g. redis://) to use another.
CACHES = {
    "default": env.cache_url("CACHE_URL")
    if "CACHE_URL" in os.environ
    # Room for every key's per-minute API count beside the claim codes and login counters: past
    # MAX_ENTRIES Django culls a third of all keys, the counters that guard logins among them.
    else {"BACKEND": "loyalty_site.cache.PostgresCache", "LOCATION": "loyalty_cache", "OPTIONS": {"MAX_ENTRIES": 100_000}}
}

# --- API ------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["members.api_auth.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["members.api_auth.HasApiKey"],
    "DEFAULT_THROTTLE_CLASSES": ["members.api_auth.ApiKeyThrottle"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "loyalty_site.api.problem_exception_handler",
    "UNAUTHENTICATED_USER": None,
    "COERCE_DECIMAL_TO_STRING": True,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Loyalty programme API",
    "DESCRIPTION": "For tills and web shops: members, balances, purchases and returns. "
    "Authenticate with `Authorization: Api-Key <key>`. Errors are `application/problem+json`.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "APPEND_COMPONENTS": {
        "securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header", "name": "Authorization", "description": "Api-Key <key>"}}
    },
    "SECURITY": [{"ApiKey": []}],
    "AUTHENTICATION_WHITELIST": [],
}

# --- Identity -------------------------------------------------------------------------
AUTH_USER_MODEL = "members.User"
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_USER_MODEL_USERNAME_FIELD = None
ACCOUNT_EMAIL_VERIFICATION = "mandatory"
# Five wrong passwords for one e-mail lock that login out for five minutes, even with the right
# one. The per-address limit is looser: customers in one shop's Wi-Fi share an address.
ACCOUNT_RATE_LIMITS = {"login_failed": "20/5m/ip,5/5m/key"}
LOGIN_REDIRECT_URL = "/"
# The login form asks "Remember me": if ticked, the session lasts two weeks (staff at a shared
# counter leave it unticked); if not, it ends when the browser closes.
ACCOUNT_SESSION_REMEMBER = None
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", default=60 * 60 * 24 * 14)
SESSION_EXPIRE_AT_BROWSER_CLOSE = False

# Phone numbers are stored in E.164; a number typed without a country code is read in this region.
PHONENUMBER_DEFAULT_REGION = env.str("PHONE_DEFAULT_REGION", default="CN")
PHONENUMBER_DB_FORMAT = "E164"

# --- Languages ------------------------------------------------------------------------
LANGUAGE_CODE = "en"
LANGUAGES = [
    ("en", _("English")),
    ("zh-hans", _("Simplified Chinese")),
    ("zh-hant", _("Traditional Chinese")),
    ("ko", _("Korean")),
]
LOCALE_PATHS = [BASE_DIR / "locale"]
USE_I18N = True
USE_TZ = True
TIME_ZONE = env.str("TIME_ZONE", default="UTC")

# --- Static files ---------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(DATA_DIR / "staticfiles" if LOCAL else BASE_DIR / "staticfiles")))
if LOCAL:
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)
# Uploads (reward images). Production serves this folder from the web server or object storage.
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(DATA_DIR / "media")))
# Locally, files are served straight from the apps' folders without collectstatic.
WHITENOISE_USE_FINDERS = LOCAL
WHITENOISE_AUTOREFRESH = DEBUG
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Files uploaded for import wait here for the worker: the web and the worker must share the
    # folder (or point this at object storage). Nothing serves it: the files hold phone numbers.
    "imports": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {
            "location": env.str("IMPORTS_ROOT", default=str(DATA_DIR / "imports")),
            "file_permissions_mode": 0o600,
            "directory_permissions_mode": 0o700,
        },
    },
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if LOCAL
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

# --- E-mail ---------------------------------------------------------------------------
EMAIL_CONFIG = env.email_url("EMAIL_URL", default="consolemail://" if LOCAL else "smtp://localhost:25")
vars().update(EMAIL_CONFIG)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="loyalty@localhost")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
# Where text messages go: a class with `send(*, phone, text)`. The default only writes to the log.
SMS_BACKEND = env.str("SMS_BACKEND", default="members.notifications.LoggingSmsBackend")

# --- Security -------------------------------------------------------------------------
SECURE_TLS = env.bool("SECURE_TLS", default=not LOCAL)
SESSION_COOKIE_SECURE = SECURE_TLS
CSRF_COOKIE_SECURE = SECURE_TLS
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = True
SECURE_SSL_REDIRECT = SECURE_TLS and env.bool("SECURE_SSL_REDIRECT", default=True)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env.bool("BEHIND_PROXY", default=False) else None
# Behind the proxy every request comes from its address: login limits count the client's instead.
ALLAUTH_TRUSTED_PROXY_COUNT = 1 if env.bool("BEHIND_PROXY", default=False) else 0
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=60 * 60 * 24 * 365) if SECURE_TLS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_TLS
SECURE_HSTS_PRELOAD = SECURE_TLS and env.bool("SECURE_HSTS_PRELOAD", default=True)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "object-src": [NONE],
        "base-uri": [SELF],
        "frame-ancestors": [NONE],
        "form-action": [SELF],
    }
}

# --- Celery ---------------------------------------------------------------------------
# With no broker configured, kombu's filesystem transport under .data needs no server.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
if CELERY_BROKER_URL == "filesystem://":
    from loyalty_site.broker import filesystem_transport_options

    CELERY_BROKER_TRANSPORT_OPTIONS = filesystem_transport_options(
        Path(env.str("CELERY_FILESYSTEM_FOLDER", default=str(DATA_DIR / "celery")))
    )
CELERY_RESULT_BACKEND = None
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=LOYALTY_ENV == "test")
CELERY_TASK_EAGER_PROPAGATES = True
# A worker killed mid-job leaves the message on the queue; every job is idempotent.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Beat reads the hours of the schedule below in this zone. Set it to the programme's time zone
# (Programme.timezone, Asia/Shanghai in the demo) so the daily jobs run at those local hours;
# the jobs count days in the programme's zone whenever they run.
CELERY_TIMEZONE = env.str("CLOCK_TIME_ZONE", default="Asia/Shanghai")
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# The programme clock, defined in code; the database scheduler copies it into the admin.
CELERY_BEAT_SCHEDULE = {
    "rewards: release pending points": {
        "task": "rewards.tasks.release_pending_points",
        "schedule": crontab(minute="*/15"),
    },
    # Points and vouchers expire at a moment, so these run every hour.
    "rewards: expire points": {
        "task": "rewards.tasks.expire_points",
        "schedule": crontab(minute="5", hour="*"),
    },
    "rewards: expire vouchers": {
        "task": "rewards.tasks.expire_vouchers",
        "schedule": crontab(minute="10", hour="*"),
    },
    # Daily work at a quiet hour, once the programme's day has begun.
    "rewards: evaluate tiers": {
        "task": "rewards.tasks.evaluate_tiers",
        "schedule": crontab(minute="30", hour="2"),
    },
    # Imports that stopped are marked failed; uploaded files (phone numbers) never imported go after a week.
    "rewards: tidy imports": {
        "task": "rewards.tasks.tidy_imports",
        "schedule": crontab(minute="45", hour="*"),
    },
    # Messages go out in the morning, not in the night.
    "rewards: birthday bonuses": {
        "task": "rewards.tasks.grant_birthday_bonuses",
        "schedule": crontab(minute="0", hour="9"),
    },
    "rewards: remind expiring points": {
        "task": "rewards.tasks.remind_expiring_points",
        "schedule": crontab(minute="0", hour="10"),
    },
    "rewards: remind vouchers": {
        "task": "rewards.tasks.remind_vouchers",
        "schedule": crontab(minute="30", hour="10"),
    },
    # Referrals: friends who never qualified expire, and rewards come out of their hold, once an hour.
    "referrals: expire unqualified": {
        "task": "referrals.tasks.expire_referrals",
        "schedule": crontab(minute="20", hour="*"),
    },
    "referrals: end holds": {
        "task": "referrals.tasks.reward_referrals",
        "schedule": crontab(minute="25", hour="*"),
    },
    "members: queue lost deliveries again": {
        "task": "rewards.tasks.requeue_notifications",
        "schedule": crontab(minute="*/10"),
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"pgserver": {"level": "WARNING"}},
}
