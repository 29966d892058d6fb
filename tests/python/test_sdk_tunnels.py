"""The official Anthropic Python SDK against `mcp-tunnel api` over HTTPS: every
`client.beta.tunnels` and `client.beta.tunnels.certificates` method, with credentials the
SDK obtains itself by workload-identity federation (ANTHROPIC_IDENTITY_TOKEN +
ANTHROPIC_FEDERATION_RULE_ID + ANTHROPIC_ORGANIZATION_ID), and strict response
validation so that the SDK's models must parse every response. Once on SQLite and once on
PostgreSQL."""

from __future__ import annotations

import pytest

import anthropic
from anthropic.types.beta import BetaTunnel, BetaTunnelToken
from anthropic.types.beta.tunnels import BetaTunnelCertificate

from controlplane import BACKENDS, ControlPlane, Issuer, binary, database_url, recipe_ca

pytestmark = pytest.mark.skipif(
    binary() is None, reason="mcp-tunnel binary not built (set MCP_TUNNEL_BIN or cargo build -p mcp-tunnel)"
)

AUDIENCE = "https://api.tunnels.test"
SUBJECT = "repo:example/infra:ref:refs/heads/main"


@pytest.fixture(scope="module", params=BACKENDS)
def cp(request, tmp_path_factory):
    plane = ControlPlane(tmp_path_factory.mktemp("cp"), database_url=database_url(request.param))
    yield plane
    plane.close()


@pytest.fixture(scope="module")
def federation(cp):
    issuer = Issuer()
    sa = cp.admin("POST", "/v1/admin/service_accounts", {"name": "ci-deployer"})
    fdis = cp.admin("POST", "/v1/admin/federation/issuers", {"issuer_url": issuer.url, "jwks": issuer.jwks})
    rule = cp.admin("POST", "/v1/admin/federation/rules", {
        "issuer_id": fdis["id"], "subject": SUBJECT, "audience": AUDIENCE,
        "service_account_id": sa["id"], "scope": "workspace:manage_tunnels",
        "token_lifetime_seconds": 600,
    })
    return issuer, rule, sa


def wif_client(cp, monkeypatch, identity_token: str, rule_id: str) -> anthropic.Anthropic:
    for var in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_PROFILE", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ANTHROPIC_CONFIG_DIR", str(cp.data.parent / "no-anthropic-config"))
    monkeypatch.setenv("ANTHROPIC_IDENTITY_TOKEN", identity_token)
    monkeypatch.setenv("ANTHROPIC_FEDERATION_RULE_ID", rule_id)
    monkeypatch.setenv("ANTHROPIC_ORGANIZATION_ID", cp.org_id)
    # The SDK's HTTP clients (API calls and the token exchange) trust the test CA.
    monkeypatch.setenv("SSL_CERT_FILE", cp.ca_file)
    return anthropic.Anthropic(base_url=cp.base_url, max_retries=0, _strict_response_validation=True)


def test_every_tunnels_method_with_workload_identity(cp, federation, monkeypatch, tmp_path):
    issuer, rule, sa = federation
    client = wif_client(cp, monkeypatch, issuer.token(SUBJECT, AUDIENCE), rule["id"])
    tunnels = client.beta.tunnels

    created = tunnels.create(display_name="sdk tunnel")
    assert isinstance(created, BetaTunnel)
    assert created.id.startswith("tnl_") and created.type == "tunnel"
    assert created.display_name == "sdk tunnel" and created.archived_at is None
    assert created.domain.endswith(".tunnels.test") and len(created.domain.split(".")[0]) == 8
    assert created.model_extra["status"] == "needs_certificate"
    assert created.model_extra["connections"] == 0

    got = tunnels.retrieve(created.id)
    assert got.id == created.id and got.created_at == created.created_at

    more = [tunnels.create(display_name=f"page {i}") for i in range(3)]
    page = tunnels.list(limit=2)
    assert [t.id for t in page.data] == [more[2].id, more[1].id]
    assert page.has_next_page()
    every = [t.id for t in tunnels.list(limit=2)]  # auto-pagination follows next_page
    assert every[:4] == [more[2].id, more[1].id, more[0].id, created.id]

    token = tunnels.reveal_token(created.id)
    assert isinstance(token, BetaTunnelToken)
    assert token.type == "tunnel_token" and token.id.startswith("ttkn_")
    assert token.tunnel_token.startswith("eyJ")
    assert tunnels.reveal_token(created.id).tunnel_token == token.tunnel_token
    rotated = tunnels.rotate_token(created.id, reason="sdk test rotation")
    assert rotated.id != token.id and rotated.tunnel_token != token.tunnel_token
    assert tunnels.reveal_token(created.id).tunnel_token == rotated.tunnel_token

    certs = tunnels.certificates
    pem = recipe_ca(tmp_path, "sdk-ca")
    cert = certs.create(created.id, ca_certificate_pem=pem)
    assert isinstance(cert, BetaTunnelCertificate)
    assert cert.id.startswith("tcrt_") and cert.tunnel_id == created.id
    assert len(cert.fingerprint) == 64 and cert.fingerprint == cert.fingerprint.lower()
    assert cert.expires_at is not None and cert.archived_at is None
    assert cert.model_extra["ca_certificate_pem"].startswith("-----BEGIN CERTIFICATE-----")
    assert tunnels.retrieve(created.id).model_extra["status"] == "active"
    assert certs.retrieve(cert.id, tunnel_id=created.id).fingerprint == cert.fingerprint
    second = certs.create(created.id, ca_certificate_pem=recipe_ca(tmp_path, "sdk-ca-2"))
    assert [c.id for c in certs.list(created.id)] == [second.id, cert.id]
    with pytest.raises(anthropic.BadRequestError) as third:
        certs.create(created.id, ca_certificate_pem=recipe_ca(tmp_path, "sdk-ca-3"))
    assert "non-archived certificates" in str(third.value)
    archived_cert = certs.archive(cert.id, tunnel_id=created.id)
    assert archived_cert.archived_at is not None
    assert [c.id for c in certs.list(created.id)] == [second.id]
    assert len(list(certs.list(created.id, include_archived=True))) == 2

    archived = tunnels.archive(created.id)
    assert archived.archived_at is not None and archived.model_extra["status"] == "archived"
    assert tunnels.archive(created.id).archived_at == archived.archived_at
    assert created.id not in [t.id for t in tunnels.list()]
    assert created.id in [t.id for t in tunnels.list(include_archived=True)]
    with pytest.raises(anthropic.BadRequestError):
        tunnels.reveal_token(created.id)
    with pytest.raises(anthropic.NotFoundError):
        tunnels.retrieve("tnl_doesnotexist")

    # The audit log names the service account, and the rotation's reason.
    events = cp.admin("GET", "/v1/audit_events?limit=100")["data"]
    rotate = next(e for e in events if e["action"] == "tunnel.rotate_token")
    assert rotate["actor"] == "service_account:" + sa["id"]
    assert rotate["reason"] == "sdk test rotation"
    assert cp.admin("GET", "/v1/audit_events/verify")["valid"] is True


def test_certificate_rules_reach_the_sdk(cp, monkeypatch, tmp_path):
    monkeypatch.setenv("SSL_CERT_FILE", cp.ca_file)
    client = anthropic.Anthropic(api_key=cp.admin_key, base_url=cp.base_url, max_retries=0,
                                 _strict_response_validation=True)
    tunnel = client.beta.tunnels.create()
    assert tunnel.display_name is None
    weak = recipe_ca(tmp_path, "weak", bits=1024)
    good = recipe_ca(tmp_path, "good")
    key = (tmp_path / "good.key").read_text()
    for pem, rule in [(weak, "at least 2048 bits"), (good + key, "private key"),
                      (good + good, "exactly one certificate"), ("x" * 9000, "at most 8192 bytes")]:
        with pytest.raises(anthropic.BadRequestError) as err:
            client.beta.tunnels.certificates.create(tunnel.id, ca_certificate_pem=pem)
        assert rule in str(err.value)
        assert err.value.body["error"]["type"] == "invalid_request_error"


def test_api_keys_and_refusals(cp, federation, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", cp.ca_file)
    dev = cp.admin("POST", "/v1/admin/api_keys", {"name": "dev", "role": "developer"})
    reader = anthropic.Anthropic(api_key=dev["key"], base_url=cp.base_url, max_retries=0)
    assert isinstance(list(reader.beta.tunnels.list()), list)
    with pytest.raises(anthropic.PermissionDeniedError):
        reader.beta.tunnels.create(display_name="nope")
    bad = anthropic.Anthropic(api_key="mtk_wrong", base_url=cp.base_url, max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        bad.beta.tunnels.list()
    cp.admin("POST", f"/v1/admin/api_keys/{dev['id']}/revoke")
    with pytest.raises(anthropic.AuthenticationError):
        reader.beta.tunnels.list()

    # A JWT for another audience is refused by the exchange itself.
    issuer, rule, _ = federation
    client = wif_client(cp, monkeypatch, issuer.token(SUBJECT, "https://elsewhere.test"), rule["id"])
    with pytest.raises(anthropic.AnthropicError) as err:
        client.beta.tunnels.list()
    assert "401" in str(err.value) and "audience" in str(err.value)
