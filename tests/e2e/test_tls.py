"""gRPC over mutual TLS between Envoy and a router that is not its loopback sidecar."""

from __future__ import annotations

import subprocess
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.e2e.conftest import own_stack

NAME = "extproc-router"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _issue(folder: Path, name: str, subject: str, extensions: str) -> None:
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
             f"{name}.csr", "-subj", f"/CN={subject}", cwd=folder)  # fmt: skip
    (folder / f"{name}.ext").write_text(extensions)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", "-extfile", f"{name}.ext",
             cwd=folder)  # fmt: skip


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway CA, the router's certificate (for NAME) and Envoy's client certificate."""
    folder = tmp_path_factory.mktemp("certs")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
             "ca.pem", "-days", "2", "-subj", "/CN=test-ca", cwd=folder)  # fmt: skip
    _issue(folder, "router", NAME, f"subjectAltName=DNS:{NAME}\nextendedKeyUsage=serverAuth\n")
    _issue(folder, "envoy", "envoy", "extendedKeyUsage=clientAuth\n")
    return folder


def test_envoy_reaches_the_router_over_mutual_tls(tmp_path: Path, certs: Path) -> None:
    tls = {
        "cert_file": str(certs / "router.pem"),
        "key_file": str(certs / "router.key"),
        "client_ca_file": str(certs / "ca.pem"),
        "envoy_ca_file": str(certs / "ca.pem"),
        "envoy_server_name": NAME,
        "envoy_cert_file": str(certs / "envoy.pem"),
        "envoy_key_file": str(certs / "envoy.key"),
    }
    stack = own_stack(tmp_path, {"server.tls": tls, "envoy.failure_mode_allow": False})
    target = f"127.0.0.1:{stack.settings.server.grpc.port}"
    request = health_pb2.HealthCheckRequest()
    try:
        response = httpx.post(
            stack.url + "/v1/chat/completions",
            json={"model": "auto", "messages": [{"role": "user", "content": "Prove 7 is prime."}]},
            timeout=15,
        )
        assert response.status_code == 200
        assert response.headers["x-router-pool"]  # the router decided, over TLS
        with grpc.insecure_channel(target) as plain, pytest.raises(grpc.RpcError):
            health_pb2_grpc.HealthStub(plain).Check(request, timeout=3)
        # TLS without a client certificate: refused too.
        anonymous = grpc.ssl_channel_credentials((certs / "ca.pem").read_bytes())
        options = [("grpc.ssl_target_name_override", NAME)]
        with (
            grpc.secure_channel(target, anonymous, options) as channel,
            pytest.raises(grpc.RpcError),
        ):
            health_pb2_grpc.HealthStub(channel).Check(request, timeout=3)
        mutual = grpc.ssl_channel_credentials(
            (certs / "ca.pem").read_bytes(),
            (certs / "envoy.key").read_bytes(),
            (certs / "envoy.pem").read_bytes(),
        )
        with grpc.secure_channel(target, mutual, options) as channel:
            answer = health_pb2_grpc.HealthStub(channel).Check(request, timeout=3)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        stack.stop_all()
