"""The sections about the proxy side: the router's own listeners and TLS, Envoy's listener,
timeouts, retries and outlier detection, and what a failing stage does."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from extproc_router.settings.base import (
    Frozen,
    Port,
    header_name,
    host_ports,
)

__all__ = [
    "EnvoySettings",
    "GuardedRoute",
    "ListenAddress",
    "OnError",
    "OnErrorSettings",
    "OutlierSettings",
    "RetrySettings",
    "ServerSettings",
    "TLSSettings",
]


class ListenAddress(Frozen):
    """Where a server listens. Port 0 asks the OS for a free port (used by the tests)."""

    host: str = "127.0.0.1"
    port: Port


class TLSSettings(Frozen):
    """gRPC over TLS, for a router that is not Envoy's loopback sidecar. The router presents
    `cert_file`; with `client_ca_file` it also requires a client certificate signed by that CA
    (mTLS). `render-envoy` uses the `envoy_*` files for Envoy's side of the connection."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None
    # The CA Envoy verifies the router's certificate with, and the name it expects in it.
    envoy_ca_file: Path | None = None
    envoy_server_name: str = "extproc-router"
    # Envoy's client certificate, when the router requires one.
    envoy_cert_file: Path | None = None
    envoy_key_file: Path | None = None

    @model_validator(mode="after")
    def _pairs(self) -> TLSSettings:
        if (self.envoy_cert_file is None) != (self.envoy_key_file is None):
            raise ValueError("envoy_cert_file and envoy_key_file go together")
        if self.client_ca_file is not None and self.envoy_cert_file is None:
            raise ValueError("client_ca_file (mTLS) needs envoy_cert_file and envoy_key_file")
        return self


class ServerSettings(Frozen):
    grpc: ListenAddress = ListenAddress(port=50051)
    admin: ListenAddress = ListenAddress(port=9190)
    # Above Envoy's body buffer limit: the Python default of 4 MiB fails big prompts mid-stream.
    max_message_bytes: int = Field(default=64 * 1024 * 1024, ge=1024 * 1024)
    # Seconds to keep serving open streams after SIGTERM, while health says NOT_SERVING.
    drain_seconds: float = Field(default=5.0, ge=0, le=300)
    # Wall-clock time one request may take in the router, from the body's arrival (PII scans of
    # megabytes are what can take long). Past it the request is refused with a 503, below
    # Envoy's message timeout: a timeout would let fail-open forward the body unscanned. None:
    # 60% of that timeout, leaving the rest for sending a rewritten body of megabytes back
    # (at 75%, a 10 MB body scanned just inside the budget still missed the timeout here).
    request_budget_ms: int | None = Field(default=None, ge=100, le=60_000)
    # None: plaintext gRPC, for the loopback sidecar (the default binds 127.0.0.1 only).
    tls: TLSSettings | None = None
    # Must not be larger than Envoy's keepalive interval, or the server answers GOAWAY.
    min_ping_interval_ms: int = Field(default=5_000, ge=0)


class GuardedRoute(Frozen):
    """Requests that never skip the router: while it is down or late they get Envoy's
    `status_on_error`, even when `failure_mode_allow` lets all other requests through (e.g. a
    tenant whose PII policy is `block`)."""

    prefix: str = Field(default="/", pattern=r"^/")
    # A request header that must be present, or equal `value` when that is set.
    header: str | None = None
    value: str | None = None

    @field_validator("header")
    @classmethod
    def _lowercase_header(cls, value: str | None) -> str | None:
        return value if value is None else header_name(value, "x-tenant")


OnError = Literal["allow", "block"]


class OnErrorSettings(Frozen):
    """What a stage that fails (raises, or its model errs at inference) does to the request:
    `allow` goes on without it and says so in the explanation; `block` answers 503 and forwards
    nothing. A safety check skipped would forward text nobody checked, hence `block` there."""

    keyword: OnError = "allow"
    # The sentence encoders (transformer and static): without them the model signals abstain
    # and the jailbreak check has its patterns only.
    encoder: OnError = "allow"
    embedding: OnError = "allow"
    domain: OnError = "allow"
    complexity: OnError = "allow"
    preference: OnError = "allow"
    jailbreak: OnError = "block"
    pii: OnError = "block"


class RetrySettings(Frozen):
    """Envoy's retries on the pool routes: a reset connection or a pool endpoint that refuses
    one is tried again (on another endpoint, when the pool has several) before the client sees
    an error. Bounded twice: `num_retries` per request and each pool's retry budget."""

    retry_on: str = Field(
        default="5xx,reset,connect-failure", pattern=r"^[a-z0-9-]+(,[a-z0-9-]+)*$"
    )
    num_retries: int = Field(default=2, ge=0, le=10)
    backoff_base_ms: int = Field(default=25, ge=1, le=10_000)
    backoff_max_ms: int = Field(default=250, ge=1, le=60_000)

    @model_validator(mode="after")
    def _backoff_order(self) -> RetrySettings:
        if self.backoff_max_ms < self.backoff_base_ms:
            raise ValueError("backoff_max_ms must not be below backoff_base_ms")
        return self


class OutlierSettings(Frozen):
    """Envoy's outlier detection on every pool cluster: an endpoint that keeps failing is taken
    out of its pool's rotation for a while, without waiting for the router's next poll."""

    consecutive_5xx: int = Field(default=5, ge=1)
    # Connect failures, resets and timeouts count on their own (split from the pool's 5xx).
    consecutive_local_origin_failure: int = Field(default=3, ge=1)
    interval_ms: int = Field(default=2_000, ge=100)
    base_ejection_ms: int = Field(default=10_000, ge=100)
    # Envoy ejects at least one endpoint whatever this says.
    max_ejection_percent: int = Field(default=50, ge=0, le=100)


class EnvoySettings(Frozen):
    """What `render-envoy` puts into Envoy's config; the router itself only needs the header."""

    listen: ListenAddress = ListenAddress(port=8080)
    admin: ListenAddress = ListenAddress(port=9901)
    cluster_header: str = "x-router-cluster"
    message_timeout_ms: int = Field(default=2_000, ge=1_000, le=60_000)
    failure_mode_allow: bool = True
    guarded_routes: tuple[GuardedRoute, ...] = ()
    # The routers Envoy balances ext_proc streams across (HOST:PORT); empty: `server.grpc`.
    # Several let one restart while the others serve: Envoy health-checks each over gRPC and
    # stops opening streams to one that reports NOT_SERVING (as a draining router does).
    router_endpoints: tuple[str, ...] = ()
    health_check_interval_ms: int = Field(default=1_000, ge=100, le=60_000)
    # 503 when the router fails and fail-open is off; Envoy's own default is 500.
    status_on_error: int = Field(default=503, ge=400, le=599)
    max_request_bytes: int = Field(default=16 * 1024 * 1024, ge=64 * 1024)
    keepalive_interval_s: int = Field(default=30, ge=1)
    # Generation routes must outlive long answers; 0 disables Envoy's 15 s route timeout.
    route_timeout_s: int = Field(default=0, ge=0)
    stream_idle_timeout_s: int = Field(default=300, ge=1)
    # One line per request on Envoy's stdout, with the chosen pool and model.
    access_log: bool = True
    # Resilience on the pool clusters; the router's load-aware fallback complements them.
    retries: RetrySettings = RetrySettings()
    outlier_detection: OutlierSettings = OutlierSettings()

    @field_validator("cluster_header")
    @classmethod
    def _lowercase_header(cls, value: str) -> str:
        return header_name(value, "x-router-cluster")

    @field_validator("router_endpoints")
    @classmethod
    def _router_host_port(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return host_ports(value)
