//! Segment integrity from PeerTube's `segments-sha256.json`.
//!
//! The file maps segment file names (the last path component of a segment URL) to the hex
//! SHA-256 of the segment, in one of two forms:
//!
//! - `{"seg_12.ts": "ab12…"}`: the hash of the whole file (PeerTube live);
//! - `{"video.mp4": {"0-1234": "…", "1235-9999": "…"}}`: hashes of inclusive byte ranges
//!   `first-last` of one file (PeerTube VOD, fMP4 with `EXT-X-BYTERANGE`).
//!
//! No byte from a peer may go downstream before its segment's hash matches one of these.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use thiserror::Error;
use url::Url;

/// A SHA-256 digest.
pub type Sha256Hash = [u8; 32];

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IntegrityError {
    #[error("segment hashes are not valid JSON: {0}")]
    Json(String),
    #[error("segment hashes: the top level is not an object")]
    NotAnObject,
    #[error("segment hashes: the entry for {file:?} is neither a hex string nor an object")]
    InvalidEntry { file: String },
    #[error("segment hashes: {file:?}: invalid SHA-256 hex {value:?}")]
    InvalidHash { file: String, value: String },
    #[error("segment hashes: {file:?}: invalid byte range {range:?} (expected first-last)")]
    InvalidRange { file: String, range: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum FileHashes {
    Whole(Sha256Hash),
    /// Keyed by the inclusive range (first, last).
    Ranges(HashMap<(u64, u64), Sha256Hash>),
}

/// The parsed contents of a `segments-sha256.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SegmentHashes {
    files: HashMap<String, FileHashes>,
}

impl SegmentHashes {
    /// Parses the file. Any malformed entry fails the whole file: a publisher that writes one
    /// bad hash cannot be trusted for the others.
    pub fn parse(json: &[u8]) -> Result<SegmentHashes, IntegrityError> {
        let value: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| IntegrityError::Json(e.to_string()))?;
        let serde_json::Value::Object(entries) = value else {
            return Err(IntegrityError::NotAnObject);
        };
        let mut files = HashMap::with_capacity(entries.len());
        for (file, entry) in entries {
            let hashes = match entry {
                serde_json::Value::String(hex) => FileHashes::Whole(parse_hash(&file, &hex)?),
                serde_json::Value::Object(ranges) => {
                    let mut by_range = HashMap::with_capacity(ranges.len());
                    for (range, hex) in ranges {
                        let key =
                            parse_range(&range).ok_or_else(|| IntegrityError::InvalidRange {
                                file: file.clone(),
                                range: range.clone(),
                            })?;
                        let serde_json::Value::String(hex) = hex else {
                            return Err(IntegrityError::InvalidEntry { file });
                        };
                        by_range.insert(key, parse_hash(&file, &hex)?);
                    }
                    FileHashes::Ranges(by_range)
                }
                _ => return Err(IntegrityError::InvalidEntry { file }),
            };
            files.insert(file, hashes);
        }
        Ok(SegmentHashes { files })
    }

    /// Number of files listed.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The expected hash of a segment: the resource at `url`, or the byte range
    /// `(offset, length)` of it. The file name is the URL's last path component,
    /// percent-decoded; the query and fragment play no part.
    ///
    /// A whole-file hash applies whatever the range (as in PeerTube's validator); a file with
    /// range hashes needs the exact range `offset-(offset+length-1)`. `None` when the file or
    /// range is not listed (for live, refetch the file and try again).
    pub fn lookup(&self, url: &Url, range: Option<(u64, u64)>) -> Option<Sha256Hash> {
        let hashes = self.files.get(&file_name(url)?)?;
        match (hashes, range) {
            (FileHashes::Whole(hash), _) => Some(*hash),
            (FileHashes::Ranges(ranges), Some((offset, length))) if length > 0 => {
                let last = offset.checked_add(length - 1)?;
                ranges.get(&(offset, last)).copied()
            }
            (FileHashes::Ranges(_), _) => None,
        }
    }
}

/// The key a segment URL is listed under: its last path component, percent-decoded.
pub fn file_name(url: &Url) -> Option<String> {
    let last = url.path_segments()?.next_back()?;
    if last.is_empty() {
        return None;
    }
    Some(
        match percent_encoding::percent_decode_str(last).decode_utf8() {
            Ok(decoded) => decoded.into_owned(),
            Err(_) => last.to_owned(),
        },
    )
}

/// The SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> Sha256Hash {
    Sha256::digest(data).into()
}

/// Whether `data` hashes to `expected`.
pub fn verify(data: &[u8], expected: &Sha256Hash) -> bool {
    sha256(data) == *expected
}

fn parse_hash(file: &str, value: &str) -> Result<Sha256Hash, IntegrityError> {
    let mut hash = [0u8; 32];
    hex::decode_to_slice(value, &mut hash).map_err(|_| IntegrityError::InvalidHash {
        file: file.to_owned(),
        value: value.to_owned(),
    })?;
    Ok(hash)
}

fn parse_range(range: &str) -> Option<(u64, u64)> {
    let (first, last) = range.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(first) || !digits(last) {
        return None;
    }
    let (first, last) = (first.parse().ok()?, last.parse().ok()?);
    (first <= last).then_some((first, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn sha256_known_answers() {
        assert_eq!(
            hex::encode(sha256(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex::encode(sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn whole_file_hashes_live_form() {
        let seg12 = b"segment twelve".repeat(1000);
        let seg13 = b"segment thirteen".repeat(900);
        let json = format!(
            r#"{{"seg_12.ts": "{}", "seg 13.ts": "{}"}}"#,
            hex::encode(sha256(&seg12)),
            hex::encode_upper(sha256(&seg13)),
        );
        let hashes = SegmentHashes::parse(json.as_bytes()).unwrap();
        assert_eq!(hashes.len(), 2);

        let h12 = hashes
            .lookup(
                &url("https://cdn.example/live/720p/seg_12.ts?token=x#f"),
                None,
            )
            .unwrap();
        assert!(verify(&seg12, &h12));
        assert!(!verify(&seg13, &h12));
        let mut corrupted = seg12.clone();
        corrupted[5000] ^= 1;
        assert!(!verify(&corrupted, &h12));

        // Percent-decoded name; upper-case hex accepted.
        let h13 = hashes
            .lookup(&url("https://cdn.example/live/seg%2013.ts"), None)
            .unwrap();
        assert!(verify(&seg13, &h13));
        // A whole-file hash applies to any range request of that file.
        assert_eq!(
            hashes.lookup(&url("http://o/seg_12.ts"), Some((0, 10))),
            Some(h12)
        );
        assert_eq!(hashes.lookup(&url("http://o/seg_14.ts"), None), None);
        assert_eq!(hashes.lookup(&url("http://o/live/"), None), None);
    }

    #[test]
    fn byte_range_hashes_vod_form() {
        let file: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (a, b) = (&file[..1235], &file[1235..]);
        let json = format!(
            r#"{{"video.mp4": {{"0-1234": "{}", "1235-9999": "{}"}}}}"#,
            hex::encode(sha256(a)),
            hex::encode(sha256(b)),
        );
        let hashes = SegmentHashes::parse(json.as_bytes()).unwrap();
        let u = url("https://cdn.example/vod/video.mp4?range=ignored");

        let ha = hashes.lookup(&u, Some((0, 1235))).unwrap();
        let hb = hashes.lookup(&u, Some((1235, 8765))).unwrap();
        assert!(verify(a, &ha));
        assert!(verify(b, &hb));
        assert!(!verify(b, &ha));
        // Ranges must match exactly; a range file has no whole-file hash.
        assert_eq!(hashes.lookup(&u, Some((0, 1234))), None);
        assert_eq!(hashes.lookup(&u, Some((1, 1235))), None);
        assert_eq!(hashes.lookup(&u, Some((0, 0))), None);
        assert_eq!(hashes.lookup(&u, None), None);
        assert_eq!(hashes.lookup(&u, Some((u64::MAX, 2))), None);
    }

    #[test]
    fn malformed_files_are_rejected() {
        let good = hex::encode(sha256(b"x"));
        let cases = [
            ("not json", "Json"),
            ("[]", "NotAnObject"),
            (r#"{"a.ts": 5}"#, "InvalidEntry"),
            (r#"{"a.ts": "abcd"}"#, "InvalidHash"),
            (r#"{"a.ts": {"0-9": 5}}"#, "InvalidEntry"),
        ];
        for (json, kind) in cases {
            let err = SegmentHashes::parse(json.as_bytes()).unwrap_err();
            assert!(format!("{err:?}").starts_with(kind), "{json}: {err:?}");
        }
        for range in [
            "9-0",
            "0-",
            "-9",
            "a-b",
            "0",
            "+1-2",
            "0-18446744073709551616",
        ] {
            let json = format!(r#"{{"v.mp4": {{"{range}": "{good}"}}}}"#);
            assert_eq!(
                SegmentHashes::parse(json.as_bytes()),
                Err(IntegrityError::InvalidRange {
                    file: "v.mp4".into(),
                    range: range.into()
                })
            );
        }
        let json = format!(r#"{{"v.ts": "{good}zz"}}"#);
        assert!(matches!(
            SegmentHashes::parse(json.as_bytes()),
            Err(IntegrityError::InvalidHash { .. })
        ));
        assert!(SegmentHashes::parse(b"{}").unwrap().is_empty());
    }
}
