"""The one-shot `migrate` service of deploy/compose.yaml: waits for PostgreSQL, brings the
registry's schema up to date, and makes the forwarders' shared CurveZMQ key pair in the state
volume if it is not there yet (so the forwarders and web replicas never race to create it)."""

import os
import time

import sqlalchemy

from web_service.curve_keys import server_keys
from web_service.registry.db import migrate
from web_service.settings import Settings

settings = Settings.from_env()
deadline = time.monotonic() + 120
while True:
    try:
        sqlalchemy.create_engine(settings.database_url).connect().close()
        break
    except sqlalchemy.exc.OperationalError:
        if time.monotonic() > deadline:
            raise
        time.sleep(1)
migrate(settings.database_url)
os.makedirs(os.path.dirname(settings.forwarder_key_file), exist_ok=True)
server_keys(settings.forwarder_key_file)
print("registry migrated; forwarder key at", settings.forwarder_key_file)
