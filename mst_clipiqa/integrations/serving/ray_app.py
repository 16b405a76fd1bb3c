"""The reward as a Ray Serve deployment: replicas (fractional GPUs), dynamic batching across requests
(``@serve.batch``), the HTTP protocol of :mod:`.protocol` on Serve's proxy and a handle for Ray callers.

The one module of the library that imports Ray (``pip install "mst-clipiqa[serve]"``).
"""
from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import ray
from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from .options import ServeOptions
from .protocol import Limits, RequestError, ScoreRequest, decode_images, image_items
from .service import READ_ONLY, ScoringService, encode_answer, timed_out

__all__ = ["APP_NAME", "RewardDeployment", "serve_reward", "shutdown"]

APP_NAME = "mst-clipiqa"
PROXY_MARGIN_S = 5.0


@serve.deployment(name="reward")
class RewardDeployment:
    """One replica: the reward loaded by ``MSTCLIPIQAReward.from_pretrained(model, **load)`` (a name, a trained
    folder or a Hub id, with ``adapters``, ``outputs``, ``variant``), on a GPU when the replica has one."""

    def __init__(self, model: str, load: dict[str, Any], options: ServeOptions):
        import torch

        from mst_clipiqa.reward import MSTCLIPIQAReward

        device = "cuda" if options.num_gpus > 0 and torch.cuda.is_available() else "cpu"
        reward = MSTCLIPIQAReward.from_pretrained(model, device=device, **load)
        self.service = ScoringService(reward, limits=options.limits, token=options.token,
                                      batch_size=options.batch_size, model=model, file_root=options.file_root)
        self.batched.set_max_batch_size(options.max_batch_requests)
        self.batched.set_batch_wait_timeout_s(options.batch_wait_s)

    async def __call__(self, request: Request) -> Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            route = self.service.route(request.method, request.url.path, headers)
            if route in READ_ONLY:
                status, answer = self.service.read_only(route)
            else:
                _check_length(headers, self.service.limits)
                parsed = self.service.parse(route, headers.get("content-type", ""), await request.body())
                status, answer = 200, self.service.answer(route, await self.scored(parsed))
        except RequestError as error:
            status, answer = error.status, {"error": str(error)}
        return Response(encode_answer(answer), status_code=status, media_type="application/json")

    async def score(self, images: Sequence[Any], prompts: Sequence[str] | None = None) -> dict[str, list]:
        """For Ray callers (``handle.score.remote(images, prompts)``): arrays, PIL images or (format, bytes), the
        same limits and answer (``{"score": [...], output: [...]}``) as over HTTP; a bad request raises ValueError."""
        items = image_items(images)
        limits = self.service.limits
        if len(items) > limits.max_images:
            raise RequestError(f"{len(items)} images in one request; the limit is {limits.max_images}", 413)
        request = ScoreRequest(decode_images([i for i, _ in items], [b for _, b in items], limits, self.service.files),
                               None if prompts is None else list(prompts))
        return await self.scored(request)

    async def scored(self, request: ScoreRequest) -> dict[str, list]:
        """The request's scores, batched with others; past the request timeout a 504 (the batch goes on)."""
        try:
            return _result(await asyncio.wait_for(self.batched(request), self.service.limits.request_timeout_s))
        except asyncio.TimeoutError:
            raise timed_out(self.service.limits) from None

    def info(self) -> dict[str, Any]:
        return self.service.info()

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def batched(self, requests: list[ScoreRequest]) -> list[dict[str, list] | RequestError]:
        try:
            return await asyncio.to_thread(self.service.score_many, requests)
        except RequestError:
            if len(requests) == 1:
                raise
        return [await asyncio.to_thread(_alone, self.service, r) for r in requests]  # find the bad one(s)


def _alone(service: ScoringService, request: ScoreRequest) -> dict[str, list] | RequestError:
    try:
        return service.score_many([request])[0]
    except RequestError as error:
        return error


def _result(result: dict[str, list] | RequestError) -> dict[str, list]:
    if isinstance(result, RequestError):
        raise result
    return result


def _check_length(headers: dict[str, str], limits: Limits) -> None:
    length = headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limits.max_body_bytes:
        raise RequestError(f"request body of {length} bytes; the limit is {limits.max_body_bytes}", 413)


def serve_reward(model: str, options: ServeOptions | None = None, **load: Any) -> Any:
    """Start (or join, ``options.address``) Ray, run the reward on Serve and return its handle; the HTTP
    protocol answers on ``http://{options.host}:{options.port}``. ``load``: ``from_pretrained`` arguments."""
    options = options or ServeOptions()
    if not ray.is_initialized():
        ray.init(address=options.address, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": options.host, "port": options.port,  # the replica's own 504 answers first
                              "request_timeout_s": options.limits.request_timeout_s + PROXY_MARGIN_S})
    app = RewardDeployment.options(
        num_replicas=options.replicas, max_ongoing_requests=options.max_ongoing_requests,
        max_queued_requests=options.max_queued_requests,
        ray_actor_options={"num_gpus": options.num_gpus, "num_cpus": options.num_cpus},
    ).bind(model, load, options)
    return serve.run(app, name=APP_NAME, route_prefix="/")


def shutdown() -> None:
    serve.shutdown()
    ray.shutdown()
