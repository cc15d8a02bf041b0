//! Bad bytes from the network: every malformed frame closes its own connection (or is
//! answered with the protocol's error), never the server; the server keeps serving other
//! connections and the log loses nothing. Counts inside a frame that claim more elements than
//! the frame holds are refused before anything is allocated for them (CVE-2022-34917's class).

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a panic is the failure report

mod common;

use std::io::Write;
use std::net::Shutdown;

use bytes::{BufMut, BytesMut};
use common::{Client, Server, batch, create_topics};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// A request header (v1: api key, version, correlation id, client id) for raw frames.
fn header(api_key: i16, version: i16) -> BytesMut {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api_key)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("fuzzy")))
        .encode(&mut buf, 1)
        .unwrap();
    buf
}

/// Whether the server still answers a new connection.
fn serves(server: &mut Server) -> bool {
    server.is_running()
        && Client::connect(server.addr)
            .send(3, &ApiVersionsRequest::default())
            .error_code
            == 0
}

fn produce_one(c: &mut Client, value: &[u8]) -> (i16, i64) {
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("kept")))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(batch(&[(b"k", value)], 1))),
                ]),
        ]);
    let p = &c.send(9, &req).responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

#[test]
fn malformed_frames_close_their_connection_only_and_the_log_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start(&data, &["--socket-request-max-bytes", "65536"]);
    let mut c = Client::connect(server.addr);
    assert_eq!(create_topics(&mut c, &[("kept", 1, 1)]), [0]);
    assert_eq!(produce_one(&mut c, b"before"), (0, 0));

    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("negative size", (-1i32).to_be_bytes().to_vec()),
        (
            "size over socket.request.max.bytes",
            65_537i32.to_be_bytes().to_vec(),
        ),
        ("size of 2 GiB", i32::MAX.to_be_bytes().to_vec()),
        ("empty frame", 0i32.to_be_bytes().to_vec()),
    ];
    let framed = |name, body: &[u8]| {
        let mut frame = (body.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(body);
        (name, frame)
    };
    cases.push(framed("header shorter than its fixed part", &[0, 18, 0]));
    cases.push(framed(
        "garbage header",
        &[0xde, 0xad, 0xbe, 0xef, 0xba, 0xad, 0xf0, 0x0d, 1, 2],
    ));
    cases.push(framed("unknown api key", &header(999, 0)));
    cases.push(framed("api not served (SaslHandshake)", &header(17, 1)));
    cases.push(framed("unsupported produce version", &header(0, 2)));
    // The client id claims 30,000 bytes; the frame has none.
    let mut client_id = header(3, 1);
    client_id.truncate(8);
    client_id.put_i16(30_000);
    cases.push(framed("client id longer than the frame", &client_id));
    // Metadata v1 whose topic array claims i32::MAX entries in a frame of a few bytes.
    let mut bomb = header(3, 1);
    bomb.put_i32(i32::MAX);
    cases.push(framed("array count far beyond the frame", &bomb));
    // The same with a compact array (Metadata v9, flexible header v2: a tagged-field count).
    let mut compact = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(3)
        .with_request_api_version(9)
        .with_correlation_id(7)
        .encode(&mut compact, 2)
        .unwrap();
    compact.put_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    cases.push(framed("compact array count far beyond the frame", &compact));
    // A produce whose records length claims 1 GiB.
    let mut records = header(0, 3);
    records.put_i16(-1); // transactional id: null
    records.put_i16(1); // acks
    records.put_i32(1000); // timeout
    records.put_i32(1); // one topic
    records.put_i16(4);
    records.put_slice(b"kept");
    records.put_i32(1); // one partition
    records.put_i32(0);
    records.put_i32(1 << 30);
    cases.push(framed("records longer than the frame", &records));

    for (name, bytes) in cases {
        let mut bad = Client::connect(server.addr);
        bad.stream.write_all(&bytes).unwrap();
        assert!(bad.is_closed_by_server(), "{name}: connection left open");
        assert!(
            serves(&mut server),
            "{name}: server stopped serving\n{}",
            server.logs()
        );
    }

    // A frame cut short: the peer stops sending in the middle of it.
    let mut cut = Client::connect(server.addr);
    cut.stream.write_all(&100i32.to_be_bytes()).unwrap();
    cut.stream.write_all(&header(18, 0)).unwrap();
    cut.stream.shutdown(Shutdown::Write).unwrap();
    assert!(
        cut.is_closed_by_server(),
        "truncated frame: connection left open"
    );

    // Bytes after a request body are ignored, as Kafka ignores them (librdkafka 2.x sends
    // some after a Metadata v12 request).
    let mut trailing = Client::connect(server.addr);
    let mut body = header(18, 0);
    body.put_slice(b"trailing bytes");
    trailing.write_frame(&body);
    let mut frame = trailing.read_frame().expect("an answer");
    assert_eq!(
        ResponseHeader::decode(&mut frame, 0)
            .unwrap()
            .correlation_id,
        7
    );
    assert_eq!(
        ApiVersionsResponse::decode(&mut frame, 0)
            .unwrap()
            .error_code,
        0
    );

    // The first connection never noticed.
    assert_eq!(produce_one(&mut c, b"after"), (0, 1));
    assert!(server.stop().success());
    let log = core_log::Log::open(&data).unwrap();
    let read = log.partition("kept", 0).unwrap().read(0, 1 << 20).unwrap();
    let values: Vec<_> = read.records().map(|r| r.value.unwrap().to_vec()).collect();
    assert_eq!(values, vec![b"before".to_vec(), b"after".to_vec()]);
    log.close().unwrap();
}
