"""`RabbitMQBus`: the `EventBus` over RabbitMQ (aio-pika): persistent, confirmed, at least once.

A durable topic exchange routes by event type to one durable quorum queue per (group, type),
`<prefix>.<group>.<type>`. A message is acked only after its handler returned; a failure is
nacked to the tail of its queue, and the `max_deliveries`-th failure (counted by the quorum
queue's `x-delivery-count`) moves it to `<prefix>.dead` with its error. The connection is
robust: consumers resume after the broker comes back; `publish` waits for it meanwhile.
"""

# Design notes.
# - Delivery count: a quorum queue raises `x-delivery-count` on every unsuccessful delivery,
#   a nack *or* a consumer that died holding the message, so a message that keeps killing its
#   consumers is dead-lettered too (on arrival, once past the limit, without another try).
#   The limit is checked here, not with the queue's `x-delivery-limit` argument, so that the
#   dead letter carries the handler's error and buses with other limits share a queue.
#   A quorum queue puts a nacked message at its tail: a poison message never blocks the queue.
# - Dead letters are republished (confirmed) to `<prefix>.dead`, then the original is acked;
#   a crash in between leaves a duplicate dead letter, never a lost one.
# - Reconnection: `publish` (and `subscribe`) retry after a lost connection once the robust
#   channel is restored, for up to `reconnect_timeout` seconds, then raise `BusError`. A retry
#   may duplicate a message whose confirm was lost; consumers deduplicate by message id.
# - Handlers run as the messages arrive, up to `prefetch` at a time per subscription; a sync
#   handler runs on the event loop, so keep it short (or make it async).

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import aio_pika
import aiormq
import attrs
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustConnection,
    AbstractRobustExchange,
    AbstractRobustQueue,
)
from aio_pika.exceptions import CONNECTION_EXCEPTIONS, AMQPChannelError, DeliveryError
from yarl import URL

from .events import Event, Handler, call_handler
from .exceptions import BusError, UndeliverableEvent, describe
from .logs import logger as _log
from .stores.urls import redact

Properties = aiormq.spec.Basic.Properties
_T = TypeVar("_T")
_QUORUM = {"x-queue-type": "quorum"}
_PERSISTENT = aio_pika.DeliveryMode.PERSISTENT


@attrs.frozen
class _Link:
    """An open connection with its channels: one confirmed for publishing, one to consume."""

    connection: AbstractRobustConnection
    publisher: AbstractRobustChannel
    consumer: AbstractRobustChannel
    exchange: AbstractRobustExchange
    dead: AbstractRobustQueue


class RabbitMQBus:
    """Publishes persistent, confirmed events to a topic exchange; a quorum queue per group+type.

    Connects on first use (or `await bus.connect()`); events published while no queue is bound
    to their type are dropped, so subscribe (which declares the queue) before publishing.
    """

    def __init__(self, url: str, *, exchange: str = "statesaga", prefix: str = "statesaga",
                 max_deliveries: int = 5, prefetch: int = 32, connect_timeout: float = 5.0,
                 reconnect_timeout: float = 30.0, reconnect_interval: float = 1.0,
                 publish_timeout: float = 10.0) -> None:
        self.publish_timeout = publish_timeout  # one attempt; then it counts as a lost link
        if max_deliveries < 1:
            raise BusError(f"max_deliveries must be at least 1, got {max_deliveries}")
        if not exchange or not prefix:
            raise BusError("the exchange and prefix names must not be empty")
        self.url = url
        self.exchange = exchange
        self.prefix = prefix
        self.dead_queue = f"{prefix}.dead"
        self.max_deliveries = max_deliveries
        self.prefetch = prefetch
        self.connect_timeout = connect_timeout
        self.reconnect_timeout = reconnect_timeout
        self.reconnect_interval = reconnect_interval
        self._link: _Link | None = None
        self._queues: dict[str, AbstractRobustQueue] = {}
        self._tags: list[tuple[AbstractRobustQueue, str]] = []
        self._lock = asyncio.Lock()
        self._running = 0  # handlers running now
        self._closed = False

    def __repr__(self) -> str:
        return f"RabbitMQBus({redact(self.url)!r}, exchange={self.exchange!r})"

    @property
    def queues(self) -> tuple[str, ...]:
        """The names of the queues this bus consumes from."""
        return tuple(self._queues)

    async def connect(self) -> None:
        """Connect and declare the exchange and dead-letter queue (done by first use anyway)."""
        await self._open()

    async def _open(self) -> _Link:
        async with self._lock:
            if self._closed:
                raise BusError(f"{self!r} is closed")
            if self._link is not None:
                return self._link
            connection = aio_pika.RobustConnection(
                URL(self.url), reconnect_interval=self.reconnect_interval)
            try:
                async with asyncio.timeout(self.connect_timeout):
                    await connection.connect(timeout=self.connect_timeout)
                    publisher = await connection.channel(publisher_confirms=True)
                    consumer = await connection.channel(publisher_confirms=False)
                    await consumer.set_qos(prefetch_count=self.prefetch)
                    exchange = await publisher.declare_exchange(
                        self.exchange, aio_pika.ExchangeType.TOPIC, durable=True)
                    dead = await publisher.declare_queue(
                        self.dead_queue, durable=True, arguments=_QUORUM)
            except Exception as exc:  # asyncio.timeout turned a slow connect into TimeoutError
                await connection.close()
                reason = "timed out" if isinstance(exc, TimeoutError) else describe(exc)
                raise BusError(
                    f"cannot connect to RabbitMQ at {redact(self.url)} ({reason}): check the "
                    "URL and that the broker runs (rabbitmq-server -detached)") from exc
            self._link = _Link(connection, publisher, consumer, exchange, dead)
            return self._link

    async def publish(self, event: Event) -> None:
        """Send `event`; returns once the broker confirmed it (it is then on disk)."""
        body = event.to_json().encode()
        link = await self._open()
        # The properties aio_pika.Message would build, without building one per event.
        properties = Properties(
            delivery_mode=int(_PERSISTENT), message_id=event.message_id,
            correlation_id=event.correlation_id, message_type=event.type,
            content_type="application/json", app_id="statesaga")

        async def send() -> None:
            if link.publisher.is_closed:  # as Exchange.publish does: a lost link raises now
                raise aiormq.exceptions.ChannelInvalidStateError(f"{link.publisher!r} closed")
            channel = await link.publisher.get_underlay_channel()
            try:
                await channel.basic_publish(
                    body, exchange=self.exchange, routing_key=event.type, properties=properties,
                    mandatory=False, timeout=self.publish_timeout)
            except DeliveryError as exc:
                raise BusError(f"RabbitMQ refused event {event.message_id} ({event.type!r}):"
                               " it was not stored; publish it again later") from exc

        await self._reconnecting(link, f"publish event {event.message_id} ({event.type!r})",
                                 send)

    async def subscribe(self, event_type: str, handler: Handler, *, group: str = "default"
                        ) -> None:
        """Consume `event_type` events from the queue `<prefix>.<group>.<event_type>`."""
        if not event_type or "*" in event_type or "#" in event_type:
            raise BusError(f"event type {event_type!r} cannot be subscribed to: it must be "
                           "non-empty and have no '*' or '#' (types are matched exactly)")
        link = await self._open()
        channel = link.consumer
        name = f"{self.prefix}.{group}.{event_type}"

        async def on_message(message: AbstractIncomingMessage) -> None:
            await self._on_message(link, handler, name, message)

        async def declare() -> None:
            await channel.declare_exchange(self.exchange, aio_pika.ExchangeType.TOPIC,
                                           durable=True)
            queue = self._queues.get(name)
            if queue is None:
                queue = await channel.declare_queue(name, durable=True, arguments=_QUORUM)
                await queue.bind(self.exchange, routing_key=event_type)
                self._queues[name] = queue
            self._tags.append((queue, await queue.consume(on_message)))

        await self._reconnecting(link, f"subscribe to {event_type!r}", declare)

    async def close(self) -> None:
        """Close the connection; handlers still running are cancelled, their events redelivered."""
        self._closed = True
        async with self._lock:
            if self._link is not None:
                await self._link.connection.close()

    async def take_dead_letters(self) -> list[tuple[Event | bytes, str]]:
        """Remove and return the dead letters: (the event, or the raw body if none; the error)."""
        link = await self._open()
        letters: list[tuple[Event | bytes, str]] = []
        while (message := await link.dead.get(fail=False)) is not None:
            error = _text((message.headers or {}).get("x-statesaga-error"))
            try:
                letters.append((Event.from_json(message.body), error))
            except Exception:
                letters.append((message.body, error))
            await message.ack()
        return letters

    async def drain(self) -> None:
        """Wait until this bus's queues hold no ready message and no handler runs (for tests)."""
        quiet = 0
        while quiet < 3:
            await asyncio.sleep(0.05)
            ready = 0
            try:
                for queue in self._queues.values():
                    ready += (await queue.declare()).message_count or 0
            except CONNECTION_EXCEPTIONS:  # reconnecting: not drained yet
                ready = -1
            quiet = quiet + 1 if ready == 0 and self._running == 0 else 0  # 3 quiet looks in a row

    async def delete_everything(self, queues: Iterable[str] = ()) -> None:
        """Delete the exchange, `<prefix>.dead`, this bus's queues and `queues`; then close."""
        link = await self._open()
        for queue, tag in self._tags:
            await queue.cancel(tag)
        for name in list(self._queues):
            await link.consumer.queue_delete(name)
        self._queues.clear()
        for name in {*queues, self.dead_queue}:
            await link.publisher.queue_delete(name)
        await link.publisher.exchange_delete(self.exchange)
        await self.close()

    async def _reconnecting(self, link: _Link, what: str,
                            operation: Callable[[], Awaitable[_T]]) -> _T:
        """Run `operation`, again after a reconnection if the connection was lost meanwhile."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.reconnect_timeout
        pause = 0.05
        while True:
            try:
                return await operation()
            except AMQPChannelError as exc:  # the broker said no: retrying will not help
                raise BusError(f"cannot {what}: RabbitMQ refused ({describe(exc)}); a queue or "
                               "exchange of that name may exist with other settings") from exc
            except (*CONNECTION_EXCEPTIONS, TimeoutError) as exc:  # lost, or stuck writing
                if self._closed:
                    raise BusError(f"cannot {what}: {self!r} is closed") from exc
                if loop.time() + pause > deadline:
                    raise BusError(
                        f"cannot {what}: RabbitMQ at {redact(self.url)} has been unreachable "
                        f"for {self.reconnect_timeout:g} s ({describe(exc)}); start the "
                        "broker, or raise reconnect_timeout") from exc
                _log.warning("bus.reconnecting", url=redact(self.url), error=describe(exc))
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)
                try:
                    await asyncio.wait_for(link.publisher.ready(),
                                           max(deadline - loop.time(), 0.01))
                except TimeoutError:
                    continue

    async def _on_message(self, link: _Link, handler: Handler, queue: str,
                          message: AbstractIncomingMessage) -> None:
        self._running += 1
        try:
            await self._handle(link, handler, queue, message)
        except Exception as exc:  # the ack, nack or dead letter failed: leave it to the broker
            _log.warning("bus.ack_failed", message_id=message.message_id, queue=queue,
                         error=describe(exc))
            try:
                await message.nack(requeue=True)
            except Exception:  # the channel is gone: the broker redelivers anyway
                _log.debug("bus.nack_failed", message_id=message.message_id, queue=queue)
        finally:
            self._running -= 1

    async def _handle(self, link: _Link, handler: Handler, queue: str,
                      message: AbstractIncomingMessage) -> None:
        deliveries = _delivery_count(message) + 1
        try:
            event = Event.from_json(message.body)
        except Exception as exc:
            error = f"not an event: {describe(exc)}"
            await self._dead_letter(link, message, queue, error, deliveries)
            return
        if deliveries > self.max_deliveries:
            await self._dead_letter(
                link, message, queue, f"delivered {deliveries - 1} times without an ack: its "
                "consumers died or lost the broker before the handler returned", deliveries - 1)
            return
        try:
            await call_handler(handler, event)
        except Exception as exc:
            if deliveries >= self.max_deliveries or isinstance(exc, UndeliverableEvent):
                await self._dead_letter(link, message, queue, describe(exc), deliveries)
                return
            _log.warning("bus.redelivery", message_id=event.message_id, type=event.type,
                         queue=queue, deliveries=deliveries, error=describe(exc))
            await message.nack(requeue=True)
            return
        await message.ack()

    async def _dead_letter(self, link: _Link, message: AbstractIncomingMessage, queue: str,
                           error: str, deliveries: int) -> None:
        """Republish `message` to the dead-letter queue with the error, then ack it."""
        headers: dict[str, Any] = dict(message.headers or {})
        headers.update({"x-statesaga-error": error[:2000], "x-statesaga-queue": queue,
                        "x-statesaga-deliveries": deliveries})
        dead = aio_pika.Message(
            message.body, headers=headers, delivery_mode=_PERSISTENT,
            message_id=message.message_id, correlation_id=message.correlation_id,
            type=message.type, content_type=message.content_type, app_id="statesaga")
        await link.publisher.default_exchange.publish(dead, routing_key=self.dead_queue,
                                                       mandatory=False)
        await message.ack()
        _log.error("bus.dead_letter", message_id=message.message_id, type=message.routing_key,
                   queue=queue, deliveries=deliveries, error=error)


def _delivery_count(message: AbstractIncomingMessage) -> int:
    """How many times the broker delivered `message` before, without an ack."""
    count = (message.headers or {}).get("x-delivery-count", 0)
    return count if isinstance(count, int) else 0


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return "" if value is None else str(value)
