//! The listener's side of the guard: upgrade outcomes in, rejections out.

use std::sync::{
    atomic::{AtomicU8, Ordering},
    Arc,
};

use futures_util::task::AtomicWaker;

/// Why the guard stopped a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// A request head with both `Content-Length` and `Transfer-Encoding`.
    ConflictingFraming,
    /// A `Content-Length` that is not plain digits, is larger than hyper
    /// accepts, or differs from another `Content-Length` in the same head.
    InvalidContentLength,
    /// Framing the guard cannot follow: a head httparse refuses, a
    /// `Transfer-Encoding` whose last coding is not `chunked`, or a malformed
    /// chunked body.
    UnparseableFraming,
}

impl Rejection {
    /// What was wrong, for the log line.
    pub fn reason(self) -> &'static str {
        match self {
            Self::ConflictingFraming => "both Content-Length and Transfer-Encoding",
            Self::InvalidContentLength => "invalid Content-Length",
            Self::UnparseableFraming => "message framing that cannot be followed",
        }
    }

    pub(super) fn code(self) -> u8 {
        match self {
            Self::ConflictingFraming => 1,
            Self::InvalidContentLength => 2,
            Self::UnparseableFraming => 3,
        }
    }

    pub(super) fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Self::ConflictingFraming),
            2 => Some(Self::InvalidContentLength),
            3 => Some(Self::UnparseableFraming),
            _ => None,
        }
    }
}

/// Whether a request is one after which the guard waits for
/// [`GuardHandle::upgrade_outcome`]: it has an `Upgrade` header or is a
/// `CONNECT`. The guard applies exactly this test to the raw head, so the
/// listener reports an outcome for exactly the requests the guard waits on.
pub fn is_upgrade_request(headers: &http::HeaderMap, method: &http::Method) -> bool {
    may_switch(
        method == http::Method::CONNECT,
        headers.contains_key(http::header::UPGRADE),
    )
}

/// The one criterion behind [`is_upgrade_request`] and the guard's own test.
pub(super) fn may_switch(is_connect: bool, has_upgrade_header: bool) -> bool {
    is_connect || has_upgrade_header
}

pub(super) const NO_OUTCOME: u8 = 0;
const SWITCHED: u8 = 1;
const NOT_SWITCHED: u8 = 2;

#[derive(Debug)]
pub(super) struct Shared {
    /// The read waiting for an upgrade outcome.
    pub(super) waker: AtomicWaker,
    /// The outcome of the pending upgrade, until the guard takes it.
    pub(super) outcome: AtomicU8,
    /// [`Rejection::code`], or 0.
    pub(super) rejection: AtomicU8,
}

impl Shared {
    pub(super) fn take_outcome(&self) -> Option<bool> {
        match self.outcome.swap(NO_OUTCOME, Ordering::AcqRel) {
            SWITCHED => Some(true),
            NOT_SWITCHED => Some(false),
            _ => None,
        }
    }
}

/// The listener's side of a [`GuardedIo`](super::GuardedIo): reports upgrade outcomes to it and
/// reads why it stopped the connection.
#[derive(Debug, Clone)]
pub struct GuardHandle(pub(super) Arc<Shared>);

impl GuardHandle {
    /// Reports the response to the request for which [`is_upgrade_request`]
    /// was true: `switched` when the connection changed protocols (101 to an
    /// `Upgrade`, 2xx to a `CONNECT`). Must be called for every such request
    /// that gets a response; until then the guard hands hyper nothing more.
    /// Switched, the rest of the connection passes through; not switched, what
    /// follows is checked as the next request. May be called before the guard
    /// has finished reading that request's body.
    pub fn upgrade_outcome(&self, switched: bool) {
        let outcome = if switched { SWITCHED } else { NOT_SWITCHED };
        self.0.outcome.store(outcome, Ordering::Release);
        self.0.waker.wake();
    }

    /// Why the connection was stopped, once it was.
    pub fn rejection(&self) -> Option<Rejection> {
        Rejection::from_code(self.0.rejection.load(Ordering::Acquire))
    }
}
