//! The LtHash element hash, computed eight output blocks at a time.
//!
//! An element is 2048 bytes of BLAKE3 extendable output (key-derivation mode, see
//! [`crate::lthash`]). BLAKE3 produces output in 64-byte blocks, each one compression
//! of the same root chaining value and block with its own output counter, so the 32
//! blocks of an element are independent. The `blake3` crate computes them in parallel
//! only on CPUs with AVX-512; with AVX2 alone (such as the AMD EPYC host in
//! docs/performance.md, "The machine") it runs one SSE4.1 compression per block, 32 in
//! a row per element, the largest part of an element's cost (decisions 0024, 0048).
//!
//! This module computes the same bytes with eight compressions side by side, one per
//! 32-bit lane of a 256-bit AVX2 vector: the message and chaining value are the same in
//! every lane, only the output counter differs. It is used after a run-time check for
//! AVX2; without it, and for inputs longer than one BLAKE3 chunk (1024 bytes; ledger
//! entries are far shorter), the `blake3` crate computes the element. The tests compare
//! every input length up to two chunks with the `blake3` crate, byte for byte.

/// BLAKE3's initialisation vector (the SHA-256 one).
const IV: [u32; 8] = [
    0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19,
];

/// The message word order of each round after the first.
const MSG_PERMUTATION: [usize; 16] = [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8];

const CHUNK_START: u32 = 1;
const CHUNK_END: u32 = 2;
const ROOT: u32 = 8;
const DERIVE_KEY_CONTEXT: u32 = 32;
const DERIVE_KEY_MATERIAL: u32 = 64;

const BLOCK_LEN: usize = 64;
const CHUNK_LEN: usize = 1024;

/// Output blocks computed side by side.
const WIDTH: usize = 8;

/// Bytes of output per element.
pub(crate) const OUT_LEN: usize = 2048;

/// 32-bit words of output per element.
pub(crate) const OUT_WORDS: usize = OUT_LEN / 4;

const _: () = assert!(OUT_LEN.is_multiple_of(BLOCK_LEN * WIDTH));

/// One BLAKE3 compression (scalar): the full 16-word output state, before the output
/// feed-forward of the chaining value.
fn compress(cv: &[u32; 8], m: &[u32; 16], counter: u64, block_len: u32, flags: u32) -> [u32; 16] {
    let mut s = [
        cv[0],
        cv[1],
        cv[2],
        cv[3],
        cv[4],
        cv[5],
        cv[6],
        cv[7],
        IV[0],
        IV[1],
        IV[2],
        IV[3],
        counter as u32,
        (counter >> 32) as u32,
        block_len,
        flags,
    ];
    let mut m = *m;
    for round in 0..7 {
        if round > 0 {
            m = MSG_PERMUTATION.map(|i| m[i]);
        }
        let g = |s: &mut [u32; 16], a: usize, b: usize, c: usize, d: usize, x: u32, y: u32| {
            s[a] = s[a].wrapping_add(s[b]).wrapping_add(x);
            s[d] = (s[d] ^ s[a]).rotate_right(16);
            s[c] = s[c].wrapping_add(s[d]);
            s[b] = (s[b] ^ s[c]).rotate_right(12);
            s[a] = s[a].wrapping_add(s[b]).wrapping_add(y);
            s[d] = (s[d] ^ s[a]).rotate_right(8);
            s[c] = s[c].wrapping_add(s[d]);
            s[b] = (s[b] ^ s[c]).rotate_right(7);
        };
        g(&mut s, 0, 4, 8, 12, m[0], m[1]);
        g(&mut s, 1, 5, 9, 13, m[2], m[3]);
        g(&mut s, 2, 6, 10, 14, m[4], m[5]);
        g(&mut s, 3, 7, 11, 15, m[6], m[7]);
        g(&mut s, 0, 5, 10, 15, m[8], m[9]);
        g(&mut s, 1, 6, 11, 12, m[10], m[11]);
        g(&mut s, 2, 7, 8, 13, m[12], m[13]);
        g(&mut s, 3, 4, 9, 14, m[14], m[15]);
    }
    s
}

/// The chaining value a compression passes on (the first half of its output).
fn chain(cv: &[u32; 8], m: &[u32; 16], counter: u64, block_len: u32, flags: u32) -> [u32; 8] {
    let s = compress(cv, m, counter, block_len, flags);
    std::array::from_fn(|i| s[i] ^ s[i + 8])
}

/// A 64-byte block as 16 little-endian words (zero-padded).
fn words(block: &[u8]) -> [u32; 16] {
    let mut bytes = [0u8; BLOCK_LEN];
    bytes[..block.len()].copy_from_slice(block);
    std::array::from_fn(|i| {
        u32::from_le_bytes([
            bytes[4 * i],
            bytes[4 * i + 1],
            bytes[4 * i + 2],
            bytes[4 * i + 3],
        ])
    })
}

/// The key that key-derivation mode derives from a context string of at most one
/// block (BLAKE3's `derive_key` first step).
fn context_key(context: &str) -> [u32; 8] {
    let c = context.as_bytes();
    assert!(c.len() <= BLOCK_LEN, "a context string of one block");
    chain(
        &IV,
        &words(c),
        0,
        c.len() as u32,
        DERIVE_KEY_CONTEXT | CHUNK_START | CHUNK_END | ROOT,
    )
}

/// The root of a one-chunk input: the chaining value going into its last block, that
/// block, its length and flags. Every output block is one compression of these.
struct Root {
    cv: [u32; 8],
    block: [u32; 16],
    block_len: u32,
    flags: u32,
}

/// Hashes `input` (at most one chunk) in key-derivation mode up to its root.
fn root(key: &[u32; 8], input: &[u8]) -> Root {
    debug_assert!(input.len() <= CHUNK_LEN);
    // the last block holds 1..=64 bytes, or 0 for the empty input
    let last_start = input.len().saturating_sub(1) / BLOCK_LEN * BLOCK_LEN;
    let mut cv = *key;
    let mut flags = DERIVE_KEY_MATERIAL | CHUNK_START;
    for block in input[..last_start].chunks_exact(BLOCK_LEN) {
        cv = chain(&cv, &words(block), 0, BLOCK_LEN as u32, flags);
        flags = DERIVE_KEY_MATERIAL;
    }
    let last = &input[last_start..];
    Root {
        cv,
        block: words(last),
        block_len: last.len() as u32,
        flags: flags | CHUNK_END | ROOT,
    }
}

/// The AVX2 expansion: eight output blocks per pass, one per 32-bit lane.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    use super::{Root, IV, MSG_PERMUTATION, OUT_WORDS, WIDTH};
    use std::arch::x86_64::{
        __m256i, _mm256_add_epi32, _mm256_or_si256, _mm256_set1_epi32, _mm256_setr_epi32,
        _mm256_setr_epi8, _mm256_shuffle_epi8, _mm256_slli_epi32, _mm256_srli_epi32,
        _mm256_storeu_si256, _mm256_xor_si256,
    };

    /// The message word order of each of the seven rounds.
    const SCHEDULE: [[usize; 16]; 7] = {
        let mut t = [[0usize; 16]; 7];
        let mut i = 0;
        while i < 16 {
            t[0][i] = i;
            i += 1;
        }
        let mut r = 1;
        while r < 7 {
            let mut i = 0;
            while i < 16 {
                t[r][i] = t[r - 1][MSG_PERMUTATION[i]];
                i += 1;
            }
            r += 1;
        }
        t
    };

    // `transpose` and the output stores are written for eight lanes
    const _: () = assert!(WIDTH == 8);

    #[inline]
    #[target_feature(enable = "avx2")]
    fn rotr16(x: __m256i) -> __m256i {
        // byte i of each word comes from byte (i + 2) mod 4
        let m = _mm256_setr_epi8(
            2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11,
            8, 9, 14, 15, 12, 13,
        );
        _mm256_shuffle_epi8(x, m)
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn rotr8(x: __m256i) -> __m256i {
        // byte i of each word comes from byte (i + 1) mod 4
        let m = _mm256_setr_epi8(
            1, 2, 3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12, 1, 2, 3, 0, 5, 6, 7, 4, 9, 10,
            11, 8, 13, 14, 15, 12,
        );
        _mm256_shuffle_epi8(x, m)
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn rotr12(x: __m256i) -> __m256i {
        _mm256_or_si256(_mm256_srli_epi32::<12>(x), _mm256_slli_epi32::<20>(x))
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn rotr7(x: __m256i) -> __m256i {
        _mm256_or_si256(_mm256_srli_epi32::<7>(x), _mm256_slli_epi32::<25>(x))
    }

    /// The mixing function G on columns or diagonals `a, b, c, d` of eight states.
    #[inline]
    #[target_feature(enable = "avx2")]
    #[allow(clippy::too_many_arguments)]
    fn g(s: &mut [__m256i; 16], a: usize, b: usize, c: usize, d: usize, x: __m256i, y: __m256i) {
        s[a] = _mm256_add_epi32(_mm256_add_epi32(s[a], s[b]), x);
        s[d] = rotr16(_mm256_xor_si256(s[d], s[a]));
        s[c] = _mm256_add_epi32(s[c], s[d]);
        s[b] = rotr12(_mm256_xor_si256(s[b], s[c]));
        s[a] = _mm256_add_epi32(_mm256_add_epi32(s[a], s[b]), y);
        s[d] = rotr8(_mm256_xor_si256(s[d], s[a]));
        s[c] = _mm256_add_epi32(s[c], s[d]);
        s[b] = rotr7(_mm256_xor_si256(s[b], s[c]));
    }

    /// Transposes eight vectors of eight words: word j of vector i becomes word i of
    /// vector j.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn transpose(r: [__m256i; 8]) -> [__m256i; 8] {
        use std::arch::x86_64::{
            _mm256_permute2x128_si256, _mm256_unpackhi_epi32, _mm256_unpackhi_epi64,
            _mm256_unpacklo_epi32, _mm256_unpacklo_epi64,
        };
        let t0 = _mm256_unpacklo_epi32(r[0], r[1]);
        let t1 = _mm256_unpackhi_epi32(r[0], r[1]);
        let t2 = _mm256_unpacklo_epi32(r[2], r[3]);
        let t3 = _mm256_unpackhi_epi32(r[2], r[3]);
        let t4 = _mm256_unpacklo_epi32(r[4], r[5]);
        let t5 = _mm256_unpackhi_epi32(r[4], r[5]);
        let t6 = _mm256_unpacklo_epi32(r[6], r[7]);
        let t7 = _mm256_unpackhi_epi32(r[6], r[7]);
        let u0 = _mm256_unpacklo_epi64(t0, t2);
        let u1 = _mm256_unpackhi_epi64(t0, t2);
        let u2 = _mm256_unpacklo_epi64(t1, t3);
        let u3 = _mm256_unpackhi_epi64(t1, t3);
        let u4 = _mm256_unpacklo_epi64(t4, t6);
        let u5 = _mm256_unpackhi_epi64(t4, t6);
        let u6 = _mm256_unpacklo_epi64(t5, t7);
        let u7 = _mm256_unpackhi_epi64(t5, t7);
        [
            _mm256_permute2x128_si256::<0x20>(u0, u4),
            _mm256_permute2x128_si256::<0x20>(u1, u5),
            _mm256_permute2x128_si256::<0x20>(u2, u6),
            _mm256_permute2x128_si256::<0x20>(u3, u7),
            _mm256_permute2x128_si256::<0x31>(u0, u4),
            _mm256_permute2x128_si256::<0x31>(u1, u5),
            _mm256_permute2x128_si256::<0x31>(u2, u6),
            _mm256_permute2x128_si256::<0x31>(u3, u7),
        ]
    }

    /// Every output block of `r` into `out` (words in output order).
    #[target_feature(enable = "avx2")]
    pub(super) fn expand(r: &Root, out: &mut [u32; OUT_WORDS]) {
        let splat = |x: u32| _mm256_set1_epi32(x as i32);
        // the message words, each in all eight lanes, shared by every group
        let mv: [__m256i; 16] = std::array::from_fn(|i| splat(r.block[i]));
        for (group, dst) in out.chunks_exact_mut(16 * WIDTH).enumerate() {
            // output counters group*8 .. group*8+7; an element has 32 blocks, so the
            // high counter word is zero
            let c = (group * WIDTH) as i32;
            let mut s: [__m256i; 16] = [
                splat(r.cv[0]),
                splat(r.cv[1]),
                splat(r.cv[2]),
                splat(r.cv[3]),
                splat(r.cv[4]),
                splat(r.cv[5]),
                splat(r.cv[6]),
                splat(r.cv[7]),
                splat(IV[0]),
                splat(IV[1]),
                splat(IV[2]),
                splat(IV[3]),
                _mm256_setr_epi32(c, c + 1, c + 2, c + 3, c + 4, c + 5, c + 6, c + 7),
                splat(0),
                splat(r.block_len),
                splat(r.flags),
            ];
            macro_rules! round {
                ($r:expr) => {{
                    const S: [usize; 16] = SCHEDULE[$r];
                    g(&mut s, 0, 4, 8, 12, mv[S[0]], mv[S[1]]);
                    g(&mut s, 1, 5, 9, 13, mv[S[2]], mv[S[3]]);
                    g(&mut s, 2, 6, 10, 14, mv[S[4]], mv[S[5]]);
                    g(&mut s, 3, 7, 11, 15, mv[S[6]], mv[S[7]]);
                    g(&mut s, 0, 5, 10, 15, mv[S[8]], mv[S[9]]);
                    g(&mut s, 1, 6, 11, 12, mv[S[10]], mv[S[11]]);
                    g(&mut s, 2, 7, 8, 13, mv[S[12]], mv[S[13]]);
                    g(&mut s, 3, 4, 9, 14, mv[S[14]], mv[S[15]]);
                }};
            }
            round!(0);
            round!(1);
            round!(2);
            round!(3);
            round!(4);
            round!(5);
            round!(6);
            // the output feed-forward; lane j's 16 words are output block group*8 + j
            let lo: [__m256i; 8] = std::array::from_fn(|w| _mm256_xor_si256(s[w], s[w + 8]));
            let hi: [__m256i; 8] =
                std::array::from_fn(|w| _mm256_xor_si256(s[w + 8], splat(r.cv[w])));
            let lo = transpose(lo);
            let hi = transpose(hi);
            for j in 0..WIDTH {
                // SAFETY: `dst` is one chunk of 16 * WIDTH words, so block j's 16 words
                // (j < WIDTH) are in bounds; the stores are unaligned ones.
                unsafe {
                    _mm256_storeu_si256(dst.as_mut_ptr().add(16 * j).cast(), lo[j]);
                    _mm256_storeu_si256(dst.as_mut_ptr().add(16 * j + 8).cast(), hi[j]);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    static AVX2: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVX2.get_or_init(|| std::arch::is_x86_feature_detected!("avx2"))
}

#[cfg(not(target_arch = "x86_64"))]
fn has_avx2() -> bool {
    false
}

/// The wide expansion of the root of `input` under `key`, where the CPU has AVX2
/// (`false` otherwise: nothing computed or written).
#[allow(unsafe_code)]
fn expand_wide(key: &[u32; 8], input: &[u8], out: &mut [u32; OUT_WORDS]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        let r = root(key, input);
        // SAFETY: `avx2::expand` needs the AVX2 instructions, and this CPU has them
        // (checked at run time just above).
        unsafe { avx2::expand(&r, out) };
        return true;
    }
    let _ = (key, input, out);
    false
}

/// BLAKE3 key-derivation output of [`OUT_LEN`] bytes for one context, its context key
/// derived once.
pub(crate) struct ElementHasher {
    key: [u32; 8],
    context: &'static str,
}

impl ElementHasher {
    /// A hasher for key-derivation mode with this context string (at most 64 bytes).
    pub(crate) fn new(context: &'static str) -> ElementHasher {
        ElementHasher {
            key: context_key(context),
            context,
        }
    }

    /// The [`OUT_LEN`] bytes of BLAKE3 key-derivation output for `input`, as
    /// little-endian words, into `out`: exactly what
    /// `blake3::Hasher::new_derive_key(context)`, `update(input)`, `finalize_xof` give.
    pub(crate) fn output(&self, input: &[u8], out: &mut [u32; OUT_WORDS]) {
        if input.len() <= CHUNK_LEN && expand_wide(&self.key, input, out) {
            return;
        }
        let mut bytes = [0u8; OUT_LEN];
        let mut h = blake3::Hasher::new_derive_key(self.context);
        h.update(input);
        h.finalize_xof().fill(&mut bytes);
        for (w, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
            *w = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    const CTX: &str = "pbft xof8 test context";

    fn reference(context: &str, input: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; OUT_LEN];
        let mut h = blake3::Hasher::new_derive_key(context);
        h.update(input);
        h.finalize_xof().fill(&mut out);
        out
    }

    fn bytes(words: &[u32; OUT_WORDS]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    /// Every input length up to two chunks, so each block boundary, the one-chunk
    /// limit and the fallback beyond it are covered, on random bytes.
    #[test]
    fn matches_blake3_at_every_length() {
        let seed = 20261201;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let h = ElementHasher::new(CTX);
        let mut out = [0u32; OUT_WORDS];
        for len in 0..=2 * CHUNK_LEN + 1 {
            let input: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            h.output(&input, &mut out);
            assert_eq!(
                bytes(&out),
                reference(CTX, &input),
                "length {len}, seed {seed}"
            );
        }
    }

    /// The wide expansion agrees with the scalar compression, block by block (where
    /// the CPU has AVX2; elsewhere the `blake3` crate computes every element).
    #[test]
    fn wide_expansion_matches_scalar_blocks() {
        let h = ElementHasher::new(CTX);
        let r = root(&h.key, b"some ledger entry of modest length");
        let mut wide = [0u32; OUT_WORDS];
        if !expand_wide(&h.key, b"some ledger entry of modest length", &mut wide) {
            eprintln!("no AVX2 on this CPU: the wide expansion is not used here");
            return;
        }
        for (i, block) in wide.chunks_exact(16).enumerate() {
            let s = compress(&r.cv, &r.block, i as u64, r.block_len, r.flags);
            let expected: Vec<u32> = (0..16)
                .map(|w| {
                    if w < 8 {
                        s[w] ^ s[w + 8]
                    } else {
                        s[w] ^ r.cv[w - 8]
                    }
                })
                .collect();
            assert_eq!(block, expected.as_slice(), "output block {i}");
        }
    }

    /// The context key is BLAKE3's: the element of the empty input matches, for the
    /// context the ledger really uses.
    #[test]
    fn ledger_context_matches() {
        let ctx = crate::lthash::ELEMENT_CONTEXT;
        let h = ElementHasher::new(ctx);
        let mut out = [0u32; OUT_WORDS];
        for input in [&b""[..], b"x", &[7u8; 64], &[9u8; 65]] {
            h.output(input, &mut out);
            assert_eq!(bytes(&out), reference(ctx, input));
        }
    }
}
