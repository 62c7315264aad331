"""redis_sentinel.py: the sentinels get the servers' credentials, timeouts and TLS but not the database;
nothing connects until the first command (tests/integration/test_redis_sentinel_live.py runs real ones)."""

from __future__ import annotations

from typing import Any

from housing_api.redis_sentinel import sentinel_master

KWARGS = {"socket_timeout": 0.5, "socket_connect_timeout": 0.5, "username": "svc", "password": "pw", "retry": None}


def sentinel_kwargs(sentinels: Any) -> list[dict[str, Any]]:
    return [s.connection_pool.connection_kwargs for s in sentinels.sentinels]


def test_each_sentinel_of_the_url_gets_the_servers_credentials_and_timeouts() -> None:
    client, sentinels = sentinel_master("redis://s1:26380,s2/3", "mymaster", KWARGS)
    found = sentinel_kwargs(sentinels)
    assert [(k["host"], k["port"]) for k in found] == [("s1", 26380), ("s2", 26379)]
    assert all(k["password"] == "pw" and k["username"] == "svc" and k["socket_timeout"] == 0.5 for k in found)
    assert all(k.get("db", 0) == 0 for k in found)  # a sentinel has no database
    pool = client.connection_pool
    assert (pool.service_name, pool.connection_kwargs["db"], pool.connection_kwargs["password"]) == (
        "mymaster",
        3,
        "pw",
    )


def test_rediss_puts_tls_on_the_sentinels_too() -> None:
    client, sentinels = sentinel_master("rediss://s1:26380", "mymaster", {**KWARGS, "ssl_ca_certs": "/ca.pem"})
    found = sentinel_kwargs(sentinels)[0]
    assert found["ssl_ca_certs"] == "/ca.pem"
    assert sentinels.sentinels[0].connection_pool.connection_class.__name__ == "SSLConnection"
    assert client.connection_pool.connection_kwargs["ssl_ca_certs"] == "/ca.pem"
