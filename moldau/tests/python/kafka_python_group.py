"""kafka-python consumer groups against `moldau serve`: subscribe, read everything, commit, and
a new member of the group resumes from the committed offsets.

Usage: kafka_python_group.py BOOTSTRAP. Prints one summary line on success.
"""
import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic

bootstrap = sys.argv[1]
topic = "visits"
group = "visit-counter"

admin = KafkaAdminClient(bootstrap_servers=bootstrap)
admin.create_topics([NewTopic(topic, 3, 1)])
admin.close()
producer = KafkaProducer(bootstrap_servers=bootstrap)
for i in range(120):
    producer.send(topic, key=b"v%d" % i, value=b"%d" % i)
producer.flush(30)


def consume(expected):
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=100,
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
    )
    values = []
    deadline = time.time() + 60
    while len(values) < expected and time.time() < deadline:
        for tp, messages in consumer.poll(timeout_ms=500).items():
            values.extend(int(m.value) for m in messages)
    consumer.commit()
    consumer.close()
    return sorted(values)


assert consume(120) == list(range(120))
for i in range(120, 150):
    producer.send(topic, key=b"v%d" % i, value=b"%d" % i)
producer.flush(30)
producer.close()
assert consume(30) == list(range(120, 150))

# The admin client's view of the group: listed, described (no members left), its committed
# offsets, then deleted.
admin = KafkaAdminClient(bootstrap_servers=bootstrap)
listed = admin.list_consumer_groups()
assert (group, "consumer") in [(g[0], g[1]) for g in listed], listed
described = admin.describe_consumer_groups([group])[0]
assert described.group == group and described.state == "Empty", described
offsets = admin.list_consumer_group_offsets(group)
assert sum(o.offset for o in offsets.values()) == 150, offsets
deleted = admin.delete_consumer_groups([group])
assert deleted == [(group, None)] or all(e is None or getattr(e, "errno", 0) == 0 for _, e in deleted), deleted
assert group not in [g[0] for g in admin.list_consumer_groups()]
admin.close()
print("kafka-python group ok: 150 records, resumed at the commits")
