"""A study run through the Python client generated from docs/openapi.json (`make clients`).

What a study server's team does with its generated client, checked at every step: register a
participant, ask for decisions (one available, one not), upload what followed, ask for a model
update and receive its callback (parsed by the generated callback model), follow the update
until it completes, read the parameters, export the study, and get the 400, 404 and 409
answers as typed errors. A second service, started with an API key, answers 401 to a wrong key,
serves the document without one, and answers a right key.

Every call goes through the generated functions with `raise_on_unexpected_status=True`, so an
answer whose status the document does not list raises; a body that does not fit the generated
model raises while it is parsed. Any failed check raises too: the script exits non-zero with
the reason.

Usage: python study_flow.py --url http://127.0.0.1:PORT --keyed-url http://127.0.0.1:PORT2 \
    --key KEY, with the generated package `justin_client` on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import json
import queue
import threading
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from justin_client import AuthenticatedClient, Client
from justin_client.api.analysis import export
from justin_client.api.decisions import request_action, upload_data
from justin_client.api.document import get_openapi
from justin_client.api.parameters import get_current_parameters, get_parameters
from justin_client.api.participants import add_user
from justin_client.api.probes import healthz, readyz
from justin_client.api.updates import get_update, request_update
from justin_client.models import (
    ActionRequest,
    ActionRequestContext,
    ActionResponse,
    AddUserRequest,
    AddUserResponse,
    DeliveryState,
    ErrorResponse,
    Failed,
    HealthResponse,
    ParametersResponse,
    ReadyResponse,
    UpdateAccepted,
    UpdateCompleted,
    UpdateFailed,
    UpdateRequest,
    UpdateState,
    UpdateStatusResponse,
    UploadDataRequest,
    UploadDataResponse,
    UploadedData,
    UploadedDataContext,
    UploadedDataOutcome,
)
from justin_client.types import UNSET, Response

# The longest any wait here takes: a debug build on a busy machine is slow, never this slow.
WAIT_SECONDS = 60.0
TIMESTAMP = "2025-01-01T12:00:00Z"
USER = "study-flow-user"


def check(condition: bool, what: str) -> None:
    """Fails the run, saying what did not hold."""
    if not condition:
        raise AssertionError(what)


def answered(response: Response[Any], status: int, model: type, what: str) -> Any:
    """The parsed body of `response`, which must have `status` and be a `model`; every answer
    also names its request in X-Request-Id."""
    check(
        response.status_code == status,
        f"{what}: expected {status}, got {int(response.status_code)}: {response.content!r}",
    )
    check(
        isinstance(response.parsed, model),
        f"{what}: expected a {model.__name__}, got {type(response.parsed).__name__}",
    )
    check(bool(response.headers.get("x-request-id")), f"{what}: no X-Request-Id")
    print(f"clients: {what}: {status} {model.__name__}")
    return response.parsed


def refused(
    response: Response[Any], status: int, message: str, what: str, *, prefix: bool = False
) -> ErrorResponse:
    """An error answer: `status`, parsed as the typed error envelope, saying `message` (or
    starting with it, with `prefix`)."""
    error = answered(response, status, ErrorResponse, what)
    check(error.status == Failed.FAILED, f"{what}: status {error.status!r}")
    said = error.message[: len(message)] if prefix else error.message
    check(said == message, f"{what}: message {error.message!r}, not {message!r}")
    return error


class Receiver:
    """A study server's callback endpoint: POSTs to /callback are queued as they came (content
    type and body) and answered 200; they are read in the flow's thread."""

    def __init__(self) -> None:
        bodies: queue.Queue[tuple[str, bytes]] = queue.Queue()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                ok = self.path == "/callback"
                if ok:
                    bodies.put((self.headers.get("Content-Type", ""), raw))
                self.send_response(HTTPStatus.OK if ok else HTTPStatus.NOT_FOUND)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # No line per callback on stderr; the flow prints its own.

        self.bodies = bodies
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/callback"

    def next(self) -> Any:
        """The next callback's body, parsed as JSON."""
        try:
            content_type, raw = self.bodies.get(timeout=WAIT_SECONDS)
        except queue.Empty:
            raise AssertionError(f"no callback arrived within {WAIT_SECONDS} s") from None
        check(
            content_type.startswith("application/json"),
            f"the callback came as {content_type!r}: {raw!r}",
        )
        try:
            return json.loads(raw)
        except ValueError as e:
            raise AssertionError(f"the callback is not JSON ({e}): {raw!r}") from None

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def parse_callback(body: Any) -> UpdateCompleted | UpdateFailed:
    """The callback as the generated model of its `status` (the document's discriminator)."""
    check(isinstance(body, dict), f"the callback is not a JSON object: {body!r}")
    models = {"completed": UpdateCompleted, "failed": UpdateFailed}
    model = models.get(body.get("status"))
    check(model is not None, f"the callback's status names no model: {body!r}")
    return model.from_dict(body)


def study(client: Client) -> None:
    """The flow of a study, on a service without keys."""
    answered(healthz.sync_detailed(client=client), 200, HealthResponse, "GET /healthz")
    answered(readyz.sync_detailed(client=client), 200, ReadyResponse, "GET /readyz")

    added = answered(
        add_user.sync_detailed(client=client, body=AddUserRequest(user_id=USER)),
        201,
        AddUserResponse,
        "add_user",
    )
    check(added.user_id == USER, f"add_user answered {added!r}")

    decided = answered(
        request_action.sync_detailed(
            client=client,
            body=ActionRequest(
                user_id=USER,
                timestamp=TIMESTAMP,
                decision_idx=0,
                context=ActionRequestContext.from_dict({"temperature": 23}),
            ),
        ),
        201,
        ActionResponse,
        "action",
    )
    check(decided.action in (0, 1), f"action {decided.action!r}")
    check(0.0 <= decided.action_prob <= 1.0, f"action_prob {decided.action_prob!r}")
    check(decided.state == [23], f"state {decided.state!r}")
    # Optional answer fields are absent, never null: unset on an ordinary decision.
    for field in ("available", "decision_type", "unavailable_reason", "policy", "in_study"):
        check(getattr(decided, field) is UNSET, f"action: {field} is {getattr(decided, field)!r}")

    unavailable = answered(
        request_action.sync_detailed(
            client=client,
            body=ActionRequest(
                user_id=USER,
                timestamp=TIMESTAMP,
                decision_idx=0,
                decision_type="evening",
                available=False,
                unavailable_reason="driving",
                context=ActionRequestContext.from_dict({}),
            ),
        ),
        201,
        ActionResponse,
        "action, unavailable",
    )
    check(
        (unavailable.available, unavailable.decision_type, unavailable.unavailable_reason)
        == (False, "evening", "driving"),
        f"action, unavailable: {unavailable!r}",
    )
    check(unavailable.action_prob == 0, f"action, unavailable: {unavailable!r}")

    def upload(action: int) -> Response[Any]:
        return upload_data.sync_detailed(
            client=client,
            body=UploadDataRequest(
                user_id=USER,
                timestamp=TIMESTAMP,
                decision_idx=0,
                data=UploadedData(
                    context=UploadedDataContext.from_dict({"temperature": 23}),
                    action=action,
                    action_prob=decided.action_prob,
                    state=decided.state,
                    outcome=UploadedDataOutcome.from_dict({"clicks": 4}),
                ),
            ),
        )

    # 409 first: an upload whose action is not the one logged is refused, nothing stored.
    refused(
        upload(1 - decided.action),
        409,
        f"The uploaded action ({1 - decided.action}) and action_prob",
        "upload_data, contradicting",
        prefix=True,
    )
    answered(upload(decided.action), 201, UploadDataResponse, "upload_data")

    refused(
        add_user.sync_detailed(client=client, body=AddUserRequest(user_id=USER)),
        400,
        "User already exists.",
        "add_user, again",
    )
    refused(
        request_action.sync_detailed(
            client=client,
            body=ActionRequest(
                user_id="nobody",
                timestamp=TIMESTAMP,
                decision_idx=0,
                context=ActionRequestContext.from_dict({"temperature": 20}),
            ),
        ),
        404,
        "User not found.",
        "action, unknown participant",
    )

    receiver = Receiver()
    try:
        accepted = answered(
            request_update.sync_detailed(
                client=client,
                body=UpdateRequest(timestamp=TIMESTAMP, callback_url=receiver.url),
            ),
            202,
            UpdateAccepted,
            "update",
        )
        callback = parse_callback(receiver.next())
    finally:
        receiver.stop()
    check(isinstance(callback, UpdateCompleted), f"the update failed: {callback!r}")
    check(callback.update_id == accepted.update_id, f"callback {callback!r}")
    print(f"clients: callback: {type(callback).__name__} at {callback.timestamp.isoformat()}")

    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        status = answered(
            get_update.sync_detailed(accepted.update_id, client=client),
            200,
            UpdateStatusResponse,
            "update status",
        )
        done = (
            status.update_status == UpdateState.COMPLETED
            and status.callback.status == DeliveryState.DELIVERED
        )
        if done:
            break
        check(time.monotonic() < deadline, f"the update did not complete: {status!r}")
        time.sleep(0.2)
    check(status.parameter_version == 2, f"update status: {status!r}")
    check(status.provenance is not None, f"update status: {status!r}")
    refused(
        get_update.sync_detailed(uuid.UUID("e999a61c-fb5c-4f01-9942-cb7dbe501013"), client=client),
        404,
        "Update not found.",
        "update status, unknown",
    )

    current = answered(
        get_current_parameters.sync_detailed(client=client),
        200,
        ParametersResponse,
        "parameters",
    )
    check(current.version == 2, f"parameters: {current!r}")
    check(
        "probability_of_action" in current.parameters.additional_properties,
        f"parameters: {current.parameters!r}",
    )
    priors = answered(
        get_parameters.sync_detailed(1, client=client),
        200,
        ParametersResponse,
        "parameters/1",
    )
    check(priors.version == 1, f"parameters/1: {priors!r}")

    table = answered(export.sync_detailed(client=client), 200, str, "export")
    lines = table.splitlines()
    check(len(lines) == 3, f"export: a header and two decisions, got {lines!r}")


def keyed(base_url: str, key: str) -> None:
    """What a service with an API key answers a generated client."""
    open_client = Client(base_url=base_url, raise_on_unexpected_status=True)
    document = get_openapi.sync_detailed(client=open_client)
    check(document.status_code == 200, f"the document needs no key: {document.content!r}")
    check(bool(document.headers.get("x-request-id")), "the document's answer has no X-Request-Id")

    wrong = AuthenticatedClient(
        base_url=base_url, token="not-the-key-0123456789", raise_on_unexpected_status=True
    )
    response = get_current_parameters.sync_detailed(client=wrong)
    refused(response, 401, "Invalid credentials: the API key is not valid.", "a wrong key")
    challenge = response.headers.get("www-authenticate")
    check(challenge == 'Bearer realm="justin"', f"401: WWW-Authenticate {challenge!r}")
    refused(
        get_current_parameters.sync_detailed(client=open_client),
        401,
        "Authentication required: send an API key as Authorization: Bearer <key>.",
        "no key",
    )

    right = AuthenticatedClient(base_url=base_url, token=key, raise_on_unexpected_status=True)
    answered(
        get_current_parameters.sync_detailed(client=right),
        200,
        ParametersResponse,
        "the right key",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="a service without keys")
    parser.add_argument("--keyed-url", required=True, help="a service with --key as its key")
    parser.add_argument("--key", required=True)
    args = parser.parse_args()

    study(Client(base_url=args.url, raise_on_unexpected_status=True, timeout=WAIT_SECONDS))
    keyed(args.keyed_url, args.key)
    print("clients: the study ran through the generated Python client")


if __name__ == "__main__":
    main()
