"""https and OIDC/JWT bearer tokens, end to end against the real `threadline serve`.

The service listens with --tls-cert/--tls-key (a self-signed certificate for 127.0.0.1 made here)
and accepts tokens from two issuers in a THREADLINE_OIDC_ISSUERS file, whose signing keys (JWKS) a
loopback http server publishes. The unmodified azure-ai-agents SDK then works exactly as it does
against Azure: https, a TokenCredential, no authentication_policy.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import ssl
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import aiohttp
import jwt
import openai
import pytest
from azure.ai.agents import AgentsClient
from azure.ai.agents.models import ListSortOrder, MessageRole
from azure.core.credentials import AccessToken
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from conftest import ROOT, ServiceProcess, new_key

ISSUER_A = "https://login.microsoftonline.example/tenant-a/v2.0"     # every token: project tls-a
ISSUER_B = "https://idp.example/realms/agents"                        # project by the token's roles
AUDIENCE = "https://ai.azure.com"           # what azure-ai-agents asks for: scope https://ai.azure.com/.default
PROJECT_A = f"tls-a-{uuid.uuid4().hex[:6]}"
TEAM_PROJECT = f"team-{uuid.uuid4().hex[:6]}"


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _self_signed(key) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "threadline test")])
    start = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


class Jwks:
    """A JWKS endpoint on loopback, in a thread of its own (the sync SDK calls block the test's loop)."""

    def __init__(self):
        self.keys: list[dict] = []
        self.fetches = 0
        jwks = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                jwks.fetches += 1
                body = json.dumps({"keys": jwks.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/keys"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def publish(self, kid: str, key) -> None:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()) if isinstance(key, rsa.RSAPrivateKey)
                         else jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
        self.keys.append({**jwk, "kid": kid, "use": "sig"})

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Keys:
    signing = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rotated = rsa.generate_private_key(public_exponent=65537, key_size=2048)    # published later
    elliptic = ec.generate_private_key(ec.SECP256R1())
    rogue = rsa.generate_private_key(public_exponent=65537, key_size=2048)      # never published


def token(iss: str = ISSUER_A, aud: str = AUDIENCE, kid: str | None = "k1", key=None, alg: str = "RS256",
          lifetime: float = 600, **claims) -> str:
    at = int(time.time())
    payload = {"iss": iss, "aud": aud, "sub": "user-1", "iat": at, "nbf": at,
               "exp": None if lifetime is None else at + lifetime, **claims}
    payload = {k: v for k, v in payload.items() if v is not None}
    headers = {"kid": kid} if kid is not None else {}
    return jwt.encode(payload, key if key is not None else Keys.signing, algorithm=alg, headers=headers)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    tls_key = ec.generate_private_key(ec.SECP256R1())
    cert, key = folder / "cert.pem", folder / "key.pem"
    cert.write_bytes(_self_signed(tls_key))
    key.write_bytes(_pem_key(tls_key))
    return str(cert), str(key)


@pytest.fixture(scope="module")
def jwks():
    endpoint = Jwks()
    endpoint.publish("k1", Keys.signing)
    endpoint.publish("e1", Keys.elliptic)
    yield endpoint
    endpoint.close()


@pytest.fixture(scope="module")
async def service(database_url, pki, jwks, tmp_path_factory):
    issuers = tmp_path_factory.mktemp("oidc") / "issuers.json"
    issuers.write_text(json.dumps({"issuers": [
        {"issuer": ISSUER_A, "audience": AUDIENCE, "jwks_url": jwks.url, "project": PROJECT_A,
         "jwks_min_refresh_seconds": 0},
        {"issuer": ISSUER_B, "audience": [AUDIENCE, "api://threadline"], "jwks_url": jwks.url,
         "project_claim": "roles", "projects": {"Agents.Team": TEAM_PROJECT}, "name": "keycloak"},
    ]}))
    cert, key = pki
    process = await asyncio.to_thread(ServiceProcess, database_url, {"THREADLINE_OIDC_ISSUERS": str(issuers)},
                                      ("--tls-cert", cert, "--tls-key", key), cert)
    yield process
    process.stop()


class StaticCredential:
    """An azure.core TokenCredential, as DefaultAzureCredential is one: hands out our token."""

    def __init__(self, value: str):
        self.value, self.scopes = value, []

    def get_token(self, *scopes, **kwargs) -> AccessToken:
        self.scopes.extend(scopes)
        return AccessToken(self.value, int(time.time()) + 600)


def _trust(pki) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=pki[0])


async def _call(service, pki, method: str, path: str, bearer: str, json_body=None) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http:
        async with http.request(method, service.url + path, json=json_body, ssl=_trust(pki),
                                headers={"Authorization": f"Bearer {bearer}"}) as r:
            return r.status, await r.json()


# --- https --------------------------------------------------------------------------------------

async def test_azure_ai_agents_runs_unchanged_over_https_with_a_token(service, pki):
    """Azure's own client flow: endpoint .../api/projects/<name>, a TokenCredential, TLS verified."""
    credential = StaticCredential(token(oid="object-id-1"))

    def flow():
        with AgentsClient(endpoint=f"{service.url}/api/projects/{PROJECT_A}", credential=credential,
                          connection_verify=pki[0]) as client:
            agent = client.create_agent(model="builtin/echo", name="over-tls", instructions="echo")
            thread = client.threads.create()
            client.messages.create(thread_id=thread.id, role=MessageRole.USER, content="hello over tls")
            run = client.runs.create_and_process(thread_id=thread.id, agent_id=agent.id)
            texts = [m.text_messages[0].text.value for m in
                     client.messages.list(thread_id=thread.id, order=ListSortOrder.ASCENDING)]
            return run.status, texts, agent.id

    status, texts, agent_id = await asyncio.to_thread(flow)
    assert status == "completed" and texts[0] == "hello over tls" and "hello over tls" in texts[1], texts
    assert credential.scopes and set(credential.scopes) == {"https://ai.azure.com/.default"}
    # The token's project holds the agent, and the audit trail names who made it.
    code, body = await _call(service, pki, "GET", f"/api/projects/{PROJECT_A}/assistants/{agent_id}", token())
    assert code == 200 and body["name"] == "over-tls"


async def test_the_openai_sdk_over_https_with_an_api_key(service, pki, db):
    project = f"tls-key-{uuid.uuid4().hex[:6]}"
    key = await new_key(db, project)
    with openai.DefaultHttpxClient(verify=_trust(pki)) as http:
        client = openai.OpenAI(base_url=f"{service.url}/v1", api_key=key, http_client=http, max_retries=0)
        made = await asyncio.to_thread(client.beta.assistants.create, model="builtin/echo", name="k")
        listed = await asyncio.to_thread(client.beta.assistants.list)
    assert [a.id for a in listed.data] == [made.id]


async def test_a_client_that_does_not_trust_the_certificate_is_refused(service):
    with openai.DefaultHttpxClient() as http:      # the system trust store: our self-signed certificate is not in it
        client = openai.OpenAI(base_url=f"{service.url}/v1", api_key="tl-x", http_client=http, max_retries=0)
        with pytest.raises(openai.APIConnectionError):
            await asyncio.to_thread(client.beta.assistants.list)


# --- tokens -------------------------------------------------------------------------------------

REFUSED = {
    "wrong audience": (dict(aud="https://management.azure.com"), "audience (aud) is not accepted"),
    "unknown issuer": (dict(iss="https://evil.example/"), "issuer is not accepted"),
    "signed by another key": (dict(key=Keys.rogue), "signature does not verify"),
    "expired": (dict(lifetime=-120), "has expired"),      # past the 60 s leeway
    "not valid yet": (dict(nbf=int(time.time()) + 3600), "not valid yet"),
    "unknown kid": (dict(kid="nobody"), "not one of its issuer's signing keys"),
    "no kid": (dict(kid=None), "no key id"),
    "no expiry": (dict(lifetime=None), "no 'exp' claim"),
    "HS256": (dict(alg="HS256", key=b"k" * 32), "algorithm (alg) is not accepted"),
    "not a JWT": (dict(), "not a well-formed JWT"),
}


@pytest.mark.parametrize("case", list(REFUSED))
async def test_a_bad_token_is_a_401_that_says_why(service, pki, case):
    changes, reason = REFUSED[case]
    bearer = "eyJhbGciOiJSUzI1NiJ9.bm90IGpzb24.c2ln" if case == "not a JWT" else token(**changes)
    code, body = await _call(service, pki, "GET", "/v1/assistants", bearer)
    assert code == 401, body
    assert body["error"]["code"] == "invalid_api_key" and reason in body["error"]["message"], body
    assert bearer not in json.dumps(body)


async def test_the_roles_claim_picks_the_project(service, pki):
    team = token(iss=ISSUER_B, aud="api://threadline", kid="e1", key=Keys.elliptic, alg="ES256",
                 roles=["Reader", "Agents.Team"])
    code, made = await _call(service, pki, "POST", "/v1/assistants", team, {"model": "builtin/echo"})
    assert code == 200, made
    code, _ = await _call(service, pki, "GET", f"/api/projects/{TEAM_PROJECT}/assistants/{made['id']}", team)
    assert code == 200
    # Issuer A's tokens are another project: they cannot see it, by id or by list.
    code, _ = await _call(service, pki, "GET", f"/v1/assistants/{made['id']}", token())
    assert code == 404
    code, page = await _call(service, pki, "GET", "/v1/assistants", token())
    assert made["id"] not in [a["id"] for a in page["data"]]
    code, body = await _call(service, pki, "GET", f"/api/projects/{PROJECT_A}/assistants", team)
    assert code == 404, body
    # A token whose roles name no project is refused, not put anywhere.
    nobody = token(iss=ISSUER_B, kid="e1", key=Keys.elliptic, alg="ES256", roles=["Reader"])
    code, body = await _call(service, pki, "GET", "/v1/assistants", nobody)
    assert code == 401 and "maps to no project" in body["error"]["message"], body


async def test_a_rotated_signing_key_is_fetched_when_a_token_names_it(service, pki, jwks):
    rotated = token(kid="k2", key=Keys.rotated)
    code, body = await _call(service, pki, "GET", "/v1/assistants", rotated)
    assert code == 401 and "not one of its issuer's signing keys" in body["error"]["message"], body
    before = jwks.fetches
    jwks.publish("k2", Keys.rotated)
    code, body = await _call(service, pki, "GET", "/v1/assistants", rotated)
    assert code == 200, body
    assert jwks.fetches == before + 1


# --- start-up ------------------------------------------------------------------------------------

def _serve(database_url: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "service", "serve", "--port", "0", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "DATABASE_URL": database_url, **(env or {})})


def test_a_certificate_without_its_key_fails_at_start(database_url, pki):
    done = _serve(database_url, "--tls-cert", pki[0])
    assert done.returncode != 0 and "give both --tls-cert and --tls-key" in done.stderr, done.stderr


def test_a_certificate_that_cannot_be_loaded_fails_at_start(database_url, pki, tmp_path):
    missing = str(tmp_path / "missing.pem")
    done = _serve(database_url, "--tls-cert", missing, "--tls-key", pki[1])
    assert done.returncode != 0 and "cannot load the TLS certificate" in done.stderr and missing in done.stderr


@pytest.mark.parametrize("content, problem", [
    ("{not json", "THREADLINE_OIDC_ISSUERS file"),
    (json.dumps({"issuers": [{"issuer": ISSUER_A, "audience": AUDIENCE, "jwks_url": "http://idp.example/keys",
                              "project": "p"}]}), "'jwks_url' must be https"),
    (json.dumps({"issuers": [{"issuer": ISSUER_A, "audience": AUDIENCE, "jwks_url": "https://idp.example/keys"}]}),
     "give either 'project'"),
    (json.dumps({"issuers": [{"issuer": ISSUER_A, "audience": AUDIENCE, "jwks_url": "https://idp.example/keys",
                              "project": "p", "algorithms": ["HS256"]}]}), "'algorithms' must be among"),
])
def test_a_bad_issuers_file_fails_at_start_naming_the_variable(database_url, tmp_path, content, problem):
    path = tmp_path / "issuers.json"
    path.write_text(content)
    done = _serve(database_url, env={"THREADLINE_OIDC_ISSUERS": str(path)})
    assert done.returncode != 0 and "THREADLINE_OIDC_ISSUERS" in done.stderr and problem in done.stderr, done.stderr
