"""The reward as a service: the HTTP protocol (:mod:`.protocol`), the request handling servers share
(:mod:`.service`), a Ray-free server (:class:`LocalServer`), the Ray Serve deployment behind ``mst-clipiqa serve``
(:mod:`.ray_app`, the one module that imports Ray) and the client, :class:`RemoteReward`."""
from .files import FileRoot
from .local import LocalServer, check_exposure
from .options import ServeOptions
from .protocol import PROTOCOL, Limits, RequestError, ScoreRequest, decode_request, encode_request
from .remote import RemoteReward, RemoteRewardError
from .service import ScoringService

__all__ = ["PROTOCOL", "FileRoot", "Limits", "LocalServer", "RemoteReward", "RemoteRewardError", "RequestError",
           "ScoreRequest", "ScoringService", "ServeOptions", "check_exposure", "decode_request", "encode_request"]
