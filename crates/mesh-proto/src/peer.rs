//! The p2p-media-loader 2.x peer wire protocol: binary commands, their framing, and raw segment
//! data on one reliable, ordered data channel.
//!
//! Every data-channel message is either a command part or raw segment data:
//!
//! - A command is a body (one byte of command type, then named fields) framed as
//!   `cstr` body `cend`. A body too long for one message is split into nearly equal parts framed
//!   `cstr…dend`, then `dstr…dend` for middle parts and `dstr…cend` for the last.
//! - Any message that does not start with `cstr`/`dstr` and end with `cend`/`dend` is raw
//!   segment data, sent after a [`Command::SegmentData`] in chunks of at most
//!   [`MAX_MESSAGE_LEN`] bytes (see [`data_chunks`]).
//!
//! Field values are typed items; the type is the high nibble of the item's first byte:
//!
//! - Int (`0x0N`): N magnitude bytes follow, big-endian; the top bit of the first magnitude byte
//!   is the sign. N is the smallest count that leaves that bit free.
//! - Similar-int array (`0x10`): a group count byte, then per group an Int holding the group's
//!   shared high bits (`value & !0xff`) OR'd with the group's length, then one low byte per entry.
//! - String (`0x2H LL`): a 12-bit length, then that many bytes. No command uses it; the decoder
//!   skips such fields.
//!
//! `docs/wire-protocol.md` writes the format down with byte-exact vectors; the tests below assert
//! the same vectors.

use crate::ids::SegmentId;
use bytes::Bytes;
use thiserror::Error;

/// The largest data-channel message either side sends: p2p-media-loader's default
/// `webRtcMaxMessageSize` (64 KiB − 1). Commands longer than this are split, and segment data
/// goes in chunks of at most this size.
pub const MAX_MESSAGE_LEN: usize = 64 * 1024 - 1;

/// The default cap on a reassembled command body. The largest well-formed command, an
/// announcement with two full arrays, is about 135 KB.
pub const DEFAULT_MAX_COMMAND_LEN: usize = 256 * 1024;

/// Entries per similar-int group: the group's length shares a byte with the high bits.
pub const MAX_GROUP_LEN: usize = 255;

/// Groups per similar-int array: the group count is one byte.
pub const MAX_ARRAY_GROUPS: usize = 255;

const FRAME_LEN: usize = 4;
const COMMAND_START: &[u8; FRAME_LEN] = b"cstr";
const COMMAND_END: &[u8; FRAME_LEN] = b"cend";
const PART_START: &[u8; FRAME_LEN] = b"dstr";
const PART_END: &[u8; FRAME_LEN] = b"dend";

const ITEM_INT: u8 = 0;
const ITEM_SIMILAR_INT_ARRAY: u8 = 1;
const ITEM_STRING: u8 = 2;

/// Command type codes (the first body byte).
pub mod code {
    pub const SEGMENTS_ANNOUNCEMENT: u8 = 0;
    pub const SEGMENT_REQUEST: u8 = 1;
    pub const SEGMENT_DATA: u8 = 2;
    pub const SENDING_COMPLETED: u8 = 3;
    pub const SEGMENT_ABSENT: u8 = 4;
    pub const CANCEL: u8 = 5;
}

pub use crate::ids::RequestId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// The sender's full segment state for this swarm; it replaces the previous announcement.
    /// Fields `l` (held) and `p` (being loaded over HTTP); an empty list is left out.
    SegmentsAnnouncement {
        loaded: Vec<SegmentId>,
        loading: Vec<SegmentId>,
    },
    /// Fields `i`, `r`, and `b`: the byte to resume from. `b` is left out when it is `None` or
    /// 0, as the JS encoder does, so `Some(0)` decodes as `None`.
    SegmentRequest {
        id: SegmentId,
        request_id: RequestId,
        byte_from: Option<u64>,
    },
    /// Fields `i`, `s` (the number of bytes that follow, as raw data messages), `r`.
    SegmentData {
        id: SegmentId,
        request_id: RequestId,
        size: u64,
    },
    /// Fields `i`, `r`: all the data of the answer to request `r` has been sent.
    SendingCompleted {
        id: SegmentId,
        request_id: RequestId,
    },
    /// Fields `i`, `r`: the peer does not have the segment.
    SegmentAbsent {
        id: SegmentId,
        request_id: RequestId,
    },
    /// Fields `i`, `r`: the requester no longer wants the segment.
    Cancel {
        id: SegmentId,
        request_id: RequestId,
    },
}

impl Command {
    /// The command type code.
    pub fn code(&self) -> u8 {
        match self {
            Command::SegmentsAnnouncement { .. } => code::SEGMENTS_ANNOUNCEMENT,
            Command::SegmentRequest { .. } => code::SEGMENT_REQUEST,
            Command::SegmentData { .. } => code::SEGMENT_DATA,
            Command::SendingCompleted { .. } => code::SENDING_COMPLETED,
            Command::SegmentAbsent { .. } => code::SEGMENT_ABSENT,
            Command::Cancel { .. } => code::CANCEL,
        }
    }
}

/// One decoded data-channel message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    Command(Command),
    /// Raw segment data (a slice of the message, not a copy).
    Data(Bytes),
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("command continuation part without a first part")]
    NoFirstPart,
    #[error("a new command started before the previous split command ended")]
    Interrupted,
    #[error("command of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("empty command")]
    Empty,
    #[error("unknown command type {0}")]
    UnknownCommand(u8),
    #[error("command truncated at byte {0}")]
    Truncated(usize),
    #[error("field '{field}': unknown item type {item}")]
    UnknownItemType { field: char, item: u8 },
    #[error("field '{field}': invalid integer")]
    InvalidInt { field: char },
    #[error("field '{field}' has the wrong type")]
    WrongType { field: char },
    #[error("field '{field}' must not be negative")]
    Negative { field: char },
    #[error("command {command} lacks field '{field}'")]
    MissingField { command: u8, field: char },
}

// ---------------------------------------------------------------------------------------------
// Encoding

/// Encodes a command into the data-channel messages to send, in order (one message unless the
/// body exceeds [`MAX_MESSAGE_LEN`]).
pub fn encode(command: &Command) -> Vec<Vec<u8>> {
    encode_with_limit(command, MAX_MESSAGE_LEN)
}

/// Encodes with another message-size limit (p2p-media-loader's `webRtcMaxMessageSize`),
/// splitting exactly as the JS implementation does. `max_message_len` must exceed the 8 framing
/// bytes; smaller values are raised to 9.
pub fn encode_with_limit(command: &Command, max_message_len: usize) -> Vec<Vec<u8>> {
    frame(
        &encode_body(command),
        max_message_len.max(2 * FRAME_LEN + 1),
    )
}

/// The unframed command body.
pub fn encode_body(command: &Command) -> Vec<u8> {
    let mut out = vec![command.code()];
    match command {
        Command::SegmentsAnnouncement { loaded, loading } => {
            if !loaded.is_empty() {
                out.push(b'l');
                put_similar_int_array(&mut out, loaded);
            }
            if !loading.is_empty() {
                out.push(b'p');
                put_similar_int_array(&mut out, loading);
            }
        }
        Command::SegmentRequest {
            id,
            request_id,
            byte_from,
        } => {
            put_int_field(&mut out, b'i', *id as i128);
            put_int_field(&mut out, b'r', *request_id as i128);
            if let Some(b) = byte_from.filter(|b| *b != 0) {
                put_int_field(&mut out, b'b', b as i128);
            }
        }
        Command::SegmentData {
            id,
            request_id,
            size,
        } => {
            put_int_field(&mut out, b'i', *id as i128);
            put_int_field(&mut out, b's', *size as i128);
            put_int_field(&mut out, b'r', *request_id as i128);
        }
        Command::SendingCompleted { id, request_id }
        | Command::SegmentAbsent { id, request_id }
        | Command::Cancel { id, request_id } => {
            put_int_field(&mut out, b'i', *id as i128);
            put_int_field(&mut out, b'r', *request_id as i128);
        }
    }
    out
}

fn put_int_field(out: &mut Vec<u8>, name: u8, value: i128) {
    out.push(name);
    put_int(out, value);
}

/// Int item: `0x0N` then N bytes of magnitude, big-endian, sign in the top bit. N is the least
/// number of bytes holding the magnitude's bits plus the sign bit (0 takes one byte).
fn put_int(out: &mut Vec<u8>, value: i128) {
    let magnitude = value.unsigned_abs();
    let bits = 128 - magnitude.leading_zeros() as usize;
    let len = (bits + 1).div_ceil(8);
    out.push((ITEM_INT << 4) | len as u8);
    let start = out.len();
    for i in (0..len).rev() {
        out.push((magnitude >> (8 * i)) as u8);
    }
    if value < 0 {
        out[start] |= 0x80;
    }
}

/// Similar-int array: entries grouped by their shared high bits (`value & !0xff`, two's
/// complement), groups in order of first appearance, entries in input order within a group.
/// Groups hold at most [`MAX_GROUP_LEN`] entries (a longer run continues in the next group) and
/// at most [`MAX_ARRAY_GROUPS`] groups are written; entries of later groups are left out.
fn put_similar_int_array(out: &mut Vec<u8>, values: &[i64]) {
    let mut commons: Vec<(i64, Vec<u8>)> = Vec::new();
    for &value in values {
        let common = value & !0xff;
        let low = (value & 0xff) as u8;
        match commons.iter_mut().find(|(c, _)| *c == common) {
            Some((_, lows)) => lows.push(low),
            None => commons.push((common, vec![low])),
        }
    }
    let groups: Vec<(i64, &[u8])> = commons
        .iter()
        .flat_map(|(common, lows)| lows.chunks(MAX_GROUP_LEN).map(|c| (*common, c)))
        .take(MAX_ARRAY_GROUPS)
        .collect();
    out.push(ITEM_SIMILAR_INT_ARRAY << 4);
    out.push(groups.len() as u8);
    for (common, lows) in groups {
        put_int(out, (common | lows.len() as i64) as i128);
        out.extend_from_slice(lows);
    }
}

/// Frames a body as one message, or splits it into `n` parts of `ceil(len / n)` bytes (the
/// last may be shorter), with `n = ceil(len / max)`, plus one when the framed parts would still
/// exceed `max`.
fn frame(body: &[u8], max_message_len: usize) -> Vec<Vec<u8>> {
    let framing = 2 * FRAME_LEN;
    if body.len() + framing <= max_message_len {
        return vec![framed(COMMAND_START, body, COMMAND_END)];
    }
    let mut parts = body.len().div_ceil(max_message_len);
    if body.len().div_ceil(parts) + framing > max_message_len {
        parts += 1;
    }
    let part_len = body.len().div_ceil(parts);
    (0..parts)
        .map(|i| {
            let from = (i * part_len).min(body.len());
            let to = ((i + 1) * part_len).min(body.len());
            let start = if i == 0 { COMMAND_START } else { PART_START };
            let end = if i == parts - 1 {
                COMMAND_END
            } else {
                PART_END
            };
            framed(start, &body[from..to], end)
        })
        .collect()
}

fn framed(start: &[u8; FRAME_LEN], body: &[u8], end: &[u8; FRAME_LEN]) -> Vec<u8> {
    let mut message = Vec::with_capacity(body.len() + 2 * FRAME_LEN);
    message.extend_from_slice(start);
    message.extend_from_slice(body);
    message.extend_from_slice(end);
    message
}

/// Splits segment data into the raw data messages that follow a [`Command::SegmentData`]: chunks
/// of [`MAX_MESSAGE_LEN`] bytes, the last one shorter. The chunks share `data`'s buffer.
pub fn data_chunks(data: &Bytes) -> impl Iterator<Item = Bytes> + '_ {
    (0..data.len())
        .step_by(MAX_MESSAGE_LEN)
        .map(move |from| data.slice(from..(from + MAX_MESSAGE_LEN).min(data.len())))
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// Whether a message is a command part: it starts with `cstr` or `dstr` and ends with `cend` or
/// `dend`. Anything else is raw segment data.
pub fn is_command_part(message: &[u8]) -> bool {
    message.len() >= 2 * FRAME_LEN
        && (message.starts_with(COMMAND_START) || message.starts_with(PART_START))
        && (message.ends_with(COMMAND_END) || message.ends_with(PART_END))
}

/// Turns incoming data-channel messages into commands and raw data, reassembling split
/// commands. Reassembly is bounded; any error drops the partial command. An error means the
/// peer broke the protocol, and the caller may disconnect it; the decoder stays usable.
#[derive(Debug)]
pub struct Decoder {
    partial: Option<Vec<u8>>,
    max_command_len: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

impl Decoder {
    pub fn new() -> Self {
        Decoder::with_max_command_len(DEFAULT_MAX_COMMAND_LEN)
    }

    /// A decoder that rejects command bodies longer than `max_command_len` bytes.
    pub fn with_max_command_len(max_command_len: usize) -> Self {
        Decoder {
            partial: None,
            max_command_len,
        }
    }

    /// Whether a split command is partly received.
    pub fn is_assembling(&self) -> bool {
        self.partial.is_some()
    }

    /// Feeds one message. Returns a command once its last part arrives, raw data at once, and
    /// `None` for the first and middle parts of a split command.
    pub fn push(&mut self, message: Bytes) -> Result<Option<Incoming>, DecodeError> {
        if !is_command_part(&message) {
            return Ok(Some(Incoming::Data(message)));
        }
        let first = message.starts_with(COMMAND_START);
        let last = message.ends_with(COMMAND_END);
        let body = &message[FRAME_LEN..message.len() - FRAME_LEN];
        let mut partial = match (self.partial.take(), first) {
            (Some(_), true) => return Err(DecodeError::Interrupted),
            (None, false) => return Err(DecodeError::NoFirstPart),
            (Some(partial), false) => partial,
            (None, true) => Vec::new(),
        };
        let len = partial.len() + body.len();
        if len > self.max_command_len {
            return Err(DecodeError::TooLarge {
                len,
                max: self.max_command_len,
            });
        }
        if last {
            if partial.is_empty() {
                return decode_body(body).map(|c| Some(Incoming::Command(c)));
            }
            partial.extend_from_slice(body);
            return decode_body(&partial).map(|c| Some(Incoming::Command(c)));
        }
        partial.extend_from_slice(body);
        self.partial = Some(partial);
        Ok(None)
    }
}

#[derive(Debug)]
enum Value {
    Int(i64),
    Ints(Vec<i64>),
    Str,
}

/// Decodes an unframed command body. Fields may come in any order; the last of repeated fields
/// wins and fields a command does not know are ignored, as in the JS decoder.
pub fn decode_body(body: &[u8]) -> Result<Command, DecodeError> {
    let (&code, _) = body.split_first().ok_or(DecodeError::Empty)?;
    if code > code::CANCEL {
        return Err(DecodeError::UnknownCommand(code));
    }
    let mut reader = Reader { body, at: 1 };
    let mut fields: Vec<(u8, Value)> = Vec::new();
    while !reader.done() {
        let name = reader.byte()?;
        let field = name as char;
        let item = reader.peek()? >> 4;
        let value = match item {
            ITEM_INT => Value::Int(reader.int(field)?),
            ITEM_SIMILAR_INT_ARRAY => Value::Ints(reader.similar_int_array(field)?),
            ITEM_STRING => {
                reader.string()?;
                Value::Str
            }
            _ => return Err(DecodeError::UnknownItemType { field, item }),
        };
        fields.retain(|(n, _)| *n != name);
        fields.push((name, value));
    }
    let get = |name: u8| fields.iter().find(|(n, _)| *n == name).map(|(_, v)| v);
    let int = |name: u8| -> Result<Option<i64>, DecodeError> {
        match get(name) {
            None => Ok(None),
            Some(Value::Int(v)) => Ok(Some(*v)),
            Some(_) => Err(DecodeError::WrongType {
                field: name as char,
            }),
        }
    };
    let required = |name: u8| -> Result<i64, DecodeError> {
        int(name)?.ok_or(DecodeError::MissingField {
            command: code,
            field: name as char,
        })
    };
    let unsigned = |name: u8, v: i64| -> Result<u64, DecodeError> {
        u64::try_from(v).map_err(|_| DecodeError::Negative {
            field: name as char,
        })
    };
    let ints = |name: u8| -> Result<Vec<i64>, DecodeError> {
        match get(name) {
            None => Ok(Vec::new()),
            Some(Value::Ints(v)) => Ok(v.clone()),
            Some(_) => Err(DecodeError::WrongType {
                field: name as char,
            }),
        }
    };
    Ok(match code {
        code::SEGMENTS_ANNOUNCEMENT => Command::SegmentsAnnouncement {
            loaded: ints(b'l')?,
            loading: ints(b'p')?,
        },
        code::SEGMENT_REQUEST => Command::SegmentRequest {
            id: required(b'i')?,
            request_id: required(b'r')?,
            byte_from: match int(b'b')? {
                None | Some(0) => None,
                Some(b) => Some(unsigned(b'b', b)?),
            },
        },
        code::SEGMENT_DATA => Command::SegmentData {
            id: required(b'i')?,
            request_id: required(b'r')?,
            size: unsigned(b's', required(b's')?)?,
        },
        _ => {
            let id = required(b'i')?;
            let request_id = required(b'r')?;
            match code {
                code::SENDING_COMPLETED => Command::SendingCompleted { id, request_id },
                code::SEGMENT_ABSENT => Command::SegmentAbsent { id, request_id },
                _ => Command::Cancel { id, request_id },
            }
        }
    })
}

struct Reader<'a> {
    body: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn done(&self) -> bool {
        self.at >= self.body.len()
    }

    fn peek(&self) -> Result<u8, DecodeError> {
        self.body
            .get(self.at)
            .copied()
            .ok_or(DecodeError::Truncated(self.at))
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        let b = self.peek()?;
        self.at += 1;
        Ok(b)
    }

    fn bytes(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.body.len());
        let end = end.ok_or(DecodeError::Truncated(self.body.len()))?;
        let slice = &self.body[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn int(&mut self, field: char) -> Result<i64, DecodeError> {
        let head = self.byte()?;
        if head >> 4 != ITEM_INT {
            return Err(DecodeError::WrongType { field });
        }
        let len = (head & 0x0f) as usize;
        if len == 0 {
            return Err(DecodeError::InvalidInt { field });
        }
        let bytes = self.bytes(len)?;
        let negative = bytes[0] & 0x80 != 0;
        let mut magnitude: u128 = (bytes[0] & 0x7f) as u128;
        // At most 15 bytes: 119 bits, so u128 cannot overflow.
        for &b in &bytes[1..] {
            magnitude = (magnitude << 8) | b as u128;
        }
        let value = if negative {
            -(magnitude as i128)
        } else {
            magnitude as i128
        };
        i64::try_from(value).map_err(|_| DecodeError::InvalidInt { field })
    }

    fn similar_int_array(&mut self, field: char) -> Result<Vec<i64>, DecodeError> {
        self.byte()?;
        let groups = self.byte()?;
        let mut values = Vec::new();
        for _ in 0..groups {
            let head = self.int(field)?;
            let common = head & !0xff;
            let count = (head & 0xff) as usize;
            values.extend(self.bytes(count)?.iter().map(|&low| common | low as i64));
        }
        Ok(values)
    }

    fn string(&mut self) -> Result<(), DecodeError> {
        let head = self.byte()?;
        let low = self.byte()?;
        let len = (((head & 0x0f) as usize) << 8) | low as usize;
        self.bytes(len)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    fn decode_all(messages: Vec<Vec<u8>>) -> Vec<Incoming> {
        let mut decoder = Decoder::new();
        let out: Vec<Incoming> = messages
            .into_iter()
            .filter_map(|m| decoder.push(Bytes::from(m)).unwrap())
            .collect();
        assert!(!decoder.is_assembling());
        out
    }

    fn round_trip(command: &Command) -> Command {
        match decode_all(encode(command)).as_slice() {
            [Incoming::Command(c)] => c.clone(),
            other => panic!("expected one command, got {other:?}"),
        }
    }

    fn request(id: i64, request_id: i64) -> Command {
        Command::SegmentRequest {
            id,
            request_id,
            byte_from: None,
        }
    }

    // Vectors: produced by reading the JS encoder (binary-serialization.ts,
    // binary-command-creator.ts, commands.ts) and checked against it; docs/wire-protocol.md lists
    // the same ones.

    #[test]
    fn worked_example_request() {
        let expected = hex("63 73 74 72 01 69 03 12 d6 87 72 02 02 01 63 65 6e 64");
        assert_eq!(encode(&request(1_234_567, 513)), vec![expected.clone()]);
        assert_eq!(
            round_trip(&request(1_234_567, 513)),
            request(1_234_567, 513)
        );
    }

    #[test]
    fn vector_request_with_byte_offset() {
        let command = Command::SegmentRequest {
            id: 42,
            request_id: 7,
            byte_from: Some(65_536),
        };
        let expected = hex("63737472 01 69 01 2a 72 01 07 62 03 01 00 00 63656e64");
        assert_eq!(encode(&command), vec![expected]);
        assert_eq!(round_trip(&command), command);
    }

    #[test]
    fn vector_request_byte_offset_zero_is_omitted() {
        let command = Command::SegmentRequest {
            id: 42,
            request_id: 7,
            byte_from: Some(0),
        };
        assert_eq!(encode(&command), encode(&request(42, 7)));
        assert_eq!(round_trip(&command), request(42, 7));
    }

    #[test]
    fn vector_segment_data() {
        let command = Command::SegmentData {
            id: 100,
            request_id: 999,
            size: 1_048_576,
        };
        let expected = hex("63737472 02 69 01 64 73 03 10 00 00 72 02 03 e7 63656e64");
        assert_eq!(encode(&command), vec![expected]);
        assert_eq!(round_trip(&command), command);
    }

    #[test]
    fn vectors_segment_commands() {
        let cases = [
            (
                Command::SendingCompleted {
                    id: 5,
                    request_id: 128,
                },
                "63737472 03 69 01 05 72 02 00 80 63656e64",
            ),
            (
                Command::SegmentAbsent {
                    id: 0,
                    request_id: 127,
                },
                "63737472 04 69 01 00 72 01 7f 63656e64",
            ),
            (
                Command::Cancel {
                    id: 255,
                    request_id: 1,
                },
                "63737472 05 69 02 00 ff 72 01 01 63656e64",
            ),
        ];
        for (command, expected) in cases {
            assert_eq!(encode(&command), vec![hex(expected)], "{command:?}");
            assert_eq!(round_trip(&command), command);
        }
    }

    #[test]
    fn vectors_negative_and_large_numbers() {
        let cases = [
            (
                request(-1, -128),
                "63737472 01 69 01 81 72 02 80 80 63656e64",
            ),
            (
                request(-1_234_567, 0),
                "63737472 01 69 03 92 d6 87 72 01 00 63656e64",
            ),
            // 2^53 − 1, the largest integer a JS number holds exactly.
            (
                request(9_007_199_254_740_991, 1),
                "63737472 01 69 07 1f ff ff ff ff ff ff 72 01 01 63656e64",
            ),
            (
                request(i64::MAX, 1),
                "63737472 01 69 08 7f ff ff ff ff ff ff ff 72 01 01 63656e64",
            ),
            // The magnitude of i64::MIN needs 64 bits, plus the sign: nine bytes.
            (
                request(i64::MIN, 1),
                "63737472 01 69 09 80 80 00 00 00 00 00 00 00 72 01 01 63656e64",
            ),
        ];
        for (command, expected) in cases {
            assert_eq!(encode(&command), vec![hex(expected)], "{command:?}");
            assert_eq!(round_trip(&command), command);
        }
    }

    #[test]
    fn vector_announcement() {
        let command = Command::SegmentsAnnouncement {
            loaded: vec![1, 2, 3, 256, 257],
            loading: vec![4],
        };
        let expected =
            hex("63737472 00 6c 10 02 01 03 01 02 03 02 01 02 00 01 70 10 01 01 01 04 63656e64");
        assert_eq!(encode(&command), vec![expected]);
        assert_eq!(round_trip(&command), command);
    }

    #[test]
    fn vector_empty_announcement() {
        let command = Command::SegmentsAnnouncement {
            loaded: vec![],
            loading: vec![],
        };
        assert_eq!(encode(&command), vec![hex("63737472 00 63656e64")]);
        assert_eq!(round_trip(&command), command);
    }

    #[test]
    fn vector_announcement_negative_and_interleaved() {
        // Groups follow the first appearance of their high bits; -1 shares the high bits -256.
        let command = Command::SegmentsAnnouncement {
            loaded: vec![-1, 300, -2, 301],
            loading: vec![],
        };
        let expected = hex("63737472 00 6c 10 02 02 80 fe ff fe 02 01 02 2c 2d 63656e64");
        assert_eq!(encode(&command), vec![expected]);
        assert_eq!(
            round_trip(&command),
            Command::SegmentsAnnouncement {
                loaded: vec![-1, -2, 300, 301],
                loading: vec![],
            }
        );
    }

    #[test]
    fn announcement_crossing_group_boundaries() {
        // 250..=760 spans the high bits 0, 256, 512: groups of 6, 256 → 255 + 1, and 249.
        let ids: Vec<i64> = (250..=760).collect();
        let command = Command::SegmentsAnnouncement {
            loaded: ids.clone(),
            loading: vec![],
        };
        let messages = encode(&command);
        assert_eq!(messages.len(), 1);
        let body = &messages[0][4..messages[0].len() - 4];
        assert_eq!(&body[..4], &[0, b'l', 0x10, 4]);
        // First group: high bits 0, 6 entries (250..=255).
        assert_eq!(&body[4..6], &[0x01, 0x06]);
        assert_eq!(&body[6..12], &[250, 251, 252, 253, 254, 255]);
        // Second: high bits 256 with 255 entries: 256 | 255 = 0x1ff.
        assert_eq!(&body[12..15], &[0x02, 0x01, 0xff]);
        // Third: the 256th entry of that run (511) in a group of its own: 256 | 1.
        assert_eq!(&body[15 + 255..15 + 255 + 4], &[0x02, 0x01, 0x01, 0xff]);
        // Fourth: high bits 512, 249 entries (512..=760): 512 | 249 = 0x2f9.
        assert_eq!(&body[274..277], &[0x02, 0x02, 0xf9]);
        assert_eq!(body.len(), 277 + 249);
        assert_eq!(round_trip(&command), command);
    }

    #[test]
    fn announcement_keeps_at_most_255_groups() {
        // One id per 256-block: 300 groups, of which the first 255 are written.
        let ids: Vec<i64> = (0..300).map(|g| g * 256 + 7).collect();
        let command = Command::SegmentsAnnouncement {
            loaded: ids.clone(),
            loading: vec![],
        };
        assert_eq!(
            round_trip(&command),
            Command::SegmentsAnnouncement {
                loaded: ids[..255].to_vec(),
                loading: vec![],
            }
        );
    }

    #[test]
    fn vector_split_command_small_limit() {
        // With a 16-byte message limit the 18-byte body of this announcement splits into
        // 3 parts of 6 bytes: ceil(18/16) = 2 parts would hold 9 + 8 > 16 bytes.
        let command = Command::SegmentsAnnouncement {
            loaded: vec![10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21],
            loading: vec![],
        };
        let messages = encode_with_limit(&command, 16);
        let expected = vec![
            hex("63737472 00 6c 10 01 01 0c 64656e64"),
            hex("64737472 0a 0b 0c 0d 0e 0f 64656e64"),
            hex("64737472 10 11 12 13 14 15 63656e64"),
        ];
        assert_eq!(messages, expected);
        assert_eq!(decode_all(messages), vec![Incoming::Command(command)]);
    }

    #[test]
    fn split_command_at_real_limit() {
        // Two full arrays of 255 groups × 255 ids: a 132 224-byte body, three parts of
        // 44 075, 44 075 and 44 074 bytes (messages of 44 083, 44 083, 44 082 bytes).
        let loaded: Vec<i64> = (0..255 * 256).filter(|v| v % 256 != 255).collect();
        let loading: Vec<i64> = loaded.iter().map(|v| v + 1_000_000 * 256).collect();
        let command = Command::SegmentsAnnouncement { loaded, loading };
        let body = encode_body(&command);
        assert_eq!(body.len(), 132_224);
        let messages = encode(&command);
        assert_eq!(
            messages.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![44_083, 44_083, 44_082]
        );
        assert_eq!(
            messages[0][..12],
            hex("63737472 00 6c 10 ff 02 00 ff 00")[..]
        );
        assert_eq!(
            messages[2][messages[2].len() - 12..],
            hex("f7 f8 f9 fa fb fc fd fe 63656e64")[..]
        );
        let part = body.len().div_ceil(3);
        assert_eq!(&messages[0][..4], b"cstr");
        assert_eq!(&messages[0][messages[0].len() - 4..], b"dend");
        assert_eq!(&messages[1][..4], b"dstr");
        assert_eq!(&messages[1][messages[1].len() - 4..], b"dend");
        assert_eq!(&messages[2][..4], b"dstr");
        assert_eq!(&messages[2][messages[2].len() - 4..], b"cend");
        assert_eq!(messages[0].len(), part + 8);
        assert_eq!(messages[1].len(), part + 8);
        assert_eq!(messages[2].len(), body.len() - 2 * part + 8);
        assert!(messages.iter().all(|m| m.len() <= MAX_MESSAGE_LEN));
        let joined: Vec<u8> = messages
            .iter()
            .flat_map(|m| &m[4..m.len() - 4])
            .copied()
            .collect();
        assert_eq!(joined, body);
        assert_eq!(decode_all(messages), vec![Incoming::Command(command)]);
    }

    #[test]
    fn raw_data_passes_through_between_parts() {
        let command = Command::SegmentsAnnouncement {
            loaded: (0..12).collect(),
            loading: vec![],
        };
        let parts = encode_with_limit(&command, 16);
        let mut decoder = Decoder::new();
        assert_eq!(decoder.push(Bytes::from(parts[0].clone())), Ok(None));
        let data = Bytes::from_static(b"raw segment bytes");
        assert_eq!(
            decoder.push(data.clone()),
            Ok(Some(Incoming::Data(data.clone())))
        );
        assert_eq!(decoder.push(Bytes::from(parts[1].clone())), Ok(None));
        assert_eq!(
            decoder.push(Bytes::from(parts[2].clone())),
            Ok(Some(Incoming::Command(command)))
        );
    }

    #[test]
    fn data_chunks_are_below_64_kib() {
        let data = Bytes::from((0..200_000u32).map(|i| i as u8).collect::<Vec<u8>>());
        let chunks: Vec<Bytes> = data_chunks(&data).collect();
        assert_eq!(
            chunks.iter().map(Bytes::len).collect::<Vec<_>>(),
            vec![65_535, 65_535, 65_535, 3_395]
        );
        assert_eq!(chunks.concat(), data.to_vec());
        assert_eq!(data_chunks(&Bytes::new()).count(), 0);
        let mut decoder = Decoder::new();
        for chunk in chunks {
            assert!(matches!(decoder.push(chunk), Ok(Some(Incoming::Data(_)))));
        }
    }

    #[test]
    fn framing_recognition() {
        assert!(is_command_part(b"cstrcend"));
        assert!(is_command_part(b"dstr\x00dend"));
        assert!(!is_command_part(b"cstr"));
        assert!(!is_command_part(b"cstrend"));
        assert!(!is_command_part(b"xstr\x01cend"));
        assert!(!is_command_part(b"cstr\x01cenx"));
        assert!(!is_command_part(b""));
    }

    #[test]
    fn decoder_rejects_broken_sequences() {
        let parts = encode_with_limit(
            &Command::SegmentsAnnouncement {
                loaded: (0..12).collect(),
                loading: vec![],
            },
            16,
        );
        let mut decoder = Decoder::new();
        assert_eq!(
            decoder.push(Bytes::from(parts[1].clone())),
            Err(DecodeError::NoFirstPart)
        );
        assert_eq!(decoder.push(Bytes::from(parts[0].clone())), Ok(None));
        assert_eq!(
            decoder.push(Bytes::from(parts[0].clone())),
            Err(DecodeError::Interrupted)
        );
        assert!(!decoder.is_assembling());
        // The decoder is usable again after an error.
        let command = request(1, 2);
        assert_eq!(
            decoder.push(Bytes::from(encode(&command).remove(0))),
            Ok(Some(Incoming::Command(command)))
        );
    }

    #[test]
    fn decoder_bounds_reassembly() {
        let mut decoder = Decoder::with_max_command_len(100);
        let mut first = b"cstr".to_vec();
        first.extend_from_slice(&[0u8; 60]);
        first.extend_from_slice(b"dend");
        assert_eq!(decoder.push(Bytes::from(first)), Ok(None));
        let mut second = b"dstr".to_vec();
        second.extend_from_slice(&[0u8; 60]);
        second.extend_from_slice(b"dend");
        assert_eq!(
            decoder.push(Bytes::from(second)),
            Err(DecodeError::TooLarge { len: 120, max: 100 })
        );
        assert!(!decoder.is_assembling());
    }

    fn decode_framed(body: &str) -> Result<Command, DecodeError> {
        decode_body(&hex(body))
    }

    #[test]
    fn malformed_bodies() {
        use DecodeError::*;
        assert_eq!(decode_framed(""), Err(Empty));
        assert_eq!(decode_framed("06"), Err(UnknownCommand(6)));
        // Missing fields.
        assert_eq!(
            decode_framed("01 69 01 05"),
            Err(MissingField {
                command: 1,
                field: 'r'
            })
        );
        assert_eq!(
            decode_framed("02 69 01 05 72 01 01"),
            Err(MissingField {
                command: 2,
                field: 's'
            })
        );
        // Truncated int, truncated field, truncated array.
        assert_eq!(decode_framed("01 69 03 12 d6"), Err(Truncated(5)));
        assert_eq!(decode_framed("01 69"), Err(Truncated(2)));
        assert_eq!(decode_framed("00 6c 10 01 01 05 01 02"), Err(Truncated(8)));
        // Unknown item type 3.
        assert_eq!(
            decode_framed("01 69 30"),
            Err(UnknownItemType {
                field: 'i',
                item: 3
            })
        );
        // Zero-length int, int beyond i64.
        assert_eq!(decode_framed("01 69 00"), Err(InvalidInt { field: 'i' }));
        assert_eq!(
            decode_framed("01 69 09 01 00 00 00 00 00 00 00 00 72 01 01"),
            Err(InvalidInt { field: 'i' })
        );
        assert_eq!(
            decode_framed("01 69 0f 7f ff ff ff ff ff ff ff ff ff ff ff ff ff ff"),
            Err(InvalidInt { field: 'i' })
        );
        // Wrong types: array for a scalar, int for an array.
        assert_eq!(
            decode_framed("01 69 10 00 72 01 01"),
            Err(WrongType { field: 'i' })
        );
        assert_eq!(decode_framed("00 6c 01 05"), Err(WrongType { field: 'l' }));
        // Negative size and offset.
        assert_eq!(
            decode_framed("02 69 01 01 73 01 81 72 01 01"),
            Err(Negative { field: 's' })
        );
        assert_eq!(
            decode_framed("01 69 01 01 72 01 01 62 01 81"),
            Err(Negative { field: 'b' })
        );
    }

    #[test]
    fn lenient_like_the_js_decoder() {
        // Any field order, unknown fields (an int and a string) skipped, repeated fields: the
        // last wins, "-0" is 0.
        assert_eq!(
            decode_framed("05 72 01 09 78 01 05 69 01 03 7a 20 03 61 62 63 69 01 04"),
            Ok(Command::Cancel {
                id: 4,
                request_id: 9
            })
        );
        assert_eq!(
            decode_framed("04 69 01 80 72 01 00"),
            Ok(request_absent(0, 0))
        );
    }

    fn request_absent(id: i64, request_id: i64) -> Command {
        Command::SegmentAbsent { id, request_id }
    }

    #[test]
    fn int_round_trip_over_many_values() {
        let mut values: Vec<i64> = vec![0, 1, -1, i64::MIN, i64::MAX, i64::MIN + 1];
        for shift in 0..63 {
            let p = 1i64 << shift;
            values.extend([p, p - 1, p + 1, -p, -p + 1, -p - 1]);
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            values.push(x as i64 >> (x % 64));
        }
        for &v in &values {
            let mut out = Vec::new();
            put_int(&mut out, v as i128);
            // Length rule: the least bytes holding the magnitude plus the sign bit.
            let bits = 64 - v.unsigned_abs().leading_zeros() as usize;
            assert_eq!(out[0] as usize, (bits + 1).div_ceil(8), "{v}");
            assert_eq!(out.len(), 1 + out[0] as usize);
            let mut reader = Reader { body: &out, at: 0 };
            assert_eq!(reader.int('x'), Ok(v));
            assert!(reader.done());
            let command = Command::SegmentData {
                id: v,
                request_id: v.wrapping_neg(),
                size: v.unsigned_abs(),
            };
            if v >= 0 {
                assert_eq!(round_trip(&command), command);
            }
        }
    }

    #[test]
    fn array_round_trip_over_many_sorted_sets() {
        let mut x: u64 = 12345;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for case in 0..300 {
            let len = (next() % 700) as usize;
            let base = (next() as i64) >> (next() % 64);
            let spread = 1 + (next() % [4, 300, 5000, 1 << 40][case % 4]) as i64;
            let mut ids: Vec<i64> = (0..len)
                .map(|_| base.saturating_add((next() as i64).rem_euclid(spread)))
                .collect();
            ids.sort_unstable();
            ids.dedup();
            let command = Command::SegmentsAnnouncement {
                loaded: ids.clone(),
                loading: ids.iter().rev().take(3).copied().rev().collect(),
            };
            let groups = {
                let mut g = 0;
                let mut last = None;
                let mut run = 0;
                for id in &ids {
                    let common = id & !0xff;
                    if last != Some(common) || run == 255 {
                        g += 1;
                        run = 0;
                    }
                    last = Some(common);
                    run += 1;
                }
                g
            };
            if groups <= MAX_ARRAY_GROUPS {
                assert_eq!(round_trip(&command), command, "case {case}");
            }
            for limit in [9, 20, 100, 1000] {
                let messages = encode_with_limit(&command, limit);
                // Like the JS splitter, parts can exceed a limit this small once a body needs
                // more than limit / 8 parts; at the real limit that takes bodies over 500 MB.
                if limit == 1000 {
                    assert!(messages.iter().all(|m| m.len() <= limit));
                }
                let mut decoder = Decoder::new();
                let decoded: Vec<Incoming> = messages
                    .into_iter()
                    .filter_map(|m| decoder.push(Bytes::from(m)).unwrap())
                    .collect();
                assert_eq!(decoded, decode_all(encode(&command)));
            }
        }
    }
}
