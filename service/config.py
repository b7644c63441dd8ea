"""Configuration from the environment. Every setting is listed in the README."""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import ClassVar, Mapping
from urllib.parse import urlsplit

import msgspec

from service.auth import PROJECT_NAME_PATTERN


# The checkout's .threadline, wherever the command is run from: `ops/serve` runs the service from the
# checkout root, and every other command must find that same database, not start an empty one in the CWD.
DEFAULT_DATA_DIR = Path(__file__).resolve().parent.parent / ".threadline"


# Settings come in groups, one dataclass each; Config is all of them. A setting is read from its
# group's prefix + its field name in capitals (THREADLINE_MAX_TOOL_ROUNDS), but for the few whose
# names users already know (ENV_NAMES). A value that does not parse stops the start, naming it.

@dataclass(frozen=True)
class StorageSettings:
    database_url: str | None = None
    data_dir: Path = DEFAULT_DATA_DIR
    db_pool_size: int = 16
    upload_connections: int = 4
    max_body_bytes: int = 8 * 1024 * 1024
    max_file_bytes: int = 512 * 1024 * 1024
    file_sweep_seconds: float = 60.0         # how often expired uploads (and their parts) and files are swept


@dataclass(frozen=True)
class ActorSettings:
    actor_idle_seconds: float = 300.0
    max_actors: int = 10_000


@dataclass(frozen=True)
class RunEngineSettings:
    run_expiry_seconds: int = 600
    run_lease_seconds: float = 15.0
    run_sweep_seconds: float = 1.0
    max_tool_rounds: int = 20
    allow_unexecuted_tools: bool = False     # store tool types the server does not run (old, lenient behaviour)
    shutdown_grace_seconds: float = 20.0
    stream_keepalive_seconds: float = 15.0
    poll_wait_seconds: float = 5.0           # an SDK poll of an active run is answered when it ends, or after this


@dataclass(frozen=True)
class ModelSettings:
    models_file: str | None = None           # the JSON models table (service/models/router.py)
    openai_base_url: str | None = None       # the default provider, for model names not in the table
    openai_api_key: str | None = field(default=None, repr=False)
    script_file: str | None = None           # builtin/script's script when the model name gives none


@dataclass(frozen=True)
class RetentionSettings:
    retention_days: float = 0.0
    retention_sweep_seconds: float = 3600.0


@dataclass(frozen=True)
class WebhookSettings:
    webhook_allow_http: bool = False
    webhook_allow_networks: str = ""         # e.g. "127.0.0.0/8,::1/128": addresses otherwise refused
    webhook_timeout_seconds: float = 10.0
    webhook_connect_timeout_seconds: float = 5.0
    webhook_first_retry_seconds: float = 2.0
    webhook_max_retry_delay_seconds: float = 3600.0
    webhook_retry_window_seconds: float = 86_400.0
    webhook_concurrency: int = 64            # attempts in flight per subscription (one per thread)
    webhook_delivery_retention_days: float = 30.0


@dataclass(frozen=True)
class AuthSettings:
    token_issuers_file: str | None = None    # JSON file of accepted OIDC/JWT issuers (load_token_issuers)


@dataclass(frozen=True)
class LogSettings:
    log_format: str = "auto"                 # auto (console on a terminal, else json), json, console


@dataclass(frozen=True)
class TracingSettings:
    """The standard OpenTelemetry variables that turn tracing on (their SDK reads the rest of OTEL_*)."""
    ENV_PREFIX: ClassVar[str] = ""
    otel_sdk_disabled: bool = False
    otel_traces_exporter: str = ""           # "otlp" or "console"
    otel_exporter_otlp_endpoint: str | None = None
    otel_exporter_otlp_traces_endpoint: str | None = None
    otel_service_name: str = "threadline"


GROUPS = (StorageSettings, ActorSettings, RunEngineSettings, ModelSettings, RetentionSettings, WebhookSettings,
          AuthSettings, LogSettings, TracingSettings)


@dataclass(frozen=True)
class Config(*reversed(GROUPS)):     # reversed: the fields come in the order of GROUPS
    """Every setting, with its one default."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "Config":
        """The settings the environment sets (an empty value is the default); ConfigError names
        the first variable whose value is not of its setting's type."""
        values = {}
        for setting in fields(cls):
            name = env_name(setting.name)
            raw = environ.get(name, "").strip()
            if raw:
                values[setting.name] = _parse(name, raw, setting.type)
        config = cls(**values)
        return replace(config, data_dir=Path(config.data_dir).resolve())

    @property
    def tracing(self) -> bool:
        """Tracing costs a quarter of a request's CPU, so it is on only when spans go somewhere."""
        if self.otel_sdk_disabled:
            return False
        return bool(self.otel_exporter_otlp_endpoint or self.otel_exporter_otlp_traces_endpoint
                    or self.otel_traces_exporter in ("otlp", "console"))


class ConfigError(ValueError):
    """A setting's value is unusable; the message names its variable."""


# Settings whose variable is not their group's prefix + field name: names users already know.
ENV_NAMES = {"database_url": "DATABASE_URL", "token_issuers_file": "THREADLINE_OIDC_ISSUERS",
             "models_file": "THREADLINE_MODELS", "openai_base_url": "OPENAI_BASE_URL",
             "openai_api_key": "OPENAI_API_KEY", "script_file": "THREADLINE_SCRIPT"}
LOG_FORMATS = ("auto", "json", "console")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


_PREFIXES = {f.name: getattr(group, "ENV_PREFIX", "THREADLINE_") for group in GROUPS for f in fields(group)}


def env_name(field_name: str) -> str:
    return ENV_NAMES.get(field_name) or f"{_PREFIXES[field_name]}{field_name.upper()}"


_SECRET_NAME = re.compile(r"(?i)(api_?key|(^|_)key|secret|token|password|passwd|credentials?)$")
_MIN_SECRET = 8     # shorter values ("1", "true") would redact ordinary words


def configured_secrets(environ: Mapping[str, str] = os.environ) -> set[str]:
    """Values of the environment's secret-named variables, and of those the models table names:
    what logs and spans must never show."""
    names = {name for name in environ if _SECRET_NAME.search(name)}
    path = environ.get(env_name("models_file"))
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                table = json.load(f).get("models") or {}
            names |= {m["api_key_env"] for m in table.values() if isinstance(m, dict) and m.get("api_key_env")}
        except (OSError, ValueError, AttributeError, TypeError):
            pass        # the models table reports its own errors when it is loaded
    return {environ[n] for n in names if len(environ.get(n) or "") >= _MIN_SECRET}


def embedded_runtime_dir(data_dir: Path) -> Path:
    """Where the embedded Postgres (pgserver) keeps its sockets and lock files: $XDG_RUNTIME_DIR,
    which it reads itself; set inside the data dir unless the environment gives one."""
    os.environ.setdefault("XDG_RUNTIME_DIR", str(data_dir / "run"))
    return Path(os.environ["XDG_RUNTIME_DIR"])


def secret_from_env(name: str) -> str:
    """A secret that configuration names by its variable (a models-table entry's `api_key_env`):
    read when it is used, so a rotated key needs no new models table. Empty when unset."""
    return os.environ.get(name, "").strip()


def _parse(name: str, raw: str, kind: str) -> object:
    # The annotations are strings (from __future__ import annotations); the kinds are these few.
    if kind == "int":
        if not re.fullmatch(r"[0-9][0-9_]*", raw):
            raise ConfigError(f"{name}={raw!r}: expected a whole number of zero or more (e.g. {name}=100)")
        return int(raw)
    if kind == "float":
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not 0 <= value < math.inf:
            raise ConfigError(f"{name}={raw!r}: expected a number of zero or more (e.g. {name}=2.5)")
        return value
    if kind == "bool":
        if raw.lower() not in _TRUE + _FALSE:
            raise ConfigError(f"{name}={raw!r}: expected one of {', '.join(_TRUE + _FALSE)}")
        return raw.lower() in _TRUE
    if kind == "Path":
        return Path(raw)
    if name == env_name("log_format") and raw not in LOG_FORMATS:
        raise ConfigError(f"{name}={raw!r}: expected one of {', '.join(LOG_FORMATS)}")
    return raw


# --- OIDC/JWT bearer tokens ----------------------------------------------------------------------
# Besides its own keys, Threadline accepts bearer tokens (JWTs) from the issuers this file lists,
# so an Azure SDK client keeps its TokenCredential (e.g. Microsoft Entra ID) and needs no changes.

TOKEN_ISSUERS_ENV = "THREADLINE_OIDC_ISSUERS"
# Asymmetric algorithms only: a shared-secret (HS*) or unsigned ("none") token proves nothing here.
TOKEN_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")


class TokenIssuer(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One accepted issuer. A validated token belongs to `project`, or to projects[token[project_claim]]."""
    issuer: str                           # the token's `iss`, exactly
    audience: str | list[str]             # the token's `aud` must be (one of) this
    jwks_url: str                         # the issuer's signing keys (JWKS)
    project: str | None = None
    project_claim: str | None = None
    projects: dict[str, str] = {}
    algorithms: list[str] = msgspec.field(default_factory=lambda: ["RS256", "ES256"])
    name: str | None = None               # shown in logs and the audit trail; the issuer's host by default
    leeway_seconds: float = 60.0          # clock skew allowed on exp / nbf
    jwks_max_age_seconds: float = 3600.0  # the keys are refetched in the background this often
    jwks_min_refresh_seconds: float = 60.0  # an unknown kid refetches the keys at most this often

    @property
    def label(self) -> str:
        return self.name or urlsplit(self.issuer).hostname or self.issuer


class TokenIssuersFile(msgspec.Struct, forbid_unknown_fields=True):
    issuers: list[TokenIssuer]


def load_token_issuers(path: str | None) -> tuple[TokenIssuer, ...]:
    """The issuers in the file (none without one); ValueError naming the variable and the file."""
    if not path:
        return ()
    where = f"{TOKEN_ISSUERS_ENV} file {path!r}"
    try:
        issuers = msgspec.json.decode(Path(path).read_bytes(), type=TokenIssuersFile).issuers
    except (OSError, msgspec.DecodeError) as error:
        raise ValueError(f"{where}: {error}") from None
    seen = set()
    for i, issuer in enumerate(issuers):
        problem = _issuer_problem(issuer) or ("issuer is listed twice" if issuer.issuer in seen else None)
        if problem:
            raise ValueError(f"{where}, issuers[{i}] ({issuer.issuer!r}): {problem}")
        seen.add(issuer.issuer)
    return tuple(issuers)


def _issuer_problem(issuer: TokenIssuer) -> str | None:
    if not issuer.issuer:
        return "'issuer' is empty"
    audiences = [issuer.audience] if isinstance(issuer.audience, str) else issuer.audience
    if not audiences or not all(audiences):
        return "'audience' is empty"
    url = urlsplit(issuer.jwks_url)
    if url.scheme not in ("https", "http") or not url.hostname:
        return "'jwks_url' must be an https URL"
    if url.scheme == "http" and not _loopback(url.hostname):
        return "'jwks_url' must be https (http only for a loopback address)"
    if (issuer.project is None) == (issuer.project_claim is None):
        return "give either 'project' (every token to one project) or 'project_claim' with 'projects'"
    if issuer.project_claim is not None and not issuer.projects:
        return "'project_claim' needs 'projects', a map from claim value to project"
    if issuer.project is not None and issuer.projects:
        return "'projects' applies only with 'project_claim'"
    for name in [issuer.project] if issuer.project is not None else issuer.projects.values():
        if not re.match(PROJECT_NAME_PATTERN, name):
            return f"invalid project name {name!r}: letters, digits, '.', '_' and '-', at most 64"
    unknown = [a for a in issuer.algorithms if a not in TOKEN_ALGORITHMS]
    if unknown or not issuer.algorithms:
        return f"'algorithms' must be among {', '.join(TOKEN_ALGORITHMS)}"
    if issuer.leeway_seconds < 0 or issuer.jwks_min_refresh_seconds < 0 or issuer.jwks_max_age_seconds <= 0:
        return "'leeway_seconds' and 'jwks_min_refresh_seconds' must be >= 0, 'jwks_max_age_seconds' > 0"
    return None


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
