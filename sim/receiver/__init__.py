"""The evidence receiver: stores and verifies resumable uploads from any number of cameras.

``core.EvidenceReceiver`` is the logic (MQTT messages in, acks out, files on disk), ``audit`` the
received audit logs, ``store`` the directory layout, ``trust`` the key trust policies, ``service``
the asyncio MQTT shell, ``verify`` the ``bwc-sim verify`` checks of a receiver store.
docs/receiver.md describes them.
"""

from sim.receiver.audit import AuditInbox
from sim.receiver.core import CODE_CONFLICT, EvidenceReceiver, EvidenceReceiverConfig
from sim.receiver.service import ReceiverService
from sim.receiver.store import Receipt, ReceiverStore
from sim.receiver.trust import TrustMode, TrustPolicy

__all__ = [
    "CODE_CONFLICT",
    "AuditInbox",
    "EvidenceReceiver",
    "EvidenceReceiverConfig",
    "Receipt",
    "ReceiverService",
    "ReceiverStore",
    "TrustMode",
    "TrustPolicy",
]
