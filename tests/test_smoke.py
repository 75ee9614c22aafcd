from __future__ import annotations

from .conftest import bearer


def test_read_key_reaches_read_route(client, make_key):
    info, secret = make_key(["read"])
    response = client.get("/read", headers=bearer(secret))
    assert response.status_code == 200
    assert response.get_json() == {"key": info.id, "owner": "acme"}
