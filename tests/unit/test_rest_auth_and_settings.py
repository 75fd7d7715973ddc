"""Token format and hashing, the TTL cache, and settings from the environment (pure)."""

from __future__ import annotations

import time

from web_service.auth import TOKEN_PREFIX, hash_secret, new_token
from web_service.settings import MIB, Settings
from web_service.ttl_cache import TTLCache


def test_tokens_are_unique_prefixed_and_stored_only_as_sha256():
    a, b = new_token(), new_token()
    assert a != b and a.startswith(TOKEN_PREFIX) and len(a) >= len(TOKEN_PREFIX) + 43
    digest = hash_secret(a)
    assert len(digest) == 64 and a not in digest and digest == hash_secret(a) != hash_secret(b)


def test_ttl_cache_forgets_after_ttl_and_on_request():
    cache: TTLCache[str, int] = TTLCache(0.05)
    cache.put("a", 1)
    cache.put("b", 2, ttl=10)  # capped at the cache's ttl
    assert cache.get("a") == 1
    cache.forget("a")
    assert cache.get("a") is None
    time.sleep(0.06)
    assert cache.get("b") is None


def test_disabled_cache_stores_nothing():
    cache: TTLCache[str, int] = TTLCache(0)
    cache.put("a", 1)
    assert cache.get("a") is None


def test_settings_from_env_defaults_and_overrides(tmp_path):
    defaults = Settings.from_env({"FNSERVE_HOME": str(tmp_path)})
    assert defaults.redis_url == "redis://127.0.0.1:6379/0"
    assert defaults.max_payload_bytes == 10 * MIB and defaults.result_ttl == 7 * 24 * 3600
    assert defaults.max_wait == 60 and defaults.auth_mode == "local"
    env = {
        "FNSERVE_DATABASE_URL": "postgresql+psycopg://db/x", "FNSERVE_REDIS_URL": "redis://r:1/2",
        "FNSERVE_MAX_PAYLOAD_BYTES": str(100 * MIB), "FNSERVE_RESULT_TTL": "60",
        "FNSERVE_FORWARDER_ADDRESS": "tcp://f:1", "FNSERVE_MAX_WAIT": "5",
    }
    s = Settings.from_env(env)
    assert (s.database_url, s.redis_url, s.result_ttl, s.forwarder_address, s.max_wait) == (
        "postgresql+psycopg://db/x", "redis://r:1/2", 60, "tcp://f:1", 5.0)
    assert s.max_request_bytes > s.max_payload_bytes * 4 // 3  # one maximal payload always fits


def test_default_database_lives_under_fnserve_home(tmp_path, monkeypatch):
    monkeypatch.setenv("FNSERVE_HOME", str(tmp_path))
    monkeypatch.delenv("FNSERVE_DATABASE_URL", raising=False)
    assert Settings.from_env().database_url == f"sqlite:///{tmp_path}/service/registry.db"
