//! Forwarding a multi-value write to a replica of its key, and when another replica may
//! be tried after a failure.
//!
//! A write forwarded to a replica that took it is coordinated there: it mints a new
//! version. Sending the same write to a second replica would mint a second version of
//! it, a sibling the client never wrote. So the next replica is tried only when the
//! write surely never reached the first one (no connection could be made); when its
//! outcome is unknown (a timeout, a broken connection), the coordinator gives up and
//! the client sees a quorum failure, which says the write may have been applied.

use dynakv_crdt::Context;
use dynakv_http_api::ApiError;

use crate::transport::RpcError;

/// What to do after sending a forwarded write to one replica.
#[derive(Debug, PartialEq)]
pub enum Next {
    /// The replica decided: pass its answer (success or its error) to the client.
    Answer(Result<Context, ApiError>),
    /// It never saw the write: try the next replica.
    TryNext,
    /// It may have taken the write: stop, reporting a quorum failure.
    GiveUp,
}

pub fn after(outcome: Result<Context, RpcError>) -> Next {
    match outcome {
        Ok(context) => Next::Answer(Ok(context)),
        // The replica took the write and answered; pass its verdict on.
        Err(RpcError::Remote { error, .. }) => Next::Answer(Err(error.into())),
        Err(RpcError::Connect { .. }) => Next::TryNext,
        Err(RpcError::Timeout { .. } | RpcError::Transport { .. }) => Next::GiveUp,
        Err(e @ RpcError::Protocol { .. }) => Next::Answer(Err(ApiError::Internal(e.to_string()))),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use dynakv_crdt::CausalContext;

    use super::*;
    use crate::transport::message::WireError;

    #[test]
    fn only_a_write_that_surely_never_arrived_is_sent_elsewhere() {
        let addr = || "p:1".to_string();
        let ctx = Context::Mv(CausalContext::new());
        // A peer's error arrives as it crossed the wire, and is passed on as it came.
        let refused = WireError::from(&ApiError::TooManySiblings { count: 9, limit: 9 });
        let cases: Vec<(Result<Context, RpcError>, Next)> = vec![
            (Ok(ctx.clone()), Next::Answer(Ok(ctx))),
            (
                Err(RpcError::Remote {
                    addr: addr(),
                    error: refused.clone(),
                }),
                Next::Answer(Err(refused.into())),
            ),
            (
                Err(RpcError::Connect {
                    addr: addr(),
                    detail: "refused".into(),
                }),
                Next::TryNext,
            ),
            (
                Err(RpcError::Timeout {
                    addr: addr(),
                    timeout: Duration::from_secs(1),
                }),
                Next::GiveUp,
            ),
            (
                Err(RpcError::Transport {
                    addr: addr(),
                    detail: "reset".into(),
                }),
                Next::GiveUp,
            ),
        ];
        for (outcome, expected) in cases {
            let shown = format!("{outcome:?}");
            assert_eq!(after(outcome), expected, "{shown}");
        }
        let protocol = after(Err(RpcError::Protocol {
            addr: addr(),
            asked: "Coordinate",
            answered: "Get",
        }));
        assert!(matches!(protocol, Next::Answer(Err(ApiError::Internal(_)))));
    }
}
