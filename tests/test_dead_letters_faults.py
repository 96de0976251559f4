"""Dead letters and a connection that drops in the middle of a requeue (Redis, RabbitMQ; the stub
broker has no connection): each message stays in exactly one place."""

from __future__ import annotations

from typing import Any

import dramatiq
import pytest

from opentelemetry_instrumentation_dramatiq_cfg.queue_state.dead_letters import (
    DeadLetters,
    dead_letters_for_broker,
)

from .test_dead_letters import Doomed, all_letters, broker_kind_of


def pending(broker: Any, queue_name: str) -> int:
    from opentelemetry_instrumentation_dramatiq_cfg.queue_state import reader_for_broker

    return reader_for_broker(broker).read([queue_name]).queues[0].pending


def drop_connection(broker: Any, dead: DeadLetters, monkeypatch: pytest.MonkeyPatch, *, after: bool) -> None:
    """Make the next requeue lose its connection at its last step: before the move reaches the
    broker (``after=False``) or once the broker did it, before the answer comes back (``after=True``)."""
    if broker_kind_of(broker) == "redis":
        import redis

        move = dead._requeue  # type: ignore[attr-defined]

        def dropped(*args: Any, **kwargs: Any) -> Any:
            if after:
                move(*args, **kwargs)
            raise redis.ConnectionError("Connection reset by peer")

        monkeypatch.setattr(dead, "_requeue", dropped)
    else:
        import pika.exceptions
        from pika.adapters.blocking_connection import BlockingChannel

        commit = BlockingChannel.tx_commit

        def dropped(channel: Any) -> Any:
            if after:
                commit(channel)
            channel.connection.close()
            raise pika.exceptions.StreamLostError("Transport indicated EOF")

        monkeypatch.setattr(BlockingChannel, "tx_commit", dropped)


@pytest.mark.parametrize("broker_kind", ["redis", "rabbitmq"])
@pytest.mark.parametrize("after", [False, True], ids=["before-the-move", "after-the-move"])
def test_a_connection_dropped_mid_requeue_leaves_each_message_in_one_place(
    broker, queue_name, start_worker, monkeypatch, after
):
    from opentelemetry_instrumentation_dramatiq_cfg.queue_state import BrokerUnavailable

    dead = dead_letters_for_broker(broker)
    doomed = Doomed(queue_name)
    worker = start_worker(threads=2)
    doomed.kill(dead, 5)
    worker.stop()
    keys = [letter.key for letter in all_letters(dead, queue_name)]

    drop_connection(broker, dead, monkeypatch, after=after)
    with pytest.raises(BrokerUnavailable, match="could not requeue"):
        dead.requeue(queue_name, keys[:3])
    monkeypatch.undo()

    moved = 3 if after else 0
    assert pending(broker, queue_name) == moved
    assert sorted(letter.key for letter in all_letters(dead, queue_name)) == sorted(
        keys[moved:] if after else keys
    )
    again = dead_letters_for_broker(broker).requeue(queue_name, keys[:3])  # the admin tries again
    assert (len(again.done), len(again.missing)) == ((0, 3) if after else (3, 0))
    assert pending(broker, queue_name) == 3 and dead.page(queue_name).total == 2


@pytest.mark.parametrize("broker_kind", ["rabbitmq"])
def test_no_requeue_into_a_rabbitmq_queue_that_does_not_exist(broker, queue_name, start_worker):
    """RabbitMQ drops a message published to no queue: the requeue refuses and moves nothing."""
    from dramatiq.common import xq_name

    from opentelemetry_instrumentation_dramatiq_cfg.queue_state.dead_letters import UnknownQueue

    dead = dead_letters_for_broker(broker)
    doomed = Doomed(queue_name)
    worker = start_worker(threads=1)
    doomed.kill(dead, 2)
    worker.stop()
    broker.channel.queue_delete(queue_name)
    with pytest.raises(UnknownQueue, match="does not exist on RabbitMQ"):
        dead.requeue(queue_name, None)
    assert dead.page(queue_name).total == 2
    dead_letter_route = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": xq_name(queue_name)}
    broker.channel.queue_declare(queue_name, durable=True, arguments=dead_letter_route)  # for the clean-up


@pytest.mark.parametrize("broker_kind", ["rabbitmq"])
@pytest.mark.parametrize("scope", ["all", "selected"])
def test_messages_another_connection_keeps_holding_are_reported(broker, queue_name, start_worker, scope):
    """A reader of ``Q.XQ`` that does not give its messages back (not one of our pages): an action
    waits for them a while, then acts on the others and says that some were held elsewhere."""
    import pika

    from .conftest import RABBITMQ

    dead = dead_letters_for_broker(broker)
    doomed = Doomed(queue_name)
    worker = start_worker(threads=2)
    doomed.kill(dead, 6)
    worker.stop()
    keys = [letter.key for letter in all_letters(dead, queue_name)]

    holder = pika.BlockingConnection(pika.ConnectionParameters(*RABBITMQ))
    try:
        channel = holder.channel()
        channel.basic_qos(prefetch_count=2)
        held: list[str] = []
        for method, _, body in channel.consume(f"{queue_name}.XQ", inactivity_timeout=30):
            assert method is not None
            held.append(dramatiq.Message.decode(body).message_id)
            if len(held) == 2:
                break
        result = dead.delete(queue_name, None if scope == "all" else keys)
        assert result.held_elsewhere is True
        assert sorted(result.done) == sorted(set(keys) - set(held))
        assert sorted(result.missing) == ([] if scope == "all" else sorted(held))
    finally:
        holder.close()  # gives them back
    assert sorted(letter.key for letter in all_letters(dead, queue_name)) == sorted(held)
