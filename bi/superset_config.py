"""Superset's configuration for `make bi` (tools/bi.py): everything comes from the environment the tool sets."""

import os

SECRET_KEY = os.environ["SUPERSET_SECRET_KEY"]
SQLALCHEMY_DATABASE_URI = os.environ["SUPERSET_METADATA_URL"]
# The rollups may be the SQLite default file, which Superset refuses as a database unless this is off. Only the
# hitmetrics database is registered by the tool; users adding others should turn it back on.
PREVENT_UNSAFE_DB_CONNECTIONS = False
# Dashboards show the rollups as they are: no cached answers that outlive a republished day.
DATA_CACHE_CONFIG = {"CACHE_TYPE": "NullCache"}
FEATURE_FLAGS = {"DASHBOARD_RBAC": False}
# Thumbnails and reports need Celery workers that `make bi` does not start.
THUMBNAIL_SELENIUM_USER = None
SUPERSET_WEBSERVER_TIMEOUT = 120
