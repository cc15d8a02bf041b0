"""Every compression codec both ways through `moldau serve`: confluent-kafka (librdkafka) and
kafka-python each produce a topic per codec with `compression.type`, and both clients read
every topic back whole.

Usage: compression.py BOOTSTRAP. Prints one line per topic (`topic CODEC-CLIENT N`) and a
summary; exits non-zero (an AssertionError) on any difference.
"""
import sys

from confluent_kafka import Consumer, Producer, TopicPartition
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KpTopicPartition

bootstrap = sys.argv[1]
codecs = ["gzip", "snappy", "lz4", "zstd"]
count = 500


def value(i):
    # Text a codec can shrink: what a like event looks like.
    return b'{"user":"user-%06d","product":"product-%04d","action":"like"}' % (i * 7919 % 100000, i % 97)


def expected():
    return [(b"k%d" % (i % 13), value(i)) for i in range(count)]


def produce_confluent(topic, codec):
    p = Producer({"bootstrap.servers": bootstrap, "compression.type": codec, "linger.ms": 20})
    errors = []
    for k, v in expected():
        p.produce(topic, key=k, value=v, partition=0,
                  on_delivery=lambda err, msg: err and errors.append(err))
    assert p.flush(30) == 0 and not errors, errors


def produce_kafka_python(topic, codec):
    p = KafkaProducer(bootstrap_servers=bootstrap, compression_type=codec, linger_ms=20)
    futures = [p.send(topic, key=k, value=v, partition=0) for k, v in expected()]
    for f in futures:
        f.get(timeout=30)
    p.close()


def consume_confluent(topic):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "codec-check",
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 0)])
    got = []
    while len(got) < count:
        # consume() waits for num_messages or the timeout: ask for exactly what is left.
        msgs = c.consume(num_messages=count - len(got), timeout=10)
        assert msgs, "only %d of %d records from %s" % (len(got), count, topic)
        for m in msgs:
            assert m.error() is None, m.error()
            got.append((m.key(), m.value()))
    c.close()
    return got


def consume_kafka_python(topic):
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                      consumer_timeout_ms=10000)
    tp = KpTopicPartition(topic, 0)
    c.assign([tp])
    c.seek(tp, 0)
    got = []
    for m in c:
        got.append((m.key, m.value))
        if len(got) == count:
            break
    c.close()
    return got


topics = 0
for codec in codecs:
    for client, produce in (("confluent", produce_confluent), ("kafka-python", produce_kafka_python)):
        topic = "%s-%s" % (codec, client)
        produce(topic, codec)
        assert consume_confluent(topic) == expected(), topic + " read by confluent-kafka"
        assert consume_kafka_python(topic) == expected(), topic + " read by kafka-python"
        print("topic %s %d" % (topic, count))
        topics += 1
print("compression ok: %d topics, each produced once and read by both clients" % topics)
