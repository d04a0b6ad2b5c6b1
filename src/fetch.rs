//! HTTP: a reqwest (rustls) client and one GET with byte ranges and resumption. The
//! [`crate::delivery`] hub decides when to call it.

use crate::error::MeshError;
use crate::model::{ByteRange, Resource};
use bytes::Bytes;
use std::time::{Duration, Instant};
use url::Url;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// Per-request timeout, from sending the request to the last body byte.
    pub timeout: Duration,
    pub user_agent: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            timeout: Duration::from_secs(15),
            user_agent: concat!("gst-mesh/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }
}

/// A fetched file: the engine's type, which HTTP answers feed.
pub use mesh_core::delivery::engine::Fetched;

pub fn build_client(config: &HttpConfig) -> Result<reqwest::Client, MeshError> {
    reqwest::Client::builder()
        .user_agent(config.user_agent.clone())
        .timeout(config.timeout)
        .connect_timeout(config.timeout.min(Duration::from_secs(10)))
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(8)
        .build()
        .map_err(|e| MeshError::Unsupported(format!("cannot create HTTP client: {e}")))
}

fn classify(url: &Url, error: reqwest::Error, timeout: Duration) -> MeshError {
    let url = url.to_string();
    if error.is_timeout() {
        MeshError::Timeout { url, timeout }
    } else if error.is_connect() {
        let mut reason = String::new();
        let mut source: Option<&dyn std::error::Error> = Some(&error);
        while let Some(e) = source {
            reason = e.to_string();
            source = e.source();
        }
        MeshError::Connect { url, reason }
    } else {
        MeshError::Read {
            url,
            reason: error.to_string(),
        }
    }
}

/// One HTTP GET of a resource from byte `from` on (0 for all of it), honouring its byte range.
pub async fn http_get(
    client: &reqwest::Client,
    resource: &Resource,
    from: u64,
    timeout: Duration,
) -> Result<Fetched, MeshError> {
    let started = Instant::now();
    let url = &resource.url;
    // The part wanted: (offset, length), length None for "to the end of the file".
    let (offset, length) = match resource.range {
        Some(range) => (range.offset + from, Some(range.length.saturating_sub(from))),
        None => (from, None),
    };
    let mut request = client.get(url.clone());
    match length {
        Some(length) if length > 0 => {
            let range = ByteRange { offset, length };
            request = request.header(reqwest::header::RANGE, range.header_value());
        }
        Some(_) => {
            return Ok(Fetched {
                bytes: Bytes::new(),
                final_url: url.clone(),
                elapsed: Duration::ZERO,
            });
        }
        None if offset > 0 => {
            request = request.header(reqwest::header::RANGE, format!("bytes={offset}-"));
        }
        None => {}
    }
    let response = request
        .send()
        .await
        .map_err(|e| classify(url, e, timeout))?;
    let status = response.status();
    if !status.is_success() {
        return Err(MeshError::HttpStatus {
            url: url.to_string(),
            status: status.as_u16(),
        });
    }
    let final_url = response.url().clone();
    let partial = status == reqwest::StatusCode::PARTIAL_CONTENT;
    let mut bytes = response
        .bytes()
        .await
        .map_err(|e| classify(url, e, timeout))?;
    let short = |got: usize, want: u64| MeshError::Read {
        url: url.to_string(),
        reason: format!("file has {got} bytes, the part asked for ends at {want}"),
    };
    if !partial && (offset > 0 || length.is_some()) {
        // The server ignored Range and sent the whole file: cut the part out.
        let end = length.map_or(bytes.len() as u64, |l| offset + l);
        if (bytes.len() as u64) < end || offset > end {
            return Err(short(bytes.len(), end));
        }
        bytes = bytes.slice(offset as usize..end as usize);
    } else if let Some(length) = length
        && bytes.len() as u64 != length
    {
        return Err(MeshError::Read {
            url: url.to_string(),
            reason: format!("asked for {length} bytes, got {}", bytes.len()),
        });
    }
    Ok(Fetched {
        bytes,
        final_url,
        elapsed: started.elapsed(),
    })
}
