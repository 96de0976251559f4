"""Dead letters straight from the broker (queue_state.dead_letters): listing, requeue, delete,
exactly once under races, on Stub, Redis and RabbitMQ with a real worker."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import dramatiq
import pytest
from opentelemetry import trace

from opentelemetry_instrumentation_dramatiq_cfg import semconv
from opentelemetry_instrumentation_dramatiq_cfg.queue_state.dead_letters import (
    REQUEUES_OPTION,
    ActionResult,
    DeadLetters,
    UnknownQueue,
    dead_letters_for_broker,
)

from .conftest import BROKER_KINDS, spans_named, wait_processed

pytestmark = pytest.mark.parametrize("broker_kind", BROKER_KINDS)


def wait_for(predicate: Callable[[], object], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


class Doomed:
    """An actor that fails for good (no retry) until ``fix()``; then records what it processed."""

    def __init__(self, queue_name: str) -> None:
        self.fixed = threading.Event()
        self.processed: list[int] = []
        #: Numbers in the order their message failed (Dramatiq 1.x does not run messages in send order).
        self.failed: list[int] = []
        self._lock = threading.Lock()

        @dramatiq.actor(queue_name=queue_name, max_retries=0)
        def settle_invoice(number: int, note: str = "") -> None:
            if not self.fixed.is_set():
                time.sleep(0.002)  # Redis records deaths in ms: one thread's deaths never share one
                with self._lock:
                    self.failed.append(number)
                raise ValueError(f"invoice {number} is locked")
            with self._lock:
                self.processed.append(number)

        self.actor = settle_invoice

    def kill(self, dead: DeadLetters, count: int) -> list[Any]:
        """Send ``count`` messages and wait until every one is dead; their messages, in send order."""
        sent = [self.actor.send(number) for number in range(count)]
        wait_for(lambda: dead.page(self.actor.queue_name, limit=1).total == count)
        return sent

    def newest_first(self, sent: list[Any]) -> list[str]:
        """Message ids of ``sent``, the last to fail first (with one worker thread, the order they died)."""
        by_number = {message.args[0]: message.message_id for message in sent}
        return [by_number[number] for number in reversed(self.failed)]

    def fix(self) -> None:
        self.fixed.set()


def all_letters(dead: DeadLetters, queue_name: str) -> list[Any]:
    page = dead.page(queue_name, 0, 500)
    assert page.total == len(page.letters)
    return list(page.letters)


def test_dead_letters_are_listed_newest_first_page_by_page(broker, queue_name, start_worker):
    dead = dead_letters_for_broker(broker)
    doomed = Doomed(queue_name)
    start_worker(threads=1)  # one thread: messages die in the order they were sent
    sent = doomed.kill(dead, 7)

    first, second, last = (dead.page(queue_name, offset, 3) for offset in (0, 3, 6))
    assert [page.total for page in (first, second, last)] == [7, 7, 7]
    listed = [letter for page in (first, second, last) for letter in page.letters]
    assert [letter.message_id for letter in listed] == doomed.newest_first(sent)
    letter = listed[0]
    assert (letter.actor_name, letter.queue_name, letter.message.args) == (
        "settle_invoice",
        queue_name,
        (doomed.failed[-1],),
    )
    # Redis and RabbitMQ keep the payload as it was enqueued; the stub broker keeps the message object
    # whose options the Retries middleware updated on the last attempt
    assert letter.retries == (1 if broker_kind_of(broker) == "stub" else 0)
    if broker_kind_of(broker) != "stub":  # the stub broker does not record when a message died
        assert letter.died_at is not None and abs(letter.died_at - time.time()) < 60
    assert dead.page(queue_name, 7, 3).letters == ()


def broker_kind_of(broker: Any) -> str:
    return {"StubBroker": "stub", "RedisBroker": "redis", "RabbitmqBroker": "rabbitmq"}[type(broker).__name__]


def test_a_requeued_message_runs_again_in_its_original_trace_with_retries_reset(
    broker, queue_name, start_worker, span_exporter
):
    dead = dead_letters_for_broker(broker)
    doomed = Doomed(queue_name)
    worker = start_worker(threads=1)
    (sent,) = doomed.kill(dead, 1)
    (letter,) = all_letters(dead, queue_name)
    doomed.fix()

    result = dead.requeue(queue_name, [letter.key])
    assert result == ActionResult(done=(letter.key,))
    wait_for(lambda: doomed.processed == [0])
    wait_processed(broker, queue_name, worker)
    assert dead.page(queue_name).total == 0

    (send,) = spans_named(span_exporter, f"send {queue_name}")
    failed, succeeded = sorted(
        spans_named(span_exporter, f"process {queue_name}"), key=lambda s: s.start_time
    )
    assert send.context.trace_id == failed.context.trace_id == succeeded.context.trace_id
    assert succeeded.parent.span_id == send.context.span_id
    assert succeeded.attributes[semconv.MESSAGING_MESSAGE_ID] == sent.message_id
    assert succeeded.attributes[semconv.DRAMATIQ_RETRY_COUNT] == 0
    assert succeeded.attributes[semconv.DRAMATIQ_REQUEUES] == 1
    assert semconv.DRAMATIQ_REQUEUES not in failed.attributes
    assert trace.format_trace_id(send.context.trace_id) == letter.trace_id


def test_a_message_requeued_twice_counts_both_requeues(broker, queue_name, start_worker):
    dead = dead_letters_for_broker(broker)
    doomed = Doomed(queue_name)
    start_worker(threads=1)
    doomed.kill(dead, 1)
    for expected in (1, 2):
        (letter,) = all_letters(dead, queue_name)
        assert letter.options.get(REQUEUES_OPTION, 0) == expected - 1
        assert dead.requeue(queue_name, [letter.key]).done == (letter.key,)
        wait_for(lambda: dead.page(queue_name).total == 1)  # it fails again
    (letter,) = all_letters(dead, queue_name)
    assert letter.options[REQUEUES_OPTION] == 2


def test_delete_removes_only_the_chosen_messages(broker, queue_name, start_worker):
    dead = dead_letters_for_broker(broker)
    doomed = Doomed(queue_name)
    start_worker(threads=2)
    doomed.kill(dead, 4)
    letters = all_letters(dead, queue_name)
    chosen = [letters[0].key, letters[2].key]
    assert dead.delete(queue_name, chosen) == ActionResult(done=tuple(chosen))
    assert [letter.key for letter in all_letters(dead, queue_name)] == [letters[1].key, letters[3].key]
    assert sorted(dead.delete(queue_name, None).done) == sorted([letters[1].key, letters[3].key])
    assert dead.page(queue_name).total == 0


def test_messages_that_are_not_there_any_more_change_nothing(broker, queue_name, start_worker):
    dead = dead_letters_for_broker(broker)
    doomed = Doomed(queue_name)
    start_worker(threads=1)
    doomed.kill(dead, 2)
    letters = all_letters(dead, queue_name)
    assert dead.delete(queue_name, [letters[0].key]).done == (letters[0].key,)
    again = dead.requeue(queue_name, [letters[0].key, "no-such-message"])
    assert again == ActionResult(missing=(letters[0].key, "no-such-message"))
    assert dead.delete(queue_name, ["no-such-message"]) == ActionResult(missing=("no-such-message",))
    assert [letter.key for letter in all_letters(dead, queue_name)] == [letters[1].key]


def test_unknown_queues_and_bad_windows_are_refused(broker, queue_name):
    dead = dead_letters_for_broker(broker)
    broker.declare_queue(queue_name)
    for call in (
        lambda: dead.page(f"{queue_name}-nope"),
        lambda: dead.requeue(f"{queue_name}-nope", None),
        lambda: dead.delete(f"{queue_name}-nope", ["x"]),
        lambda: dead.page(f"{queue_name}.XQ"),
    ):
        with pytest.raises(UnknownQueue, match=r"nope|XQ"):
            call()
    for offset, limit in ((-1, 10), (0, 0), (0, 501), (True, 10)):
        with pytest.raises(ValueError, match=r"offset|limit"):
            dead.page(queue_name, offset, limit)
    assert dead.page(queue_name).total == 0


def test_two_requeues_and_a_delete_racing_move_each_message_exactly_once(broker, queue_name, start_worker):
    """Three admins act on overlapping selections of 300 dead messages while a worker consumes the
    queue: every message ends processed once, deleted, or still dead, and each action's report says
    which."""
    count = 300
    dead = dead_letters_for_broker(broker, timeout=30)
    doomed = Doomed(queue_name)
    worker = start_worker(threads=4)
    doomed.kill(dead, count)
    letters = all_letters(dead, queue_name)
    number = {letter.key: letter.message.args[0] for letter in letters}
    keys = [letter.key for letter in letters]
    doomed.fix()

    selections = {"requeue-a": keys[0:200], "requeue-b": keys[100:300], "delete": keys[50:250]}
    results: dict[str, ActionResult] = {}
    start = threading.Barrier(len(selections))

    def act(name: str) -> None:
        other = dead_letters_for_broker(broker, timeout=30)  # each admin: its own connection
        start.wait()
        action = other.delete if name == "delete" else other.requeue
        results[name] = action(queue_name, selections[name])

    threads = [threading.Thread(target=act, args=(name,)) for name in selections]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert set(results) == set(selections)

    for name, result in results.items():  # each report accounts for its whole selection, once
        assert sorted(result.done + result.missing) == sorted(selections[name]), name
        assert result.undecodable == ()
    requeued = results["requeue-a"].done + results["requeue-b"].done
    deleted = results["delete"].done
    assert len(set(requeued)) == len(requeued) and not set(requeued) & set(deleted)

    wait_for(lambda: len(doomed.processed) >= len(requeued))
    wait_processed(broker, queue_name, worker)
    remaining = [letter.key for letter in all_letters(dead, queue_name)]
    assert Counter(doomed.processed) == Counter(number[key] for key in requeued)  # each once
    assert sorted(remaining) == sorted(set(keys) - set(requeued) - set(deleted))
    assert len(requeued) + len(deleted) + len(remaining) == count


def test_upstream_redis_and_rabbitmq_keep_the_dead_message_as_last_enqueued(broker_kind, namespace):
    """A repro with Dramatiq alone (no code of this package, no instrumentation): Redis and RabbitMQ
    dead-letter the payload as it was last enqueued — ``retries`` and ``traceback`` of the attempt
    before the last — while the StubBroker keeps the message object the last attempt updated. The
    dead-letter pages' *Retries* and fallback *Error* columns rest on this."""
    from dramatiq.common import xq_name

    from .conftest import cleanup_broker, make_broker

    broker = make_broker(broker_kind, namespace)
    dramatiq.set_broker(broker)
    queue_name = f"{namespace}-plain"

    @dramatiq.actor(queue_name=queue_name, max_retries=1, min_backoff=1, max_backoff=1)
    def always_fails(number):
        raise ValueError(f"attempt failed for {number}")

    always_fails.send(1)
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=50)
    worker.start()
    try:

        def dead_payloads() -> list[bytes]:
            if broker_kind == "stub":
                return [proxy._message.encode() for proxy in broker.dead_letters_by_queue[queue_name]]
            if broker_kind == "redis":
                return list(broker.client.hvals(f"{namespace}:{queue_name}.XQ.msgs"))
            method, _, body = broker.channel.basic_get(xq_name(queue_name))
            if method is None:
                return []
            broker.channel.basic_nack(method.delivery_tag, requeue=True)
            return [body]

        payloads: list[bytes] = []

        def died() -> bool:
            payloads[:] = dead_payloads()
            return bool(payloads)

        wait_for(died)
    finally:
        worker.stop()
    (message,) = [dramatiq.Message.decode(payload) for payload in payloads]
    if broker_kind == "stub":
        assert message.options["retries"] == 2
    else:
        assert message.options["retries"] == 1
        assert message.options["traceback"].strip().endswith("ValueError: attempt failed for 1")
    cleanup_broker(broker, namespace)


def test_requeue_all_while_others_read_the_pages_moves_every_dead_message(broker, queue_name, start_worker):
    """Two admins page through 300 dead letters while a third requeues them all. On RabbitMQ a page
    read holds the messages it reads: the requeue still moves every one (it used to count only the
    ready ones, stop there and say nothing of the rest: ``done 0, missing 0``, all still dead)."""
    count = 300
    dead = dead_letters_for_broker(broker, timeout=30)
    doomed = Doomed(queue_name)
    worker = start_worker(threads=4)
    doomed.kill(dead, count)
    keys = [letter.key for letter in all_letters(dead, queue_name)]
    doomed.fix()

    stop = threading.Event()
    reads: Counter[int] = Counter()
    errors: list[BaseException] = []

    def read_pages(reader: int) -> None:
        other = dead_letters_for_broker(broker, timeout=30)  # each admin: its own connection
        try:
            while not stop.is_set():
                other.page(queue_name, 0, 50)
                reads[reader] += 1
        except BaseException as exc:
            errors.append(exc)

    readers = [threading.Thread(target=read_pages, args=(reader,)) for reader in range(2)]
    for thread in readers:
        thread.start()
    try:
        wait_for(lambda: min(reads[0], reads[1]) >= 3 or errors)  # both paging, over and over
        result = dead.requeue(queue_name, None)
    finally:
        stop.set()
        for thread in readers:
            thread.join(60)
    assert errors == []
    assert sorted(result.done) == sorted(keys)
    assert (result.missing, result.undecodable, result.held_elsewhere) == ((), (), False)
    wait_for(lambda: len(doomed.processed) >= count)
    wait_processed(broker, queue_name, worker)
    assert sorted(doomed.processed) == list(range(count))  # each once
    assert dead.page(queue_name).total == 0
