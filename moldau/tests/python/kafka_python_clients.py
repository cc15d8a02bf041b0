"""kafka-python against `moldau serve`: admin, producer, consumer, offsets by time.

Usage: kafka_python_clients.py BOOTSTRAP. Prints one `partition KEY PARTITION` line per distinct
key (the Rust test checks them against Kafka's murmur2 partitioner), then a summary line.
"""
import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

bootstrap = sys.argv[1]
topic = "clicks"
partitions = 3

admin = KafkaAdminClient(bootstrap_servers=bootstrap)
admin.create_topics([NewTopic(topic, partitions, 1)])
assert topic in admin.list_topics()
admin.close()

producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
base_ts = 1_600_000_000_000
count = 150
futures = []
for i in range(count):
    key = b"user-%d" % (i % 23)
    futures.append((key, b"click-%d" % i, producer.send(topic, key=key, value=b"click-%d" % i, timestamp_ms=base_ts + i)))
producer.flush(30)
delivered = {}
key_partition = {}
for key, value, future in futures:
    meta = future.get(timeout=30)
    delivered[(key, value)] = (meta.partition, meta.offset)
    assert key_partition.setdefault(key, meta.partition) == meta.partition
producer.close()

consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100)
tps = [TopicPartition(topic, p) for p in range(partitions)]
consumer.assign(tps)
consumer.seek_to_beginning(*tps)
consumed = {}
deadline = time.time() + 30
while len(consumed) < len(delivered) and time.time() < deadline:
    for tp, messages in consumer.poll(timeout_ms=500).items():
        for m in messages:
            consumed[(m.key, m.value)] = (m.partition, m.offset)
            assert m.timestamp == base_ts + int(m.value[6:])
assert consumed == delivered, (len(consumed), len(delivered))

found = consumer.offsets_for_times({tp: base_ts + 120 for tp in tps})
for tp, offset_and_ts in found.items():
    expected = [(off, int(v[6:])) for (k, v), (p, off) in delivered.items() if p == tp.partition and int(v[6:]) >= 120]
    if not expected:
        assert offset_and_ts is None, (tp, offset_and_ts)
    else:
        off, i = min(expected)
        assert offset_and_ts.offset == off and offset_and_ts.timestamp == base_ts + i, (tp, offset_and_ts)
ends = consumer.end_offsets(tps)
assert sum(ends.values()) == count, ends
consumer.close()

# An idempotent producer (InitProducerId, then sequence numbers the log checks).
admin = KafkaAdminClient(bootstrap_servers=bootstrap)
admin.create_topics([NewTopic("receipts", 1, 1)])
admin.close()
idempotent = KafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
offsets = [f.get(timeout=30).offset for f in [idempotent.send("receipts", value=b"r%d" % i) for i in range(60)]]
idempotent.close()
assert sorted(offsets) == list(range(60)), offsets

for key, partition in sorted(key_partition.items()):
    print("partition %s %d" % (key.decode(), partition))
print("kafka-python ok: %d produced and consumed over %d partitions" % (count, partitions))
