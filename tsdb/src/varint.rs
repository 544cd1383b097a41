//! Go's `encoding/binary` varints (the same bytes as protobuf's): unsigned values 7 bits
//! a byte, least significant first, and signed values zig-zag encoded first. The one
//! copy used by the index, chunk segments, WAL records, downsampled chunks and remote
//! read's frame headers; each caller turns a [`VarintError`] into its own error (with
//! the file and offset it knows). The XOR chunk encoder and decoder keep their own
//! bit-stream versions: their varints are not byte-aligned.

/// Longest encoding of a 64-bit value (Go's `binary.MaxVarintLen64`).
pub const MAX_LEN: usize = 10;

/// Why a varint could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VarintError {
    #[error("truncated varint")]
    Truncated,
    #[error("varint overflows 64 bits")]
    Overflow,
}

/// Go's `binary.AppendUvarint`.
#[inline]
pub fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Go's `binary.AppendVarint`: zig-zag, then unsigned.
#[inline]
pub fn put_varint(out: &mut Vec<u8>, v: i64) {
    put_uvarint(out, zigzag(v));
}

/// `len` as a uvarint, then `b` (the index's and WAL's length-prefixed strings).
#[inline]
pub fn put_uvarint_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_uvarint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Bytes [`put_uvarint`] writes for `v`.
#[inline]
pub const fn uvarint_len(v: u64) -> usize {
    // 1 byte per started group of 7 significant bits; 0 takes one byte.
    ((64 - (v | 1).leading_zeros()) as usize).div_ceil(7)
}

#[inline]
pub const fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
pub const fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

/// Go's `binary.Uvarint`: the value at the start of `b` and the bytes it took.
#[inline]
pub fn uvarint(b: &[u8]) -> Result<(u64, usize), VarintError> {
    // One byte is most varints read (small lengths, deltas): no loop for it.
    match b.first() {
        Some(&x) if x < 0x80 => return Ok((u64::from(x), 1)),
        None => return Err(VarintError::Truncated),
        _ => {}
    }
    let mut x = 0u64;
    let mut s = 0u32;
    for (i, &byte) in b.iter().enumerate().take(MAX_LEN) {
        if byte < 0x80 {
            // The 10th byte may only hold the 64th bit.
            if i == MAX_LEN - 1 && byte > 1 {
                return Err(VarintError::Overflow);
            }
            return Ok((x | (u64::from(byte) << s), i + 1));
        }
        x |= u64::from(byte & 0x7f) << s;
        s += 7;
    }
    if b.len() < MAX_LEN {
        Err(VarintError::Truncated)
    } else {
        Err(VarintError::Overflow)
    }
}

/// Go's `binary.Varint`.
#[inline]
pub fn varint(b: &[u8]) -> Result<(i64, usize), VarintError> {
    let (u, n) = uvarint(b)?;
    Ok((unzigzag(u), n))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes from Go's `binary.AppendUvarint` / `AppendVarint`.
    #[test]
    fn matches_go() {
        let cases: &[(u64, &[u8])] = &[
            (0, &[0x00]),
            (1, &[0x01]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (300, &[0xac, 0x02]),
            (16_384, &[0x80, 0x80, 0x01]),
            (
                u64::MAX,
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ];
        for &(v, want) in cases {
            let mut b = Vec::new();
            put_uvarint(&mut b, v);
            assert_eq!(b, want, "{v}");
            assert_eq!(uvarint_len(v), want.len(), "{v}");
            assert_eq!(uvarint(want), Ok((v, want.len())), "{v}");
        }
        let signed: &[(i64, &[u8])] = &[
            (0, &[0x00]),
            (-1, &[0x01]),
            (1, &[0x02]),
            (-64, &[0x7f]),
            (64, &[0x80, 0x01]),
        ];
        for &(v, want) in signed {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(b, want, "{v}");
            assert_eq!(varint(want), Ok((v, want.len())), "{v}");
        }
    }

    #[test]
    fn round_trips_and_lengths() {
        let mut vals = vec![0u64, u64::MAX];
        for shift in 0..64 {
            vals.extend([1u64 << shift, (1u64 << shift) - 1, (1u64 << shift) + 1]);
        }
        for v in vals {
            let mut b = Vec::new();
            put_uvarint(&mut b, v);
            assert_eq!(b.len(), uvarint_len(v), "{v}");
            b.push(0xff); // what follows is not read
            assert_eq!(uvarint(&b), Ok((v, b.len() - 1)), "{v}");
            let s = v as i64;
            assert_eq!(unzigzag(zigzag(s)), s);
            let mut b = Vec::new();
            put_varint(&mut b, s);
            assert_eq!(varint(&b), Ok((s, b.len())), "{s}");
        }
    }

    #[test]
    fn truncated_and_overflowing_input_is_an_error() {
        assert_eq!(uvarint(&[]), Err(VarintError::Truncated));
        assert_eq!(uvarint(&[0x80]), Err(VarintError::Truncated));
        assert_eq!(uvarint(&[0xff; 9]), Err(VarintError::Truncated));
        // Ten bytes whose last holds more than the 64th bit, and eleven-byte encodings.
        let mut over = vec![0xff; 9];
        over.push(0x02);
        assert_eq!(uvarint(&over), Err(VarintError::Overflow));
        assert_eq!(uvarint(&[0xff; 11]), Err(VarintError::Overflow));
        assert_eq!(uvarint(&[0x80; 10]), Err(VarintError::Overflow));
    }
}
