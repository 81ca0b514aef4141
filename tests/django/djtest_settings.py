"""Settings for the docket_django tests (also used by the worker subprocesses)."""

import os

SECRET_KEY = "docket-django-tests"
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    # The admin's CSS in the browser tests' live server (and the example's screenshots).
    "django.contrib.staticfiles",
    "docket_django",
    "djtestapp",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "djtest_urls"
STATIC_URL = "static/"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("DJTEST_DB_NAME", "docket_django_tests"),
        "HOST": "127.0.0.1",
        "PORT": "5432",
        "USER": os.environ.get("DJTEST_DB_USER", "postgres"),
        "CONN_MAX_AGE": int(os.environ.get("DJTEST_CONN_MAX_AGE", "0")),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
DOCKET = {
    "URL": "redis://127.0.0.1:1/0",  # tests override it with their private server
    "NAME": os.environ.get("DJTEST_DOCKET_NAME", "djtest"),
    "WORKER": {"MINIMUM_CHECK_INTERVAL": 0.01, "SCHEDULING_RESOLUTION": 0.01},
}
TASKS = {
    "default": {
        "BACKEND": "docket_django.backend.DocketBackend",
        "QUEUES": ["default", "reports"],
    }
}
