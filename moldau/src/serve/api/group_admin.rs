//! The admin requests on consumer groups: ListGroups, DescribeGroups and DeleteGroups, over
//! the log's group coordinator (`Broker::list_groups`, `describe_group`, `delete_group`), as
//! `kafka-consumer-groups --list / --describe / --delete` and the admin clients send them.

use core_log::{Broker, Error, GroupState};
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    GroupId, ListGroupsRequest, ListGroupsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::consumer_protocol::{encode_assignment, encode_subscription};
use super::{Apis, authorized_operations};
use crate::serve::error_code::error_code;

/// Every group here is a consumer group (the coordinator keeps consumers' subscriptions).
const CONSUMER: &str = "consumer";

/// What a client may do with a group: READ (3), DELETE (6), DESCRIBE (8).
const GROUP_OPERATIONS: i32 = authorized_operations(&[3, 6, 8]);

fn broker(apis: &Apis) -> &Broker {
    apis.log().as_ref()
}

fn state_name(state: GroupState) -> StrBytes {
    StrBytes::from_string(state.to_string())
}

/// ListGroups, v0–v4 (v4: only the groups in `states_filter`, when it names any).
pub fn list(apis: &Apis, req: ListGroupsRequest, version: i16) -> ListGroupsResponse {
    match broker(apis).list_groups() {
        Ok(groups) => {
            let listed = groups
                .into_iter()
                .filter(|(_, state)| {
                    version < 4
                        || req.states_filter.is_empty()
                        || req
                            .states_filter
                            .iter()
                            .any(|s| s.eq_ignore_ascii_case(&state.to_string()))
                })
                .map(|(id, state)| {
                    let g = ListedGroup::default()
                        .with_group_id(GroupId(StrBytes::from_string(id)))
                        .with_protocol_type(StrBytes::from_static_str(CONSUMER));
                    if version >= 4 {
                        g.with_group_state(state_name(state))
                    } else {
                        g
                    }
                })
                .collect();
            ListGroupsResponse::default().with_groups(listed)
        }
        Err(e) => ListGroupsResponse::default().with_error_code(error_code(&e)),
    }
}

/// DescribeGroups, v0–v5. A group the coordinator does not know is Kafka's `Dead`, without an
/// error.
pub fn describe(apis: &Apis, req: DescribeGroupsRequest, version: i16) -> DescribeGroupsResponse {
    let groups = req
        .groups
        .into_iter()
        .map(|group_id| match broker(apis).describe_group(&group_id) {
            Ok(d) => {
                let members = d
                    .members
                    .iter()
                    .map(|m| {
                        let member = DescribedGroupMember::default()
                            .with_member_id(StrBytes::from_string(m.member_id.clone()))
                            .with_client_id(StrBytes::from_string(m.client_id.clone()))
                            .with_member_metadata(encode_subscription(&m.subscription))
                            .with_member_assignment(encode_assignment(&m.assignment));
                        if version >= 4 {
                            member.with_group_instance_id(
                                m.group_instance_id.clone().map(StrBytes::from_string),
                            )
                        } else {
                            member
                        }
                    })
                    .collect();
                let group = DescribedGroup::default()
                    .with_group_id(group_id)
                    .with_group_state(state_name(d.state))
                    .with_protocol_type(StrBytes::from_static_str(CONSUMER))
                    .with_protocol_data(StrBytes::from_string(
                        d.partition_assignor.unwrap_or_default(),
                    ))
                    .with_members(members);
                // Asked for (v3+): what the group allows; else Kafka's "not asked" value.
                if version >= 3 && req.include_authorized_operations {
                    group.with_authorized_operations(GROUP_OPERATIONS)
                } else {
                    group
                }
            }
            Err(Error::GroupIdNotFound { .. }) => DescribedGroup::default()
                .with_group_id(group_id)
                .with_group_state(StrBytes::from_static_str("Dead")),
            Err(e) => DescribedGroup::default()
                .with_group_id(group_id)
                .with_error_code(error_code(&e)),
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

/// DeleteGroups, v0–v2: a group without members and its committed offsets.
pub fn delete(apis: &Apis, req: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let results = req
        .groups_names
        .into_iter()
        .map(|group_id| {
            let code = match broker(apis).delete_group(&group_id) {
                Ok(()) => 0,
                Err(e) => error_code(&e),
            };
            DeletableGroupResult::default()
                .with_group_id(group_id)
                .with_error_code(code)
        })
        .collect();
    DeleteGroupsResponse::default().with_results(results)
}
