//! Kafka's requests, one file per API family, and the dispatch from a frame to them: Kafka's
//! `KafkaApis`.
//!
//! ```text
//!   frame ─▶ header (api key, version, correlation id) ─▶ supported? ─▶ decode body
//!         ─▶ api/<family>.rs (over the Log) ─▶ encode header + body ─▶ Reply
//! ```
//!
//! Handlers are synchronous and may block (an append's fsync, a fetch's long poll): the
//! connection runs them on tokio's blocking pool, one request at a time per connection, so
//! responses go out in request order.

pub mod api_versions;
pub mod consumer_protocol;
pub mod fetch;
pub mod find_coordinator;
pub mod group;
pub mod group_admin;
pub mod init_producer_id;
pub mod list_offsets;
pub mod metadata;
pub mod offsets;
pub mod produce;
pub mod topics;
pub mod txn;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use bytes::{Buf, Bytes};
use core_log::{AppendWaker, Log};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};

use crate::serve::frame::{finish_frame, response_buffer};

/// This server's node id: one broker, the leader of every partition and the coordinator of
/// every group and transaction.
pub const NODE_ID: i32 = 0;

/// Kafka's `num.partitions`: the partition count of a topic created without one.
pub const DEFAULT_NUM_PARTITIONS: u32 = 1;

/// The requests served and their versions, `(api, min, max)`: within what the codec knows,
/// and what the handlers implement. Listed by ApiVersions.
pub const SUPPORTED_APIS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    // v13 names topics by id, which the log does not have.
    (ApiKey::Fetch, 4, 12),
    // v7 adds the max-timestamp query (-3).
    (ApiKey::ListOffsets, 1, 6),
    (ApiKey::Metadata, 0, 12),
    // v9+ is KIP-848's member epoch, v10 names topics by id.
    (ApiKey::OffsetCommit, 2, 8),
    // v8+ batches groups.
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    // v5 filters by group type (KIP-848).
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::InitProducerId, 0, 4),
    // v4+ of these are KIP-890's (brokers' batches, epoch bumps at EndTxn).
    (ApiKey::AddPartitionsToTxn, 0, 3),
    (ApiKey::AddOffsetsToTxn, 0, 3),
    (ApiKey::EndTxn, 0, 3),
    (ApiKey::TxnOffsetCommit, 0, 3),
    (ApiKey::CreatePartitions, 0, 3),
];

/// Kafka's authorized-operations bit field (bit `i` for `AclOperation` code `i`) of `codes`.
/// There are no ACLs: a client asking what it may do is told every operation the resource
/// has.
pub(crate) const fn authorized_operations(codes: &[u32]) -> i32 {
    let mut field = 0;
    let mut i = 0;
    while i < codes.len() {
        field |= 1 << codes[i];
        i += 1;
    }
    field
}

/// The versions of `api` this server serves.
pub fn supported_versions(api: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED_APIS
        .iter()
        .find(|(k, _, _)| *k == api)
        .map(|&(_, min, max)| (min, max))
}

/// What the connection does after a request.
#[derive(Debug)]
pub enum Reply {
    /// Write this response (a whole frame).
    Send(Bytes),
    /// Nothing to write: a produce with `acks=0`.
    Nothing,
}

/// A request that closes its connection, as Kafka closes it: the bytes cannot be trusted to
/// frame the next request, or the client has to learn that something went wrong.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Fewer bytes than a request header's fixed part.
    #[error("request of {len} bytes is shorter than a request header")]
    ShortHeader {
        /// The frame's size.
        len: usize,
    },
    /// An API key this server does not serve.
    #[error("unknown api key {api_key}")]
    UnknownApiKey {
        /// The key received.
        api_key: i16,
    },
    /// A version of a served API that is not served (ApiVersions answers these instead).
    #[error("{api:?} v{version} is not supported")]
    UnsupportedVersion {
        /// The API.
        api: ApiKey,
        /// The version asked for.
        version: i16,
    },
    /// The header or body does not decode.
    #[error("malformed {api:?} v{version} request")]
    Malformed {
        /// The API.
        api: ApiKey,
        /// Its version.
        version: i16,
        /// What the codec found.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A response the codec refused to encode (a server bug: a field the version lacks).
    #[error("cannot encode the {api:?} v{version} response")]
    Encode {
        /// The API.
        api: ApiKey,
        /// Its version.
        version: i16,
        /// What the codec said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A produce with `acks=0` failed: Kafka closes the connection, the only way such a
    /// producer learns of it.
    #[error("a produce request with acks=0 failed on {failed} partition(s)")]
    FireAndForgetFailed {
        /// How many partitions refused their records.
        failed: usize,
    },
}

/// Settings of the request handlers.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// The host clients are told to connect to (Metadata, FindCoordinator).
    pub advertised_host: String,
    /// The port clients are told to connect to.
    pub advertised_port: u16,
    /// Kafka's `auto.create.topics.enable` (default true): Metadata creates a missing topic
    /// when the client allows it.
    pub auto_create_topics: bool,
    /// Kafka's `num.partitions`, for topics created without a count.
    pub num_partitions: u32,
}

/// The request handlers over one log: Kafka's `KafkaApis`.
#[derive(Debug)]
pub struct Apis {
    log: Log,
    config: ApiConfig,
    shutting_down: AtomicBool,
    /// The wakers of fetches in a long poll and of group requests waiting for a rebalance,
    /// woken at shutdown so that none waits it out.
    waiters: Mutex<Vec<Weak<AppendWaker>>>,
    /// The consumer group members connected over the network.
    members: group::RemoteMembers,
}

impl Apis {
    /// Handlers over `log`.
    pub fn new(log: Log, config: ApiConfig) -> Apis {
        Apis {
            log,
            config,
            shutting_down: AtomicBool::new(false),
            waiters: Mutex::new(Vec::new()),
            members: group::RemoteMembers::default(),
        }
    }

    /// The log served.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// The handlers' settings.
    pub fn config(&self) -> &ApiConfig {
        &self.config
    }

    /// The consumer group members connected over the network.
    pub(crate) fn members(&self) -> &group::RemoteMembers {
        &self.members
    }

    /// Ends every long poll now and makes later ones return at once.
    pub fn shut_down(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        let waiters =
            std::mem::take(&mut *self.waiters.lock().unwrap_or_else(PoisonError::into_inner));
        for w in waiters.iter().filter_map(Weak::upgrade) {
            w.notify();
        }
    }

    /// Whether [`Apis::shut_down`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Registers a long poll's waker, to be woken by [`Apis::shut_down`].
    pub(crate) fn register_waiter(&self, waker: &Arc<AppendWaker>) {
        let mut w = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
        w.retain(|x| x.strong_count() > 0);
        w.push(Arc::downgrade(waker));
    }

    /// Handles one request frame.
    pub fn handle(&self, mut frame: Bytes) -> Result<Reply, RequestError> {
        if frame.len() < 8 {
            return Err(RequestError::ShortHeader { len: frame.len() });
        }
        let mut fixed = &frame[..4];
        let api_key = fixed.get_i16();
        let version = fixed.get_i16();
        let api = ApiKey::try_from(api_key)
            .ok()
            .filter(|api| supported_versions(*api).is_some())
            .ok_or(RequestError::UnknownApiKey { api_key })?;
        let header = RequestHeader::decode(&mut frame, api.request_header_version(version))
            .map_err(|e| malformed(api, version, e))?;
        let (min, max) = supported_versions(api).ok_or(RequestError::UnknownApiKey { api_key })?;
        if !(min..=max).contains(&version) {
            if api == ApiKey::ApiVersions {
                // KIP-511: a client newer than the server gets the list, in v0, to pick from.
                return respond(api, 0, &header, &api_versions::unsupported_version());
            }
            return Err(RequestError::UnsupportedVersion { api, version });
        }
        tracing::trace!(
            ?api,
            version,
            correlation_id = header.correlation_id,
            "request"
        );
        match api {
            ApiKey::ApiVersions => {
                let req = decode(&mut frame, api, version)?;
                respond(api, version, &header, &api_versions::handle(&req, version))
            }
            ApiKey::Metadata => {
                let req = decode(&mut frame, api, version)?;
                respond(api, version, &header, &metadata::handle(self, req, version))
            }
            ApiKey::Produce => {
                let req = decode(&mut frame, api, version)?;
                match produce::handle(self, req, version)? {
                    Some(res) => respond(api, version, &header, &res),
                    None => Ok(Reply::Nothing),
                }
            }
            ApiKey::Fetch => {
                let req = decode(&mut frame, api, version)?;
                respond(api, version, &header, &fetch::handle(self, req, version))
            }
            ApiKey::ListOffsets => {
                let req = decode(&mut frame, api, version)?;
                respond(
                    api,
                    version,
                    &header,
                    &list_offsets::handle(self, req, version),
                )
            }
            ApiKey::CreateTopics => {
                let req = decode(&mut frame, api, version)?;
                respond(api, version, &header, &topics::create(self, req, version))
            }
            ApiKey::DeleteTopics => {
                let req = decode(&mut frame, api, version)?;
                respond(api, version, &header, &topics::delete(self, req, version))
            }
            ApiKey::CreatePartitions => {
                let req = decode(&mut frame, api, version)?;
                respond(api, version, &header, &topics::create_partitions(self, req))
            }
            ApiKey::FindCoordinator => {
                let req = decode(&mut frame, api, version)?;
                respond(
                    api,
                    version,
                    &header,
                    &find_coordinator::handle(self, req, version),
                )
            }
            ApiKey::JoinGroup => {
                let req = decode(&mut frame, api, version)?;
                let client_id = header.client_id.as_deref().unwrap_or("");
                let res = group::join(self, req, version, client_id);
                respond(api, version, &header, &res)
            }
            ApiKey::SyncGroup => {
                let req = decode(&mut frame, api, version)?;
                respond(api, version, &header, &group::sync(self, req, version))
            }
            ApiKey::Heartbeat => {
                let req = decode(&mut frame, api, version)?;
                respond(api, version, &header, &group::heartbeat(self, req))
            }
            ApiKey::LeaveGroup => {
                let req = decode(&mut frame, api, version)?;
                respond(api, version, &header, &group::leave(self, req, version))
            }
            ApiKey::ListGroups => {
                let req = decode(&mut frame, api, version)?;
                respond(
                    api,
                    version,
                    &header,
                    &group_admin::list(self, req, version),
                )
            }
            ApiKey::DescribeGroups => {
                let req = decode(&mut frame, api, version)?;
                respond(
                    api,
                    version,
                    &header,
                    &group_admin::describe(self, req, version),
                )
            }
            ApiKey::DeleteGroups => {
                let req = decode(&mut frame, api, version)?;
                respond(api, version, &header, &group_admin::delete(self, req))
            }
            ApiKey::OffsetCommit => {
                let req = decode(&mut frame, api, version)?;
                respond(api, version, &header, &offsets::commit(self, req, version))
            }
            ApiKey::OffsetFetch => {
                let req = decode(&mut frame, api, version)?;
                respond(api, version, &header, &offsets::fetch(self, req, version))
            }
            ApiKey::InitProducerId => {
                let req = decode(&mut frame, api, version)?;
                respond(api, version, &header, &init_producer_id::handle(self, req))
            }
            ApiKey::AddPartitionsToTxn => {
                let req = decode(&mut frame, api, version)?;
                respond(api, version, &header, &txn::add_partitions(self, req))
            }
            ApiKey::AddOffsetsToTxn => {
                let req = decode(&mut frame, api, version)?;
                respond(api, version, &header, &txn::add_offsets(self, req))
            }
            ApiKey::EndTxn => {
                let req = decode(&mut frame, api, version)?;
                respond(api, version, &header, &txn::end(self, req))
            }
            ApiKey::TxnOffsetCommit => {
                let req = decode(&mut frame, api, version)?;
                respond(
                    api,
                    version,
                    &header,
                    &txn::offset_commit(self, req, version),
                )
            }
            _ => Err(RequestError::UnknownApiKey { api_key }),
        }
    }
}

fn malformed(
    api: ApiKey,
    version: i16,
    e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> RequestError {
    RequestError::Malformed {
        api,
        version,
        source: e.into(),
    }
}

fn decode<T: Decodable>(frame: &mut Bytes, api: ApiKey, version: i16) -> Result<T, RequestError> {
    let req = T::decode(frame, version).map_err(|e| malformed(api, version, e))?;
    if frame.has_remaining() {
        // Kafka ignores them too, and librdkafka 2.x sends a few after some requests.
        tracing::debug!(
            ?api,
            version,
            bytes = frame.remaining(),
            "bytes after the request body"
        );
    }
    Ok(req)
}

/// The response frame: size, header (the request's correlation id), body.
fn respond<R: Encodable + HeaderVersion>(
    api: ApiKey,
    version: i16,
    header: &RequestHeader,
    body: &R,
) -> Result<Reply, RequestError> {
    let mut buf = response_buffer();
    ResponseHeader::default()
        .with_correlation_id(header.correlation_id)
        .encode(&mut buf, R::header_version(version))
        .map_err(|e| encode_error(api, version, e))?;
    body.encode(&mut buf, version)
        .map_err(|e| encode_error(api, version, e))?;
    let frame = finish_frame(buf).map_err(|e| encode_error(api, version, e))?;
    Ok(Reply::Send(frame))
}

fn encode_error(
    api: ApiKey,
    version: i16,
    e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> RequestError {
    RequestError::Encode {
        api,
        version,
        source: e.into(),
    }
}
