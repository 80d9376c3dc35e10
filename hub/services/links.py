"""Link requests over their whole life, and the devices they link: the state
machine in hub/core/linking.py applied to the database, with credentials issued
through an injected issuer.

One service in three parts, each in its own module, sharing one LinkContext:
- link_intake.py: what devices send (requests, polls) and codes expiring
- link_decisions.py: a person's approve and deny
- device_registry.py: linked devices, unlinking, broker identities, clean-up
(link_parts.py holds what they share). LinkService puts them together: the
hub, the pages and the tests call it as one.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from sqlalchemy.engine import Engine

from hub.core.link_limits import LinkRequestLimits
from hub.services.activity import ActivityLog
from hub.services.device_registry import DeviceRegistry
from hub.services.link_decisions import LinkDecisions
from hub.services.link_intake import LinkIntake
from hub.services.link_parts import (
    APPROVAL_GRACE_S,
    DECISION_MESSAGES,
    EXPIRED_SHOWN_FOR_S,
    Clock,
    CodeLookup,
    CodeStatus,
    CredentialIssuer,
    DeviceView,
    ExpiredDeviceView,
    InboundRequest,
    LinkContext,
    LinkPolicy,
    LinkRequestView,
    OutboundReply,
    ReplySender,
    RetainedTopics,
    RevokedReason,
)

__all__ = [
    "APPROVAL_GRACE_S",
    "DECISION_MESSAGES",
    "EXPIRED_SHOWN_FOR_S",
    "Clock",
    "CodeLookup",
    "CodeStatus",
    "CredentialIssuer",
    "DeviceView",
    "ExpiredDeviceView",
    "InboundRequest",
    "LinkContext",
    "LinkPolicy",
    "LinkRequestView",
    "LinkService",
    "OutboundReply",
    "ReplySender",
    "RetainedTopics",
    "RevokedReason",
]


class LinkService:
    """The three parts as one service; each method is its part's own."""

    def rename(self, device_id: str, account_id: int, name: str, *, address: str | None = None) -> DeviceView:
        view = self.registry.rename(device_id, account_id, name, address=address)
        self.renamed(device_id)
        return view

    def __init__(
        self,
        engine: Engine,
        policy: LinkPolicy,
        issuer: CredentialIssuer,
        sender: ReplySender,
        *,
        clock: Clock,
        activity: ActivityLog,
        retained: RetainedTopics,
        rng: random.Random | None = None,
        request_limits: LinkRequestLimits | None = None,
    ) -> None:
        self.context = LinkContext(
            engine, policy, issuer, sender, clock, activity, retained, rng or random.SystemRandom()
        )
        self.intake = LinkIntake(self.context, request_limits)
        self.decisions = LinkDecisions(self.context)
        self.registry = DeviceRegistry(self.context)
        self.handle_requests = self.intake.handle_requests
        self.handle_request = self.intake.handle_request
        self.handle_rejection = self.intake.handle_rejection
        self.expire_due = self.intake.expire_due
        self.lookup_code = self.decisions.lookup_code
        self.waiting = self.decisions.waiting
        self.approve = self.decisions.approve
        self.deny = self.decisions.deny
        self.device_status = self.registry.device_status
        self.broker_lost = self.registry.broker_lost
        self.was_unlinked = self.registry.was_unlinked
        self.unlink = self.registry.unlink
        self.expire_unconfirmed = self.registry.expire_unconfirmed
        self.expired_unconfirmed = self.registry.expired_unconfirmed
        self.unconfirmed_lifetime_s = self.registry.unconfirmed_lifetime_s
        self.list_devices = self.registry.list_devices
        self.linked_device = self.registry.linked_device
        self.any_linked_device = self.registry.any_linked_device
        self.unlinked_since = self.registry.unlinked_since
        self.knows_device = self.registry.knows_device
        self.linked_count = self.registry.linked_count
        # Told the device id after each rename (Home Assistant shows the new name).
        self.renamed: Callable[[str], None] = lambda _device_id: None
        self.unfinished_clearings = self.registry.unfinished_clearings
        self.clearing_unfinished = self.registry.clearing_unfinished
        self.clearing_finished = self.registry.clearing_finished
        self.reconcile_identities = self.registry.reconcile_identities
