//! Errors of the plain-Rust layers. The GStreamer glue maps each kind to an error domain.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MeshError {
    #[error("HTTP {status} for {url}")]
    HttpStatus { url: String, status: u16 },
    #[error("could not connect to {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("request for {url} timed out after {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("reading {url} failed: {reason}")]
    Read { url: String, reason: String },
    #[error("invalid playlist: {reason} ({url})")]
    InvalidPlaylist { url: String, reason: String },
    #[error("encryption key {url} unusable: {reason}")]
    Key { url: String, reason: String },
    #[error("decryption of {url} failed: {reason}")]
    Decrypt { url: String, reason: String },
    #[error("unsupported stream: {0}")]
    Unsupported(String),
    #[error("no decoder for the codecs of any variant: {codecs}")]
    NoDecoder { codecs: String },
    #[error("tracker {url}: {reason}")]
    Tracker { url: String, reason: String },
    #[error("mesh: {0}")]
    Mesh(String),
    #[error("invalid location {location:?}: {reason}")]
    InvalidLocation { location: String, reason: String },
}

/// At most `max` characters of `text`, for messages quoting what a server or a parser
/// said (cut on a character boundary: the text may be anything).
pub fn clipped(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

impl MeshError {
    /// Whether a later attempt of the same request may succeed.
    pub fn is_transient(&self, retry_not_found: bool) -> bool {
        match self {
            MeshError::HttpStatus { status, .. } => {
                *status >= 500
                    || *status == 408
                    || *status == 429
                    || (retry_not_found && *status == 404)
            }
            MeshError::Connect { .. } | MeshError::Timeout { .. } | MeshError::Read { .. } => true,
            _ => false,
        }
    }

    pub fn http_status(&self) -> Option<u16> {
        match self {
            MeshError::HttpStatus { status, .. } => Some(*status),
            _ => None,
        }
    }
}
