"""The webhook sink: one signed POST per message (``notify.signing``), no redirects
followed; 2xx is delivered, 410 is "never again" (the subscription is switched off), any
other answer or no answer is retried (honouring ``Retry-After``)."""

from __future__ import annotations

import httpx

from rewards.notify import signing
from rewards.notify.sinks import Message, Outcome

USER_AGENT = "rewards-webhooks/1"


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    return float(value) if value.isdigit() else None


class WebhookSink:
    def __init__(self, url: str, secret: str, client: httpx.AsyncClient) -> None:
        self.url = url
        self.secret = secret
        self.client = client  # shared by every webhook sink of a dispatcher

    async def send(self, message: Message) -> Outcome:
        headers = signing.headers(self.secret, message.id, message.body)
        headers |= {"content-type": "application/json", "user-agent": USER_AGENT}
        try:
            response = await self.client.post(
                self.url, content=message.body, headers=headers, follow_redirects=False
            )
        except httpx.HTTPError as error:
            return Outcome(delivered=False, error=f"{type(error).__name__}: no answer")
        status = response.status_code
        if 200 <= status < 300:
            return Outcome(delivered=True, status=status)
        return Outcome(
            delivered=False,
            status=status,
            error=f"HTTP {status}",
            retry_after=_retry_after(response),
            gone=status == 410,
        )

    async def close(self) -> None:
        return None  # the client belongs to the dispatcher
