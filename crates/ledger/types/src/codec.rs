//! The canonical binary codec.
//!
//! Every value has exactly one encoding: integers are fixed-width big-endian, byte strings and
//! lists carry a `u32` length prefix and an explicit upper bound, enums a one-byte tag, strings must
//! be UTF-8, and a decoder rejects trailing bytes. Hence `encode(decode(b)) == b` for every
//! accepted `b`, which the property tests check.
//!
//! Light-client proofs, whose size is a target, use the compact forms instead: LEB128 varints
//! ([`Writer::varint`], minimal encodings only) and varint-length byte strings
//! ([`Writer::vbytes`]).

use thiserror::Error;

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The input ended before the value did.
    #[error("unexpected end of input while reading {0}")]
    Eof(&'static str),
    /// A length prefix exceeded the bound for that field.
    #[error("{field} is too long: {len} > {max}")]
    TooLong {
        /// Which field.
        field: &'static str,
        /// The declared length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// An enum tag that names no variant.
    #[error("unknown {field} tag {tag}")]
    BadTag {
        /// Which enum.
        field: &'static str,
        /// The tag read.
        tag: u8,
    },
    /// A string that is not UTF-8.
    #[error("{0} is not valid UTF-8")]
    Utf8(&'static str),
    /// Bytes left after the value.
    #[error("{0} trailing bytes after the value")]
    Trailing(usize),
    /// A value that decodes but breaks a rule (for example a non-canonical set).
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Which field.
        field: &'static str,
        /// Why.
        reason: &'static str,
    },
}

/// Appends canonical encodings to a byte vector.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }
    /// A writer with preallocated capacity.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            buf: Vec::with_capacity(n),
        }
    }
    /// The bytes written so far.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
    /// One byte.
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    /// A big-endian `u16`.
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    /// A big-endian `u32`.
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    /// A big-endian `u64`.
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    /// A boolean as 0 or 1.
    pub fn bool(&mut self, v: bool) {
        self.buf.push(u8::from(v));
    }
    /// Fixed-size bytes, no length prefix.
    pub fn fixed(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }
    /// Length-prefixed bytes.
    ///
    /// # Panics
    /// If `v` is longer than `u32::MAX` (callers bound their fields far below that).
    pub fn bytes(&mut self, v: &[u8]) {
        self.u32(u32::try_from(v.len()).expect("field longer than u32::MAX"));
        self.buf.extend_from_slice(v);
    }
    /// A length-prefixed UTF-8 string.
    pub fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }
    /// An unsigned LEB128 varint (7 bits a byte, least significant first), minimal length.
    pub fn varint(&mut self, mut v: u64) {
        loop {
            let low = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.buf.push(low);
                return;
            }
            self.buf.push(low | 0x80);
        }
    }
    /// Bytes with a varint length prefix.
    pub fn vbytes(&mut self, v: &[u8]) {
        self.varint(v.len() as u64);
        self.buf.extend_from_slice(v);
    }
    /// A UTF-8 string with a varint length prefix.
    pub fn vstr(&mut self, v: &str) {
        self.vbytes(v.as_bytes());
    }
}

/// Reads canonical encodings from a byte slice.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }
    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }
    /// Fails unless every byte was consumed.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Trailing(self.buf.len()))
        }
    }
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Eof(what));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    /// One byte.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }
    /// A big-endian `u16`.
    pub fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    /// A big-endian `u32`.
    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes(b.try_into().expect("4 bytes")))
    }
    /// A big-endian `u64`.
    pub fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let b = self.take(8, what)?;
        Ok(u64::from_be_bytes(b.try_into().expect("8 bytes")))
    }
    /// A boolean; only 0 and 1 are accepted.
    pub fn bool(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(DecodeError::BadTag { field: what, tag }),
        }
    }
    /// Exactly `N` bytes.
    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        Ok(self.take(N, what)?.try_into().expect("N bytes"))
    }
    /// Length-prefixed bytes of at most `max`.
    pub fn bytes(&mut self, what: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        let len = self.u32(what)? as usize;
        if len > max {
            return Err(DecodeError::TooLong {
                field: what,
                len,
                max,
            });
        }
        self.take(len, what)
    }
    /// A length-prefixed UTF-8 string of at most `max` bytes.
    pub fn string(&mut self, what: &'static str, max: usize) -> Result<String, DecodeError> {
        let b = self.bytes(what, max)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| DecodeError::Utf8(what))
    }
    /// An unsigned LEB128 varint; a non-minimal encoding (a trailing zero group) or one that
    /// overflows 64 bits is refused, so each value has one encoding.
    pub fn varint(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for i in 0..10u32 {
            let b = self.u8(what)?;
            let low = u64::from(b & 0x7f);
            if i == 9 && b > 1 {
                return Err(DecodeError::Invalid {
                    field: what,
                    reason: "varint overflows 64 bits",
                });
            }
            v |= low << (7 * i);
            if b & 0x80 == 0 {
                if i > 0 && b == 0 {
                    return Err(DecodeError::Invalid {
                        field: what,
                        reason: "varint is not minimal",
                    });
                }
                return Ok(v);
            }
        }
        Err(DecodeError::Invalid {
            field: what,
            reason: "varint longer than 10 bytes",
        })
    }
    /// Bytes with a varint length prefix, at most `max`.
    pub fn vbytes(&mut self, what: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        let len = self.varint(what)?;
        if len > max as u64 {
            return Err(DecodeError::TooLong {
                field: what,
                len: usize::try_from(len).unwrap_or(usize::MAX),
                max,
            });
        }
        self.take(len as usize, what)
    }
    /// A UTF-8 string with a varint length prefix, at most `max` bytes.
    pub fn vstring(&mut self, what: &'static str, max: usize) -> Result<String, DecodeError> {
        let b = self.vbytes(what, max)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| DecodeError::Utf8(what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_only_minimal_encodings_decode() {
        for v in [
            0,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut w = Writer::new();
            w.varint(v);
            let b = w.finish();
            let mut r = Reader::new(&b);
            assert_eq!(r.varint("v"), Ok(v), "{v}");
            r.finish().expect("all read");
        }
        // 0 as two bytes, and 11 bytes.
        assert!(Reader::new(&[0x80, 0x00]).varint("v").is_err());
        assert!(Reader::new(&[0xff; 11]).varint("v").is_err());
        // 2^64 does not fit.
        let mut big = vec![0xff; 9];
        big.push(0x02);
        assert!(Reader::new(&big).varint("v").is_err());
    }
}
