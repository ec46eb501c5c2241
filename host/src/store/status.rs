//! A workspace's status and the one table of the moves between statuses. Every status change
//! names its [`Cause`]; the store derives each update's "from" list from [`TRANSITIONS`], so a
//! move the table does not hold cannot happen. New features add edges here, nowhere else.

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;

/// The ten statuses a workspace can be in (the original's ten values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Provisioning,
    Online,
    Offline,
    Degraded,
    Failed,
    Removed,
    Paused,
    Hibernated,
    AwaitingAgent,
    Hibernating,
}

impl Status {
    pub const ALL: [Status; 10] = [
        Status::Provisioning,
        Status::Online,
        Status::Offline,
        Status::Degraded,
        Status::Failed,
        Status::Removed,
        Status::Paused,
        Status::Hibernated,
        Status::AwaitingAgent,
        Status::Hibernating,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Provisioning => "provisioning",
            Status::Online => "online",
            Status::Offline => "offline",
            Status::Degraded => "degraded",
            Status::Failed => "failed",
            Status::Removed => "removed",
            Status::Paused => "paused",
            Status::Hibernated => "hibernated",
            Status::AwaitingAgent => "awaiting_agent",
            Status::Hibernating => "hibernating",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Status::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// The statuses a move to `to` for `cause` may start from.
    pub fn sources(to: Status, cause: Cause) -> Vec<Status> {
        TRANSITIONS
            .iter()
            .filter(|t| t.to == to && t.cause == cause)
            .map(|t| t.from)
            .collect()
    }

    /// Whether the table holds the move `from` → `to` for `cause`.
    pub fn may(from: Status, to: Status, cause: Cause) -> bool {
        TRANSITIONS
            .iter()
            .any(|t| t.from == from && t.to == to && t.cause == cause)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

// As its text, for the JSON the domain builds itself (MCP tool results, event payloads); HTTP
// answers put `status` into their own DTOs.
impl serde::Serialize for Status {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

// Stored as its text in a TEXT column on both backends.
impl<DB: sqlx::Database> sqlx::Type<DB> for Status
where
    str: sqlx::Type<DB>,
{
    fn type_info() -> DB::TypeInfo {
        <str as sqlx::Type<DB>>::type_info()
    }

    fn compatible(ty: &DB::TypeInfo) -> bool {
        <str as sqlx::Type<DB>>::compatible(ty)
    }
}

impl<'r, DB: sqlx::Database> sqlx::Decode<'r, DB> for Status
where
    &'r str: sqlx::Decode<'r, DB>,
{
    fn decode(value: <DB as sqlx::Database>::ValueRef<'r>) -> Result<Self, BoxDynError> {
        let raw = <&str as sqlx::Decode<DB>>::decode(value)?;
        Status::parse(raw).ok_or_else(|| format!("unknown workspace status {raw:?}").into())
    }
}

impl<'q, DB: sqlx::Database> sqlx::Encode<'q, DB> for Status
where
    &'q str: sqlx::Encode<'q, DB>,
{
    fn encode_by_ref(
        &self,
        buf: &mut <DB as sqlx::Database>::ArgumentBuffer<'q>,
    ) -> Result<IsNull, BoxDynError> {
        <&str as sqlx::Encode<DB>>::encode_by_ref(&self.as_str(), buf)
    }
}

/// What causes a status change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The agent registered (`POST /registry/register`).
    Registration,
    /// An agent's heartbeat: its first after an outage, or its error rate crossing a bound.
    Heartbeat,
    /// The runtime found the agent stopped (the health sweep, a call that got no answer).
    AgentExited,
    /// No heartbeat within the liveness window (the liveness sweep).
    Liveness,
    /// Provisioning failed, timed out, or the agent reported it cannot boot.
    ProvisionFailed,
    /// A restart cycle begins (the agent is marked before it stops, so the health sweep never
    /// mistakes the stop for a crash).
    Restart,
    /// An operator paused the workspace or an ancestor.
    Pause,
    /// An operator resumed it: the agent is provisioned again.
    Resume,
    /// The workspace was deleted (a tombstone).
    Delete,
    /// An operator or the idle monitor hibernated it: `hibernating` while the agent stops, then
    /// `hibernated`.
    Hibernate,
    /// A message, a schedule, a resume or a restart woke a hibernated workspace: provisioned
    /// again.
    Wake,
}

/// One edge of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: Status,
    pub to: Status,
    pub cause: Cause,
}

const fn edge(from: Status, to: Status, cause: Cause) -> Transition {
    Transition { from, to, cause }
}

use Cause::*;
use Status::*;

/// Every move a workspace's status can make, and what may cause it.
pub const TRANSITIONS: &[Transition] = &[
    // A registering agent brings any live workspace online (a re-registration keeps it so).
    edge(Provisioning, Online, Registration),
    edge(Online, Online, Registration),
    edge(Offline, Online, Registration),
    edge(Degraded, Online, Registration),
    edge(Failed, Online, Registration),
    edge(Paused, Online, Registration),
    edge(Hibernated, Online, Registration),
    edge(AwaitingAgent, Online, Registration),
    edge(Hibernating, Online, Registration),
    // Heartbeats: back after an outage, or health by error rate. Never out of provisioning: during
    // a restart cycle the old agent may still heartbeat, and only the new one's registration
    // counts.
    edge(Offline, Online, Heartbeat),
    edge(Offline, Degraded, Heartbeat),
    edge(AwaitingAgent, Online, Heartbeat),
    edge(AwaitingAgent, Degraded, Heartbeat),
    edge(Online, Degraded, Heartbeat),
    edge(Degraded, Online, Heartbeat),
    // A running agent that stopped, or went silent.
    edge(Online, Offline, AgentExited),
    edge(Degraded, Offline, AgentExited),
    edge(Online, Offline, Liveness),
    edge(Degraded, Offline, Liveness),
    edge(Provisioning, Failed, ProvisionFailed),
    // A restart cycle starts from anything but paused, hibernation and removal.
    edge(Online, Provisioning, Restart),
    edge(Degraded, Provisioning, Restart),
    edge(Offline, Provisioning, Restart),
    edge(Failed, Provisioning, Restart),
    edge(Provisioning, Provisioning, Restart),
    edge(AwaitingAgent, Provisioning, Restart),
    // Pause from anything live that is not paused already; resume provisions again.
    edge(Provisioning, Paused, Pause),
    edge(Online, Paused, Pause),
    edge(Offline, Paused, Pause),
    edge(Degraded, Paused, Pause),
    edge(Failed, Paused, Pause),
    edge(Hibernated, Paused, Pause),
    edge(AwaitingAgent, Paused, Pause),
    edge(Hibernating, Paused, Pause),
    edge(Paused, Provisioning, Resume),
    // Hibernation only from a running agent; the claim comes before the stop, so the health
    // sweep never mistakes the stop for a crash. Waking provisions again.
    edge(Online, Hibernating, Hibernate),
    edge(Degraded, Hibernating, Hibernate),
    edge(Hibernating, Hibernated, Hibernate),
    edge(Hibernated, Provisioning, Wake),
    // Deletion from anything live; a tombstone never moves again.
    edge(Provisioning, Removed, Delete),
    edge(Online, Removed, Delete),
    edge(Offline, Removed, Delete),
    edge(Degraded, Removed, Delete),
    edge(Failed, Removed, Delete),
    edge(Paused, Removed, Delete),
    edge(Hibernated, Removed, Delete),
    edge(AwaitingAgent, Removed, Delete),
    edge(Hibernating, Removed, Delete),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_and_match_the_schema_check() {
        let migration = include_str!("../../../migrations/0001_foundation.sql");
        for status in Status::ALL {
            assert_eq!(Status::parse(status.as_str()), Some(status));
            assert!(
                migration.contains(&format!("'{status}'")),
                "{status:?} missing from the CHECK"
            );
        }
        assert_eq!(Status::parse("bogus"), None);
    }

    #[test]
    fn a_removed_workspace_never_moves_and_every_live_one_can_be_removed() {
        assert!(TRANSITIONS.iter().all(|t| t.from != Removed));
        for status in Status::ALL.into_iter().filter(|s| *s != Removed) {
            assert!(
                Status::may(status, Removed, Delete),
                "{status} cannot be deleted"
            );
        }
        assert!(
            TRANSITIONS
                .iter()
                .all(|t| t.to != Removed || t.cause == Delete)
        );
    }

    #[test]
    fn only_a_registration_takes_a_provisioning_workspace_online() {
        for t in TRANSITIONS.iter().filter(|t| t.from == Provisioning) {
            assert!(
                t.to != Online || t.cause == Registration,
                "{t:?} would let an old agent's heartbeat end a restart cycle"
            );
        }
        assert!(!Status::may(Provisioning, Online, Heartbeat));
        assert!(!Status::may(Provisioning, Degraded, Heartbeat));
    }

    #[test]
    fn restarts_and_pauses_leave_paused_and_hibernating_workspaces_alone() {
        let restart = Status::sources(Provisioning, Restart);
        for status in [Paused, Removed, Hibernated, Hibernating] {
            assert!(!restart.contains(&status), "a restart moves {status}");
        }
        let pause = Status::sources(Paused, Pause);
        assert!(!pause.contains(&Paused) && !pause.contains(&Removed));
        assert_eq!(Status::sources(Provisioning, Resume), [Paused]);
    }

    #[test]
    fn failures_and_outages_start_only_where_the_agent_was_expected() {
        assert_eq!(Status::sources(Failed, ProvisionFailed), [Provisioning]);
        for cause in [AgentExited, Liveness] {
            assert_eq!(Status::sources(Offline, cause), [Online, Degraded]);
        }
        // Health moves only between the running statuses and back from an outage.
        for t in TRANSITIONS.iter().filter(|t| t.cause == Heartbeat) {
            assert!(matches!(t.to, Online | Degraded), "{t:?}");
            assert!(
                matches!(t.from, Online | Degraded | Offline | AwaitingAgent),
                "{t:?}"
            );
        }
    }

    #[test]
    fn only_a_running_agent_hibernates_and_only_a_hibernated_one_wakes() {
        assert_eq!(Status::sources(Hibernating, Hibernate), [Online, Degraded]);
        assert_eq!(Status::sources(Hibernated, Hibernate), [Hibernating]);
        assert_eq!(Status::sources(Provisioning, Wake), [Hibernated]);
        for t in TRANSITIONS
            .iter()
            .filter(|t| matches!(t.cause, Hibernate | Wake))
        {
            assert!(
                matches!(t.to, Hibernating | Hibernated | Provisioning),
                "{t:?}"
            );
        }
    }

    #[test]
    fn each_edge_is_listed_once_and_the_hibernation_statuses_are_known() {
        for (i, a) in TRANSITIONS.iter().enumerate() {
            assert!(!TRANSITIONS[i + 1..].contains(a), "{a:?} listed twice");
        }
        for status in [Hibernating, Hibernated, AwaitingAgent] {
            assert!(Status::ALL.contains(&status));
        }
    }
}
