"""`extproc_router.v1.RouterService`: the routing decision, asked directly over gRPC.

Runs exactly the code path ext_proc runs (parse, then decide), so what `grpcurl` shows is what
Envoy's traffic gets.
"""

from __future__ import annotations

import json

import grpc

from extproc_router._gen import router_pb2, router_pb2_grpc
from extproc_router.exceptions import RequestError
from extproc_router.request import api_for_path, parse_body
from extproc_router.routing import Router
from extproc_router.settings import Settings

__all__ = ["RouterService"]

_DEFAULT_PATH = "/v1/chat/completions"


class RouterService(router_pb2_grpc.RouterServiceServicer):  # type: ignore[misc]
    def __init__(self, settings: Settings, router: Router) -> None:
        self._settings = settings
        self._router = router

    async def Explain(
        self, request: router_pb2.ExplainRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> router_pb2.ExplainResponse:
        path = request.path or _DEFAULT_PATH
        api = api_for_path("POST", path)
        if api is None:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"the router does not route {path}"
            )
            raise AssertionError("unreachable")  # pragma: no cover - abort raises
        body = request.body or _body_from_prompt(api, request.prompt, request.model)
        try:
            parsed = parse_body(api, body.encode("utf-8", "surrogatepass"))
            decision = await self._router.decide(parsed)
        except RequestError as error:
            return router_pb2.ExplainResponse(
                error=router_pb2.Error(status=error.status, code=error.code, message=error.message)
            )
        return router_pb2.ExplainResponse(
            pool=decision.pool.name,
            model=decision.model,
            method=decision.method,
            reason=decision.reason,
        )

    async def ListPools(
        self,
        request: router_pb2.ListPoolsRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> router_pb2.ListPoolsResponse:
        return router_pb2.ListPoolsResponse(
            pools=[
                router_pb2.Pool(
                    name=pool.name,
                    model=pool.model,
                    aliases=list(pool.aliases),
                    endpoints=list(pool.endpoints),
                )
                for pool in self._settings.pools
            ],
            default_pool=self._settings.routing.default_pool,
            auto_models=list(self._settings.routing.auto_models),
        )


def _body_from_prompt(api: str, prompt: str, model: str) -> str:
    body: dict[str, object] = (
        {"messages": [{"role": "user", "content": prompt}]}
        if api == "chat_completions"
        else {"prompt": prompt}
    )
    if model:
        body["model"] = model
    return json.dumps(body)
