//! FindCoordinator: this server is the coordinator of every group and every transactional
//! id, so the answer is always itself.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::{Apis, NODE_ID};

/// Kafka's coordinator key types: group (0) and transaction (1).
fn known_key_type(key_type: i8) -> bool {
    matches!(key_type, 0 | 1)
}

/// FindCoordinator, v0–v3 (one key) and v4+ (a batch of keys).
pub fn handle(apis: &Apis, req: FindCoordinatorRequest, version: i16) -> FindCoordinatorResponse {
    let host = StrBytes::from_string(apis.config().advertised_host.clone());
    let port = i32::from(apis.config().advertised_port);
    let error = (!known_key_type(req.key_type)).then_some(ResponseError::InvalidRequest.code());
    if version >= 4 {
        let coordinators = req
            .coordinator_keys
            .into_iter()
            .map(|key| match error {
                Some(code) => Coordinator::default()
                    .with_key(key)
                    .with_node_id((-1).into())
                    .with_port(-1)
                    .with_error_code(code),
                None => Coordinator::default()
                    .with_key(key)
                    .with_node_id(NODE_ID.into())
                    .with_host(host.clone())
                    .with_port(port),
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    match error {
        Some(code) => FindCoordinatorResponse::default()
            .with_error_code(code)
            .with_node_id((-1).into())
            .with_port(-1),
        None => FindCoordinatorResponse::default()
            .with_node_id(NODE_ID.into())
            .with_host(host)
            .with_port(port),
    }
}
