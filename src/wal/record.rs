//! Record framing: how one record is laid out in a segment, encoded and decoded (`wal-format.md` §5, §6).
//!
//! This module owns the byte layout of a record frame and nothing else: no files, no LSN
//! bookkeeping. Keeping the encoder and the decoder side by side makes it easy to see that they
//! agree, and lets the proptests drive them without touching the disk.
//!
//! A frame is a 24-byte header, the payload, and zero padding up to the next multiple of 8:
//!
//! ```text
//! 0      4      8    9         16        24            24+len    frame_bytes
//! | crc  | len  |type| reserved | lsn     | payload ... | padding |
//! ```
//!
//! The CRC-32 (IEEE, `crc32fast`) covers every byte of the frame after the CRC field itself:
//! length, type, reserved bytes, LSN, payload and padding (`wal-format.md` §6).

use super::Lsn;

/// Size of the record header (`wal-format.md` §5).
pub const RECORD_HEADER_BYTES: usize = 24;
/// Every frame starts at a multiple of this, so the CRC and length words share one aligned
/// 8-byte word and can never straddle a sector (`wal-format.md` §5).
pub const RECORD_ALIGNMENT_BYTES: usize = 8;
/// The largest payload a record may carry, whatever the segment size (`wal-format.md` §12).
pub const RECORD_PAYLOAD_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Record type 0 is reserved: preallocated zeroes must read as the end of the log (`wal-format.md` §7).
pub const RECORD_TYPE_RESERVED: u8 = 0;
/// The record type the daemon uses for its postcard-encoded consensus records (`wal-format.md` §7).
pub const RECORD_TYPE_CONSENSUS: u8 = 1;

// Field offsets inside the record header (`wal-format.md` §5).
const CRC_OFFSET: usize = 0;
const LEN_OFFSET: usize = 4;
const TYPE_OFFSET: usize = 8;
const RESERVED_OFFSET: usize = 9;
const LSN_OFFSET: usize = 16;

/// One record as read from a segment: borrowed, never copied.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// The record's log sequence number: consecutive across the whole log.
    pub lsn: Lsn,
    /// The caller-defined type (never 0).
    pub record_type: u8,
    /// The caller's bytes, exactly as appended.
    pub payload: &'a [u8],
}

/// What the bytes at one offset of a segment are.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A whole record whose checksum matches; the next frame starts at `next_offset`.
    Valid {
        record: RecordRef<'a>,
        next_offset: usize,
    },
    /// An all-zero header (or fewer than a header's bytes left, all zero): the end of the
    /// written part of this segment, if the rest is zero too.
    Zero,
    /// Something that is neither a record nor zeroes: a torn write or corruption; `why` says
    /// which check failed.
    Bad { why: &'static str },
}

/// The number of bytes a record with `payload_bytes` of payload takes in a segment.
pub const fn frame_bytes(payload_bytes: usize) -> usize {
    (RECORD_HEADER_BYTES + payload_bytes).div_ceil(RECORD_ALIGNMENT_BYTES) * RECORD_ALIGNMENT_BYTES
}

/// Writes one frame at the start of `dst` and returns its size. `dst` must be at least
/// `frame_bytes(payload.len())` long and, for a fresh segment, all zero.
pub fn encode(dst: &mut [u8], lsn: Lsn, record_type: u8, payload: &[u8]) -> usize {
    let total = frame_bytes(payload.len());
    assert!(
        record_type != RECORD_TYPE_RESERVED,
        "record type 0 is reserved"
    );
    assert!(
        payload.len() <= RECORD_PAYLOAD_BYTES_MAX,
        "payload too large"
    );
    assert!(dst.len() >= total, "frame does not fit");
    let frame = &mut dst[..total];
    let len = u32::try_from(payload.len()).expect("payload length checked against the max");
    frame[LEN_OFFSET..TYPE_OFFSET].copy_from_slice(&len.to_le_bytes());
    frame[TYPE_OFFSET] = record_type;
    frame[RESERVED_OFFSET..LSN_OFFSET].fill(0);
    frame[LSN_OFFSET..RECORD_HEADER_BYTES].copy_from_slice(&lsn.to_le_bytes());
    frame[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + payload.len()].copy_from_slice(payload);
    frame[RECORD_HEADER_BYTES + payload.len()..].fill(0);
    let crc = crc32fast::hash(&frame[LEN_OFFSET..]);
    frame[CRC_OFFSET..LEN_OFFSET].copy_from_slice(&crc.to_le_bytes());
    total
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(word)
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(word)
}

/// True if every byte of `buf` is zero (vectorises: no early exit inside a 4 KiB chunk).
pub fn is_zero(buf: &[u8]) -> bool {
    buf.chunks(4096)
        .all(|chunk| chunk.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

/// Reads the frame that starts at `offset` of `segment` (the whole mapped segment). Never panics
/// on any content; `offset` must be 8-aligned and inside the segment.
pub fn decode(segment: &[u8], offset: usize) -> Frame<'_> {
    assert!(offset % RECORD_ALIGNMENT_BYTES == 0 && offset <= segment.len());
    let rest = &segment[offset..];
    if rest.len() < RECORD_HEADER_BYTES {
        return if is_zero(rest) {
            Frame::Zero
        } else {
            Frame::Bad {
                why: "partial header at the end of the segment",
            }
        };
    }
    let header = &rest[..RECORD_HEADER_BYTES];
    if is_zero(header) {
        return Frame::Zero;
    }
    let record_type = header[TYPE_OFFSET];
    if record_type == RECORD_TYPE_RESERVED {
        return Frame::Bad {
            why: "reserved record type 0 in a non-zero header",
        };
    }
    if !is_zero(&header[RESERVED_OFFSET..LSN_OFFSET]) {
        return Frame::Bad {
            why: "non-zero reserved header bytes",
        };
    }
    let len = u32_at(header, LEN_OFFSET) as usize;
    if len > RECORD_PAYLOAD_BYTES_MAX {
        return Frame::Bad {
            why: "payload length above the maximum",
        };
    }
    let total = frame_bytes(len);
    if total > rest.len() {
        return Frame::Bad {
            why: "record runs past the end of the segment",
        };
    }
    let frame = &rest[..total];
    if crc32fast::hash(&frame[LEN_OFFSET..]) != u32_at(header, CRC_OFFSET) {
        return Frame::Bad {
            why: "checksum mismatch",
        };
    }
    Frame::Valid {
        record: RecordRef {
            lsn: u64_at(header, LSN_OFFSET),
            record_type,
            payload: &frame[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + len],
        },
        next_offset: offset + total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frame_sizes_are_aligned() {
        assert_eq!(frame_bytes(0), 24);
        assert_eq!(frame_bytes(1), 32);
        assert_eq!(frame_bytes(8), 32);
        assert_eq!(frame_bytes(9), 40);
    }

    #[test]
    fn zeroes_are_the_end() {
        let buf = [0u8; 64];
        assert_eq!(decode(&buf, 0), Frame::Zero);
        assert_eq!(decode(&buf, 48), Frame::Zero);
        assert_eq!(decode(&buf, 64), Frame::Zero);
    }

    /// The worked example of `wal-format.md` §13, byte for byte.
    #[test]
    fn worked_example_matches_the_spec() {
        let mut buf = [0u8; 32];
        let n = encode(&mut buf, 1, 1, &[0x00, 0x07, 0x02]);
        assert_eq!(n, 32);
        let hex: Vec<String> = buf.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex.join(" "),
            "fd 1b 8c 25 03 00 00 00 01 00 00 00 00 00 00 00 \
             01 00 00 00 00 00 00 00 00 07 02 00 00 00 00 00"
        );
    }

    #[test]
    fn every_single_bit_flip_is_caught() {
        let mut buf = [0u8; 64];
        let n = encode(&mut buf, 42, 7, b"hello, world");
        for bit in 0..n * 8 {
            let mut copy = buf;
            copy[bit / 8] ^= 1 << (bit % 8);
            assert!(
                !matches!(decode(&copy, 0), Frame::Valid { .. }),
                "bit {bit} flipped yet the frame decoded"
            );
        }
    }

    proptest! {
        /// Round trip for every record type 1..=255 and any payload.
        #[test]
        fn round_trip(record_type in 1u8..=255, lsn in any::<u64>(),
                      payload in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut buf = vec![0u8; frame_bytes(payload.len()) + 24];
            let n = encode(&mut buf, lsn, record_type, &payload);
            match decode(&buf, 0) {
                Frame::Valid { record, next_offset } => {
                    prop_assert_eq!(next_offset, n);
                    prop_assert_eq!(record.lsn, lsn);
                    prop_assert_eq!(record.record_type, record_type);
                    prop_assert_eq!(record.payload, &payload[..]);
                }
                other => prop_assert!(false, "decoded {:?}", other),
            }
            prop_assert_eq!(decode(&buf, n), Frame::Zero);
        }

        /// Any truncation of a frame (the rest zero, as in a preallocated segment) is not valid.
        #[test]
        fn truncated_frames_never_decode(payload in proptest::collection::vec(1u8..=255, 1..200),
                                         cut_seed in any::<usize>()) {
            let mut buf = vec![0u8; frame_bytes(payload.len())];
            encode(&mut buf, 3, 1, &payload);
            // Cut inside the header or payload (the padding is zero anyway).
            let cut = cut_seed % (RECORD_HEADER_BYTES + payload.len());
            buf[cut..].fill(0);
            let valid = matches!(decode(&buf, 0), Frame::Valid { .. });
            prop_assert!(!valid, "a truncated frame decoded");
        }
    }
}
