"""The Cloud Controller contracts: how the policy's decisions reach the CC, and how the CC's
questions are answered.

The policy (harmonizer.py, the model) decides *what* to do: start index i of (app,
version), stop instance g for a reason. A contract renders those decisions as the messages
one generation of Cloud Controller acts on, holds that CC's acceptance rules (used by the
simulator and the tests), and answers its state queries. One subpackage per contract:
`hm2` (Health Manager 2.0, PROTOCOL.md) and `hm9000` (HM9000.md). Nothing outside this
package knows a subject or a field name of either contract. Exactly one contract is spoken
by a process (`cc_protocol`): between 2013-10 and 2014-03 the CC listened to both, so
speaking both would double every start.
"""
