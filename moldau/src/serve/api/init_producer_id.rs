//! InitProducerId for idempotent producers (no transactional id): a new producer id, never
//! handed out twice by this log, with epoch 0 (as Kafka, also when the client names its old
//! id and epoch). Transactional producers are a later step: the transaction APIs are not
//! served yet, so one is refused with TRANSACTIONAL_ID_AUTHORIZATION_FAILED, a final error,
//! rather than a retriable one it would retry until its timeout.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse};

use super::Apis;
use crate::serve::error_code::error_code;

/// InitProducerId.
pub fn handle(apis: &Apis, req: InitProducerIdRequest) -> InitProducerIdResponse {
    let failed = |code| {
        InitProducerIdResponse::default()
            .with_error_code(code)
            .with_producer_id((-1).into())
            .with_producer_epoch(-1)
    };
    match req.transactional_id.as_deref().map(|id| id.is_empty()) {
        None => {}
        // Kafka's answer to an empty transactional id.
        Some(true) => return failed(ResponseError::InvalidRequest.code()),
        Some(false) => return failed(ResponseError::TransactionalIdAuthorizationFailed.code()),
    }
    match apis.log().init_producer_id() {
        Ok(id) => InitProducerIdResponse::default()
            .with_producer_id(id.producer_id.into())
            .with_producer_epoch(id.epoch),
        Err(e) => failed(error_code(&e)),
    }
}
