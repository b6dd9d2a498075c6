"""The router's configuration: one YAML file, validated in one place.

Every other module receives a frozen `Settings`; none reads files or the environment. A bad file
fails with one `ConfigError` that lists every problem, each named by its dotted key and the file,
so an operator fixes them all in one pass.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from extproc_router.exceptions import ConfigError

__all__ = [
    "DOMAINS",
    "EXAMPLE_CONFIG",
    "PREFERENCES",
    "SIGNALS",
    "TIERS",
    "CacheRoute",
    "CacheSettings",
    "ComplexitySettings",
    "DomainSettings",
    "EmbeddingRoute",
    "EnvoySettings",
    "ExperimentSettings",
    "KeywordRule",
    "ListenAddress",
    "LoadSettings",
    "ModelSettings",
    "PolicySettings",
    "PoolLoadSettings",
    "PoolSettings",
    "Price",
    "RoutingSettings",
    "ServerSettings",
    "Settings",
    "ShadowSettings",
    "TelemetrySettings",
    "Tier",
    "load_settings",
    "override",
    "parse_settings",
]

EXAMPLE_CONFIG = Path(__file__).with_name("example.yaml")

_HEADER_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_ENDPOINT = re.compile(r"^(?P<host>[A-Za-z0-9.\-]+|\[[0-9a-fA-F:]+\]):(?P<port>\d{1,5})$")

Name = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
ModelName = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Port = Annotated[int, Field(ge=0, le=65535)]


def _check_regexes(patterns: Iterable[tuple[object, str]], key: str) -> None:
    for name, pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as error:
            raise ValueError(
                f"{key}.{name}: {pattern!r} is not a regular expression: {error}"
            ) from None


def _host_ports(endpoints: tuple[str, ...]) -> tuple[str, ...]:
    for endpoint in endpoints:
        match = _ENDPOINT.match(endpoint)
        if match is None or not 0 < int(match["port"]) < 65536:
            raise ValueError(f"{endpoint!r} is not HOST:PORT")
    return endpoints


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ListenAddress(_Frozen):
    """Where a server listens. Port 0 asks the OS for a free port (used by the tests)."""

    host: str = "127.0.0.1"
    port: Port


class TLSSettings(_Frozen):
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


class ServerSettings(_Frozen):
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


class GuardedRoute(_Frozen):
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
        if value is not None and not _HEADER_NAME.match(value):
            raise ValueError("must be a lowercase HTTP header name, e.g. x-tenant")
        return value


OnError = Literal["allow", "block"]


class OnErrorSettings(_Frozen):
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


class RetrySettings(_Frozen):
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


class OutlierSettings(_Frozen):
    """Envoy's outlier detection on every pool cluster: an endpoint that keeps failing is taken
    out of its pool's rotation for a while, without waiting for the router's next poll."""

    consecutive_5xx: int = Field(default=5, ge=1)
    # Connect failures, resets and timeouts count on their own (split from the pool's 5xx).
    consecutive_local_origin_failure: int = Field(default=3, ge=1)
    interval_ms: int = Field(default=2_000, ge=100)
    base_ejection_ms: int = Field(default=10_000, ge=100)
    # Envoy ejects at least one endpoint whatever this says.
    max_ejection_percent: int = Field(default=50, ge=0, le=100)


class EnvoySettings(_Frozen):
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
        if not _HEADER_NAME.match(value):
            raise ValueError("must be a lowercase HTTP header name, e.g. x-router-cluster")
        return value

    @field_validator("router_endpoints")
    @classmethod
    def _router_host_port(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _host_ports(value)


Tier = Literal["simple", "moderate", "complex"]
TIERS: tuple[Tier, ...] = ("simple", "moderate", "complex")

# The 14 MMLU-Pro subject categories the domain head predicts.
DOMAINS = (
    "biology",
    "business",
    "chemistry",
    "computer science",
    "economics",
    "engineering",
    "health",
    "history",
    "law",
    "math",
    "other",
    "philosophy",
    "physics",
    "psychology",
)
PREFERENCES = ("analytical", "code", "creative", "factual")
SIGNALS = ("keyword", "embedding", "domain", "complexity", "preference")

Phrase = Annotated[str, StringConstraints(min_length=1)]
Unit = Annotated[float, Field(ge=0, le=1)]


class Price(_Frozen):
    """US dollars per 1,000 tokens."""

    input_per_1k: float = Field(default=0.0, ge=0)
    output_per_1k: float = Field(default=0.0, ge=0)


class PoolLoadSettings(_Frozen):
    """How the router reads a pool's load (`routing.load`) and what it tolerates: vLLM's queue
    (`vllm:num_requests_waiting`, per endpoint, averaged over the endpoints that answer)."""

    # The Prometheus path on each endpoint (vLLM serves it on the API port). None: not polled,
    # so the router never penalises nor skips the pool (Envoy's breakers still apply).
    metrics_path: Annotated[str, StringConstraints(pattern=r"^/")] | None = "/metrics"
    # Above this many waiting requests the pool's score is penalised, more the nearer it gets
    # to the hard limit; at or above the hard limit it is skipped.
    soft_waiting: int = Field(default=8, ge=0)
    hard_waiting: int = Field(default=32, ge=1)

    @model_validator(mode="after")
    def _soft_below_hard(self) -> PoolLoadSettings:
        if self.soft_waiting >= self.hard_waiting:
            raise ValueError("soft_waiting must be below hard_waiting")
        return self


class CircuitBreakerSettings(_Frozen):
    """Envoy's circuit breaker for one pool cluster. Generations are long-lived: Envoy's
    defaults (1,024 requests, 3 concurrent retries) would turn a burst into 503s long before
    the model servers' queues are full, so the queue limits above do the shaping."""

    max_connections: int = Field(default=10_000, ge=1)
    max_pending_requests: int = Field(default=10_000, ge=1)
    max_requests: int = Field(default=10_000, ge=1)
    # Retries in flight may be at most this share of the requests in flight (at least
    # `min_retry_concurrency`): a pool that fails everything is not hammered twice over.
    retry_budget_percent: float = Field(default=20.0, gt=0, le=100)
    min_retry_concurrency: int = Field(default=3, ge=1)


class DemoCapacity(_Frozen):
    """What the demo pools (`extproc-router demo-pools`) simulate for this pool; nothing else
    reads it. vLLM's batch size and decode speed, so load can be tested without a GPU."""

    # Requests served at once; more wait in a queue (`vllm:num_requests_waiting`). 0: no limit.
    max_running: int = Field(default=0, ge=0)
    # Time per output token (the demo answers with the prompt's words, one token each).
    token_ms: float = Field(default=0.0, ge=0, le=10_000)


def failover_cluster(pool: str, fallback: str) -> str:
    """Envoy's name for the cluster that sends to `pool` and fails over to `fallback` (`~` is
    not allowed in a pool name, so it never collides with one)."""
    return f"{pool}~{fallback}"


class PoolSettings(_Frozen):
    """A pool of identical model servers; Envoy load-balances across its endpoints."""

    name: Name
    model: ModelName
    aliases: tuple[ModelName, ...] = ()
    # Other pools' model names this pool's servers also answer to (vLLM: more names after
    # `--served-model-name`), never routed to by name. A request routed to such a pool may
    # fail over here inside Envoy: the retry of one that pool dropped mid-flight, or all of
    # its traffic while Envoy sees none of its endpoints healthy.
    accepts: tuple[ModelName, ...] = ()
    endpoints: tuple[str, ...] = Field(min_length=1)
    # The hardest requests this pool answers well; the vote prefers the cheapest pool that fits.
    tier: Tier = "moderate"
    # May receive personal data (e.g. a HIPAA-covered deployment): PII policy `route` sends
    # requests carrying PII only to pools marked so.
    compliant: bool = False
    # What its tokens cost: `llm_cost_usd_total` and, against the baseline, the savings.
    price: Price = Price()
    load: PoolLoadSettings = PoolLoadSettings()
    circuit_breaker: CircuitBreakerSettings = CircuitBreakerSettings()
    demo: DemoCapacity = DemoCapacity()
    # Its typical time to a whole answer, in seconds: what `extproc-router replay` expects a
    # request routed here to take (the router never measures against it).
    latency_s: float | None = Field(default=None, gt=0)

    @field_validator("endpoints")
    @classmethod
    def _host_port(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _host_ports(value)

    @property
    def served_models(self) -> tuple[str, ...]:
        return (self.model, *self.aliases)


class ModelSettings(_Frozen):
    """The sentence encoder every model-based signal shares (one embedding per request)."""

    path: Path = Path("models/all-MiniLM-L6-v2")
    variant: Literal["fp32", "int8"] = "int8"
    # Intra-op threads per model run while the router decides one request, and while it
    # decides several at once (more threads then only fight the event loop for the cores:
    # 1 sustained ~12% more mixed traffic at concurrency 32 on 2 cores; see occupancy.py).
    threads: int = Field(default=2, ge=1, le=64)
    busy_threads: int = Field(default=1, ge=1, le=64)
    # The jailbreak transformer has one session (a second would cost ~36 MB): it reads long or
    # suspicious text, mostly while other requests are decided. 1 thread sustained ~6% more
    # mixed traffic at concurrency 32 than 2, for ~5 ms more on a lone 1,500-token prompt.
    jailbreak_threads: int = Field(default=1, ge=1, le=64)
    # The classification input: the last user turn, cut to this many tokens.
    # 64: half the transformer time of 128 at the same held-out accuracy (docs/EVALUATION.md;
    # those prompts are mostly shorter than 64 tokens, and a long prompt's opening names its
    # topic). Complexity still counts every token, and the jailbreak n-grams read all of it.
    max_tokens: int = Field(default=64, ge=8, le=512)
    # Concurrent requests waiting for the encoder share one run of up to this many texts (1:
    # each runs alone). Dynamic int8 quantises a batch's activations together, so a text's
    # embedding moves slightly with its batch-mates (cosine ~0.995): fp32 does not.
    max_batch: int = Field(default=16, ge=1, le=256)
    # Trained heads (`make train`) and the route-centroid cache.
    heads: Path = Path("models/heads")
    # The jailbreak classifier fine-tuned from the same MiniLM at set-up (`make setup`).
    jailbreak: Path = Path("models/jailbreak")
    # The static embedding distilled from the same MiniLM (`make setup`), and the cascade: a
    # vote from the static heads at or above this confidence decides without the transformer.
    # None turns the cascade off (every routed request runs the transformer).
    static: Path = Path("models/all-MiniLM-L6-v2/static")
    cascade_confidence: Unit | None = 0.8


class KeywordRule(_Frozen):
    """A prompt containing any keyword (whole words, case- and width-folded) or matching any
    pattern (a regular expression) votes for `target`, a pool name or a tier."""

    name: Name
    target: Name
    keywords: tuple[Phrase, ...] = ()
    patterns: tuple[Phrase, ...] = ()
    # A match decides at once; the model-based signals are skipped (the fast path).
    short_circuit: bool = False

    @model_validator(mode="after")
    def _something_to_match(self) -> KeywordRule:
        if not self.keywords and not self.patterns:
            raise ValueError("a keyword rule needs keywords or patterns")
        _check_regexes(enumerate(self.patterns), "patterns")
        return self


class EmbeddingRoute(_Frozen):
    """Prompts similar to these utterances (cosine to their centroid) vote for `target`."""

    name: Name
    target: Name
    utterances: tuple[Phrase, ...] = Field(min_length=1)
    # Default: 0.85 for routes to the simple tier, 0.80 otherwise (the reference design's).
    threshold: Unit | None = None


class DomainSettings(_Frozen):
    # Capability of each pool per domain, in [0, 1]; `default` covers unlisted domains.
    capabilities: dict[Name, dict[str, Unit]] = {}
    # A pool below this capability for a confidently predicted domain is never chosen.
    floor: Unit = 0.0
    floor_min_probability: Unit = 0.5

    @field_validator("capabilities")
    @classmethod
    def _known_domains(cls, value: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        for pool, table in value.items():
            for domain in table:
                if domain != "default" and domain not in DOMAINS:
                    raise ValueError(
                        f"{pool}: unknown domain {domain!r}; domains are {', '.join(DOMAINS)}"
                    )
        return value


class ComplexitySettings(_Frozen):
    # Below the first: simple; below the second: moderate; else complex.
    token_thresholds: tuple[int, int] = (50, 150)
    depth_thresholds: tuple[int, int] = (2, 4)


class RoutingSettings(_Frozen):
    # Where the router sends what it does not route (other paths, and fail-open traffic).
    default_pool: Name
    # The best general pool: low confidence, or no signal voted.
    fallback_pool: Name | None = None
    # Model names meaning "let the router choose".
    auto_models: tuple[ModelName, ...] = ("auto",)
    confidence_threshold: Unit = 0.6
    weights: dict[str, Annotated[float, Field(ge=0)]] = {
        "keyword": 0.10,
        "embedding": 0.40,
        "domain": 0.30,
        "complexity": 0.20,
        "preference": 0.15,
    }
    # Whether the system prompt is part of what the signals read; off by default, because it
    # is the operator's framing, not the user's task.
    include_system_prompt: bool = False
    # Characters of the earlier turns (the most recent ones) the signals read after the last
    # user turn; 0 reads the last user turn alone. Bounded: at most 4000.
    context_chars: int = Field(default=0, ge=0, le=4000)
    keyword_rules: tuple[KeywordRule, ...] = ()
    embedding_routes: tuple[EmbeddingRoute, ...] = ()
    domains: DomainSettings = DomainSettings()
    complexity: ComplexitySettings = ComplexitySettings()
    # Which pool or tier each kind of work goes to.
    preferences: dict[str, Name] = {}

    @field_validator("weights", "preferences")
    @classmethod
    def _known_keys(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        known = SIGNALS if info.field_name == "weights" else PREFERENCES
        what = "signals" if info.field_name == "weights" else "preferences"
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise ValueError(f"unknown {what} {unknown}; {what} are {', '.join(known)}")
        return value


PIIAction = Literal["allow", "redact", "block", "route"]
PII_KINDS = ("email", "phone", "ssn", "credit_card", "iban", "ip_address")


class JailbreakSettings(_Frozen):
    enabled: bool = True
    # Pattern matches score 1.0; otherwise text the n-gram screen is unsure of scores the mean
    # log-odds of the screen and the fine-tuned transformer (both must find it suspicious). The
    # highest threshold the score reaches decides: block (400, nothing forwarded), route, or
    # flag. 0.8: the lowest that kept false positives at or under 3% on the hard benign
    # prompts of the development split (docs/EVALUATION.md).
    block_threshold: Unit = 0.8
    route_threshold: Unit | None = None
    route_pool: Name | None = None
    flag_threshold: Unit = 0.5
    # Every request is scored first by the n-gram screen (character n-grams, microseconds);
    # below this it is benign and the transformer is not run. 0.5: 98.6% of everyday held-out
    # prompts score below it; at 0.4 (97.4%) the development split gained 1-2 points of
    # recall, for a transformer run on twice as many everyday requests.
    screen_threshold: Unit = 0.5
    # The fine-tuned transformer reads this many characters per window (~128 tokens of
    # English), at most `model_windows` windows a request: the start of the newest message,
    # and the windows the n-gram screen scores at or above `screen_threshold`, most suspicious
    # first. 2: the evaluation (dev split, independent set, suffix attacks) came out the same
    # as with 3, and a long prompt the screen is unsure of costs ~18 ms instead of ~24.
    model_window_chars: int = Field(default=512, ge=64, le=4096)
    model_windows: int = Field(default=2, ge=1, le=16)
    # Extra rules: family name -> regular expression (matched on normalised text).
    patterns: dict[Name, Phrase] = {}
    # Message roles scanned: what reaches the model, tool results included.
    roles: tuple[str, ...] = ("user", "tool", "function", "system", "developer")
    # Characters scanned per request (the most recent messages first).
    max_scan_chars: int = Field(default=32_768, ge=256, le=1_048_576)

    @model_validator(mode="after")
    def _route_needs_pool(self) -> JailbreakSettings:
        if (self.route_threshold is None) != (self.route_pool is None):
            raise ValueError("route_threshold and route_pool go together")
        _check_regexes(self.patterns.items(), "patterns")
        return self


class PIISettings(_Frozen):
    enabled: bool = True
    types: tuple[str, ...] = PII_KINDS
    # User-defined detectors: type name -> regular expression.
    custom: dict[Name, Phrase] = {}
    default_action: PIIAction = "redact"
    actions: dict[str, PIIAction] = {}
    # Per pool, per type: overrides `actions` for requests that pool would receive.
    pool_actions: dict[Name, dict[str, PIIAction]] = {}
    # More text than this is refused (413) rather than forwarded unscanned.
    max_scan_chars: int = Field(default=16_777_216, ge=256, le=1_073_741_824)

    @model_validator(mode="after")
    def _known_types(self) -> PIISettings:
        known = {*PII_KINDS, *self.custom}
        named = [*self.types, *self.actions, *(t for a in self.pool_actions.values() for t in a)]
        unknown = sorted(set(named) - known)
        if unknown:
            raise ValueError(f"unknown PII types {unknown}; known: {', '.join(sorted(known))}")
        _check_regexes(self.custom.items(), "custom")
        return self


class AuditSettings(_Frozen):
    enabled: bool = True
    # A JSON-lines file, or "-" for stdout.
    path: str = "-"
    # The prompt text is never logged unless this is on.
    include_prompt: bool = False


class SafetySettings(_Frozen):
    jailbreak: JailbreakSettings = JailbreakSettings()
    pii: PIISettings = PIISettings()
    audit: AuditSettings = AuditSettings()


class TracingSettings(_Frozen):
    """OpenTelemetry traces; off costs nothing (no SDK is set up)."""

    enabled: bool = False
    # An OTLP collector, HOST:PORT. Unset: the standard OTEL_EXPORTER_OTLP_* variables decide.
    # `render-envoy` points Envoy's own tracer at it too (OTLP/gRPC), so the traces join.
    endpoint: str | None = None
    protocol: Literal["grpc", "http/protobuf"] = "grpc"
    service_name: str = "extproc-router"
    sample_ratio: Unit = 1.0
    # How long finished spans wait before they are sent in one batch.
    export_delay_ms: int = Field(default=2_000, ge=10, le=60_000)

    @field_validator("endpoint")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is not None and not _ENDPOINT.match(value):
            raise ValueError(f"{value!r} is not HOST:PORT")
        return value


class BaselinePrice(Price):
    """The model every request would go to without the router."""

    model: ModelName
    # Its typical time to a whole answer (replay); unset: the `latency_s` of the pool serving
    # `model`, if one does.
    latency_s: float | None = Field(default=None, gt=0)


class TelemetrySettings(_Frozen):
    log_format: Literal["json", "text"] = "json"
    # Read token usage from responses (the response body passes through the router, streamed
    # chunk by chunk, never buffered).
    usage: bool = True
    # `total_cost_saved_usd` compares each request's cost with this model's price for the same
    # tokens. Unset: the priciest pool.
    baseline: BaselinePrice | None = None
    tracing: TracingSettings = TracingSettings()


class LoadSettings(_Frozen):
    """Load-aware routing: the router polls every pool endpoint's Prometheus metrics off the
    request path and moves traffic off a pool before it saturates (`pools[].load`). Off by
    default: turn it on where the pools export vLLM's metrics."""

    enabled: bool = False
    poll_interval_ms: int = Field(default=1_000, ge=50, le=60_000)
    # Per endpoint and poll; a late answer counts as a failed poll.
    timeout_ms: int = Field(default=500, ge=10, le=60_000)
    # Older readings are unknown, never idle. None: three poll intervals.
    stale_after_ms: int | None = Field(default=None, ge=50)
    # An endpoint that refuses connections is down at once; one that fails (times out, answers
    # garbage) this many polls in a row is down too. A pool with no endpoint up is skipped.
    down_after_failures: int = Field(default=3, ge=1, le=100)
    # Score a pool loses at its hard limit (linearly from the soft one): the vote's margin a
    # cheaper pool's queue may cost before the next pool wins.
    penalty: Unit = 0.5
    # An unknown pool (stale or missing readings) counts as this far from its soft limit to
    # its hard one: never as idle, never as full.
    unknown_pressure: Unit = 0.5
    # Seconds a client is told to wait when no allowed pool is left (503 `pools_unavailable`).
    retry_after_s: int = Field(default=2, ge=1, le=3_600)

    @model_validator(mode="after")
    def _timeout_within_interval(self) -> LoadSettings:
        if self.timeout_ms > self.poll_interval_ms:
            raise ValueError("timeout_ms must not exceed poll_interval_ms")
        return self

    @property
    def stale_after_s(self) -> float:
        stale = self.stale_after_ms
        return (stale if stale is not None else 3 * self.poll_interval_ms) / 1000


class CacheRoute(_Frozen):
    """Requests the router sends to `pool` (and, when set, speak `api`) may be answered from
    the cache; the rest never are (opt-in per route)."""

    pool: Name
    api: Literal["chat_completions", "completions"] | None = None
    threshold: Unit | None = None
    ttl_s: int | None = Field(default=None, ge=1)


class CacheSettings(_Frozen):
    """The semantic cache: a request whose prompt is at least `threshold` similar (cosine of
    the MiniLM embeddings) to an earlier one, with the same conversation before it, the same
    pool and the same parameters, is answered by the router without any pool."""

    # No routes: no cache (and no Redis connection).
    routes: tuple[CacheRoute, ...] = ()
    backend: Literal["memory", "redis"] = "memory"
    # Replicas that share one Redis share one cache.
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", pattern=r"^rediss?://")
    # A Redis slower than this is a miss (and the answer is not stored): never a failure.
    redis_timeout_ms: int = Field(default=100, ge=1, le=10_000)
    key_prefix: str = Field(default="extproc-router:cache", min_length=1)
    # High by default: a near-duplicate must not get another question's answer.
    threshold: Unit = 0.95
    ttl_s: int = Field(default=3_600, ge=1)
    max_entries: int = Field(default=10_000, ge=1)
    # Sampled answers (temperature above 0, or unset: OpenAI's default is 1) differ on
    # purpose; serving one again would take that away.
    temperature_zero_only: bool = True
    # Larger answers are not stored.
    max_response_bytes: int = Field(default=256 * 1024, ge=1024, le=16 * 1024 * 1024)


class ShadowSettings(_Frozen):
    """Shadow routing: a fraction of the routed requests is also sent to `pool` by Envoy's
    request mirroring; the client only ever gets the primary's answer. Both answers are logged
    (latency, tokens, an embedding of the text) for `extproc-router shadow-report`."""

    # None: no shadow traffic (and no shadow listener in the rendered Envoy config).
    pool: Name | None = None
    fraction: Unit = 0.0
    # Only requests routed to these pools are mirrored (empty: every pool but `pool`).
    from_pools: tuple[Name, ...] = ()
    # Envoy's internal listener the mirrored copies pass through, so the router sees the
    # shadow's answer too; `render-envoy` writes it. Loopback only.
    listen: ListenAddress = ListenAddress(port=8091)
    # JSON lines, one per answer (primary and shadow), joined by decision id; "-" for stdout.
    log_path: str = "shadow.jsonl"
    # A secret shared by the routers, so any of them accepts a copy another one sent (the
    # shadow listener refuses copies without a valid token). None: a random key per router,
    # enough for one router.
    key_file: Path | None = None


class PolicySettings(_Frozen):
    """One arm of an A/B split: the config's routing with `routing`'s keys replaced."""

    name: Name
    weight: float = Field(gt=0)
    # Keys of the `routing` section this policy sets differently (e.g. confidence_threshold,
    # weights, keyword_rules); validated as a whole routing section.
    routing: dict[str, Any] = {}


class ExperimentSettings(_Frozen):
    """Weighted splits between decision policies, sticky per user: the same `sticky_header`
    value always gets the same policy (a request without it: its decision id decides)."""

    # Empty: no experiment; every request is decided by the config's own routing.
    policies: tuple[PolicySettings, ...] = ()
    sticky_header: str = "x-user-id"
    # Changing it reshuffles who gets which policy.
    salt: str = ""

    @field_validator("sticky_header")
    @classmethod
    def _lowercase_header(cls, value: str) -> str:
        if not _HEADER_NAME.match(value):
            raise ValueError("must be a lowercase HTTP header name, e.g. x-user-id")
        return value


class Settings(_Frozen):
    server: ServerSettings = ServerSettings()
    envoy: EnvoySettings = EnvoySettings()
    model: ModelSettings = ModelSettings()
    pools: tuple[PoolSettings, ...] = Field(min_length=1)
    routing: RoutingSettings
    safety: SafetySettings = SafetySettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    on_error: OnErrorSettings = OnErrorSettings()
    load: LoadSettings = LoadSettings()
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    cache: CacheSettings = CacheSettings()
    shadow: ShadowSettings = ShadowSettings()
    experiments: ExperimentSettings = ExperimentSettings()

    @model_validator(mode="after")
    def _cross_references(self) -> Settings:
        problems = _reference_problems(self) + _traffic_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def pool(self, name: str) -> PoolSettings:
        for pool in self.pools:
            if pool.name == name:
                return pool
        raise KeyError(name)

    def failover_pairs(self) -> list[tuple[PoolSettings, PoolSettings]]:
        """(pool, fallback) for every pool another one `accepts` the model name of: Envoy
        has a cluster for each pair, the router names it when both may take the request."""
        return [
            (pool, other)
            for pool in self.pools
            for other in self.pools
            if other is not pool and pool.model in other.accepts
        ]

    def for_policy(self, name: str) -> Settings:
        """These settings with an experiment policy's routing; raises KeyError for no policy."""
        policy = next(p for p in self.experiments.policies if p.name == name)
        routing = RoutingSettings.model_validate(
            {**self.routing.model_dump(mode="json"), **policy.routing}
        )
        return self.model_copy(update={"routing": routing})

    @property
    def request_budget_s(self) -> float:
        budget = self.server.request_budget_ms
        return (budget if budget is not None else self.envoy.message_timeout_ms * 0.6) / 1000

    @property
    def fallback_pool(self) -> PoolSettings:
        return self.pool(self.routing.fallback_pool or self.routing.default_pool)

    @property
    def baseline_price(self) -> BaselinePrice:
        if self.telemetry.baseline is not None:
            return self.telemetry.baseline
        priciest = max(self.pools, key=lambda p: p.price.input_per_1k + p.price.output_per_1k)
        return BaselinePrice(
            model=priciest.model, latency_s=priciest.latency_s, **priciest.price.model_dump()
        )


def _reference_problems(settings: Settings) -> list[str]:
    """Every name that points at a pool or tier must exist; served names must not collide."""
    problems: list[str] = []
    names = [pool.name for pool in settings.pools]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"pools: the name {name!r} is used twice")
    owner: dict[str, str] = {}
    for pool in settings.pools:
        for model in pool.served_models:
            if model in owner and owner[model] != pool.name:
                problems.append(
                    f"pools.{pool.name}: model {model!r} is also served by {owner[model]!r}"
                )
            owner.setdefault(model, pool.name)
    written = {pool.model: pool.name for pool in settings.pools}
    for pool in settings.pools:
        for model in pool.accepts:
            if written.get(model, pool.name) == pool.name:
                problems.append(f"pools.{pool.name}.accepts: {model!r} is not another pool's model")
    routing = settings.routing
    for alias in routing.auto_models:
        if alias in owner:
            problems.append(f"routing.auto_models: {alias!r} is a served model name")
    for key, pool_name in (
        ("default_pool", routing.default_pool),
        ("fallback_pool", routing.fallback_pool),
    ):
        if pool_name is not None and pool_name not in names:
            problems.append(f"routing.{key}: no pool named {pool_name!r}")
    targets = {*names, *TIERS}
    checked = [
        *(f"keyword_rules.{i}.target" for i in range(len(routing.keyword_rules))),
        *(f"embedding_routes.{i}.target" for i in range(len(routing.embedding_routes))),
        *(f"preferences.{name}" for name in routing.preferences),
    ]
    values = [
        *(rule.target for rule in routing.keyword_rules),
        *(route.target for route in routing.embedding_routes),
        *routing.preferences.values(),
    ]
    for key, target in zip(checked, values, strict=True):
        if target not in targets:
            problems.append(f"routing.{key}: {target!r} is neither a pool nor a tier")
    for pool_name in routing.domains.capabilities:
        if pool_name not in names:
            problems.append(f"routing.domains.capabilities: no pool named {pool_name!r}")
    safety = settings.safety
    if safety.jailbreak.route_pool is not None and safety.jailbreak.route_pool not in names:
        problems.append(
            f"safety.jailbreak.route_pool: no pool named {safety.jailbreak.route_pool!r}"
        )
    for pool_name in safety.pii.pool_actions:
        if pool_name not in names:
            problems.append(f"safety.pii.pool_actions: no pool named {pool_name!r}")
    routes_pii = "route" in {
        safety.pii.default_action,
        *safety.pii.actions.values(),
        *(a for t in safety.pii.pool_actions.values() for a in t.values()),
    }
    if routes_pii and not any(pool.compliant for pool in settings.pools):
        problems.append("safety.pii: action 'route' needs a pool marked compliant: true")
    budget = settings.server.request_budget_ms
    if budget is not None and budget >= settings.envoy.message_timeout_ms:
        problems.append(
            "server.request_budget_ms: must be below envoy.message_timeout_ms "
            f"({settings.envoy.message_timeout_ms}), or Envoy gives up on the router first"
        )
    return problems


def _traffic_problems(settings: Settings) -> list[str]:
    """Pools named by the cache, shadow and experiment sections must exist."""
    names = {pool.name for pool in settings.pools}
    problems = [
        f"cache.routes.{index}.pool: no pool named {route.pool!r}"
        for index, route in enumerate(settings.cache.routes)
        if route.pool not in names
    ]
    shadow = settings.shadow
    if shadow.pool is not None and shadow.pool not in names:
        problems.append(f"shadow.pool: no pool named {shadow.pool!r}")
    problems += [
        f"shadow.from_pools: no pool named {name!r}"
        for name in shadow.from_pools
        if name not in names
    ]
    problems += _policy_problems(settings)
    if shadow.pool is not None and shadow.listen.port in (
        settings.envoy.listen.port,
        settings.envoy.admin.port,
    ):
        problems.append("shadow.listen: the port is one of Envoy's own")
    return problems


def _policy_problems(settings: Settings) -> list[str]:
    """Each policy's routing must be a valid routing section for these pools."""
    policies = settings.experiments.policies
    problems = []
    names = [policy.name for policy in policies]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"experiments.policies: the name {name!r} is used twice")
    for index, policy in enumerate(policies):
        key = f"experiments.policies.{index}.routing"
        try:
            variant = settings.for_policy(policy.name)
        except ValidationError as error:
            problems += [f"{key}.{line}" for line in _format_errors(error)]
            continue
        problems += [
            f"{key}: {problem.removeprefix('routing.')}"
            for problem in _reference_problems(variant)
            if problem.startswith("routing.")
        ]
    return problems


def _format_errors(error: ValidationError) -> list[str]:
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{key}: {message}")
    return lines


def parse_settings(data: Any, *, source: str = "<config>") -> Settings:
    """Validate already-loaded YAML data; `source` names the file in errors."""
    if not isinstance(data, dict):
        raise ConfigError(source, ["(top level): expected a mapping of settings"])
    try:
        return Settings.model_validate(data)
    except ValidationError as error:
        raise ConfigError(source, _format_errors(error)) from None


def load_settings(path: str | Path | None = None) -> Settings:
    """Read and validate a YAML config; `None` means the embedded example config."""
    file = Path(path) if path is not None else EXAMPLE_CONFIG
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(str(file), [f"cannot read: {error}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(str(file), [f"invalid YAML: {error}"]) from None
    return parse_settings(data, source=str(file))


def override(settings: Settings, values: dict[str, Any], *, source: str = "overrides") -> Settings:
    """A copy with dotted keys replaced (`{"envoy.listen.port": 8081}`), validated again."""
    data = settings.model_dump(mode="json")
    for dotted, value in values.items():
        *parents, leaf = dotted.split(".")
        node: Any = data
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(leaf)] = value
        else:
            node[leaf] = value
    return parse_settings(data, source=source)
