//! Byte-level mutations: what a coverage-guided fuzzer's mutator does (bit flips,
//! interesting integers, insertions, deletions, duplication, splicing with another
//! corpus input, dictionary tokens), a few at a time.

use rand::rngs::SmallRng;
use rand::Rng;

/// Values that sit on the edges decoders check: lengths, varint continuation bits,
/// signed limits.
const INTERESTING: &[u64] = &[
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x7fff,
    0x8000,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    u64::MAX,
    i64::MAX as u64,
    i64::MIN as u64,
];

/// Apply 1–4 mutations to `buf`, drawing splices from `other` and tokens from `dict`;
/// the result is at most `max_len` bytes.
pub fn mutate(rng: &mut SmallRng, buf: &mut Vec<u8>, other: &[u8], dict: &[&[u8]], max_len: usize) {
    let n = 1 + rng.random_range(0..4);
    for _ in 0..n {
        one(rng, buf, other, dict);
    }
    buf.truncate(max_len);
}

fn one(rng: &mut SmallRng, buf: &mut Vec<u8>, other: &[u8], dict: &[&[u8]]) {
    let len = buf.len();
    let pos = |rng: &mut SmallRng, len: usize| {
        if len == 0 {
            0
        } else {
            rng.random_range(0..len)
        }
    };
    match rng.random_range(0..11) {
        // flip a bit
        0 if len > 0 => {
            let i = pos(rng, len);
            buf[i] ^= 1 << rng.random_range(0..8);
        }
        // a random byte
        1 if len > 0 => {
            let i = pos(rng, len);
            buf[i] = rng.random();
        }
        // an interesting integer, 1/2/4/8 bytes, either endianness
        2 if len > 0 => {
            let v = INTERESTING[rng.random_range(0..INTERESTING.len())];
            let w = [1usize, 2, 4, 8][rng.random_range(0..4)];
            let bytes = if rng.random() {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            };
            let src = if bytes[0] == 0 && w < 8 {
                &bytes[8 - w..]
            } else {
                &bytes[..w]
            };
            let i = pos(rng, len);
            for (k, b) in src.iter().enumerate() {
                if let Some(d) = buf.get_mut(i + k) {
                    *d = *b;
                }
            }
        }
        // insert random bytes
        3 => {
            let i = pos(rng, len + 1).min(len);
            let k = 1 + rng.random_range(0..8);
            for _ in 0..k {
                buf.insert(i, rng.random());
            }
        }
        // delete a range
        4 if len > 0 => {
            let i = pos(rng, len);
            let k = 1 + rng.random_range(0..(len - i).min(16));
            buf.drain(i..i + k);
        }
        // duplicate a range in place
        5 if len > 0 => {
            let i = pos(rng, len);
            let k = 1 + rng.random_range(0..(len - i).min(32));
            let chunk: Vec<u8> = buf[i..i + k].to_vec();
            let at = pos(rng, len + 1).min(len);
            buf.splice(at..at, chunk);
        }
        // splice: our head, the other input's tail
        6 if !other.is_empty() => {
            let i = pos(rng, len + 1).min(len);
            let j = rng.random_range(0..other.len());
            buf.truncate(i);
            buf.extend_from_slice(&other[j..]);
        }
        // insert a dictionary token
        7 if !dict.is_empty() => {
            let tok = dict[rng.random_range(0..dict.len())];
            let i = pos(rng, len + 1).min(len);
            buf.splice(i..i, tok.iter().copied());
        }
        // overwrite with a dictionary token
        8 if !dict.is_empty() && len > 0 => {
            let tok = dict[rng.random_range(0..dict.len())];
            let i = pos(rng, len);
            for (k, b) in tok.iter().enumerate() {
                if let Some(d) = buf.get_mut(i + k) {
                    *d = *b;
                }
            }
        }
        // truncate
        9 if len > 0 => {
            let i = pos(rng, len);
            buf.truncate(i);
        }
        // add or subtract a small number from a byte
        _ if len > 0 => {
            let i = pos(rng, len);
            let d: i8 = rng.random_range(-16..=16);
            buf[i] = buf[i].wrapping_add(d as u8);
        }
        _ => buf.push(rng.random()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn mutations_change_inputs_and_respect_the_length_cap() {
        let mut rng = SmallRng::seed_from_u64(7);
        let seed = b"some seed input".to_vec();
        let mut changed = 0;
        for _ in 0..1000 {
            let mut b = seed.clone();
            mutate(&mut rng, &mut b, b"other", &[b"tok"], 20);
            assert!(b.len() <= 20);
            changed += usize::from(b != seed);
        }
        assert!(
            changed > 900,
            "only {changed} of 1000 mutations changed the input"
        );
    }
}
