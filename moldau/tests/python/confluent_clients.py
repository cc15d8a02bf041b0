"""confluent-kafka (librdkafka) against `moldau serve`: admin, producer, consumer, offsets by time.

Usage: confluent_clients.py BOOTSTRAP. Exits non-zero (an AssertionError) on any difference from
what a Kafka broker would give; prints one summary line on success.
"""
import sys
import time
import zlib

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

bootstrap = sys.argv[1]
topic = "orders"
partitions = 4

admin = AdminClient({"bootstrap.servers": bootstrap})
for name, future in admin.create_topics([NewTopic(topic, partitions, 1)]).items():
    future.result(timeout=10)
again = admin.create_topics([NewTopic(topic, partitions, 1)])[topic]
try:
    again.result(timeout=10)
    raise AssertionError("creating an existing topic succeeded")
except Exception as e:  # KafkaException(TOPIC_ALREADY_EXISTS)
    assert e.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS, e
listed = admin.list_topics(timeout=10)
assert len(listed.topics[topic].partitions) == partitions, listed.topics

# librdkafka's default partitioner, consistent_random: CRC-32 of the key modulo the partition
# count (random for null keys).
delivered = {}
errors = []


def on_delivery(err, msg):
    if err is not None:
        errors.append(err)
    else:
        delivered[(msg.key(), msg.value())] = (msg.partition(), msg.offset())


producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
base_ts = 1_700_000_000_000
count = 200
for i in range(count):
    key = b"customer-%d" % (i % 37)
    producer.produce(topic, key=key, value=b"order-%d" % i, timestamp=base_ts + i, on_delivery=on_delivery)
producer.produce(topic, key=None, value=b"no-key", timestamp=base_ts + count, on_delivery=on_delivery)
assert producer.flush(30) == 0, "undelivered messages"
assert not errors, errors
assert len(delivered) == count + 1
for (key, value), (partition, offset) in delivered.items():
    if key is not None:
        assert partition == zlib.crc32(key) % partitions, (key, partition)
    assert offset >= 0

# Consume everything from the beginning, by assignment.
consumer = Consumer({
    "bootstrap.servers": bootstrap,
    "group.id": "confluent-test",
    "enable.auto.commit": False,
    "fetch.wait.max.ms": 100,
})
consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
consumed = {}
deadline = time.time() + 30
while len(consumed) < len(delivered) and time.time() < deadline:
    msg = consumer.poll(0.5)
    if msg is None:
        continue
    assert msg.error() is None, msg.error()
    consumed[(msg.key(), msg.value())] = (msg.partition(), msg.offset())
    assert msg.timestamp()[1] >= base_ts
assert consumed == delivered, (len(consumed), len(delivered))

# Offsets by timestamp (ListOffsets): the first record at or after the time.
probe = [TopicPartition(topic, p, base_ts + 100) for p in range(partitions)]
found = consumer.offsets_for_times(probe, timeout=10)
for tp in found:
    expected = min(
        (off for (k, v), (p, off) in delivered.items()
         if p == tp.partition and v.startswith(b"order-") and int(v[6:]) >= 100),
        default=None,
    )
    if expected is None:
        # No record that recent: Kafka's -1 (librdkafka: OFFSET_END).
        assert tp.offset < 0, tp
    else:
        assert tp.offset == expected, (tp, expected)
for p in range(partitions):
    low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
    assert low == 0
    assert high == sum(1 for (_, (q, _)) in delivered.items() if q == p), (p, high)
consumer.close()

# An idempotent producer (InitProducerId, then sequence numbers the log checks): every record
# delivered once, at consecutive offsets of the one partition.
admin.create_topics([NewTopic("receipts", 1, 1)])["receipts"].result(timeout=10)
idempotent = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
receipts = []
for i in range(100):
    idempotent.produce("receipts", value=b"r%d" % i,
                       on_delivery=lambda err, msg: receipts.append((err, msg.offset())))
assert idempotent.flush(30) == 0
assert [e for e, _ in receipts if e is not None] == [], receipts
assert sorted(o for _, o in receipts) == list(range(100)), receipts

print("confluent-kafka ok: %d produced and consumed over %d partitions" % (len(delivered), partitions))
