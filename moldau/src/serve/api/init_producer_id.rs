//! InitProducerId. Without a transactional id (an idempotent producer): a new producer id,
//! never handed out twice by this log, with epoch 0 (as Kafka, also when the client names its
//! old id and epoch). With one (a transactional producer): the transaction coordinator's
//! answer, the id's producer id with a bumped epoch that fences older instances, after
//! aborting a transaction they left open.

use core_log::Broker;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse};

use super::Apis;
use crate::serve::error_code::error_code;

/// InitProducerId, v0–v4.
pub fn handle(apis: &Apis, req: InitProducerIdRequest) -> InitProducerIdResponse {
    let failed = |code| {
        InitProducerIdResponse::default()
            .with_error_code(code)
            .with_producer_id((-1).into())
            .with_producer_epoch(-1)
    };
    let broker: &Broker = apis.log().as_ref();
    let identity = match req.transactional_id.as_deref().map(|id| &**id) {
        None => broker.init_producer_id(),
        // Kafka's answer to an empty transactional id.
        Some("") => return failed(ResponseError::InvalidRequest.code()),
        Some(id) => {
            broker.init_transactional_producer_id(id, i64::from(req.transaction_timeout_ms))
        }
    };
    match identity {
        Ok(id) => InitProducerIdResponse::default()
            .with_producer_id(id.producer_id.into())
            .with_producer_epoch(id.epoch),
        Err(e) => {
            tracing::debug!(error = %e, "InitProducerId refused");
            failed(error_code(&e))
        }
    }
}
