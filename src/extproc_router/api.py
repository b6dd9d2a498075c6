"""`extproc_router.v1.RouterService`: the routing decision, asked directly over gRPC.

Runs exactly the code path ext_proc runs (parse, then decide), so what `grpcurl` shows is what
Envoy's traffic gets.
"""

from __future__ import annotations

import json
import uuid

import grpc
from google.protobuf import json_format, struct_pb2

from extproc_router._gen import router_pb2, router_pb2_grpc
from extproc_router.exceptions import RequestError
from extproc_router.live import LiveConfig
from extproc_router.pipeline import Outcome
from extproc_router.request import api_for_path, parse_body

__all__ = ["RouterService", "classify"]

_DEFAULT_PATH = "/v1/chat/completions"


async def classify(live: LiveConfig, body: str, *, path: str = _DEFAULT_PATH) -> Outcome:
    """Parse, check and decide, as ext_proc does; raises RequestError as a client would see it."""
    api = api_for_path("POST", path)
    if api is None:
        raise RequestError(f"the router does not route {path}", code="unknown_path")
    request = parse_body(api, body.encode("utf-8", "surrogatepass"))
    return await live.pipeline.run(request, f"classify-{uuid.uuid4().hex[:12]}", dry_run=True)


def request_body(prompt: str, model: str = "", *, path: str = _DEFAULT_PATH) -> str:
    data: dict[str, object] = (
        {"prompt": prompt}
        if path.startswith("/v1/completions")
        else {"messages": [{"role": "user", "content": prompt}]}
    )
    if model:
        data["model"] = model
    return json.dumps(data)


def _struct(value: dict[str, object]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    json_format.ParseDict(json.loads(json.dumps(value, default=str)), message)
    return message


class RouterService(router_pb2_grpc.RouterServiceServicer):  # type: ignore[misc]
    def __init__(self, live: LiveConfig) -> None:
        self._live = live

    async def Classify(
        self, request: router_pb2.ClassifyRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> router_pb2.ClassifyResponse:
        path = request.path or _DEFAULT_PATH
        body = request.body or request_body(request.prompt, request.model, path=path)
        try:
            outcome = await classify(self._live, body, path=path)
        except RequestError as error:
            if error.code == "unknown_path":
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, error.message)
            return router_pb2.ClassifyResponse(
                error=router_pb2.Error(status=error.status, code=error.code, message=error.message)
            )
        decision = outcome.decision
        return router_pb2.ClassifyResponse(
            pool=decision.pool.name,
            model=decision.model,
            method=decision.method,
            reason=decision.reason,
            confidence=decision.confidence or 0.0,
            explanation=_struct(outcome.explanation()),
        )

    async def ListPools(
        self,
        request: router_pb2.ListPoolsRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> router_pb2.ListPoolsResponse:
        settings = self._live.settings
        return router_pb2.ListPoolsResponse(
            pools=[
                router_pb2.Pool(
                    name=pool.name,
                    model=pool.model,
                    aliases=list(pool.aliases),
                    endpoints=list(pool.endpoints),
                    tier=pool.tier,
                )
                for pool in settings.pools
            ],
            default_pool=settings.routing.default_pool,
            fallback_pool=settings.fallback_pool.name,
            auto_models=list(settings.routing.auto_models),
        )

    async def GetConfig(
        self,
        request: router_pb2.GetConfigRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> router_pb2.GetConfigResponse:
        live = self._live
        return router_pb2.GetConfigResponse(
            config=_struct(live.settings.model_dump(mode="json")),
            source=str(live.source or "embedded example config"),
            loaded_at_unix=live.loaded_at,
        )

    async def ReloadConfig(
        self,
        request: router_pb2.ReloadConfigRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> router_pb2.ReloadConfigResponse:
        problems = await self._live.reload()
        return router_pb2.ReloadConfigResponse(reloaded=not problems, problems=problems)
