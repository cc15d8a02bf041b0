"""kafka-python transactions against `moldau serve`: a committed and an aborted transaction,
seen by read_committed and read_uncommitted consumers as Kafka's would show them.

Usage: kafka_python_transactions.py BOOTSTRAP. Prints one summary line on success.
"""
import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

bootstrap = sys.argv[1]
topic = "orders-txn"
admin = KafkaAdminClient(bootstrap_servers=bootstrap)
admin.create_topics([NewTopic(topic, 2, 1)])
admin.close()

producer = KafkaProducer(bootstrap_servers=bootstrap, transactional_id="order-writer")
producer.init_transactions()
producer.begin_transaction()
for i in range(20):
    producer.send(topic, key=b"%d" % (i % 4), value=b"kept-%d" % i)
producer.commit_transaction()
producer.begin_transaction()
for i in range(7):
    producer.send(topic, key=b"%d" % (i % 4), value=b"dropped-%d" % i)
producer.flush()
producer.abort_transaction()
producer.begin_transaction()
for i in range(3):
    producer.send(topic, key=b"%d" % (i % 4), value=b"kept-late-%d" % i)
producer.commit_transaction()
producer.close()


def read(isolation, expected):
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, isolation_level=isolation,
                             enable_auto_commit=False, fetch_max_wait_ms=100)
    tps = [TopicPartition(topic, p) for p in range(2)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    values = []
    deadline = time.time() + 30
    while len(values) < expected and time.time() < deadline:
        for _, messages in consumer.poll(timeout_ms=200).items():
            values.extend(m.value.decode() for m in messages)
    # Nothing more arrives.
    for _, messages in consumer.poll(timeout_ms=1000).items():
        values.extend(m.value.decode() for m in messages)
    consumer.close()
    return values


committed = read("read_committed", 23)
assert sorted(committed) == sorted(["kept-%d" % i for i in range(20)] + ["kept-late-%d" % i for i in range(3)]), committed
everything = read("read_uncommitted", 30)
assert len(everything) == 30 and sum(v.startswith("dropped-") for v in everything) == 7, everything
print("kafka-python transactions ok: 23 committed, 7 aborted")
