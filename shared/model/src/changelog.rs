//! The processor's state changelog records and their binary format (the processor writes
//! and folds them, `processor/src/changelog.rs`; the materializer reads their deltas into
//! durable membership).
//!
//! **Format.** Every record starts with its format: a byte with the high bit set and the
//! format number in the others ([`FORMAT`], now 1), then the kind and the fields below.
//! Records written before formats were numbered (format 0) start with the kind itself
//! (1 to 4, high bit clear) and have the same fields, so both are read. A record of a
//! format this build does not know, or one that does not decode, is never guessed at:
//! [`Record::decode`] says why.

use crate::hour::{HourStart, Millis};

const FENCE: u8 = 1;
const DELTA: u8 = 2;
const CHECKPOINT: u8 = 3;
const IDS: u8 = 4;

/// The format this build writes; it reads this one and every earlier one.
pub const FORMAT: u8 = 1;

/// The high bit of a record's first byte: set, the byte names the format; clear (format 0),
/// it is the kind.
const NUMBERED: u8 = 0x80;

/// Why a changelog record cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("changelog record of format {0}, newer than this build reads ({FORMAT}); upgrade this processor")]
    UnknownFormat(u8),
    #[error("changelog record of unknown kind {0}")]
    UnknownKind(u8),
    #[error("changelog record cut short or of the wrong length")]
    Malformed,
}

/// Largest number of users in one delta record (16 bytes each: well under 1 MB).
pub const MAX_USERS_PER_DELTA: usize = 32_768;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta {
    pub hour: HourStart,
    pub clicks: u64,
    pub impressions: u64,
    pub last_offset: i64,
    pub newest_received_at: Millis,
    pub new_users: Vec<u128>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Fence {
        owner: String,
    },
    Delta {
        epoch: i64,
        delta: Delta,
    },
    Ids {
        epoch: i64,
        /// The receipt-time bucket (the processor's `seen::Window::bucket`).
        bucket: i64,
        pairs: Vec<u128>,
    },
    Checkpoint {
        epoch: i64,
        next_offset: i64,
        watermark: Millis,
        /// Hours starting before this instant were never rebuilt completely (see `restore`).
        complete_from_hour: Millis,
    },
}

impl Record {
    /// The record in today's [`FORMAT`].
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![NUMBERED | FORMAT];
        match self {
            Record::Fence { owner } => {
                b.push(FENCE);
                b.extend_from_slice(&0i64.to_le_bytes());
                b.extend_from_slice(owner.as_bytes());
            }
            Record::Delta { epoch, delta: d } => {
                b.reserve(54 + 16 * d.new_users.len());
                b.push(DELTA);
                b.extend_from_slice(&epoch.to_le_bytes());
                b.extend_from_slice(&d.hour.ms().to_le_bytes());
                b.extend_from_slice(&d.clicks.to_le_bytes());
                b.extend_from_slice(&d.impressions.to_le_bytes());
                b.extend_from_slice(&d.last_offset.to_le_bytes());
                b.extend_from_slice(&d.newest_received_at.0.to_le_bytes());
                b.extend_from_slice(&(d.new_users.len() as u32).to_le_bytes());
                for u in &d.new_users {
                    b.extend_from_slice(&u.to_le_bytes());
                }
            }
            Record::Ids {
                epoch,
                bucket,
                pairs,
            } => {
                b.reserve(22 + 16 * pairs.len());
                b.push(IDS);
                b.extend_from_slice(&epoch.to_le_bytes());
                b.extend_from_slice(&bucket.to_le_bytes());
                b.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
                for p in pairs {
                    b.extend_from_slice(&p.to_le_bytes());
                }
            }
            Record::Checkpoint {
                epoch,
                next_offset,
                watermark,
                complete_from_hour,
            } => {
                b.push(CHECKPOINT);
                b.extend_from_slice(&epoch.to_le_bytes());
                b.extend_from_slice(&next_offset.to_le_bytes());
                b.extend_from_slice(&watermark.0.to_le_bytes());
                b.extend_from_slice(&complete_from_hour.0.to_le_bytes());
            }
        }
        b
    }

    /// Reads a record of any format up to [`FORMAT`].
    pub fn decode(b: &[u8]) -> Result<Record, DecodeError> {
        let (&first, rest) = b.split_first().ok_or(DecodeError::Malformed)?;
        if first & NUMBERED == 0 {
            return Self::fields(first, rest); // format 0: the first byte is the kind
        }
        match first & !NUMBERED {
            1 => {
                let (&kind, rest) = rest.split_first().ok_or(DecodeError::Malformed)?;
                Self::fields(kind, rest)
            }
            format => Err(DecodeError::UnknownFormat(format)),
        }
    }

    /// The fields after the kind (the same in formats 0 and 1).
    fn fields(kind: u8, b: &[u8]) -> Result<Record, DecodeError> {
        let mut r = Reader(b);
        let epoch = r.i64()?;
        Ok(match kind {
            FENCE => Record::Fence {
                owner: String::from_utf8_lossy(r.0).into_owned(),
            },
            DELTA => Record::Delta {
                epoch,
                delta: Delta {
                    hour: HourStart::new(r.i64()?).map_err(|_| DecodeError::Malformed)?,
                    clicks: r.i64()? as u64,
                    impressions: r.i64()? as u64,
                    last_offset: r.i64()?,
                    newest_received_at: Millis(r.i64()?),
                    new_users: r.hashes()?,
                },
            },
            IDS => Record::Ids {
                epoch,
                bucket: r.i64()?,
                pairs: r.hashes()?,
            },
            CHECKPOINT => Record::Checkpoint {
                epoch,
                next_offset: r.i64()?,
                watermark: Millis(r.i64()?),
                complete_from_hour: Millis(r.i64()?),
            },
            other => return Err(DecodeError::UnknownKind(other)),
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (head, rest) = self.0.split_at_checked(N).ok_or(DecodeError::Malformed)?;
        self.0 = rest;
        head.try_into().map_err(|_| DecodeError::Malformed)
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.take::<4>().map(u32::from_le_bytes)
    }
    fn i64(&mut self) -> Result<i64, DecodeError> {
        self.take::<8>().map(i64::from_le_bytes)
    }
    /// A count, then that many 128-bit hashes, ending the record.
    fn hashes(&mut self) -> Result<Vec<u128>, DecodeError> {
        let n = self.u32()? as usize;
        if self.0.len() != n * 16 {
            return Err(DecodeError::Malformed);
        }
        Ok(self
            .0
            .chunks_exact(16)
            .map(|c| u128::from_le_bytes(c.try_into().expect("16 bytes")))
            .collect())
    }
}
