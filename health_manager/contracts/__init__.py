"""The Cloud Controller contracts: how the policy's decisions reach the CC, and how the CC's
questions are answered.

The policy (harmonizer.py, the model) decides *what* to do (orders.py): start index i of
(app, version), stop instance g for a reason. A contract renders those decisions as the
messages one generation of Cloud Controller acts on, holds that CC's acceptance rules (used
by the simulator and the tests), and answers its state queries. One subpackage per
contract: `hm2` (Health Manager 2.0, PROTOCOL.md) and `hm9000` (HM9000.md). Nothing outside
this package knows a subject or a field name of either contract. Exactly one contract is
spoken by a process (`cc_protocol`): between 2013-10 and 2014-03 the CC listened to both,
so speaking both would double every start.
"""

from zope.interface import Attribute, Interface


class ICcContract(Interface):
    """Renders the policy's orders as one Cloud Controller generation's messages."""

    name = Attribute('"hm2" or "hm9000": the `cc_protocol` value that selects it.')
    start_subject = Attribute("The NATS subject starts are published on.")
    stop_subject = Attribute("The NATS subject stops are published on.")
    policy = Attribute("The PolicyParameters this CC generation needs.")
    fetch_user_counts = Attribute("Whether a desired-state pass starts with /bulk/counts.")
    require_memory_and_updated_at = Attribute(
        "Whether /bulk/apps entries without `memory` and `updated_at` are invalid.")

    def start_message(order):  # noqa: N805 (zope.interface methods take no self)
        """The bytes of the one message that asks the CC to carry out a StartOrder."""

    def stop_messages(order):  # noqa: N805 (zope.interface methods take no self)
        """The bytes of the messages (one or several) that carry out a StopOrder."""
