//! CRC32C (Castagnoli), the checksum of record payloads and of the files' small structures, and
//! the key hash of keyed routing: every CRC32C shmq computes goes through [`crc32c`], or through
//! [`copy_crc32c`] where a producer copies a payload into the ring.
//!
//! Small buffers, the common case on the hot path, skip any dispatch and use the SSE4.2 `crc32`
//! instruction directly (8 bytes per instruction) when the CPU has it, written as inline
//! assembly so that it is inlined into every caller. Larger ones go to the
//! `crc-fast` crate, which folds with carry-less multiplies (512 bits at a time where the CPU has
//! AVX-512 VPCLMULQDQ) beside `crc32` streams: 2.3 times the `crc32c` crate's rate on 64 KiB.
//! Every CPU without SSE4.2 goes to the crate.
//!
//! A copy followed by a CRC32C pass stays well below the copy alone for large payloads (0.6–0.9×
//! at 64 KiB, BENCHMARKS.md "The 64 KiB copy and its CRC"), so on CPUs with AVX-512 VPCLMULQDQ
//! [`copy_crc32c`] folds the CRC into the copy: each 64-byte block is loaded once, stored, and
//! folded into one of four 512-bit accumulators.
//!
//! **The fold.** Take a 16-byte lane of data as the polynomial `B(x)` of its 128 bits, the first
//! bit in memory the highest power (CRC32C is bit-reflected, so bit `i` of the little-endian
//! `u128` is the coefficient of `x^(127-i)`). Its low half `L` (the earlier 8 bytes) and high
//! half `H` give `B = L·x^64 + H`. A message's CRC is its polynomial times `x^32` modulo the CRC
//! polynomial `P`, so data that sits `D` bytes before a lane counts as the lane's polynomial
//! times `x^(8D)`: to fold `B` into the lane `D` bytes later, multiply it by `x^(8D)`, which
//! modulo `P` is `L·(x^(8D+64) mod P) + H·(x^(8D) mod P)`. A carry-less multiply of two
//! reflected 64-bit values yields the reflected product times `x`, so
//! `clmul(L, x^(8D+63) mod P) ⊕ clmul(H, x^(8D-1) mod P)` is that sum: its degree is below 96,
//! so it fits the 128-bit lane as it is, and XORed into the data lane `D` bytes later it
//! carries the CRC forward unchanged. With four accumulators of four lanes each, `D` is 256; at
//! the end the accumulators are folded into the last one (`D` = 192, 128 and 64), whose 64 bytes
//! then stand for everything folded so far: the CRC register run over them from zero, and on
//! over the remaining bytes, is the buffer's. The initial value `0xFFFF_FFFF` enters as an XOR
//! into the first four data bytes (a CRC register's start value and a change of the first four
//! bytes of a message of at least four are the same thing), and the final XOR as usual.

/// Buffers up to this many bytes take the direct SSE4.2 path where the CPU has it. Folding wins
/// once a buffer is a few hundred bytes long.
const DIRECT_MAX: usize = 256;

/// Payloads from this many bytes up are copied by the folding loop where the CPU has it
/// (against a copy and then `crc-fast`, into a ring-sized buffer: level at 512 bytes, ahead
/// from 1 KiB).
#[cfg(target_arch = "x86_64")]
const FUSE_MIN: usize = 1024;

/// Bytes the folding loop takes per step: four 512-bit accumulators.
#[cfg(target_arch = "x86_64")]
const FOLD_BLOCK: usize = 256;

// The folding loop starts with a whole block.
#[cfg(target_arch = "x86_64")]
const _: () = assert!(FUSE_MIN >= FOLD_BLOCK);

/// CRC32C's polynomial `P`, bit-reflected, without its `x^32` term.
#[cfg(target_arch = "x86_64")]
const POLY: u32 = 0x82F6_3B78;

/// `x^n mod P` as a reflected 32-bit value (bit `i` is the coefficient of `x^(31-i)`).
#[cfg(target_arch = "x86_64")]
const fn x_pow_mod(n: u32) -> u32 {
    let mut r: u32 = 1 << 31;
    let mut i = 0;
    while i < n {
        // Multiplying by x moves every coefficient one bit down; x^32 becomes P - x^32.
        r = if r & 1 != 0 { (r >> 1) ^ POLY } else { r >> 1 };
        i += 1;
    }
    r
}

/// The two constants that fold a 16-byte lane into the lane `d` bytes later (see the module
/// docs), for the low and the high half, as reflected 64-bit values: a polynomial of degree
/// below 32 fills the upper half.
#[cfg(target_arch = "x86_64")]
const fn fold_constants(d: u32) -> (i64, i64) {
    let low = (x_pow_mod(8 * d + 63) as u64) << 32;
    let high = (x_pow_mod(8 * d - 1) as u64) << 32;
    (low as i64, high as i64)
}

/// The fold constants for 256 bytes on (the loop), and for 192, 128 and 64 (folding the
/// accumulators into the last).
#[cfg(target_arch = "x86_64")]
const FOLD_ON: [(i64, i64); 4] = [
    fold_constants(FOLD_BLOCK as u32),
    fold_constants(192),
    fold_constants(128),
    fold_constants(64),
];

/// The CRC32C of `data` (initial value and final XOR `0xFFFF_FFFF`, reflected; the check value
/// of `"123456789"` is `0xE306_9283`). Always inlined: on the hot path's small buffers it is a
/// length test and a call on every publish and poll.
#[inline(always)]
pub(crate) fn crc32c(data: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if data.len() <= DIRECT_MAX && std::arch::is_x86_feature_detected!("sse4.2") {
        // SAFETY: the CPU supports SSE4.2, checked just above (std caches the CPUID answer, so
        // the check is one load and a bit test).
        return unsafe { !words(u32::MAX, data) };
    }
    large(data)
}

/// [`crc32c`] of a buffer the direct path does not take. Out of line, so that the dispatch of
/// `crc-fast` does not grow every caller of `crc32c`.
#[inline(never)]
fn large(data: &[u8]) -> u32 {
    crc_fast::crc32_iscsi(data)
}

/// Copies `src` to `dst` and returns the CRC32C of `src`. Always inlined: on the hot path's
/// small payloads it is a length test, the copy and the direct CRC.
///
/// # Safety
/// `dst` must be valid for writes of `src.len()` bytes, and the two ranges must not overlap.
#[inline(always)]
pub(crate) unsafe fn copy_crc32c(dst: *mut u8, src: &[u8]) -> u32 {
    if src.len() > DIRECT_MAX {
        // SAFETY: the caller's promise, passed on.
        return unsafe { copy_crc32c_large(dst, src) };
    }
    // SAFETY: `dst` is valid for `src.len()` bytes and apart from `src` (the caller's promise).
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len()) };
    // The compiler drops `crc32c`'s own length test here: `src` is short.
    crc32c(src)
}

/// [`copy_crc32c`] of a payload longer than `DIRECT_MAX`: in one pass where the CPU has
/// AVX-512 with VPCLMULQDQ and `src` is at least `FUSE_MIN` bytes long, else a copy and then
/// [`crc32c`].
///
/// # Safety
/// As for [`copy_crc32c`].
#[inline(never)]
unsafe fn copy_crc32c_large(dst: *mut u8, src: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if src.len() >= FUSE_MIN
        && std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("vpclmulqdq")
        && std::arch::is_x86_feature_detected!("sse4.2")
    {
        // SAFETY: the CPU has the three features, checked just above; `src` is at least
        // `FUSE_MIN` ≥ `FOLD_BLOCK` bytes long; `dst` is the caller's.
        return unsafe { fold_copy(dst, src) };
    }
    // SAFETY: `dst` is valid for `src.len()` bytes and apart from `src` (the caller's promise).
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len()) };
    crc32c(src)
}

/// The CRC32C register `state` carried over `data` with the SSE4.2 `crc32` instruction, 64 bytes
/// at a time, then 8, then byte by byte; no inversion either side.
///
/// The instructions are written in assembly rather than with the `_mm_crc32_*` intrinsics: an
/// intrinsic needs a function compiled for SSE4.2, which cannot be inlined into callers built
/// for the baseline CPU, and the call, its register moves and the unrolled loop's set-up cost
/// a 64-byte publish or poll about 20 instructions (callgrind, `call_cost`). Inline assembly
/// has no such bound: this function is inlined into every caller, behind the caller's check.
///
/// # Safety
/// The CPU must have SSE4.2.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn words(state: u32, data: &[u8]) -> u32 {
    use std::arch::asm;
    let mut crc = u64::from(state);
    let mut rest = data;
    while let Some((chunk, tail)) = rest.split_first_chunk::<64>() {
        // SAFETY: `crc32` is SSE4.2 (the caller's promise); the eight loads lie in `chunk`'s
        // 64 bytes, which need no alignment; no stack, no flags (`crc32` changes none).
        unsafe {
            asm!(
                "crc32 {c}, qword ptr [{p}]",
                "crc32 {c}, qword ptr [{p} + 8]",
                "crc32 {c}, qword ptr [{p} + 16]",
                "crc32 {c}, qword ptr [{p} + 24]",
                "crc32 {c}, qword ptr [{p} + 32]",
                "crc32 {c}, qword ptr [{p} + 40]",
                "crc32 {c}, qword ptr [{p} + 48]",
                "crc32 {c}, qword ptr [{p} + 56]",
                c = inout(reg) crc,
                p = in(reg) chunk.as_ptr(),
                options(pure, readonly, nostack, preserves_flags),
            );
        }
        rest = tail;
    }
    while let Some((chunk, tail)) = rest.split_first_chunk::<8>() {
        let word = u64::from_le_bytes(*chunk);
        // SAFETY: as above; registers only.
        unsafe {
            asm!(
                "crc32 {c}, {w}",
                c = inout(reg) crc,
                w = in(reg) word,
                options(pure, nomem, nostack, preserves_flags),
            );
        }
        rest = tail;
    }
    // The 64-bit form leaves the register's upper half zero.
    let mut crc = crc as u32;
    for &byte in rest {
        // SAFETY: as above; registers only.
        unsafe {
            asm!(
                "crc32 {c:e}, {b}",
                c = inout(reg) crc,
                b = in(reg_byte) byte,
                options(pure, nomem, nostack, preserves_flags),
            );
        }
    }
    crc
}

/// [`copy_crc32c`]'s one-pass path: copies `src` to `dst` 256 bytes at a time, folding each
/// block into four 512-bit accumulators as it goes, folds those into one, and finishes with
/// `crc32` over it and over the last bytes, which it copies too (see the module docs).
///
/// # Safety
/// The CPU must have AVX-512F, VPCLMULQDQ and SSE4.2. `dst` must be valid for writes of
/// `src.len()` bytes, apart from `src`.
///
/// # Panics
/// If `src` is shorter than `FOLD_BLOCK`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,vpclmulqdq,sse4.2")]
unsafe fn fold_copy(dst: *mut u8, src: &[u8]) -> u32 {
    use std::arch::x86_64::{
        __m512i, _mm512_clmulepi64_epi128, _mm512_loadu_si512, _mm512_set_epi64,
        _mm512_storeu_si512, _mm512_ternarylogic_epi64, _mm512_xor_si512, _mm512_zextsi128_si512,
        _mm_cvtsi32_si128,
    };
    assert!(src.len() >= FOLD_BLOCK, "a whole block to start from");
    // Bytes in whole blocks: at least the first, so the loads and stores at 0–255 below are
    // inside both buffers, and every later one is below `whole`.
    let whole = src.len() / FOLD_BLOCK * FOLD_BLOCK;
    let s = src.as_ptr();
    // SAFETY: called with `at + 64 <= whole <= src.len()`, so the 64 bytes at `at` lie in
    // `src`; an unaligned load needs no alignment.
    let load = |at: usize| unsafe { _mm512_loadu_si512(s.add(at).cast::<__m512i>()) };
    // The store is written in assembly because the optimizer, seeing stores of bytes loaded
    // from a slice that `dst` cannot change, turns them into one `memcpy` of the whole buffer
    // ahead of the loop: two passes again, the very thing this function exists to avoid.
    // SAFETY: called with `at + 64 <= whole <= src.len()`, so the 64 bytes at `at` lie in
    // `dst` (valid for `src.len()` bytes and apart from `src`: the caller's promise);
    // `vmovdqu64` needs no alignment; it touches no stack and leaves the flags alone.
    let store = |at: usize, v: __m512i| unsafe {
        std::arch::asm!(
            "vmovdqu64 [{p}], {v}",
            p = in(reg) dst.add(at),
            v = in(zmm_reg) v,
            options(nostack, preserves_flags),
        )
    };
    // Per 128-bit lane: the constant for the low half in the low quadword, the high half's
    // above. (The constants are `const`s, computed by the compiler.)
    let constants = |(l, h): (i64, i64)| _mm512_set_epi64(h, l, h, l, h, l, h, l);
    // 0x96: the three-way XOR of the two products and the data.
    let fold = |acc, k, data| {
        _mm512_ternarylogic_epi64::<0x96>(
            _mm512_clmulepi64_epi128::<0x00>(acc, k),
            _mm512_clmulepi64_epi128::<0x11>(acc, k),
            data,
        )
    };
    let mut acc = [load(0), load(64), load(128), load(192)];
    for (i, a) in acc.iter().enumerate() {
        store(64 * i, *a);
    }
    acc[0] = _mm512_xor_si512(acc[0], _mm512_zextsi128_si512(_mm_cvtsi32_si128(-1)));
    let k = constants(FOLD_ON[0]);
    for at in (FOLD_BLOCK..whole).step_by(FOLD_BLOCK) {
        for (i, a) in acc.iter_mut().enumerate() {
            let data = load(at + 64 * i);
            store(at + 64 * i, data);
            *a = fold(*a, k, data);
        }
    }
    let last = fold(acc[0], constants(FOLD_ON[1]), acc[3]);
    let last = fold(acc[1], constants(FOLD_ON[2]), last);
    let last = fold(acc[2], constants(FOLD_ON[3]), last);
    let mut lanes = [0u8; 64];
    // SAFETY: `lanes` is 64 writable bytes.
    unsafe { _mm512_storeu_si512(lanes.as_mut_ptr().cast::<__m512i>(), last) };
    let tail = &src[whole..];
    // SAFETY: `dst` is valid for `src.len()` bytes, `whole + tail.len()` of them, and apart
    // from `src`.
    unsafe { std::ptr::copy_nonoverlapping(tail.as_ptr(), dst.add(whole), tail.len()) };
    // SAFETY: the CPU has SSE4.2 (this function's requirement).
    unsafe { !words(words(0, &lanes), tail) }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    /// The documented CRC32C test vector.
    #[test]
    fn check_value() {
        assert_eq!(super::crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(super::crc32c(b""), 0);
    }

    proptest! {
        /// Every length around the direct path's limit, at every alignment within a word,
        /// gives the value of the `crc32c` crate (an independent implementation, a test
        /// dependency only).
        #[test]
        fn equals_the_crate(data in proptest::collection::vec(any::<u8>(), 0..600), skip in 0usize..8) {
            let data = &data[skip.min(data.len())..];
            prop_assert_eq!(super::crc32c(data), crc32c::crc32c(data));
        }

        /// So do large buffers, up to past a record of 64 KiB, at any alignment: the folding
        /// path's blocks and tails.
        #[test]
        fn large_buffers_equal_the_crate(len in 600usize..70_000, skip in 0usize..64, seed in any::<u64>()) {
            let data = noise(seed, len + skip);
            let data = &data[skip..];
            prop_assert_eq!(super::crc32c(data), crc32c::crc32c(data));
        }

        /// The copy with its CRC, at any length up to past 64 KiB and any alignment of either
        /// side: every byte copied, nothing written outside the destination, the crate's CRC.
        #[test]
        fn copy_crc_copies_and_checksums(len in 0usize..70_000, skip in 0usize..64, at in 0usize..64, seed in any::<u64>()) {
            let data = noise(seed, len + skip);
            check_copy(&data[skip..], at)?;
        }
    }

    /// Every length from 0 to 2 KiB (the folding loop's block boundaries and tails), and a few
    /// large ones, through `copy_crc32c`; and where this CPU has the folding loop, through it
    /// directly from its smallest length up.
    #[test]
    fn copy_crc_at_every_small_length() {
        let data = noise(7, 70_000);
        for len in (0..=2048).chain([65_535, 65_536, 65_537, 65_536 + 255, 65_536 + 256]) {
            check_copy(&data[..len], 3).unwrap();
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("vpclmulqdq")
            && std::arch::is_x86_feature_detected!("sse4.2")
        {
            for len in super::FOLD_BLOCK..=2048 {
                let mut out = vec![0u8; len];
                // SAFETY: the CPU has the features (checked above); `out` holds `len` bytes.
                let crc = unsafe { super::fold_copy(out.as_mut_ptr(), &data[..len]) };
                assert_eq!(crc, crc32c::crc32c(&data[..len]), "length {len}");
                assert_eq!(out, data[..len], "length {len}");
            }
        } else {
            eprintln!("this CPU has no AVX-512 VPCLMULQDQ: the folding loop was not run");
        }
    }

    /// `copy_crc32c` of `data` into a buffer at offset `64 + at`, guard bytes around it.
    fn check_copy(data: &[u8], at: usize) -> Result<(), TestCaseError> {
        const GUARD: u8 = 0x5A;
        let start = 64 + at;
        let mut out = vec![GUARD; start + data.len() + 64];
        // SAFETY: `out` has `data.len()` bytes from `start`, and is apart from `data`.
        let crc = unsafe { super::copy_crc32c(out.as_mut_ptr().add(start), data) };
        prop_assert_eq!(crc, crc32c::crc32c(data), "length {}", data.len());
        prop_assert_eq!(&out[start..start + data.len()], data);
        prop_assert!(
            out[..start].iter().all(|&b| b == GUARD),
            "written before the destination"
        );
        prop_assert!(
            out[start + data.len()..].iter().all(|&b| b == GUARD),
            "written past it"
        );
        Ok(())
    }

    /// `len` pseudo-random bytes from `seed` (xorshift).
    fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }
}
