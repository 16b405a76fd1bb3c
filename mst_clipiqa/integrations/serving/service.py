"""The request handling every server shares (the Ray Serve deployment and :class:`LocalServer`): routes,
authentication, decoding within limits, batched scoring and the answers, as bytes in and bytes out."""
from __future__ import annotations

import hmac
import json
import math
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..rewards import NamedScores, Rewards, score_images
from .files import FileRoot
from .protocol import PROTOCOL, Limits, RequestError, ScoreRequest, decode_request, flow_factory_request

__all__ = ["Answer", "ScoringService", "encode_answer", "timed_out"]

Answer = tuple[int, dict[str, Any]]  # HTTP status and JSON body
SCORE, FLOW_FACTORY = "/v1/score", "/compute"  # this protocol; Flow-Factory's remote reward
READ_ONLY = ("/health", "/v1/info")


class ScoringService:
    """A reward behind the protocol of :mod:`.protocol`: ``handle(method, path, headers, body)`` answers one HTTP
    request; :meth:`parse` and :meth:`score_many` split it so a server can batch several requests' images.

    ``reward``: any reward form (an ``MSTCLIPIQAReward`` answers every output by name, with its range).
    ``token``: a bearer token every request but ``/health`` must carry (None: none asked).
    ``file_root``: the folder whose image files requests may name by path (None: none; see :class:`FileRoot`).
    """

    def __init__(self, reward: Rewards, *, limits: Limits | None = None, token: str | None = None,
                 batch_size: int = 32, model: str = "", file_root: str | Path | None = None):
        self.reward, self.limits, self.token = reward, limits or Limits(), token
        self.files = None if file_root is None else FileRoot(file_root)
        self.batch_size, self.model = batch_size, model
        named = getattr(reward, "named_scores", None)
        self.scorer = NamedScores(reward) if named is not None else reward
        self.weights = dict(reward.weights) if named is not None else None
        self.lock = threading.Lock()  # one scoring call at a time per replica: the batch is the unit of work
        self.stats = {"requests": 0, "batches": 0, "images": 0}  # how well requests are batched, in /v1/info

    # --- what a server calls ----------------------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Answer:
        """One request's answer; a bad request is a 4xx with one line under ``"error"``."""
        headers = {k.lower(): v for k, v in headers.items()}
        try:
            route = self.route(method, path, headers)
            if route in READ_ONLY:
                return self.read_only(route)
            request = self.parse(route, headers.get("content-type", ""), body)
            return 200, self.answer(route, self.score_many([request])[0])
        except RequestError as error:
            return error.status, {"error": str(error)}

    def route(self, method: str, path: str, headers: Mapping[str, str]) -> str:
        """The route a request names, once it is allowed: a :class:`RequestError` (404, 405, 401) otherwise.
        ``headers``: lower-case names."""
        path = path.split("?")[0].rstrip("/") or "/"
        if path not in (SCORE, FLOW_FACTORY, *READ_ONLY):
            raise RequestError(f"no route {path}; POST {SCORE} (or Flow-Factory's {FLOW_FACTORY}), GET /v1/info, "
                               "GET /health", 404)
        expected = "GET" if path in READ_ONLY else "POST"
        if method != expected:
            raise RequestError(f"{method} {path}; expected {expected}", 405)
        if path != "/health" and self.token is not None:
            given = headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
                raise RequestError("missing or wrong bearer token; send 'Authorization: Bearer TOKEN'", 401)
        return path

    def read_only(self, route: str) -> Answer:
        return 200, ({"status": "ok"} if route == "/health" else self.info())

    def parse(self, route: str, content_type: str, body: bytes) -> ScoreRequest:
        if route == FLOW_FACTORY:
            return flow_factory_request(body, self.limits)
        return decode_request(body, content_type, self.limits, self.files)

    def answer(self, route: str, result: Mapping[str, list[float | None]]) -> dict[str, Any]:
        if route == FLOW_FACTORY:
            return {"rewards": result["score"]}
        return {"protocol": PROTOCOL, "scores": result["score"],
                "outputs": {k: v for k, v in result.items() if k != "score"}}

    def score_many(self, requests: Sequence[ScoreRequest]) -> list[dict[str, list[float | None]]]:
        """Every request's ``{"score": [...], output: [...]}``, scored together in batches (requests with prompts
        and without are scored apart); a non-finite value is None (JSON has no NaN)."""
        results: list[dict[str, list[float | None]]] = [{} for _ in requests]
        self.stats["requests"] += len(requests)
        for with_prompts in (False, True):
            group = [i for i, r in enumerate(requests) if (r.prompts is not None) == with_prompts]
            if not group:
                continue
            images = [image for i in group for image in requests[i].images]
            prompts = [p for i in group for p in requests[i].prompts] if with_prompts else None
            columns = self.score(images, prompts)
            self.stats["batches"] += 1
            self.stats["images"] += len(images)
            start = 0
            for i in group:
                stop = start + len(requests[i].images)
                results[i] = {name: [_number(v) for v in values[start:stop]] for name, values in columns.items()}
                start = stop
        return results

    def score(self, images: Sequence[Any], prompts: Sequence[str] | None) -> dict[str, list[float]]:
        """``{"score": (N,), output: (N,)}`` as lists; a reward's own ValueError (prompts it needs, ...) is a 400."""
        try:
            with self.lock, torch.inference_mode():
                total, named = score_images(self.scorer, [_channels_first(image) for image in images], prompts,
                                            batch_size=self.batch_size, weights=self.weights)
        except ValueError as error:
            raise RequestError(" ".join(str(error).split())) from None
        return {"score": total.tolist(), **{name: value.tolist() for name, value in named.items()}}

    # --- what it says about itself ----------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """The protocol, the model, each output's range (None where the reward does not say), the limits and this
        replica's counts of requests, scoring batches and images so far."""
        ranges = self.output_ranges()
        return {"protocol": PROTOCOL, "model": self.model, "higher_is_better": True,
                "score": {"range": _range_of(self.reward)}, "outputs": {k: {"range": v} for k, v in ranges.items()},
                "needs_prompts": bool(getattr(getattr(getattr(self.reward, "model", None), "config", None),
                                              "needs_prompts", False)),
                "limits": self.limits.to_dict(), "batch_size": self.batch_size,
                "file_references": self.files is not None, "stats": dict(self.stats)}

    def output_ranges(self) -> dict[str, list[float] | None]:
        model = getattr(self.reward, "model", None)
        if self.weights is None or model is None:
            return {}
        if self.reward.normalize:
            return {name: [0.0, 1.0] for name in model.outputs}
        return {name: list(model.config.score_ranges[name]) for name in model.outputs}


def timed_out(limits: Limits) -> RequestError:
    """The answer to a request still unscored after ``limits.request_timeout_s`` (the server keeps serving)."""
    return RequestError(f"scoring took longer than the server's request timeout of {limits.request_timeout_s:g} s; "
                        "send fewer or smaller images, or start the server with a longer --request-timeout", 504)


def encode_answer(answer: Mapping[str, Any]) -> bytes:
    return json.dumps(answer, allow_nan=False).encode()


def _channels_first(image: Any) -> Any:
    """A decoded (H, W, 3) array as a (3, H, W) tensor: its layout stated, not guessed (an image 3 pixels high would
    read as channels first)."""
    if isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3:
        return torch.from_numpy(np.array(image)).permute(2, 0, 1)  # a writable copy, as the image rule makes
    return image


def _number(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _range_of(reward: Any) -> list[float] | None:
    score_range = getattr(reward, "score_range", None)
    return None if score_range is None else list(score_range)

