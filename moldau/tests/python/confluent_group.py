"""confluent-kafka (librdkafka) consumer groups against `moldau serve`: subscribe, rebalance
between two members, commit, and resume from the committed offsets.

Usage: confluent_group.py BOOTSTRAP. Prints one summary line on success.
"""
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

bootstrap = sys.argv[1]
topic = "payments"
partitions = 4
group = "payments-audit"

admin = AdminClient({"bootstrap.servers": bootstrap})
admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(timeout=10)
producer = Producer({"bootstrap.servers": bootstrap})
count = 400
for i in range(count):
    producer.produce(topic, key=b"k%d" % i, value=b"%d" % i)
assert producer.flush(30) == 0


def consumer(name):
    return Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "client.id": name,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
        "fetch.wait.max.ms": 100,
    })


a, b = consumer("a"), consumer("b")
a.subscribe([topic])
b.subscribe([topic])
seen = {}
deadline = time.time() + 60
# Poll both until each owns part of the topic and everything produced so far was read.
while time.time() < deadline:
    for name, c in (("a", a), ("b", b)):
        msg = c.poll(0.2)
        if msg is None:
            continue
        assert msg.error() is None, msg.error()
        seen.setdefault((msg.partition(), msg.offset()), set()).add(name)
    if len(seen) == count and a.assignment() and b.assignment():
        break
assignment_a = {tp.partition for tp in a.assignment()}
assignment_b = {tp.partition for tp in b.assignment()}
assert assignment_a and assignment_b, (assignment_a, assignment_b)
assert not (assignment_a & assignment_b), (assignment_a, assignment_b)
assert assignment_a | assignment_b == set(range(partitions)), (assignment_a, assignment_b)
assert len(seen) == count, len(seen)
a.commit(asynchronous=False)
b.commit(asynchronous=False)
committed = a.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
assert sum(tp.offset for tp in committed) == count, committed
a.close()
b.close()

# More records; a new member of the group starts from the committed offsets.
for i in range(count, count + 50):
    producer.produce(topic, key=b"k%d" % i, value=b"%d" % i)
assert producer.flush(30) == 0
c = consumer("c")
c.subscribe([topic])
values = []
deadline = time.time() + 60
while len(values) < 50 and time.time() < deadline:
    msg = c.poll(0.5)
    if msg is None:
        continue
    assert msg.error() is None, msg.error()
    values.append(int(msg.value()))
c.close()
assert sorted(values) == list(range(count, count + 50)), sorted(values)[:10]

# The admin client's view: the group is listed and, its members gone, described as empty.
listed = admin.list_consumer_groups().result(timeout=10)
assert group in [g.group_id for g in listed.valid], listed.valid
description = admin.describe_consumer_groups([group])[group].result(timeout=10)
assert description.group_id == group and not description.members, description
assert str(description.state).endswith("EMPTY"), description.state
print("confluent-kafka group ok: %d records over 2 members, resumed at the commits" % count)
