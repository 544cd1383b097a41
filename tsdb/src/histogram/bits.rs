//! The bit-level codecs of Prometheus's histogram chunks (`tsdb/chunkenc/bstream.go`,
//! `varbit.go`, the XOR value code of `xor.go`): a bit writer and reader, the
//! prefix-bucketed "varbit" integers and Gorilla XOR floats.
//!
//! The writer follows Prometheus's current `bstream` (since the fix of
//! prometheus#14854): a write ending on a byte boundary adds no extra byte. Prometheus
//! 2.42's writer added a trailing zero byte after such writes; readers of either version
//! read both, since they only ever read the bits the sample count asks for.

use super::DecodeError;

/// Appends bits most significant first; `count` bits of the last byte are still free.
#[derive(Clone, Debug, Default)]
pub(crate) struct BitWriter {
    pub buf: Vec<u8>,
    count: u32,
}

impl BitWriter {
    /// A writer whose stream starts with `header` zero bytes (the chunk header).
    pub fn with_header(header: usize) -> Self {
        let mut buf = Vec::with_capacity(128);
        buf.resize(header, 0);
        BitWriter { buf, count: 0 }
    }

    #[inline]
    pub fn write_bit(&mut self, bit: bool) {
        if self.count == 0 {
            self.buf.push(0);
            self.count = 8;
        }
        if bit {
            *self.buf.last_mut().expect("pushed above") |= 1 << (self.count - 1);
        }
        self.count -= 1;
    }

    /// The `nbits` (0..=64) low bits of `u`, most significant first.
    #[inline]
    pub fn write_bits(&mut self, u: u64, nbits: u32) {
        let mut n = nbits;
        while n > 0 {
            if self.count == 0 {
                self.buf.push(0);
                self.count = 8;
            }
            let take = self.count.min(n);
            let bits = (u >> (n - take)) & mask(take);
            *self.buf.last_mut().expect("pushed above") |= (bits << (self.count - take)) as u8;
            self.count -= take;
            n -= take;
        }
    }

    #[inline]
    pub fn write_byte(&mut self, b: u8) {
        self.write_bits(u64::from(b), 8);
    }
}

#[inline]
fn mask(n: u32) -> u64 {
    if n >= 64 {
        u64::MAX
    } else {
        (1u64 << n) - 1
    }
}

/// Reads bits most significant first from a byte slice.
#[derive(Clone, Debug)]
pub(crate) struct BitReader<'a> {
    data: &'a [u8],
    /// Next bit to read.
    pos: usize,
}

impl<'a> BitReader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        BitReader { data, pos: 0 }
    }

    /// Bits left to read.
    pub fn remaining_bits(&self) -> usize {
        (self.data.len() * 8).saturating_sub(self.pos)
    }

    #[inline]
    pub fn read_bit(&mut self) -> Result<bool, DecodeError> {
        let byte = *self.data.get(self.pos >> 3).ok_or(DecodeError::Truncated)?;
        let bit = (byte >> (7 - (self.pos & 7))) & 1 == 1;
        self.pos += 1;
        Ok(bit)
    }

    /// `nbits` (0..=64) bits as the low bits of the result.
    #[inline]
    pub fn read_bits(&mut self, nbits: u32) -> Result<u64, DecodeError> {
        if self.pos + nbits as usize > self.data.len() * 8 {
            return Err(DecodeError::Truncated);
        }
        let mut v = 0u64;
        let mut n = nbits;
        while n > 0 {
            let byte = self.data[self.pos >> 3];
            let used = (self.pos & 7) as u32;
            let avail = 8 - used;
            let take = avail.min(n);
            let bits = (u64::from(byte) >> (avail - take)) & mask(take);
            v = if take == 64 { bits } else { (v << take) | bits };
            self.pos += take as usize;
            n -= take;
        }
        Ok(v)
    }

    #[inline]
    pub fn read_byte(&mut self) -> Result<u8, DecodeError> {
        self.read_bits(8).map(|b| b as u8)
    }
}

/// Go's `bitRange`: whether `x` fits the `nbits`-bit bucket (`-(2^(n-1)-1) ..= 2^(n-1)`).
#[inline]
fn bit_range(x: i64, nbits: u32) -> bool {
    let lim = 1i64 << (nbits - 1);
    -(lim - 1) <= x && x <= lim
}

/// Prefix widths and payload sizes of the varbit buckets, after the 1-bit `0` for zero.
const BUCKETS: [(u64, u32, u32); 7] = [
    (0b10, 2, 3),
    (0b110, 3, 6),
    (0b1110, 4, 9),
    (0b11110, 5, 12),
    (0b111110, 6, 18),
    (0b1111110, 7, 25),
    (0b11111110, 8, 56),
];

/// Prometheus's `putVarbitInt`.
#[inline]
pub(crate) fn put_varbit_int(w: &mut BitWriter, val: i64) {
    if val == 0 {
        w.write_bit(false);
        return;
    }
    for (prefix, plen, size) in BUCKETS {
        if bit_range(val, size) {
            w.write_bits(prefix, plen);
            w.write_bits(val as u64, size);
            return;
        }
    }
    w.write_bits(0b11111111, 8);
    w.write_bits(val as u64, 64);
}

/// Prometheus's `putVarbitUint`.
#[inline]
pub(crate) fn put_varbit_uint(w: &mut BitWriter, val: u64) {
    if val == 0 {
        w.write_bit(false);
        return;
    }
    for (prefix, plen, size) in BUCKETS {
        if val >> size == 0 {
            w.write_bits(prefix, plen);
            w.write_bits(val, size);
            return;
        }
    }
    w.write_bits(0b11111111, 8);
    w.write_bits(val, 64);
}

/// The payload size announced by a varbit prefix (0 for the value 0, 64 for the last).
#[inline]
fn read_varbit_size(r: &mut BitReader<'_>) -> Result<u32, DecodeError> {
    let mut ones = 0;
    while ones < 8 {
        if !r.read_bit()? {
            break;
        }
        ones += 1;
    }
    Ok(match ones {
        0 => 0,
        8 => 64,
        n => BUCKETS[n - 1].2,
    })
}

/// Prometheus's `readVarbitInt`.
#[inline]
pub(crate) fn read_varbit_int(r: &mut BitReader<'_>) -> Result<i64, DecodeError> {
    let sz = read_varbit_size(r)?;
    match sz {
        0 => Ok(0),
        64 => Ok(r.read_bits(64)? as i64),
        _ => {
            let mut bits = r.read_bits(sz)?;
            if bits > 1 << (sz - 1) {
                bits = bits.wrapping_sub(1 << sz);
            }
            Ok(bits as i64)
        }
    }
}

/// Prometheus's `readVarbitUint`.
#[inline]
pub(crate) fn read_varbit_uint(r: &mut BitReader<'_>) -> Result<u64, DecodeError> {
    let sz = read_varbit_size(r)?;
    if sz == 0 {
        return Ok(0);
    }
    r.read_bits(sz)
}

/// Prometheus's `xorWrite`: `new` against `cur` with the running leading/trailing-zero
/// window (`leading == 0xff` before the first window).
#[inline]
pub(crate) fn xor_write(
    w: &mut BitWriter,
    new: f64,
    cur: f64,
    leading: &mut u8,
    trailing: &mut u8,
) {
    let delta = new.to_bits() ^ cur.to_bits();
    if delta == 0 {
        w.write_bit(false);
        return;
    }
    w.write_bit(true);
    let new_leading = (delta.leading_zeros() as u8).min(31);
    let new_trailing = delta.trailing_zeros() as u8;
    if *leading != 0xff && new_leading >= *leading && new_trailing >= *trailing {
        w.write_bit(false);
        w.write_bits(
            delta >> *trailing,
            64 - u32::from(*leading) - u32::from(*trailing),
        );
        return;
    }
    *leading = new_leading;
    *trailing = new_trailing;
    w.write_bit(true);
    w.write_bits(u64::from(new_leading), 5);
    let sigbits = 64 - u32::from(new_leading) - u32::from(new_trailing);
    // 64 significant bits are written as 0 (6 bits); the reader maps 0 back to 64.
    w.write_bits(u64::from(sigbits), 6);
    w.write_bits(delta >> new_trailing, sigbits);
}

/// Prometheus's `xorRead`, updating `value` and the window in place.
#[inline]
pub(crate) fn xor_read(
    r: &mut BitReader<'_>,
    value: &mut f64,
    leading: &mut u8,
    trailing: &mut u8,
) -> Result<(), DecodeError> {
    if !r.read_bit()? {
        return Ok(());
    }
    let (new_trailing, mbits) = if !r.read_bit()? {
        let lead = u32::from(*leading);
        let trail = u32::from(*trailing);
        if lead + trail > 64 {
            return Err(DecodeError::Invalid("xor value reuses an unset window"));
        }
        (trail, 64 - lead - trail)
    } else {
        let lead = r.read_bits(5)? as u32;
        let mut mbits = r.read_bits(6)? as u32;
        if mbits == 0 {
            mbits = 64;
        }
        if lead + mbits > 64 {
            return Err(DecodeError::Invalid("xor value window wider than 64 bits"));
        }
        let trail = 64 - lead - mbits;
        *leading = lead as u8;
        *trailing = trail as u8;
        (trail, mbits)
    };
    let bits = r.read_bits(mbits)?;
    let shifted = if new_trailing >= 64 {
        0
    } else {
        bits << new_trailing
    };
    *value = f64::from_bits(value.to_bits() ^ shifted);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn varbit_int_widths() {
        // (value, bits written) per Prometheus's bucket table.
        for (v, n) in [
            (0i64, 1usize),
            (-3, 5),
            (4, 5),
            (5, 9),
            (-31, 9),
            (32, 9),
            (-255, 13),
            (256, 13),
            (2048, 17),
            (-131071, 24),
            (131072, 24),
            (16777216, 32),
            (36028797018963968, 64),
            (i64::MIN, 72),
            (i64::MAX, 72),
        ] {
            let mut w = BitWriter::with_header(0);
            put_varbit_int(&mut w, v);
            let bits = w.buf.len() * 8 - w.count as usize;
            assert_eq!(bits, n, "value {v}");
            let mut r = BitReader::new(&w.buf);
            assert_eq!(read_varbit_int(&mut r).unwrap(), v);
        }
        // -4 does not fit the 3-bit bucket (Go's bitRange is asymmetric).
        let mut w = BitWriter::with_header(0);
        put_varbit_int(&mut w, -4);
        assert_eq!(w.buf.len() * 8 - w.count as usize, 9);
    }

    #[test]
    fn bytes_end_without_padding_byte() {
        // Prometheus (current) `writeByte` on a byte boundary appends exactly one byte.
        let mut w = BitWriter::with_header(3);
        w.write_byte(0xab);
        assert_eq!(w.buf, vec![0, 0, 0, 0xab]);
        w.write_bit(true);
        w.write_bits(0b101, 3);
        w.write_byte(0xff);
        assert_eq!(w.buf, vec![0, 0, 0, 0xab, 0b1101_1111, 0b1111_0000]);
    }

    proptest! {
        #[test]
        fn varbit_round_trip(vals in proptest::collection::vec(any::<i64>(), 0..50), uvals in proptest::collection::vec(any::<u64>(), 0..50)) {
            let mut w = BitWriter::with_header(0);
            for v in &vals { put_varbit_int(&mut w, *v); }
            for v in &uvals { put_varbit_uint(&mut w, *v); }
            let mut r = BitReader::new(&w.buf);
            for v in &vals { prop_assert_eq!(read_varbit_int(&mut r).unwrap(), *v); }
            for v in &uvals { prop_assert_eq!(read_varbit_uint(&mut r).unwrap(), *v); }
        }

        #[test]
        fn xor_round_trip(vals in proptest::collection::vec(any::<u64>(), 1..50)) {
            let mut w = BitWriter::with_header(0);
            let (mut l, mut t) = (0xffu8, 0u8);
            let mut cur = 0.0f64;
            for v in &vals { let f = f64::from_bits(*v); xor_write(&mut w, f, cur, &mut l, &mut t); cur = f; }
            let mut r = BitReader::new(&w.buf);
            let (mut l, mut t) = (0u8, 0u8);
            let mut cur = 0.0f64;
            for v in &vals {
                xor_read(&mut r, &mut cur, &mut l, &mut t).unwrap();
                prop_assert_eq!(cur.to_bits(), *v);
            }
        }
    }
}
