"""Wix app APIs called with an instance's own token: Send BI Event, Get App Instance.

Each is one flow over ``WixHttp.request_flow``; the provider drives it sync or async.
"""

from __future__ import annotations

from typing import Any

import httpx2

from ..core.flow import Flow
from .facts import BI_EVENT_PATH, FINISHED_CONFIGURATION, INSTANCE_PATH
from .http import WixHttp, json_object


def finished_configuration_flow(http: WixHttp, auth: httpx2.Auth) -> Flow[None]:
    """``POST {api}/apps/v1/bi-event`` with ``{"eventName": "APP_FINISHED_CONFIGURATION"}``."""
    request = httpx2.Request(
        "POST", http.api_url + BI_EVENT_PATH, json={"eventName": FINISHED_CONFIGURATION}
    )
    yield from http.request_flow(request, "Send BI Event", auth)


def app_instance_flow(http: WixHttp, auth: httpx2.Auth) -> Flow[dict[str, Any]]:
    """``GET {api}/apps/v1/instance``: the installation as Wix knows it."""
    request = httpx2.Request("GET", http.api_url + INSTANCE_PATH)
    response = yield from http.request_flow(request, "Get App Instance", auth)
    return json_object(response, "Get App Instance")
