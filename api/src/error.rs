//! API errors: docker's JSON `{"message": "..."}` with the status docker gives for the
//! same failure (404 for a missing object, 409 for a conflict, 400 for a bad request).

use hyper::StatusCode;
use runtime::engine::{EngineError, ErrorKind};

use crate::body::{self, Resp};

/// A failed request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The engine refused or failed (boxed: engine errors are large, requests' results
    /// small).
    #[error(transparent)]
    Engine(Box<EngineError>),
    /// The body is not the JSON the endpoint takes.
    #[error("invalid JSON body: {0}")]
    BadJson(#[source] serde_json::Error),
    /// The body could not be read (or is too large).
    #[error("cannot read the request body")]
    Body,
    /// A query parameter has a value the endpoint does not take.
    #[error("invalid value {value:?} for {name}")]
    BadParam {
        /// The parameter.
        name: &'static str,
        /// Its value.
        value: String,
    },
    /// No endpoint has this method and path.
    #[error("page not found")]
    NotFound,
    /// The client asks for an API version husk does not speak.
    #[error(
        "client version {0} is too new. Maximum supported API version is {max}",
        max = crate::API_VERSION
    )]
    VersionTooNew(String),
    /// No exec instance has this ID.
    #[error("No such exec instance: {0}")]
    NoSuchExec(String),
    /// The exec instance ran already.
    #[error("exec {0} has already been started")]
    ExecStarted(String),
    /// The container must be running.
    #[error("Container {0} is not running")]
    NotRunning(String),
    /// An endpoint husk does not serve yet.
    #[error("not implemented in husk yet: {0}")]
    NotImplemented(&'static str),
    /// A blocking task died.
    #[error("internal error: a worker failed")]
    Worker,
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        Self::Engine(Box::new(e))
    }
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Engine(e) => match e.kind() {
                ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
                ErrorKind::NotFound => StatusCode::NOT_FOUND,
                ErrorKind::Conflict => StatusCode::CONFLICT,
                ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            },
            Self::BadJson(_) | Self::Body | Self::BadParam { .. } | Self::VersionTooNew(_) => {
                StatusCode::BAD_REQUEST
            }
            Self::NotFound | Self::NoSuchExec(_) => StatusCode::NOT_FOUND,
            Self::ExecStarted(_) | Self::NotRunning(_) => StatusCode::CONFLICT,
            Self::Worker => StatusCode::INTERNAL_SERVER_ERROR,
            Self::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
        }
    }

    /// The response docker's clients expect.
    pub fn response(&self) -> Resp {
        let message = match self {
            Self::Engine(e) => agent_proto::error_chain(e.as_ref()),
            other => other.to_string(),
        };
        body::json(self.status(), &serde_json::json!({ "message": message }))
    }
}
