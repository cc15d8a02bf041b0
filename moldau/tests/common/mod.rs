//! What the `moldau serve` tests share: the real binary started on a free loopback port in a
//! temporary directory, stopped with SIGTERM, and a minimal client that speaks Kafka's
//! protocol through kafka-protocol's own encoders.

#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use core_log::codec::BatchBuilder;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

/// A running `moldau serve`.
pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    log_file: PathBuf,
}

impl Server {
    /// Starts `moldau serve` on `dir`, listening on a free loopback port.
    pub fn start(dir: &Path, extra_args: &[&str]) -> Server {
        let log_file = dir.with_extension("server.log");
        let stderr = std::fs::File::create(&log_file).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_moldau"))
            .args(["serve", "--dir"])
            .arg(dir)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra_args)
            .env("RUST_LOG", "info,moldau=debug")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| {
                panic!(
                    "moldau serve did not start: {line:?}\n{}",
                    std::fs::read_to_string(&log_file).unwrap_or_default()
                )
            })
            .parse()
            .unwrap();
        Server {
            child: Some(child),
            addr,
            dir: dir.to_path_buf(),
            log_file,
        }
    }

    /// The server's log output so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_file).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().unwrap().try_wait().unwrap().is_none()
    }

    /// Sends SIGTERM and waits (at most 20 s) for the process to exit.
    pub fn stop(mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        rx.recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("moldau serve did not stop\n{}", self.logs()))
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A connection speaking Kafka's protocol.
pub struct Client {
    pub stream: TcpStream,
    correlation_id: i32,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Client {
            stream,
            correlation_id: 0,
        }
    }

    /// Sends `req` at `version` and returns the response.
    pub fn send<R: Request>(&mut self, version: i16, req: &R) -> R::Response {
        self.send_request(version, req);
        let mut frame = self.read_frame().expect("a response");
        let api = ApiKey::try_from(R::KEY).unwrap();
        let header =
            ResponseHeader::decode(&mut frame, api.response_header_version(version)).unwrap();
        assert_eq!(header.correlation_id, self.correlation_id);
        let res = R::Response::decode(&mut frame, version).unwrap();
        assert!(frame.is_empty(), "bytes left after the response");
        res
    }

    /// Sends `req` without reading a response (a produce with acks=0).
    pub fn send_request<R: Request>(&mut self, version: i16, req: &R) {
        self.correlation_id += 1;
        let api = ApiKey::try_from(R::KEY).unwrap();
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("moldau-test")));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, api.request_header_version(version))
            .unwrap();
        req.encode(&mut body, version).unwrap();
        self.write_frame(&body);
    }

    pub fn write_frame(&mut self, body: &[u8]) {
        let mut frame = (body.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(body);
        self.stream.write_all(&frame).unwrap();
    }

    /// The next frame, or `None` when the server closed the connection.
    pub fn read_frame(&mut self) -> Option<Bytes> {
        let mut size = [0u8; 4];
        if self.stream.read_exact(&mut size).is_err() {
            return None;
        }
        let mut body = vec![0; i32::from_be_bytes(size) as usize];
        self.stream.read_exact(&mut body).ok()?;
        Some(body.into())
    }

    /// Whether the server has closed the connection (reads end of stream).
    pub fn is_closed_by_server(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.stream.read(&mut byte), Ok(0))
            || matches!(self.stream.read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
    }
}

/// One uncompressed record batch holding `records` (key, value), with timestamps `ts`, `ts +
/// 1`, ... as a producer sends it.
/// Creates each `(topic, partitions, replication factor)` with CreateTopics v7: the error code
/// of each.
pub fn create_topics(c: &mut Client, topics: &[(&str, i32, i16)]) -> Vec<i16> {
    let req = CreateTopicsRequest::default()
        .with_topics(
            topics
                .iter()
                .map(|&(t, partitions, rf)| {
                    CreatableTopic::default()
                        .with_name(TopicName(StrBytes::from_string(t.to_string())))
                        .with_num_partitions(partitions)
                        .with_replication_factor(rf)
                })
                .collect(),
        )
        .with_timeout_ms(5000);
    let res = c.send(7, &req);
    res.topics.iter().map(|t| t.error_code).collect()
}

pub fn batch(records: &[(&[u8], &[u8])], ts: i64) -> Bytes {
    let mut b = BatchBuilder::new(Vec::new());
    for (i, (k, v)) in records.iter().enumerate() {
        b.append(ts + i as i64, Some(k), Some(v), &[]);
    }
    b.finish().into()
}

/// The response header version of a request type, for raw tests.
pub fn response_header_version<R: Request>(version: i16) -> i16 {
    <R::Response as HeaderVersion>::header_version(version)
}
