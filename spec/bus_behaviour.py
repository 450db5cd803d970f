"""The behaviour every IMessageBus shares, run against the in-memory and the NATS bus.

A test case mixes in BusBehaviourMixin and provides:
- `make_bus()`: a new, unstarted bus, stopped in cleanup;
- `settle()`: a Deferred firing once messages already published have been delivered;
- `pass_time(seconds)`: a Deferred firing once `seconds` passed on the bus's clock;
- `until(predicate)`: a Deferred firing once `predicate()` is true (failing the test if
  it never becomes true).
"""

from zope.interface.verify import verifyObject

from health_manager.interfaces import BusMessage, IMessageBus, ISubscription, RequestTimeout


class BusBehaviourMixin:

    async def started_bus(self):
        bus = self.make_bus()
        await bus.start()
        await self.until(lambda: bus.connected)
        return bus

    async def test_provides_the_interface(self):
        """The bus provides IMessageBus and its subscriptions ISubscription."""
        bus = await self.started_bus()
        subscription = await bus.subscribe("verify.me", lambda message: None)
        self.assertTrue(verifyObject(IMessageBus, bus))
        self.assertTrue(verifyObject(ISubscription, subscription))
        self.assertEqual(subscription.subject, "verify.me")

    async def test_publish_reaches_subscriber(self):
        """A subscriber receives each publication on its subject as a BusMessage."""
        bus = await self.started_bus()
        received = []
        await bus.subscribe("dea.heartbeat", received.append)
        bus.publish("dea.heartbeat", b'{"dea":"1"}')
        bus.publish("dea.other", b"not for us")
        await self.until(lambda: received)
        await self.settle()
        self.assertEqual(received, [BusMessage("dea.heartbeat", b'{"dea":"1"}', None)])

    async def test_reply_subject_is_delivered(self):
        """A publication's reply subject reaches the subscriber; none is given as None."""
        bus = await self.started_bus()
        received = []
        await bus.subscribe("healthmanager.status", received.append)
        bus.publish("healthmanager.status", b"{}", reply="answer.here")
        await self.until(lambda: received)
        self.assertEqual(received[0].reply, "answer.here")

    async def test_wildcards(self):
        """`*` matches exactly one token and `>` one or more trailing tokens."""
        bus = await self.started_bus()
        one, rest = [], []
        await bus.subscribe("hm.*", lambda message: one.append(message.subject))
        await bus.subscribe("hm.>", lambda message: rest.append(message.subject))
        for subject in ("hm", "hm.a", "hm.a.b", "other.a"):
            bus.publish(subject, b"")
        await self.until(lambda: len(rest) == 2)
        await self.settle()
        self.assertEqual(one, ["hm.a"])
        self.assertEqual(sorted(rest), ["hm.a", "hm.a.b"])

    async def test_queue_group_delivers_to_one_member(self):
        """Each message reaches exactly one member of a queue group, and every plain
        subscriber."""
        bus = await self.started_bus()
        members, plain = [], []
        await bus.subscribe("health.start", lambda m: members.append(("a", m.data)), queue="cc")
        await bus.subscribe("health.start", lambda m: members.append(("b", m.data)), queue="cc")
        await bus.subscribe("health.start", lambda m: plain.append(m.data))
        sent = [str(i).encode() for i in range(6)]
        for data in sent:
            bus.publish("health.start", data)
        await self.until(lambda: len(plain) == 6 and len(members) == 6)
        await self.settle()
        self.assertEqual(sorted(data for _, data in members), sorted(sent))
        self.assertEqual(sorted(plain), sorted(sent))

    async def test_request_with_one_reply(self):
        """A request fires with the one reply published to its reply subject."""
        bus = await self.started_bus()
        await bus.subscribe("echo", lambda m: bus.publish(m.reply, b"re:" + m.data))
        replies = await bus.request("echo", b"ping", timeout=5)
        self.assertEqual([r.data for r in replies], [b"re:ping"])

    async def test_request_with_several_replies(self):
        """A request collects replies until `max_replies` arrived."""
        bus = await self.started_bus()
        for name in (b"a", b"b", b"c"):
            await bus.subscribe("census", lambda m, name=name: bus.publish(m.reply, name))
        replies = await bus.request("census", timeout=5, max_replies=3)
        self.assertEqual(sorted(r.data for r in replies), [b"a", b"b", b"c"])

    async def test_request_returns_replies_so_far_at_timeout(self):
        """When fewer than `max_replies` came, the request fires with them at the timeout."""
        bus = await self.started_bus()
        for name in (b"a", b"b"):
            await bus.subscribe("census", lambda m, name=name: bus.publish(m.reply, name))
        pending = bus.request("census", timeout=0.5, max_replies=5)
        await self.settle()
        await self.pass_time(0.6)
        replies = await pending
        self.assertEqual(sorted(r.data for r in replies), [b"a", b"b"])

    async def test_request_without_reply_times_out(self):
        """A request nobody answers fails with RequestTimeout after `timeout` seconds."""
        bus = await self.started_bus()
        pending = bus.request("nobody.home", b"", timeout=0.3)
        await self.pass_time(0.4)
        with self.assertRaises(RequestTimeout):
            await pending

    async def test_unsubscribe_stops_delivery(self):
        """After unsubscribe a callback receives nothing more."""
        bus = await self.started_bus()
        received, witness = [], []
        subscription = await bus.subscribe("droplet.exited", received.append)
        await bus.subscribe("droplet.exited", witness.append)
        bus.publish("droplet.exited", b"1")
        await self.until(lambda: received and witness)
        await subscription.unsubscribe()
        bus.publish("droplet.exited", b"2")
        await self.until(lambda: len(witness) == 2)
        await self.settle()
        self.assertEqual([m.data for m in received], [b"1"])

    async def test_callback_exception_does_not_break_delivery(self):
        """A subscriber that raises is logged; other subscribers and its own later messages
        are still delivered."""
        bus = await self.started_bus()
        calls, others = [], []

        def fragile(message):
            calls.append(message.data)
            raise ZeroDivisionError("handler bug")

        await bus.subscribe("droplet.updated", fragile)
        await bus.subscribe("droplet.updated", others.append)
        bus.publish("droplet.updated", b"1")
        bus.publish("droplet.updated", b"2")
        await self.until(lambda: len(calls) == 2 and len(others) == 2)
        self.assertEqual(calls, [b"1", b"2"])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 2)

    async def test_connection_listener_hears_connect_and_stop(self):
        """Connection listeners hear True once connected and False once stopped."""
        bus = self.make_bus()
        heard = []
        bus.add_connection_listener(heard.append)
        self.assertFalse(bus.connected)
        await bus.start()
        await self.until(lambda: heard == [True])
        self.assertTrue(bus.connected)
        await bus.stop()
        self.assertEqual(heard, [True, False])
        self.assertFalse(bus.connected)

    async def test_subscription_made_before_start_takes_effect(self):
        """Subscriptions and publications made before the bus connects take effect once
        it does."""
        bus = self.make_bus()
        received = []
        await bus.subscribe("early.bird", received.append)
        bus.publish("early.bird", b"worm")
        await bus.start()
        await self.until(lambda: received)
        await self.settle()
        self.assertEqual([m.data for m in received], [b"worm"])

    async def test_flush_fires(self):
        """flush fires once earlier publications reached the server."""
        bus = await self.started_bus()
        bus.publish("anything", b"x")
        self.assertIsNone(await bus.flush())

    def test_publish_refuses_text(self):
        """Payloads are bytes: publishing text is a programming error and raises TypeError."""
        bus = self.make_bus()
        self.assertRaises(TypeError, bus.publish, "subject", "text")

