"""Where fnserve keeps its files, and the client's settings (service URL and token).

Everything lives under ``$FNSERVE_HOME`` (default ``~/.fnserve``)::

    client.yaml            service_url and token used by the SDK and CLI
    endpoints/NAME/        an endpoint's config.yaml, credentials, pid and log files
    service/               the embedded service's registry, Redis data, pids and logs

``FNSERVE_SERVICE_URL`` and ``FNSERVE_TOKEN`` override the file. In Globus mode (``auth:
globus``, written by ``fnserve login``) the token lives in globus-sdk's token storage instead
(see :mod:`fnserve.login`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_SERVICE_URL = "http://127.0.0.1:8780"


def home() -> Path:
    return Path(os.environ.get("FNSERVE_HOME") or Path.home() / ".fnserve")


def client_config_path() -> Path:
    return home() / "client.yaml"


@dataclass
class ClientConfig:
    service_url: str = DEFAULT_SERVICE_URL
    token: str | None = None
    auth: str = "local"  # or "globus"
    globus: dict[str, Any] = field(default_factory=dict)  # scope, resource_server, native_client_id

    @classmethod
    def load(cls) -> "ClientConfig":
        data: dict[str, Any] = {}
        path = client_config_path()
        if path.exists():
            data = yaml.safe_load(path.read_text()) or {}
        return cls(
            service_url=os.environ.get("FNSERVE_SERVICE_URL") or data.get("service_url") or DEFAULT_SERVICE_URL,
            token=os.environ.get("FNSERVE_TOKEN") or data.get("token"),
            auth=str(data.get("auth") or "local"),
            globus=dict(data.get("globus") or {}),
        )

    def save(self) -> Path:
        path = client_config_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        # The token is a secret: the file is readable by its owner only.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            body: dict[str, Any] = {"service_url": self.service_url, "token": self.token}
            if self.auth != "local":
                body.update(auth=self.auth, globus=self.globus)
            yaml.safe_dump(body, f)
        return path
