//! UTCTiming: where the server's clock can be read, and parsing its answers.

use super::Mpd;
use chrono::{DateTime, NaiveDateTime, Utc};
use url::Url;

/// A way to read the server's clock, from an MPD's UTCTiming elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClockSource {
    /// urn:mpeg:dash:utc:direct:2014: the time is in the MPD itself.
    Direct(DateTime<Utc>),
    /// urn:mpeg:dash:utc:http-xsdate:2014 / http-iso:2014: GET the URL, the body is the time.
    Fetch(Url),
}

/// The usable UTCTiming sources of an MPD, in its order of preference. Schemes that need
/// HTTP headers or NTP (http-head, http-ntp, ntp) are skipped.
pub fn clock_sources(mpd: &Mpd) -> Vec<ClockSource> {
    let mut out = Vec::new();
    for timing in &mpd.doc.UTCTiming {
        let scheme = timing.schemeIdUri.trim();
        let Some(value) = timing.value.as_deref().map(str::trim) else {
            continue;
        };
        let kind = scheme
            .strip_prefix("urn:mpeg:dash:utc:")
            .and_then(|rest| rest.split(':').next());
        match kind {
            Some("direct") => {
                if let Ok(time) = parse_utc_time(value) {
                    out.push(ClockSource::Direct(time));
                }
            }
            Some("http-xsdate") | Some("http-iso") => {
                // The value may list several URLs separated by spaces.
                out.extend(
                    value
                        .split_whitespace()
                        .filter_map(|u| mpd.url.join(u).ok())
                        .map(ClockSource::Fetch),
                );
            }
            _ => {}
        }
    }
    out
}

/// Parses an xs:dateTime / ISO 8601 time as servers send it; a time without zone is UTC.
pub fn parse_utc_time(text: &str) -> Result<DateTime<Utc>, String> {
    let text = text.trim().trim_matches('"');
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    // ISO 8601 forms that RFC 3339 leaves out: a space for "T", lowercase, no zone.
    let normalised = text.replace(' ', "T").to_ascii_uppercase();
    if let Ok(time) = DateTime::parse_from_rfc3339(&normalised) {
        return Ok(time.with_timezone(&Utc));
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(time) = NaiveDateTime::parse_from_str(&normalised, format) {
            return Ok(time.and_utc());
        }
    }
    if let Ok(time) = DateTime::parse_from_str(&normalised, "%Y-%m-%dT%H:%M:%S%.f%z") {
        return Ok(time.with_timezone(&Utc));
    }
    let shown = crate::error::clipped(text, 60);
    Err(format!("not a date and time: {shown:?}"))
}
