"""What the gateway's route unit tests share: a correlator that answers every command with one canned reply."""

from libs.contracts.base import Message


class FakeCorrelator:
    """Records what the route asks and answers with the canned reply."""

    def __init__(self, reply: Message):
        self.reply = reply
        self.asked: list[tuple[str, str | None, Message, str, bool]] = []

    async def request(self, topic, key, payload, *, tenant_id, livemode, request_id=None, timeout_s=None):
        self.asked.append((topic, key, payload, tenant_id, livemode))
        return self.reply
