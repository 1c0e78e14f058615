import os
import subprocess
import sys
from pathlib import Path

from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]


def test_tests_run_on_postgresql_in_test_mode():
    assert settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"
    assert settings.LOYALTY_ENV == "test"
    assert settings.CELERY_TASK_ALWAYS_EAGER


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in {"LOYALTY_ENV", "DEBUG", "SECRET_KEY"}}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120, check=False
    )


def test_check_deploy_is_clean_with_production_values():
    result = _manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        LOYALTY_ENV="production",
        SECRET_KEY="a-production-secret-key-that-is-long-and-random-0123456789-abcdefghij",
        ALLOWED_HOSTS="loyalty.example.com",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_refuses_to_start_without_a_secret_key():
    result = _manage("check", LOYALTY_ENV="production")
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr
