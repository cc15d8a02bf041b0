"""confluent-kafka (librdkafka) transactions against `moldau serve`: commit and abort,
read_committed vs read_uncommitted consumers, a consume-transform-produce copy whose consumer
offsets commit with its output, and fencing of an older producer instance.

Usage: confluent_transactions.py BOOTSTRAP. Prints one summary line on success.
"""
import sys
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

bootstrap = sys.argv[1]
admin = AdminClient({"bootstrap.servers": bootstrap})
for f in admin.create_topics([NewTopic("ledger", 2, 1), NewTopic("input", 2, 1), NewTopic("output", 2, 1)]).values():
    f.result(timeout=10)


def read_all(topic, isolation, expected):
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "reader",
        "isolation.level": isolation,
        "enable.auto.commit": False,
        "fetch.wait.max.ms": 100,
    })
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(2)])
    values = []
    deadline = time.time() + 30
    while time.time() < deadline and len(values) < expected:
        msg = c.poll(0.2)
        if msg is None:
            continue
        assert msg.error() is None, msg.error()
        values.append(msg.value().decode())
    # Nothing more arrives (an aborted record would show up here).
    extra = c.poll(1.0)
    assert extra is None or extra.error() is not None, extra.value()
    c.close()
    return values


producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": "ledger-writer"})
producer.init_transactions(10)
producer.begin_transaction()
for i in range(10):
    producer.produce("ledger", key=b"k%d" % (i % 3), value=b"committed-%d" % i)
producer.commit_transaction(10)
producer.begin_transaction()
for i in range(10):
    producer.produce("ledger", key=b"k%d" % (i % 3), value=b"aborted-%d" % i)
# Appended first (an abort would otherwise drop them unsent), then aborted.
assert producer.flush(10) == 0
producer.abort_transaction(10)
producer.begin_transaction()
for i in range(5):
    producer.produce("ledger", key=b"k%d" % (i % 3), value=b"later-%d" % i)
producer.commit_transaction(10)

committed = read_all("ledger", "read_committed", 15)
expected = ["committed-%d" % i for i in range(10)] + ["later-%d" % i for i in range(5)]
assert sorted(committed) == sorted(expected), committed
uncommitted = read_all("ledger", "read_uncommitted", 25)
assert len(uncommitted) == 25 and sum(v.startswith("aborted-") for v in uncommitted) == 10, uncommitted

# A newer instance with the same transactional.id fences the old one.
zombie = producer
newer = Producer({"bootstrap.servers": bootstrap, "transactional.id": "ledger-writer"})
newer.init_transactions(10)
try:
    zombie.begin_transaction()
    zombie.produce("ledger", value=b"zombie")
    zombie.commit_transaction(10)
    raise AssertionError("the fenced producer committed")
except KafkaException as e:
    assert e.args[0].fatal(), e
newer.begin_transaction()
newer.produce("ledger", value=b"newer")
newer.commit_transaction(10)
after = read_all("ledger", "read_committed", 16)
assert "newer" in after and "zombie" not in after, after

# Consume-transform-produce: the copier's consumer offsets commit with its output.
feeder = Producer({"bootstrap.servers": bootstrap})
for i in range(40):
    feeder.produce("input", key=b"%d" % i, value=b"%d" % i)
assert feeder.flush(30) == 0
consumer = Consumer({
    "bootstrap.servers": bootstrap,
    "group.id": "copier",
    "auto.offset.reset": "earliest",
    "enable.auto.commit": False,
    "isolation.level": "read_committed",
    "fetch.wait.max.ms": 100,
})
consumer.subscribe(["input"])
copier = Producer({"bootstrap.servers": bootstrap, "transactional.id": "copier-1"})
copier.init_transactions(10)
copied = 0
deadline = time.time() + 60
while copied < 40 and time.time() < deadline:
    msgs = [m for m in consumer.consume(num_messages=10, timeout=0.5) if m.error() is None]
    if not msgs:
        continue
    copier.begin_transaction()
    for m in msgs:
        copier.produce("output", key=m.key(), value=b"copy-" + m.value())
    copier.send_offsets_to_transaction(consumer.position(consumer.assignment()),
                                       consumer.consumer_group_metadata(), 10)
    copier.commit_transaction(10)
    copied += len(msgs)
assert copied == 40, copied
committed_offsets = consumer.committed([TopicPartition("input", p) for p in range(2)], timeout=10)
assert sum(tp.offset for tp in committed_offsets) == 40, committed_offsets
consumer.close()
outputs = read_all("output", "read_committed", 40)
assert sorted(outputs) == sorted("copy-%d" % i for i in range(40)), outputs

print("confluent-kafka transactions ok: commit, abort, fencing, consume-transform-produce")
