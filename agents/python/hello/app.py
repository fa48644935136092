"""`hello-py`: greets whoever its input names (the Python twin of `hello`)."""

from wit_world import exports
from wit_world.exports import handler


class Handler(exports.Handler):
    def handle(self, request: handler.Request) -> handler.Response:
        name = request.input.strip() or "world"
        return handler.Response(output=f"Hello, {name}!", metadata=[])
