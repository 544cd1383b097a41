//! XOR ("Gorilla") chunk encoding, bit-for-bit compatible with Prometheus's
//! `tsdb/chunkenc/xor.go` + `bstream.go`, and the head's rules for cutting a series
//! into chunks.
//!
//! # Chunk data layout
//!
//! ```text
//! num_samples <u16 BE> | t0 <varint> | v0 <64 bits> | t1-t0 <uvarint> | v1 <xor>
//!                      | dod2 <varbit_ts> | v2 <xor> | ... | padding to a byte
//! ```
//!
//! * `varbit_ts` (delta of deltas): `0` for 0; `10`+14 bits, `110`+17 bits, `1110`+20 bits
//!   when the value fits Go's `bitRange` (`-(2^(n-1)-1) ..= 2^(n-1)`), else `1111`+64 bits.
//! * `xor`: `0` if the value's bits equal the previous; `10` + the significant bits inside
//!   the previous leading/trailing-zero window when they fit; else `11` + leading zeros
//!   (5 bits, capped at 31) + significant-bit count (6 bits, 64 written as 0) + bits.
//!
//! One quirk of Go's `bstream` matters for byte identity: `writeByte` (and so every
//! `writeBits` of a multiple of 8 bits) always appends a fresh byte after the one it
//! completes. When such a write ends exactly on a byte boundary, the stream therefore
//! carries one extra zero byte (e.g. a one-sample chunk is `2 + varint + 8 + 1` bytes).
//! [`XorChunk`] reproduces that, so [`XorChunk::bytes`] equals Prometheus's `Bytes()`
//! after every append.

use std::fmt;
use std::iter::FusedIterator;

/// The number of samples Prometheus's head aims for per chunk.
pub const SAMPLES_PER_CHUNK: usize = 120;

/// Prometheus's `chunkenc.MaxBytesPerXORChunk`.
pub const MAX_BYTES_PER_XOR_CHUNK: usize = 1024;

/// The head cuts before an append once a chunk is larger than this: room for one
/// maximally sized (19 byte) sample is left under [`MAX_BYTES_PER_XOR_CHUNK`].
const MAX_BYTES_BEFORE_APPEND: usize = MAX_BYTES_PER_XOR_CHUNK - 19;

/// Chunk encodings, with the numeric values Prometheus writes into segment files.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    None = 0,
    Xor = 1,
    Histogram = 2,
    FloatHistogram = 3,
    /// Thanos's downsampled aggregate chunk (`downsample.ChunkEncAggr`); see
    /// [`crate::downsample`].
    Aggr = 0xff,
}

impl Encoding {
    pub fn from_u8(b: u8) -> Option<Encoding> {
        match b {
            0 => Some(Encoding::None),
            1 => Some(Encoding::Xor),
            2 => Some(Encoding::Histogram),
            3 => Some(Encoding::FloatHistogram),
            0xff => Some(Encoding::Aggr),
            _ => None,
        }
    }

    /// Prometheus's `Encoding.String()`.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::None => "none",
            Encoding::Xor => "XOR",
            Encoding::Histogram => "histogram",
            Encoding::FloatHistogram => "floathistogram",
            Encoding::Aggr => "aggr",
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// STALE_NAN bits 0x7ff0000000000002 as Prometheus's value.StaleNaN
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// Whether `v` is Prometheus's staleness marker (compared by bits: it is a NaN).
#[inline]
pub fn is_stale_nan(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

// ---------------------------------------------------------------------------------------
// Encoder
// ---------------------------------------------------------------------------------------

/// An XOR chunk being appended to. Owns the chunk data bytes (2-byte big-endian sample
/// count + bit stream) and the appender state, so appends never re-scan the chunk.
#[derive(Clone)]
pub struct XorChunk {
    /// The chunk data in `buf[..len]`; everything after it is zero, and before an
    /// append at least `SLACK` bytes exist past the current bit, so bits are written
    /// with fixed-size 8- or 16-byte read-modify-writes.
    buf: Vec<u8>,
    /// `u32`s, not `usize`s (a chunk holds at most `u16::MAX` samples of ≤ 19 bytes):
    /// 8 bytes less in every series' state.
    len: u32,
    /// Bits written so far, the 16 header bits included.
    bits: u32,
    num: u16,
    /// Leading bytes no longer held in `buf` ([`drop_front`](Self::drop_front)): the
    /// head writes them to its chunk files while the chunk is still open. `buf[0]` is
    /// the chunk's byte `spilled`. A `u16`: only the head's open chunks drop bytes,
    /// and they stay under [`MAX_BYTES_PER_XOR_CHUNK`].
    spilled: u16,
    t: i64,
    v: u64,
    t_delta: u64,
    /// Leading zeros of the current XOR window; `0xff` until the first window is set.
    leading: u8,
    trailing: u8,
}

/// Room a single append may need past the byte of the current bit position: a sample
/// is at most 4+64 + 13+64 bits (19 bytes), plus a 16-byte write window.
const SLACK: usize = 40;

impl Default for XorChunk {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for XorChunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XorChunk")
            .field("num_samples", &self.num)
            .field("bytes", &self.len)
            .finish()
    }
}

impl XorChunk {
    pub fn new() -> Self {
        Self::new_in(vec![0; 128])
    }

    /// An empty chunk whose buffer starts at `n` bytes (at least the encoder's
    /// slack), for callers that keep it small (the head writes the settled front out).
    pub fn with_buffer(n: usize) -> Self {
        Self::new_in(vec![0; n.max(SLACK + 2)])
    }

    /// Bytes an append needs past the settled ones without growing the buffer.
    pub const SLACK: usize = SLACK;

    /// An empty chunk writing into `buf` (zeroed, at least `SLACK` bytes).
    fn new_in(buf: Vec<u8>) -> Self {
        XorChunk {
            buf,
            len: 2,
            bits: 16,
            num: 0,
            spilled: 0,
            t: 0,
            v: 0,
            t_delta: 0,
            leading: 0xff,
            trailing: 0,
        }
    }

    /// Empty the chunk for the next one, keeping its buffer: a series' next chunk
    /// needs about as many bytes, so it starts at the size this one grew to instead of
    /// growing again from 128 bytes (each growth leaves a freed buffer the allocator may
    /// never hand back: BENCHMARKS.md, "Session 9").
    pub fn clear(&mut self) {
        // the bytes past the held ones are zero already
        let held = self.held_len();
        self.buf[..held].fill(0);
        *self = Self::new_in(std::mem::take(&mut self.buf));
    }

    #[inline]
    pub fn num_samples(&self) -> usize {
        self.num as usize
    }

    /// The chunk data exactly as Prometheus's `XORChunk.Bytes()` would return it, once
    /// [`drop_front`](Self::drop_front) dropped nothing; after that, the bytes still
    /// held (see [`held`](Self::held)).
    #[inline]
    pub fn bytes(&self) -> &[u8] {
        debug_assert_eq!(
            self.spilled, 0,
            "bytes() of a chunk whose front was dropped"
        );
        self.held()
    }

    /// The bytes still held: the chunk's bytes from [`spilled`](Self::spilled) on.
    #[inline]
    pub fn held(&self) -> &[u8] {
        &self.buf[..self.held_len()]
    }

    #[inline]
    fn held_len(&self) -> usize {
        (self.len - u32::from(self.spilled)) as usize
    }

    /// The chunk's length in bytes, dropped ones included.
    #[inline]
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether the chunk holds no sample.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.num == 0
    }

    /// Leading bytes dropped by [`drop_front`](Self::drop_front).
    #[inline]
    pub fn spilled(&self) -> usize {
        self.spilled as usize
    }

    /// Held bytes that no later append changes: those before the byte the next bit goes
    /// to. (The first two, the sample count, are rewritten by every append while held;
    /// whoever drops them writes the count again when the chunk closes.)
    #[inline]
    pub fn settled(&self) -> usize {
        (self.bits as usize >> 3) - usize::from(self.spilled)
    }

    /// The sample count as the chunk's first two bytes hold it.
    pub fn header(&self) -> [u8; 2] {
        self.num.to_be_bytes()
    }

    /// Stop holding the first `n` held bytes (at most [`settled`](Self::settled)): the
    /// caller keeps them elsewhere. Appends go on as before; [`held`](Self::held) then
    /// starts at chunk byte [`spilled`](Self::spilled).
    pub fn drop_front(&mut self, n: usize) {
        assert!(
            n <= self.settled(),
            "dropping bytes an append still changes"
        );
        let held = self.held_len();
        self.buf.copy_within(n..held, 0);
        // keep everything past the held bytes zero
        self.buf[held - n..held].fill(0);
        self.spilled = u16::try_from(usize::from(self.spilled) + n)
            .expect("an open head chunk stays far under 64 KiB");
    }

    /// Heap bytes the chunk holds (its buffer's capacity), for memory accounting.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    pub fn into_bytes(mut self) -> Vec<u8> {
        debug_assert_eq!(
            self.spilled, 0,
            "into_bytes() of a chunk whose front was dropped"
        );
        self.buf.truncate(self.held_len());
        self.buf
    }

    pub fn iter(&self) -> XorIter<'_> {
        XorIter::new(self.bytes())
    }

    /// Appends a sample. Timestamps should be strictly increasing (the encoding itself
    /// wraps like Go's on anything else; [`ChunkCutter`] enforces the order).
    ///
    /// # Panics
    /// When the chunk already holds `u16::MAX` samples (the header could not count more).
    #[inline]
    pub fn append(&mut self, t: i64, v: f64) {
        assert!(
            self.num < u16::MAX,
            "XOR chunk is full ({} samples)",
            u16::MAX
        );
        if self.buf.len() < self.settled() + SLACK {
            self.grow();
        }
        let vb = v.to_bits();
        // Width of the last Go `writeBits` call of this append; see below.
        let last_write;
        let mut t_delta = 0;
        if self.num >= 2 {
            t_delta = t.wrapping_sub(self.t) as u64;
            let d = t_delta.wrapping_sub(self.t_delta);
            let dod = d as i64;
            let (code, n) = if dod == 0 {
                (0, 1)
            } else if bit_range(dod, 14) {
                ((0b10 << 14) | (d & mask(14)), 16)
            } else if bit_range(dod, 17) {
                ((0b110 << 17) | (d & mask(17)), 20)
            } else if bit_range(dod, 20) {
                ((0b1110 << 20) | (d & mask(20)), 24)
            } else {
                self.put128((0b1111 << 64) | d as u128, 68);
                (0, 0)
            };
            // Delta-of-delta and value in one write: at most 24 + 77 bits.
            let (vcode, vn, last) = self.vdelta_code(vb);
            self.put128(((code as u128) << vn) | vcode, n + vn);
            last_write = last;
        } else if self.num == 0 {
            self.write_uvarint(zigzag(t));
            self.put128(vb as u128, 64);
            last_write = 64;
        } else {
            t_delta = t.wrapping_sub(self.t) as u64;
            self.write_uvarint(t_delta);
            let (vcode, vn, last) = self.vdelta_code(vb);
            self.put128(vcode, vn);
            last_write = last;
        }
        // Go's `writeByte` always appends a byte after the one it fills, so a
        // `writeBits` call of a multiple of 8 bits that ends on a byte boundary leaves
        // an extra zero byte (with 8 free bits) at the end of the stream.
        self.len = (self.bits + 7) >> 3;
        if last_write & 7 == 0 && self.bits & 7 == 0 {
            self.len += 1;
        }
        self.t = t;
        self.v = vb;
        self.t_delta = t_delta;
        self.num += 1;
        if self.spilled == 0 {
            self.buf[..2].copy_from_slice(&self.num.to_be_bytes());
        }
    }

    #[cold]
    #[inline(never)]
    fn grow(&mut self) {
        // A quarter more (at least 64 bytes) rather than double: an open head chunk
        // lives for its 120 samples in every active series, and doubling left 100-250
        // spare bytes per series. `reserve_exact`, as `resize` alone would double.
        let len = self.buf.len();
        let want = (self.settled() + SLACK).max(len + (len / 4).max(64));
        self.buf.reserve_exact(want - len);
        self.buf.resize(want, 0);
    }

    /// The code for the XOR of `vb` with the previous value: (bits, their number, the
    /// width of the last field, i.e. of Go's last `writeBit`/`writeBits` call).
    #[inline(always)]
    fn vdelta_code(&mut self, vb: u64) -> (u128, u32, u32) {
        let x = vb ^ self.v;
        if x == 0 {
            return (0, 1, 1);
        }
        let leading = x.leading_zeros().min(31);
        let trailing = x.trailing_zeros();
        let (cur_leading, cur_trailing) = (u32::from(self.leading), u32::from(self.trailing));
        // `self.leading` is 0xff before the first window, failing the comparison.
        if leading >= cur_leading && trailing >= cur_trailing {
            // '10' + the bits inside the current window.
            let n = 64 - cur_leading - cur_trailing;
            let sig = (x >> cur_trailing) as u128;
            ((0b10 << n) | sig, n + 2, n)
        } else {
            // both at most 64
            self.leading = leading as u8;
            self.trailing = trailing as u8;
            let n = 64 - leading - trailing;
            // '11' + 5 bits leading + 6 bits significant-bit count (64 wraps to 0).
            let ctrl = (0b11 << 11) | ((leading as u128) << 6) | (n as u128 & 63);
            let sig = (x >> trailing) as u128;
            ((ctrl << n) | sig, n + 13, n)
        }
    }

    /// Go's `binary.PutUvarint`, each byte written as 8 bits.
    fn write_uvarint(&mut self, mut x: u64) {
        while x >= 0x80 {
            self.put(x & 0x7f | 0x80, 8);
            x >>= 7;
        }
        self.put(x, 8);
    }

    /// Appends `v`, which has at most `n` (1..=57) significant bits, as `n` bits, most
    /// significant first.
    #[inline(always)]
    fn put(&mut self, v: u64, n: u32) {
        debug_assert!((1..=57).contains(&n));
        debug_assert!(v >> n == 0);
        let i = self.settled();
        let off = self.bits & 7;
        let Some(window) = self.buf.get_mut(i..i + 8) else {
            unreachable!("append keeps SLACK bytes");
        };
        let mut w = [0u8; 8];
        w.copy_from_slice(window);
        let cur = u64::from_be_bytes(w);
        window.copy_from_slice(&(cur | (v << (64 - n - off))).to_be_bytes());
        self.bits += n;
    }

    /// Appends `v`, which has at most `n` (1..=121) significant bits, as `n` bits.
    #[inline(always)]
    fn put128(&mut self, v: u128, n: u32) {
        debug_assert!((1..=121).contains(&n));
        debug_assert!(v >> n == 0);
        if n <= 57 {
            self.put(v as u64, n);
            return;
        }
        let i = self.settled();
        let off = self.bits & 7;
        let Some(window) = self.buf.get_mut(i..i + 16) else {
            unreachable!("append keeps SLACK bytes");
        };
        let mut w = [0u8; 16];
        w.copy_from_slice(window);
        let cur = u128::from_be_bytes(w);
        window.copy_from_slice(&(cur | (v << (128 - n - off))).to_be_bytes());
        self.bits += n;
    }
}

#[inline(always)]
fn mask(n: u32) -> u64 {
    (1u64 << n) - 1
}

/// Go's `bitRange`: whether `x` fits the `nbits`-bit delta-of-delta bucket.
#[inline(always)]
fn bit_range(x: i64, nbits: u32) -> bool {
    let half = 1i64 << (nbits - 1);
    -(half - 1) <= x && x <= half
}

#[inline]
fn zigzag(x: i64) -> u64 {
    ((x << 1) ^ (x >> 63)) as u64
}

/// Go's `binary.PutUvarint`.
#[cfg(test)]
fn put_uvarint(buf: &mut [u8; 10], mut x: u64) -> usize {
    let mut i = 0;
    while x >= 0x80 {
        buf[i] = x as u8 | 0x80;
        x >>= 7;
        i += 1;
    }
    buf[i] = x as u8;
    i + 1
}

// ---------------------------------------------------------------------------------------
// Decoder
// ---------------------------------------------------------------------------------------

/// Checked bit reads at a bit position (the slow path; the fast path in
/// [`XorIter::next`] reads the same position directly).
#[derive(Clone)]
struct BitReader<'a> {
    data: &'a [u8],
    /// Position of the next bit to read.
    pos: usize,
}

impl BitReader<'_> {
    /// Reads `n` (1..=64) bits; `None` if the data ends first.
    #[inline]
    fn read(&mut self, n: u32) -> Option<u64> {
        let end = self.pos + n as usize;
        if end > self.data.len() * 8 {
            return None;
        }
        let i = self.pos >> 3;
        let (a, b) = match self.data.get(i..i + 16) {
            Some(w) => (be64(&w[..8]), be64(&w[8..])),
            None => tail_words(self.data, i),
        };
        let w = ((a as u128) << 64 | b as u128) << (self.pos & 7);
        self.pos = end;
        Some((w >> (128 - n)) as u64)
    }

    /// Go's `binary.ReadUvarint` over bytes read from the bit stream.
    fn read_uvarint(&mut self) -> Result<u64, &'static str> {
        let mut x = 0u64;
        let mut s = 0u32;
        for i in 0..10 {
            let b = if self.pos & 7 == 0 {
                // The varints of the first two samples are byte-aligned.
                let b = *self.data.get(self.pos >> 3).ok_or(ERR_EOF)? as u64;
                self.pos += 8;
                b
            } else {
                self.read(8).ok_or(ERR_EOF)?
            };
            if b < 0x80 {
                if i == 9 && b > 1 {
                    return Err(ERR_VARINT);
                }
                return Ok(x | b << s);
            }
            x |= (b & 0x7f) << s;
            s += 7;
        }
        Err(ERR_VARINT)
    }
}

/// A new XOR window from its 5-bit leading-zero count and 6-bit size (0 = 64): the
/// significant bits and their shift. `None` for a window wider than 64 bits, which no
/// encoder writes (Go's decoder would silently shift the bits out; we report it).
#[inline(always)]
fn window(leading: u32, mbits: u32) -> Option<(u32, u32)> {
    let mbits = if mbits == 0 { 64 } else { mbits };
    if leading + mbits > 64 {
        return None;
    }
    Some((mbits, 64 - leading - mbits))
}

#[inline(always)]
fn be64(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(b);
    u64::from_be_bytes(w)
}

/// The two words at byte `i` of `data`, zero-padded past its end. Not cold: the
/// small sub-chunks of downsampled data spend half their samples here.
#[inline]
fn tail_words(data: &[u8], i: usize) -> (u64, u64) {
    let mut w = [0u8; 16];
    let rest = data.get(i..).unwrap_or(&[]);
    let n = rest.len().min(16);
    w[..n].copy_from_slice(&rest[..n]);
    (be64(&w[..8]), be64(&w[8..]))
}

const ERR_EOF: &str = "unexpected end of XOR chunk data";
const ERR_VARINT: &str = "varint overflows a 64-bit integer";
const ERR_WINDOW: &str = "XOR value window wider than 64 bits";
const ERR_HEADER: &str = "XOR chunk shorter than its 2-byte header";

/// Iterates over the samples of XOR chunk data (as stored in a block) without copying.
///
/// Malformed or truncated data ends the iteration early; [`XorIter::err`] then says why.
/// Decoding follows Prometheus's `xorIterator`, with one difference on corrupt input: a
/// value window wider than 64 bits (which no encoder writes) is reported as an error,
/// where Go silently shifts its bits out.
#[derive(Clone)]
pub struct XorIter<'a> {
    r: BitReader<'a>,
    total: u32,
    /// Samples read as of the last checked-path call (or the error); see `samples_read`.
    read: u32,
    /// Samples left for the fast path: 0 until two samples are read, then
    /// `total - samples_read()` (the fast path only counts this down).
    fast_left: u32,
    t: i64,
    v: u64,
    t_delta: u64,
    /// Significant bits of the current XOR window (1..=64).
    mbits: u32,
    /// Trailing zeros of the current window (0..=63).
    shift: u32,
    err: Option<&'static str>,
}

impl fmt::Debug for XorIter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XorIter")
            .field("num_samples", &self.total)
            .field("read", &self.samples_read())
            .field("err", &self.err)
            .finish()
    }
}

/// Append the samples of XOR chunk `data` with timestamps in `[mint, maxt]` to `out`;
/// `Err` says why the data ended early (the samples before it are kept).
pub fn append_xor_in_range(
    data: &[u8],
    mint: i64,
    maxt: i64,
    out: &mut Vec<(i64, f64)>,
) -> std::result::Result<(), &'static str> {
    let mut it = XorIter::new(data);
    out.reserve(it.num_samples());
    for (t, v) in it.by_ref() {
        if t > maxt {
            break;
        }
        if t >= mint {
            out.push((t, v));
        }
    }
    it.err.map_or(Ok(()), Err)
}

/// The last sample of XOR chunk `data` with a timestamp in `[mint, maxt]`, if any,
/// decoding no further than `maxt` and keeping nothing else (an instant selector
/// reads one sample per series).
pub fn last_xor_in_range(
    data: &[u8],
    mint: i64,
    maxt: i64,
) -> std::result::Result<Option<(i64, f64)>, &'static str> {
    let mut it = XorIter::new(data);
    let mut last = None;
    for (t, v) in it.by_ref() {
        if t > maxt {
            break;
        }
        if t >= mint {
            last = Some((t, v));
        }
    }
    it.err.map_or(Ok(last), Err)
}

/// How many samples of XOR chunk `data`, whose samples lie in `[chunk_mint,
/// chunk_maxt]`, have timestamps in `[mint, maxt]`: the header's count when the chunk
/// lies inside, else counted by decoding (no allocation). Lets a reader count what a
/// query loads while keeping the chunk encoded.
pub fn count_xor_in_range(
    data: &[u8],
    (chunk_mint, chunk_maxt): (i64, i64),
    mint: i64,
    maxt: i64,
) -> std::result::Result<usize, &'static str> {
    let mut it = XorIter::new(data);
    if let Some(e) = it.err {
        return Err(e);
    }
    if chunk_mint >= mint && chunk_maxt <= maxt {
        return Ok(it.num_samples());
    }
    let mut n = 0;
    for (t, _) in it.by_ref() {
        if t > maxt {
            break;
        }
        n += usize::from(t >= mint);
    }
    it.err.map_or(Ok(n), Err)
}

impl<'a> XorIter<'a> {
    pub fn new(data: &'a [u8]) -> XorIter<'a> {
        let (total, body, err) = match data {
            [a, b, rest @ ..] => (u16::from_be_bytes([*a, *b]), rest, None),
            _ => (0, &[][..], Some(ERR_HEADER)),
        };
        XorIter {
            r: BitReader { data: body, pos: 0 },
            total: total as u32,
            read: 0,
            fast_left: 0,
            t: 0,
            v: 0,
            t_delta: 0,
            mbits: 64,
            shift: 0,
            err,
        }
    }

    /// The sample count the chunk header announces.
    pub fn num_samples(&self) -> usize {
        self.total as usize
    }

    /// `Some(reason)` when the data ended early or was malformed; iteration then stops.
    pub fn err(&self) -> Option<&str> {
        self.err
    }

    /// Advances to the first sample with timestamp `>= t` and returns it. Like
    /// Prometheus's `Seek`, it never moves backwards: if the sample returned last already
    /// satisfies the bound it is returned again. Later `next()` calls continue after the
    /// returned sample.
    pub fn seek(&mut self, t: i64) -> Option<(i64, f64)> {
        if self.err.is_some() {
            return None;
        }
        if self.samples_read() > 0 && self.t >= t {
            return Some((self.t, f64::from_bits(self.v)));
        }
        loop {
            let s = self.next()?;
            if s.0 >= t {
                return Some(s);
            }
        }
    }

    #[inline]
    fn samples_read(&self) -> u32 {
        if self.read >= 2 && self.err.is_none() {
            self.total - self.fast_left
        } else {
            self.read
        }
    }

    #[cold]
    fn fail(&mut self, reason: &'static str) -> bool {
        self.read = self.samples_read();
        self.err = Some(reason);
        self.fast_left = 0;
        false
    }

    /// Decodes the next sample into `t`/`v` with every read checked: the first two samples, 64-bit
    /// delta-of-deltas, the last bytes of the data, and malformed input. Mirrors Go's
    /// `xorIterator.Next`.
    #[cold]
    #[inline(never)]
    fn step_slow(&mut self) -> bool {
        let read = self.samples_read();
        if read >= self.total || self.err.is_some() {
            return false;
        }
        match read {
            0 => {
                let ux = match self.r.read_uvarint() {
                    Ok(x) => x,
                    Err(e) => return self.fail(e),
                };
                let Some(v) = self.r.read(64) else {
                    return self.fail(ERR_EOF);
                };
                self.t = (ux >> 1) as i64 ^ -((ux & 1) as i64);
                self.v = v;
            }
            1 => {
                let d = match self.r.read_uvarint() {
                    Ok(x) => x,
                    Err(e) => return self.fail(e),
                };
                self.t_delta = d;
                self.t = self.t.wrapping_add(d as i64);
                if let Err(e) = self.read_value_slow() {
                    return self.fail(e);
                }
            }
            _ => {
                let Some(dod) = self.read_dod_slow() else {
                    return self.fail(ERR_EOF);
                };
                self.t_delta = self.t_delta.wrapping_add(dod);
                self.t = self.t.wrapping_add(self.t_delta as i64);
                if let Err(e) = self.read_value_slow() {
                    return self.fail(e);
                }
            }
        }
        self.read = read + 1;
        if self.read >= 2 {
            self.fast_left = self.total - self.read;
        }
        true
    }

    fn read_dod_slow(&mut self) -> Option<u64> {
        let mut d = 0;
        for _ in 0..4 {
            let bit = self.r.read(1)?;
            d = d << 1 | bit;
            if bit == 0 {
                break;
            }
        }
        let sz = match d {
            0b0 => return Some(0),
            0b10 => 14,
            0b110 => 17,
            0b1110 => 20,
            _ => return self.r.read(64),
        };
        let mut bits = self.r.read(sz)?;
        if bits > 1 << (sz - 1) {
            bits = bits.wrapping_sub(1 << sz);
        }
        Some(bits)
    }

    fn read_value_slow(&mut self) -> Result<(), &'static str> {
        if self.r.read(1).ok_or(ERR_EOF)? == 0 {
            return Ok(());
        }
        if self.r.read(1).ok_or(ERR_EOF)? == 1 {
            let h = self.r.read(11).ok_or(ERR_EOF)?;
            (self.mbits, self.shift) =
                window((h >> 6) as u32, (h & 63) as u32).ok_or(ERR_WINDOW)?;
        }
        let bits = self.r.read(self.mbits).ok_or(ERR_EOF)?;
        self.v ^= bits << self.shift;
        Ok(())
    }
}

impl Iterator for XorIter<'_> {
    type Item = (i64, f64);

    /// The fast path decodes a sample from a 128-bit window of the data, which holds
    /// any sample (at most 24 + 77 bits) but one with a 64-bit delta-of-delta; those
    /// and the first two samples, errors included, go through the checked path.
    #[inline]
    fn next(&mut self) -> Option<(i64, f64)> {
        let ok = if self.fast_left == 0 {
            self.step_slow()
        } else {
            let i = self.r.pos >> 3;
            match self.r.data.get(i..i + 16) {
                Some(w) => self.decode_window::<false>(be64(&w[..8]), be64(&w[8..])),
                None => self.step_tail(),
            }
        };
        if ok {
            Some((self.t, f64::from_bits(self.v)))
        } else {
            None
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.err.is_some() {
            return (0, Some(0));
        }
        (0, Some((self.total - self.samples_read()) as usize))
    }
}

impl XorIter<'_> {
    /// The fast path over the last 15 bytes, zero-padded.
    #[inline(never)]
    fn step_tail(&mut self) -> bool {
        let (a, b) = tail_words(self.r.data, self.r.pos >> 3);
        self.decode_window::<true>(a, b)
    }

    /// Decodes a sample (not one of the first two) from `a` and `b`, the 16 bytes at
    /// the byte of the current bit position; `TAIL` when they are zero-padded.
    #[inline(always)]
    fn decode_window<const TAIL: bool>(&mut self, a: u64, b: u64) -> bool {
        // The window from the current bit on: `hi` then `lo`.
        let pos = self.r.pos;
        let off = (pos & 7) as u32;
        let hi = (a << off) | ((b >> 1) >> (63 - off));
        let lo = b << off;

        // Delta of delta: '0', or '10' + 14 bits, '110' + 17 bits, '1110' + 20 bits.
        let mut used = 1;
        let mut t_delta = self.t_delta;
        if (hi as i64) < 0 {
            let ones = (!hi).leading_zeros();
            if ones >= 4 {
                return self.step_slow();
            }
            let sz = 11 + 3 * ones;
            // Go reads the field as unsigned and subtracts 2^sz above 2^(sz-1), so
            // 2^(sz-1) itself is positive: sign-extend `raw - 1`, then add 1.
            let field = (hi << (ones + 1)).wrapping_sub(1 << (64 - sz));
            let dod = ((field as i64) >> (64 - sz)).wrapping_add(1);
            t_delta = t_delta.wrapping_add(dod as u64);
            used = ones + 1 + sz;
        }

        // Value: '0' unchanged, '10' + bits in the current window, '11' + new window.
        let vh = hi << used;
        let mut v = self.v;
        if (vh as i64) >= 0 {
            used += 1;
        } else {
            if vh & (1 << 62) != 0 {
                // Storing the window early is harmless: the checked path re-reads it
                // if this sample is handed over.
                match window(((vh >> 57) & 31) as u32, ((vh >> 51) & 63) as u32) {
                    Some(w) => (self.mbits, self.shift) = w,
                    None => return self.step_slow(),
                }
                used += 13;
            } else {
                used += 2;
            }
            let (mbits, shift) = (self.mbits, self.shift);
            // 3 <= used <= 37: the 64 bits from `used` on are in the window.
            let bits = ((hi << used) | (lo >> (64 - used))) >> (64 - mbits);
            used += mbits;
            v ^= bits << shift;
        }
        let end = pos + used as usize;
        if TAIL && end > self.r.data.len() * 8 {
            // Ran into the zero padding past the data: let the checked path report it.
            return self.step_slow();
        }
        self.r.pos = end;
        self.t_delta = t_delta;
        self.t = self.t.wrapping_add(t_delta as i64);
        self.v = v;
        self.fast_left -= 1;
        true
    }
}

impl FusedIterator for XorIter<'_> {}

// ---------------------------------------------------------------------------------------
// Chunk cutting
// ---------------------------------------------------------------------------------------

/// A finished chunk with its time range, as cut by Prometheus's head.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedChunk {
    pub min_time: i64,
    pub max_time: i64,
    pub encoding: Encoding,
    pub data: Vec<u8>,
}

/// Cuts a series' samples into XOR chunks the way Prometheus's head does
/// (`memSeries.appendPreprocessor`):
///
/// * a chunk's first sample sets `next_at = rangeForTimestamp(t, chunk_range)`, the end
///   of the chunk-range window it falls in (`(t / range) * range + range`);
/// * before appending the 31st sample (`SAMPLES_PER_CHUNK / 4` in the chunk),
///   `next_at` is re-predicted with `computeChunkEndTime` so the rest of the window is
///   split into equally sized chunks at the observed rate;
/// * a new chunk is cut when `t >= next_at`, or when the chunk is already larger than
///   `MAX_BYTES_PER_XOR_CHUNK - 19` bytes (current Prometheus's size limit).
///
/// Deliberate difference: we also cut at [`SAMPLES_PER_CHUNK`] (120) samples, where
/// Prometheus (2.42 and later) allows up to 240 when its prediction was wrong. No chunk
/// we write therefore holds more than 120 samples; at a steady rate the cuts are the
/// same as Prometheus's.
///
/// Samples must be in strictly increasing timestamp order; a sample with ts <= previous
/// is skipped and counted ([`ChunkCutter::skipped`]).
#[derive(Debug)]
pub struct ChunkCutter {
    chunk_range: i64,
    cur: XorChunk,
    min_time: i64,
    max_time: i64,
    next_at: i64,
    last_t: Option<i64>,
    skipped: u64,
    done: Vec<EncodedChunk>,
}

impl ChunkCutter {
    /// # Panics
    /// If `chunk_range <= 0`.
    pub fn new(chunk_range: i64) -> Self {
        assert!(
            chunk_range > 0,
            "chunk range must be positive, got {chunk_range}"
        );
        ChunkCutter {
            chunk_range,
            cur: XorChunk::new(),
            min_time: 0,
            max_time: 0,
            next_at: 0,
            last_t: None,
            skipped: 0,
            done: Vec::new(),
        }
    }

    /// Appends a sample; `false` = out of order (ts <= previous), dropped.
    pub fn append(&mut self, t: i64, v: f64) -> bool {
        if self.last_t.is_some_and(|last| t <= last) {
            self.skipped += 1;
            return false;
        }
        let n = self.cur.num_samples();
        if n > 0 {
            let mut cut = self.cur.bytes().len() > MAX_BYTES_BEFORE_APPEND;
            if !cut {
                if n == SAMPLES_PER_CHUNK / 4 {
                    self.next_at =
                        compute_chunk_end_time(self.min_time, self.max_time, self.next_at);
                }
                cut = t >= self.next_at || n >= SAMPLES_PER_CHUNK;
            }
            if cut {
                self.cut();
            }
        }
        if self.cur.num_samples() == 0 {
            self.min_time = t;
            self.next_at = range_for_timestamp(t, self.chunk_range);
        }
        self.cur.append(t, v);
        self.max_time = t;
        self.last_t = Some(t);
        true
    }

    /// Samples dropped so far for being out of order.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    fn cut(&mut self) {
        let chunk = std::mem::take(&mut self.cur);
        let mut data = chunk.into_bytes();
        data.shrink_to_fit();
        self.done.push(EncodedChunk {
            min_time: self.min_time,
            max_time: self.max_time,
            encoding: Encoding::Xor,
            data,
        });
    }

    pub fn finish(mut self) -> Vec<EncodedChunk> {
        if self.cur.num_samples() > 0 {
            self.cut();
        }
        self.done
    }
}

/// Prometheus's `rangeForTimestamp`: the end of the `width` window `t` falls in (Go's
/// truncating division). Saturates instead of wrapping at the top of the `i64` range.
pub(crate) fn range_for_timestamp(t: i64, width: i64) -> i64 {
    (t / width * width).saturating_add(width)
}

/// Prometheus's `computeChunkEndTime(start, cur, maxT, 4)`: assuming the chunk is a
/// quarter full, the end time that splits `[start, max_t)` into equal chunks.
pub(crate) fn compute_chunk_end_time(start: i64, cur: i64, max_t: i64) -> i64 {
    let span = max_t.wrapping_sub(start) as f64;
    let n = span / (cur.wrapping_sub(start).wrapping_add(1) as f64 * 4.0);
    if n <= 1.0 {
        return max_t;
    }
    (start as f64 + span / n.floor()) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Counting in range gives what decoding in range gives, inside, across and
    /// outside the chunk; a truncated header is an error.
    #[test]
    fn count_in_range_matches_decoding() {
        let mut c = XorChunk::new();
        for i in 0..100i64 {
            c.append(i * 10, i as f64);
        }
        let data = c.bytes().to_vec();
        for (mint, maxt) in [
            (0, 990),
            (-5, 2000),
            (55, 555),
            (500, 500),
            (991, 5000),
            (-9, -1),
        ] {
            let mut v = Vec::new();
            append_xor_in_range(&data, mint, maxt, &mut v).unwrap();
            assert_eq!(
                count_xor_in_range(&data, (0, 990), mint, maxt),
                Ok(v.len()),
                "[{mint}, {maxt}]"
            );
            assert_eq!(
                last_xor_in_range(&data, mint, maxt),
                Ok(v.last().copied()),
                "last in [{mint}, {maxt}]"
            );
        }
        assert!(count_xor_in_range(&data[..1], (0, 990), 0, 990).is_err());
        assert!(last_xor_in_range(&data[..1], 0, 990).is_err());
        assert!(last_xor_in_range(&data[..data.len() / 2], 0, 990).is_err());
    }

    /// A deliberately naive model of Go's `bstream` + `xorAppender`, one bit at a time,
    /// following the Go code's structure (writeBit / writeByte / writeBits), to check
    /// the fast encoder byte for byte.
    struct GoModel {
        stream: Vec<u8>,
        count: u8,
        t: i64,
        v: u64,
        t_delta: u64,
        leading: u8,
        trailing: u8,
    }

    impl GoModel {
        fn new() -> Self {
            GoModel {
                stream: vec![0, 0],
                count: 0,
                t: 0,
                v: 0,
                t_delta: 0,
                leading: 0xff,
                trailing: 0,
            }
        }
        fn write_bit(&mut self, bit: bool) {
            if self.count == 0 {
                self.stream.push(0);
                self.count = 8;
            }
            let i = self.stream.len() - 1;
            if bit {
                self.stream[i] |= 1 << (self.count - 1);
            }
            self.count -= 1;
        }
        fn write_byte(&mut self, byt: u8) {
            if self.count == 0 {
                self.stream.push(0);
                self.count = 8;
            }
            let i = self.stream.len() - 1;
            self.stream[i] |= ((byt as u16) >> (8 - self.count)) as u8;
            self.stream.push(((byt as u16) << self.count) as u8);
        }
        fn write_bits(&mut self, u: u64, nbits: u32) {
            let mut u = u << (64 - nbits);
            let mut nbits = nbits;
            while nbits >= 8 {
                self.write_byte((u >> 56) as u8);
                u <<= 8;
                nbits -= 8;
            }
            while nbits > 0 {
                self.write_bit(u >> 63 == 1);
                u <<= 1;
                nbits -= 1;
            }
        }
        fn append(&mut self, t: i64, v: f64) {
            let num = u16::from_be_bytes([self.stream[0], self.stream[1]]);
            let mut t_delta = 0u64;
            if num == 0 {
                let mut b = [0u8; 10];
                let n = put_uvarint(&mut b, zigzag(t));
                for &x in &b[..n] {
                    self.write_byte(x);
                }
                self.write_bits(v.to_bits(), 64);
            } else if num == 1 {
                t_delta = t.wrapping_sub(self.t) as u64;
                let mut b = [0u8; 10];
                let n = put_uvarint(&mut b, t_delta);
                for &x in &b[..n] {
                    self.write_byte(x);
                }
                self.write_vdelta(v);
            } else {
                t_delta = t.wrapping_sub(self.t) as u64;
                let dod = t_delta.wrapping_sub(self.t_delta) as i64;
                if dod == 0 {
                    self.write_bit(false);
                } else if bit_range(dod, 14) {
                    self.write_bits(0b10, 2);
                    self.write_bits(dod as u64, 14);
                } else if bit_range(dod, 17) {
                    self.write_bits(0b110, 3);
                    self.write_bits(dod as u64, 17);
                } else if bit_range(dod, 20) {
                    self.write_bits(0b1110, 4);
                    self.write_bits(dod as u64, 20);
                } else {
                    self.write_bits(0b1111, 4);
                    self.write_bits(dod as u64, 64);
                }
                self.write_vdelta(v);
            }
            self.t = t;
            self.v = v.to_bits();
            self.stream[..2].copy_from_slice(&(num + 1).to_be_bytes());
            self.t_delta = t_delta;
        }
        fn write_vdelta(&mut self, v: f64) {
            let d = v.to_bits() ^ self.v;
            if d == 0 {
                self.write_bit(false);
                return;
            }
            self.write_bit(true);
            let mut leading = d.leading_zeros() as u8;
            let trailing = d.trailing_zeros() as u8;
            if leading >= 32 {
                leading = 31;
            }
            if self.leading != 0xff && leading >= self.leading && trailing >= self.trailing {
                self.write_bit(false);
                self.write_bits(
                    d >> self.trailing,
                    64 - self.leading as u32 - self.trailing as u32,
                );
            } else {
                self.leading = leading;
                self.trailing = trailing;
                self.write_bit(true);
                self.write_bits(leading as u64, 5);
                let sigbits = 64 - leading as u32 - trailing as u32;
                self.write_bits(sigbits as u64, 6);
                self.write_bits(d >> trailing, sigbits);
            }
        }
    }

    fn encode(samples: &[(i64, f64)]) -> XorChunk {
        let mut c = XorChunk::new();
        for &(t, v) in samples {
            c.append(t, v);
        }
        c
    }

    /// Decodes with the checked path only.
    fn decode_checked(data: &[u8]) -> Vec<(i64, u64)> {
        let mut it = XorIter::new(data);
        let mut out = Vec::new();
        while it.step_slow() {
            out.push((it.t, it.v));
        }
        out
    }

    fn bits(samples: &[(i64, f64)]) -> Vec<(i64, u64)> {
        samples.iter().map(|&(t, v)| (t, v.to_bits())).collect()
    }

    /// Hand-derived from xor.go/bstream.go; see the comments for each byte.
    #[test]
    fn golden_bytes_match_prometheus() {
        let c = encode(&[(1000, 1.0), (2000, 2.0), (3000, 3.0), (4000, 3.0)]);
        #[rustfmt::skip]
        let want: &[u8] = &[
            0x00, 0x04,             // num_samples = 4, big endian
            // sample 0: PutVarint(1000) = uvarint(zigzag 2000) = 0xD0 0x0F
            0xD0, 0x0F,
            // value 1.0 = 0x3FF0000000000000, raw 64 bits (byte aligned)
            0x3F, 0xF0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            // Go's writeByte leaves an empty byte after the aligned 64-bit write; sample 1
            // starts in it: uvarint(tDelta 1000) = 0xE8 0x07, again byte-aligned.
            0xE8, 0x07,
            // v1 = 2.0: xor = 0x7FF0000000000000, leading 1, trailing 52, sigbits 11.
            // '1' (non-zero) '1' (new window) 00001 (leading) 001011 (11) 11111111111
            // = 11000010 01011111 11111111
            0xC2, 0x5F, 0xFF,
            // sample 2: dod 0 -> '0'; xor(3.0, 2.0) = 0x0008000000000000: leading 12,
            // trailing 51, does not fit window (1,52) -> '1' '1' 01100 000001 '1'.
            // sample 3: dod 0 -> '0'; same value -> '0'.
            // bits: 0 11 01100 | 000001 1 0 | 0 + 7 bits padding
            0x6C, 0x06, 0x00,
        ];
        assert_eq!(c.bytes(), want);
        assert_eq!(c.num_samples(), 4);
        let got: Vec<_> = XorIter::new(want).collect();
        assert_eq!(
            got,
            vec![(1000, 1.0), (2000, 2.0), (3000, 3.0), (4000, 3.0)]
        );
    }

    #[test]
    fn one_sample_chunk_has_trailing_byte() {
        let c = encode(&[(0, 0.0)]);
        // header, varint 0, 8 zero bytes of value, plus Go's trailing empty byte
        assert_eq!(c.bytes(), &[0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0][..]);
        assert_eq!(XorIter::new(c.bytes()).collect::<Vec<_>>(), vec![(0, 0.0)]);
    }

    #[test]
    fn cleared_chunk_encodes_as_a_new_one() {
        // a first chunk of random values grows its buffer; the next one, written into
        // it after `clear`, must come out byte for byte as from a fresh chunk
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut samples = |n: i64, base: i64| -> Vec<(i64, f64)> {
            (0..n)
                .map(|i| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (base + i * 15_000 + (x % 3) as i64, f64::from_bits(x >> 2))
                })
                .collect()
        };
        let first = samples(120, 0);
        let mut c = XorChunk::new();
        for &(t, v) in &first {
            c.append(t, v);
        }
        assert_eq!(c.bytes(), encode(&first).bytes());
        for (n, base) in [(120, 1 << 30), (3, 1 << 31), (200, 1 << 32)] {
            let next = samples(n, base);
            c.clear();
            assert_eq!(c.num_samples(), 0);
            assert_eq!(c.bytes(), &[0, 0][..]);
            for &(t, v) in &next {
                c.append(t, v);
            }
            assert_eq!(c.bytes(), encode(&next).bytes(), "{n} samples after clear");
        }
    }

    #[test]
    fn dropped_front_bytes_and_held_ones_make_the_chunk() {
        // the head's open chunk: settled bytes dropped (written elsewhere) now and then,
        // the sample count written again at the end; also across `clear`
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut c = XorChunk::new();
        for (round, drop_at) in [(0, 7usize), (1, 1), (2, 40), (3, 200)] {
            let mut samples = Vec::new();
            let mut out = Vec::new();
            for i in 0..(100 + round * 50) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // integer counters and random floats: narrow and wide XOR windows
                let v = if i % 3 == 0 {
                    f64::from_bits(x >> 2)
                } else {
                    (x % 1000) as f64
                };
                let s = (round * 1_000_000 + i * 15_000 + (x % 5) as i64, v);
                samples.push(s);
                c.append(s.0, s.1);
                if c.settled() >= drop_at {
                    let n = c.settled();
                    out.extend_from_slice(&c.held()[..n]);
                    c.drop_front(n);
                    assert_eq!(c.spilled(), out.len());
                }
            }
            out.extend_from_slice(c.held());
            assert_eq!(out.len(), c.len());
            out[..2].copy_from_slice(&c.header());
            assert_eq!(out, encode(&samples).bytes(), "round {round}");
            c.clear();
            assert_eq!((c.spilled(), c.held()), (0, &[0u8, 0][..]));
        }
    }

    #[test]
    fn empty_chunk() {
        let c = XorChunk::new();
        assert_eq!(c.bytes(), &[0, 0][..]);
        let mut it = c.iter();
        assert_eq!(it.next(), None);
        assert_eq!(it.err(), None);
        assert_eq!(XorIter::new(&[]).next(), None);
        assert!(XorIter::new(&[1]).err().is_some());
    }

    #[test]
    fn encoding_values() {
        for e in [
            Encoding::None,
            Encoding::Xor,
            Encoding::Histogram,
            Encoding::FloatHistogram,
        ] {
            assert_eq!(Encoding::from_u8(e as u8), Some(e));
        }
        assert_eq!(Encoding::Xor as u8, 1);
        assert_eq!(Encoding::from_u8(4), None);
        assert!(is_stale_nan(f64::from_bits(STALE_NAN_BITS)));
        assert!(!is_stale_nan(f64::NAN));
    }

    #[test]
    fn dod_bucket_edges_roundtrip_and_match_model() {
        // Around every bucket edge of Go's bitRange, both signs.
        let mut dods = vec![0i64, 1, -1];
        for n in [14u32, 17, 20] {
            let h = 1i64 << (n - 1);
            dods.extend([h, h + 1, h - 1, -(h - 1), -h, -(h - 2)]);
        }
        dods.extend([i64::MAX / 4, i64::MIN / 4]);
        for &dod in &dods {
            let mut s = vec![(0i64, 1.0), (1_000_000_000_000i64, 2.0)];
            let d1 = 1_000_000_000_000i64;
            s.push((2 * d1 + dod, 3.0));
            s.push((3 * d1 + 2 * dod, 4.0));
            let c = encode(&s);
            let mut m = GoModel::new();
            for &(t, v) in &s {
                m.append(t, v);
            }
            assert_eq!(c.bytes(), &m.stream[..], "dod {dod}");
            let it = XorIter::new(c.bytes());
            assert_eq!(bits(&it.collect::<Vec<_>>()), bits(&s), "dod {dod}");
        }
    }

    #[test]
    fn truncated_data_sets_err() {
        let s: Vec<_> = (0..120)
            .map(|i| (i * 15_000 + (i % 7), i as f64 * 1.5))
            .collect();
        let c = encode(&s);
        let full = c.bytes();
        for cut in 0..full.len() - 1 {
            let mut it = XorIter::new(&full[..cut]);
            let got: Vec<_> = it.by_ref().collect();
            assert!(got.len() < s.len());
            assert_eq!(bits(&got), bits(&s[..got.len()]));
            assert!(it.err().is_some(), "cut at {cut}");
            assert_eq!(it.next(), None);
            assert_eq!(it.seek(i64::MIN), None);
            assert_eq!(it.size_hint(), (0, Some(0)));
            if cut >= 2 {
                assert_eq!(it.num_samples(), 120);
            }
        }
    }

    #[test]
    fn seek_semantics() {
        let s: Vec<_> = (0..50).map(|i| (i * 10, i as f64)).collect();
        let c = encode(&s);
        let mut it = c.iter();
        assert_eq!(it.seek(-5), Some((0, 0.0)));
        assert_eq!(it.seek(0), Some((0, 0.0)));
        assert_eq!(it.seek(95), Some((100, 10.0)));
        assert_eq!(
            it.seek(100),
            Some((100, 10.0)),
            "no backwards move, current returned"
        );
        assert_eq!(it.seek(50), Some((100, 10.0)));
        assert_eq!(it.next(), Some((110, 11.0)));
        assert_eq!(it.seek(490), Some((490, 49.0)));
        assert_eq!(it.seek(491), None);
        assert_eq!(it.next(), None);
    }

    fn special_value() -> impl Strategy<Value = f64> {
        prop_oneof![
            Just(f64::NAN),
            Just(f64::from_bits(STALE_NAN_BITS)),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(-0.0),
            Just(0.0),
            Just(f64::MIN_POSITIVE),
            Just(f64::MAX),
            Just(1.0),
            any::<u64>().prop_map(f64::from_bits),
            (-1e6f64..1e6).prop_map(|v| v.round()),
            any::<f64>(),
        ]
    }

    fn delta() -> impl Strategy<Value = i64> {
        prop_oneof![
            Just(15_000i64),
            14_900i64..15_100,
            1i64..10,
            1i64..1 << 21,
            1i64..i64::MAX / 200,
        ]
    }

    fn series() -> impl Strategy<Value = Vec<(i64, f64)>> {
        (
            prop_oneof![
                any::<i64>().prop_map(|t| t / 2),
                -1_000_000i64..1_000_000,
                Just(i64::MIN / 2)
            ],
            prop::collection::vec((delta(), special_value()), 0..300),
        )
            .prop_map(|(start, rest)| {
                let mut t = start;
                let mut out = Vec::with_capacity(rest.len());
                for (d, v) in rest {
                    out.push((t, v));
                    t = t.saturating_add(d);
                    if t == i64::MAX {
                        break;
                    }
                }
                out
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        #[test]
        fn roundtrip_bits_and_model(s in series()) {
            // Byte-identical to the Go model after every append, not just at the end.
            let mut c = XorChunk::new();
            let mut m = GoModel::new();
            for &(t, v) in &s {
                c.append(t, v);
                m.append(t, v);
                prop_assert_eq!(c.bytes(), &m.stream[..]);
            }
            prop_assert_eq!(c.num_samples(), s.len());
            let mut it = c.iter();
            let got: Vec<_> = it.by_ref().collect();
            prop_assert_eq!(it.err(), None);
            prop_assert_eq!(bits(&got), bits(&s));
        }

        #[test]
        fn seek_finds_first_at_or_after(s in series(), probe in any::<i64>(), pick in any::<prop::sample::Index>()) {
            let c = encode(&s);
            let mut targets = vec![probe];
            if !s.is_empty() {
                let (t, _) = s[pick.index(s.len())];
                targets.extend([t, t.saturating_sub(1), t.saturating_add(1)]);
            }
            for target in targets {
                let want = s.iter().find(|&&(t, _)| t >= target).map(|&(t, v)| (t, v.to_bits()));
                let mut it = c.iter();
                let got = it.seek(target).map(|(t, v)| (t, v.to_bits()));
                prop_assert_eq!(got, want);
                if let Some((t, _)) = want {
                    let after = s.iter().find(|&&(u, _)| u > t).map(|&(t, v)| (t, v.to_bits()));
                    prop_assert_eq!(it.next().map(|(t, v)| (t, v.to_bits())), after);
                }
            }
        }

        #[test]
        fn fast_and_checked_paths_agree(
            s in series(),
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut data = encode(&s).into_bytes();
            for (i, x) in flips {
                let i = i.index(data.len());
                data[i] ^= x;
            }
            data.truncate(cut.index(data.len() + 1));
            let mut fast = XorIter::new(&data);
            let got: Vec<_> = fast.by_ref().map(|(t, v)| (t, v.to_bits())).collect();
            prop_assert_eq!(got, decode_checked(&data));
            let mut slow = XorIter::new(&data);
            while slow.step_slow() {}
            prop_assert_eq!(fast.err(), slow.err());
        }

        #[test]
        fn garbage_never_panics(data in prop::collection::vec(any::<u8>(), 0..400)) {
            let mut it = XorIter::new(&data);
            let n = it.by_ref().take(70_000).count();
            prop_assert!(n <= it.num_samples());
            let mut it = XorIter::new(&data);
            let _ = it.seek(0);
        }

        #[test]
        fn mutated_chunk_never_panics(s in series(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)) {
            let mut data = encode(&s).into_bytes();
            for (i, x) in flips {
                let i = i.index(data.len());
                data[i] ^= x;
            }
            let _ = XorIter::new(&data).count();
        }

        #[test]
        fn cutter_chunks_are_bounded_and_complete(s in series(), range in prop_oneof![Just(7_200_000i64), 1i64..10_000_000]) {
            let mut cutter = ChunkCutter::new(range);
            for &(t, v) in &s {
                prop_assert!(cutter.append(t, v));
            }
            let chunks = cutter.finish();
            let mut all = Vec::new();
            for c in &chunks {
                let got: Vec<_> = XorIter::new(&c.data).collect();
                prop_assert!(!got.is_empty() && got.len() <= SAMPLES_PER_CHUNK);
                prop_assert!(c.data.len() <= MAX_BYTES_PER_XOR_CHUNK);
                prop_assert_eq!(got[0].0, c.min_time);
                prop_assert_eq!(got[got.len() - 1].0, c.max_time);
                all.extend(got);
            }
            prop_assert_eq!(bits(&all), bits(&s));
        }
    }

    #[test]
    fn cutter_regular_scrapes_over_two_hours() {
        let range = 7_200_000;
        let mut cutter = ChunkCutter::new(range);
        // 15s scrapes over [0, 2h) then into the next window.
        let n = 2 * 480 + 10;
        for i in 0..n {
            assert!(cutter.append(i * 15_000, i as f64));
        }
        let chunks = cutter.finish();
        let sizes: Vec<_> = chunks
            .iter()
            .map(|c| XorIter::new(&c.data).count())
            .collect();
        // 480 samples per 2h window = 4 chunks of 120; then the tail.
        assert_eq!(sizes, vec![120, 120, 120, 120, 120, 120, 120, 120, 10]);
        for c in &chunks {
            // No chunk crosses a chunk-range boundary.
            assert_eq!(c.min_time / range, c.max_time / range);
            assert_eq!(c.encoding, Encoding::Xor);
        }
        assert_eq!(chunks[0].min_time, 0);
        assert_eq!(chunks[0].max_time, 119 * 15_000);
        assert_eq!(chunks[3].max_time, range - 15_000);
        assert_eq!(chunks[4].min_time, range);
    }

    #[test]
    fn cutter_starting_mid_window_spreads_chunks() {
        // Prometheus's prediction: starting 30 min into a 2h window at 15s, the
        // remaining 90 min (360 samples) split into 3 chunks of 120.
        let range = 7_200_000;
        let start = 1_800_000;
        let mut cutter = ChunkCutter::new(range);
        for i in 0..360 {
            cutter.append(start + i * 15_000, 1.0);
        }
        let chunks = cutter.finish();
        let sizes: Vec<_> = chunks
            .iter()
            .map(|c| XorIter::new(&c.data).count())
            .collect();
        assert_eq!(sizes, vec![120, 120, 120]);
        // A sparse series (60s) stays in one chunk per window, ending before the boundary.
        let mut cutter = ChunkCutter::new(range);
        for i in 0..240 {
            cutter.append(i * 60_000, 1.0);
        }
        let chunks = cutter.finish();
        assert!(chunks
            .iter()
            .all(|c| c.min_time / range == c.max_time / range));
        assert!(chunks.iter().all(|c| XorIter::new(&c.data).count() <= 120));
        assert_eq!(chunks.len(), 2);
    }

    #[test]
    fn cutter_caps_at_120_when_rate_rises() {
        // Sparse start makes Prometheus predict one chunk for the window; then the rate
        // jumps. Prometheus would go to 240; we cut at 120.
        let mut cutter = ChunkCutter::new(7_200_000);
        let mut t = 0;
        for _ in 0..31 {
            cutter.append(t, 1.0);
            t += 60_000;
        }
        for _ in 0..500 {
            cutter.append(t, 2.0);
            t += 1_000;
        }
        let chunks = cutter.finish();
        let sizes: Vec<_> = chunks
            .iter()
            .map(|c| XorIter::new(&c.data).count())
            .collect();
        assert!(sizes.iter().all(|&n| n <= 120), "{sizes:?}");
        assert_eq!(sizes.iter().sum::<usize>(), 531);
    }

    #[test]
    fn cutter_cuts_large_chunks_by_size() {
        let mut cutter = ChunkCutter::new(7_200_000);
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for i in 0..120 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            cutter.append(i * 15_000 + (x % 1000) as i64, f64::from_bits(x));
        }
        let chunks = cutter.finish();
        assert!(chunks.len() > 1);
        assert!(chunks
            .iter()
            .all(|c| c.data.len() <= MAX_BYTES_PER_XOR_CHUNK));
    }

    #[test]
    fn cutter_rejects_out_of_order() {
        let mut cutter = ChunkCutter::new(7_200_000);
        assert!(cutter.append(1000, 1.0));
        assert!(!cutter.append(1000, 2.0));
        assert!(!cutter.append(999, 2.0));
        assert!(cutter.append(1001, 3.0));
        assert_eq!(cutter.skipped(), 2);
        let chunks = cutter.finish();
        assert_eq!(chunks.len(), 1);
        assert_eq!(
            XorIter::new(&chunks[0].data).collect::<Vec<_>>(),
            vec![(1000, 1.0), (1001, 3.0)]
        );
        assert!(ChunkCutter::new(1).finish().is_empty());
    }

    #[test]
    fn cutter_negative_timestamps_follow_go_division() {
        // Go's rangeForTimestamp truncates toward zero: for t = -1 the window end is 0.
        assert_eq!(range_for_timestamp(-1, 1000), 1000);
        assert_eq!(range_for_timestamp(-1500, 1000), 0);
        assert_eq!(range_for_timestamp(1500, 1000), 2000);
        assert_eq!(range_for_timestamp(i64::MAX - 1, 1000), i64::MAX);
        // 30 samples at 15s from 0: 7.2e6 / (435_001 * 4) = 4.14 -> 4 chunks -> end 1.8e6.
        assert_eq!(compute_chunk_end_time(0, 435_000, 7_200_000), 1_800_000);
        assert_eq!(compute_chunk_end_time(0, 7_000_000, 7_200_000), 7_200_000);
    }
}
